//! The suppression list API (admin token): addresses that get no message on a channel,
//! transactional or not. Bounces and carrier errors add to it on their own; this is for
//! lists brought from another sender, complaints from feedback loops, and removals.

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use waymark_core::governance::{REASONS, SUPPRESSIBLE, suppression_address};
use waymark_core::time::format_iso8601;
use waymark_store::{Suppression, wall_clock_ms};

use crate::AppState;
use crate::error::{ApiError, ErrorBody};

#[derive(Debug, Serialize, ToSchema)]
pub struct SuppressionView {
    pub channel: String,
    /// Normalised: emails lowercased, phone numbers as `+` and digits.
    pub address: String,
    /// Whether messages to it are suppressed now (an address with soft bounces below the
    /// limit is listed but not suppressed).
    pub suppressed: bool,
    /// hard_bounce, soft_bounces, complaint, invalid_address, carrier_opt_out or manual.
    pub reason: String,
    pub detail: String,
    pub soft_bounces: u32,
    pub created_at: String,
    pub updated_at: String,
}

impl From<Suppression> for SuppressionView {
    fn from(s: Suppression) -> Self {
        Self {
            channel: s.channel,
            address: s.address,
            suppressed: s.suppressed,
            reason: s.reason,
            detail: s.detail,
            soft_bounces: s.soft_bounces,
            created_at: format_iso8601(s.created_at),
            updated_at: format_iso8601(s.updated_at),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SuppressionList {
    pub suppressions: Vec<SuppressionView>,
    /// Pass as `after` for the next page; absent on the last one.
    pub next: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct ListQuery {
    /// Only this channel (`email`, `sms`).
    pub channel: Option<String>,
    /// The `next` of the previous page.
    pub after: Option<String>,
    /// At most this many (default 100, at most 1000).
    pub limit: Option<u32>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SuppressBody {
    /// Default `manual`.
    #[serde(default)]
    pub reason: Option<String>,
    /// A note kept with the entry.
    #[serde(default)]
    pub detail: Option<String>,
}

fn channel(name: &str) -> Result<(), ApiError> {
    if SUPPRESSIBLE.iter().any(|(known, _)| *known == name) {
        Ok(())
    } else {
        Err(ApiError::field(
            "invalid_channel",
            "channel",
            format!("channel {name:?} has no suppression list (email, sms)"),
        ))
    }
}

fn address(name: &str, raw: &str) -> Result<String, ApiError> {
    channel(name)?;
    suppression_address(name, raw).map_err(|m| ApiError::field("invalid_address", "address", m))
}

/// Lists the suppression list in (channel, address) order, a page at a time.
#[utoipa::path(get, path = "/v1/suppressions", tag = "suppressions", params(ListQuery),
    responses((status = 200, body = SuppressionList), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)),
    security(("admin_token" = [])))]
pub async fn list(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<ListQuery>,
) -> Result<axum::Json<SuppressionList>, ApiError> {
    state.keys.require_admin(&headers)?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::field(
            "invalid_limit",
            "limit",
            "must be 1 to 1000",
        ));
    }
    if let Some(c) = &q.channel {
        channel(c)?;
    }
    let after = match &q.after {
        None => None,
        Some(a) => Some(a.split_once(':').ok_or_else(|| {
            ApiError::field(
                "invalid_cursor",
                "after",
                "expected the `next` of a previous page",
            )
        })?),
    };
    let page = state
        .store
        .suppressions(q.channel.as_deref(), after, limit)
        .await?;
    let next = (page.len() == limit as usize)
        .then(|| page.last().map(|s| format!("{}:{}", s.channel, s.address)))
        .flatten();
    Ok(axum::Json(SuppressionList {
        suppressions: page.into_iter().map(Into::into).collect(),
        next,
    }))
}

/// One address's entry.
#[utoipa::path(get, path = "/v1/suppressions/{channel}/{address}", tag = "suppressions",
    params(("channel" = String, Path), ("address" = String, Path)),
    responses((status = 200, body = SuppressionView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("admin_token" = [])))]
pub async fn get_one(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((channel, raw)): Path<(String, String)>,
) -> Result<axum::Json<SuppressionView>, ApiError> {
    state.keys.require_admin(&headers)?;
    let address = address(&channel, &raw)?;
    state
        .store
        .suppression(&channel, &address)
        .await?
        .map(|s| axum::Json(s.into()))
        .ok_or_else(|| ApiError::not_found(format!("{address} is not on the {channel} list")))
}

/// Suppresses an address (a complaint, a list from another sender, or by hand).
#[utoipa::path(put, path = "/v1/suppressions/{channel}/{address}", tag = "suppressions",
    params(("channel" = String, Path), ("address" = String, Path)),
    request_body(content = SuppressBody, description = "`{reason?, detail?}`; the body may be empty"),
    responses((status = 200, body = SuppressionView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)),
    security(("admin_token" = [])))]
pub async fn put(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((channel, raw)): Path<(String, String)>,
    body: axum::body::Body,
) -> Result<axum::Json<SuppressionView>, ApiError> {
    state.keys.require_admin(&headers)?;
    let address = address(&channel, &raw)?;
    let bytes = crate::error::read_limited(body, 16 * 1024, || {
        ApiError::bad_request("body_too_large", "the body may be at most 16 KB")
    })
    .await?;
    let body: SuppressBody = if bytes.iter().all(u8::is_ascii_whitespace) {
        SuppressBody {
            reason: None,
            detail: None,
        }
    } else {
        crate::templates::json_body(axum::body::Body::from(bytes)).await?
    };
    let reason = body
        .reason
        .as_deref()
        .unwrap_or(waymark_core::governance::MANUAL);
    if !REASONS.contains(&reason) {
        return Err(ApiError::field(
            "invalid_reason",
            "reason",
            format!("{reason:?} is not one of {}", REASONS.join(", ")),
        ));
    }
    let detail = body.detail.unwrap_or_default();
    state
        .store
        .suppress(&channel, &address, reason, &detail, wall_clock_ms())
        .await?;
    tracing::info!(%channel, reason, "address suppressed through the API");
    let entry = state.store.suppression(&channel, &address).await?;
    entry
        .map(|s| axum::Json(s.into()))
        .ok_or_else(|| ApiError::not_found("the entry was removed meanwhile"))
}

/// Takes an address off the list (and forgets its soft bounces).
#[utoipa::path(delete, path = "/v1/suppressions/{channel}/{address}", tag = "suppressions",
    params(("channel" = String, Path), ("address" = String, Path)),
    responses((status = 204, description = "Removed"), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("admin_token" = [])))]
pub async fn delete(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((channel, raw)): Path<(String, String)>,
) -> Result<axum::http::StatusCode, ApiError> {
    state.keys.require_admin(&headers)?;
    let address = address(&channel, &raw)?;
    if state.store.unsuppress(&channel, &address).await? {
        Ok(axum::http::StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!(
            "{address} is not on the {channel} list"
        )))
    }
}
