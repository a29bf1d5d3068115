//! Operations endpoints (health, metrics, OpenAPI) and the request-observing middleware.

use std::sync::OnceLock;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use serde_json::json;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::AppState;
use crate::error::ApiError;

static METRICS: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process-wide Prometheus recorder once. If another recorder is already
/// installed (an embedding program's), `/metrics` reports that it has none of its own.
pub fn install_metrics_recorder() {
    METRICS.get_or_init(|| {
        let latency = [
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
        ];
        let sizes = [1.0, 10.0, 100.0, 500.0, 1000.0, 5000.0, 20000.0];
        PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &latency)
            .and_then(|b| b.set_buckets_for_metric(Matcher::Suffix("_events".into()), &sizes))
            .and_then(|b| b.set_buckets_for_metric(Matcher::Suffix("_requests".into()), &sizes))
            .ok()
            .and_then(|b| b.install_recorder().ok())
    });
}

pub async fn observe(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    // Any token is a valid HTTP method; only the ones we serve name a time series.
    let method = match request.method().as_str() {
        m @ ("GET" | "POST" | "PUT" | "DELETE" | "PATCH" | "HEAD" | "OPTIONS") => m,
        _ => "other",
    }
    .to_owned();
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    let elapsed = started.elapsed().as_secs_f64();
    metrics::histogram!("waymark_http_request_duration_seconds", "route" => route.clone(), "method" => method.clone())
        .record(elapsed);
    metrics::counter!("waymark_http_requests_total", "route" => route.clone(), "method" => method.clone(), "status" => status.clone())
        .increment(1);
    if response.status().is_server_error() {
        tracing::warn!(%route, %method, %status, elapsed, "request failed");
    } else {
        tracing::debug!(%route, %method, %status, elapsed, "request");
    }
    response
}

/// Liveness and store reachability. Public, for load balancers and orchestrators.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "Serving, store reachable and committing"), (status = 503, description = "Store unreachable, or its commits are failing (a full disk): `error` says why")))]
pub async fn healthz(State(state): State<AppState>) -> Response {
    match state.store.ping().await {
        Ok(()) => axum::Json(json!({"status": "ok", "store": state.store.backend()})).into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(axum::http::header::RETRY_AFTER, crate::error::RETRY_AFTER_SECS)],
            axum::Json(json!({"status": "unavailable", "store": state.store.backend(), "error": e.to_string()})),
        )
            .into_response(),
    }
}

/// Prometheus text exposition (admin token).
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain"), (status = 401)),
    security(("admin_token" = [])))]
pub async fn metrics(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    state.keys.require_admin(&headers)?;
    let mut body = METRICS
        .get()
        .and_then(Option::as_ref)
        .map(PrometheusHandle::render)
        .unwrap_or_default();
    if !body.is_empty() && !body.ends_with('\n') {
        body.push('\n');
    }
    body.push_str(&crate::campaigns::metrics_text(&state).await?);
    Ok(([("content-type", "text/plain; version=0.0.4")], body).into_response())
}

struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "write_key",
            SecurityScheme::Http(
                utoipa::openapi::security::HttpBuilder::new()
                    .scheme(HttpAuthScheme::Basic)
                    .description(Some("Write key as the Basic username, empty password (as Segment clients send it)"))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "admin_token",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Waymark API", description = "Customer journey orchestration: Segment-compatible ingest and real-time profiles."),
    paths(
        crate::ingest::identify, crate::ingest::track, crate::ingest::page, crate::ingest::screen,
        crate::ingest::group, crate::ingest::alias, crate::ingest::batch,
        crate::profiles::get_profile, crate::profiles::get_events, crate::profiles::delete_profile, crate::profiles::get_journeys, crate::profiles::get_messages,
        crate::journeys::put_journey, crate::journeys::journey_action, crate::journeys::get_journey, crate::journeys::list_journeys, crate::journeys::journey_stats,
        crate::campaigns::put_campaign, crate::campaigns::get_campaign, crate::campaigns::list_campaigns, crate::campaigns::campaign_action, crate::campaigns::campaign_report, crate::campaigns::preview_campaign, crate::campaigns::proof_campaign,
        crate::templates::put_template, crate::templates::get_template, crate::templates::list_templates, crate::templates::preview_template,
        crate::audiences::put_audience, crate::audiences::get_audience, crate::audiences::list_audiences, crate::audiences::audience_members, crate::audiences::audience_sizes, crate::audiences::preview_audience, crate::audiences::export_members, crate::audiences::run_audience, crate::audiences::upload_members,
        crate::audiences::profile_audiences, crate::audiences::explain,
        crate::links::unsubscribe_page, crate::links::unsubscribe, crate::links::sms_inbound, crate::links::email_open,
        crate::links::email_click, crate::reports::sms_status, crate::reports::post_report,
        crate::inbox::get_inbox, crate::inbox::mark,
        crate::decisioning::put_document, crate::decisioning::get_document, crate::decisioning::list_documents, crate::decisioning::decide,
        crate::suppressions::list, crate::suppressions::get_one, crate::suppressions::put, crate::suppressions::delete,
        healthz, metrics, openapi,
    ),
    modifiers(&SecuritySchemes),
)]
pub struct ApiDoc;

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "operations", responses((status = 200, description = "OpenAPI 3.1 document")))]
pub async fn openapi() -> Response {
    axum::Json(ApiDoc::openapi()).into_response()
}

pub async fn not_found() -> ApiError {
    ApiError::not_found("no such endpoint; see /openapi.json")
}

pub async fn method_not_allowed() -> ApiError {
    let mut e = ApiError::bad_request(
        "method_not_allowed",
        "this endpoint does not accept that method; see /openapi.json",
    );
    e.status = StatusCode::METHOD_NOT_ALLOWED;
    e
}
