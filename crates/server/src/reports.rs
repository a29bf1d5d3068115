//! What providers report about messages after taking them: delivery receipts, bounces that
//! arrive later (DSNs), complaints (feedback loops). Each report is kept on its message
//! (`GET /v1/profiles/{namespace}/{value}/messages`) and counted in `/metrics`; a bounce or
//! a complaint also puts the address on the suppression list.
//!
//! Two ways in: Twilio-style status callbacks (`POST /v1/sms/status`, signed by the
//! provider; the message's key is in the callback URL given with each send), and
//! `POST /v1/messages/reports` (admin token) for anything else: an ESP's webhook relay, a
//! DSN or ARF processor, naming the message by its id or by its email Message-ID.

use axum::extract::{Query, RawQuery, State};
use axum::http::HeaderMap;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use waymark_core::delivery::{
    self, BOUNCED, REPORTS, parse_email_message_id, suppression_for, twilio_report,
    twilio_suppression,
};
use waymark_store::{MessageEvent, OutboxItem, wall_clock_ms};

use crate::AppState;
use crate::error::{ApiError, ErrorBody};

/// Status callbacks: the provider signs with `auth_token` over `url` and the query.
pub struct SmsStatus {
    pub auth_token: String,
    /// The callback URL as given to the provider, without the query (each send adds
    /// `?m=<message id>`), e.g. `https://waymark.example.com/v1/sms/status`.
    pub url: String,
}

/// Keeps the report on the message; a bounce or complaint suppresses its address (for
/// `reason`, else the report's own). Returns the message and whether its address was
/// suppressed, or `None` if there is no such message (erased, or never one).
async fn record(
    state: &AppState,
    key: &str,
    status: &str,
    detail: String,
    reason: Option<&'static str>,
) -> Result<Option<(OutboxItem, bool)>, ApiError> {
    let now = wall_clock_ms();
    let event = MessageEvent {
        status: status.to_owned(),
        detail: detail.clone(),
        at: now,
    };
    let Some(item) = state.store.record_message_event(key, event).await? else {
        metrics::counter!("waymark_message_reports_total", "channel" => "unknown", "status" => status.to_owned())
            .increment(1);
        return Ok(None);
    };
    let channel = item.message().map_or("", |m| m.channel.as_str());
    metrics::counter!("waymark_message_reports_total", "channel" => channel.to_owned(), "status" => status.to_owned())
        .increment(1);
    let suppress = reason
        .or_else(|| suppression_for(status))
        .zip(item.suppressible_address());
    if let Some((reason, (channel, address))) = &suppress {
        state
            .store
            .suppress(channel, address, reason, &detail, now)
            .await?;
        tracing::info!(channel, reason, "address suppressed by a provider report");
    }
    let suppressed = suppress.is_some();
    Ok(Some((item, suppressed)))
}

#[derive(Debug, Deserialize)]
pub struct StatusQuery {
    /// The message's id.
    pub m: String,
}

/// A Twilio-compatible status callback (form-encoded `MessageSid`, `MessageStatus`,
/// `ErrorCode`, signed with `X-Twilio-Signature` over the callback URL with its query).
/// `delivered` is recorded as delivered; `undelivered` and `failed` as undelivered, and
/// error codes that say the number cannot get messages (30005 unknown number, 30006
/// landline, 21610 opted out at the carrier) as a bounce that suppresses it. Steps on
/// the way (`queued`, `sent`) are acknowledged and not recorded.
#[utoipa::path(post, path = "/v1/sms/status", tag = "links",
    params(("m" = String, Query, description = "The message's id, as put in the callback URL at send")),
    responses((status = 204, description = "Recorded, or not a final status"),
        (status = 403, description = "Missing or wrong signature", body = ErrorBody)))]
pub async fn sms_status(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    Query(message): Query<StatusQuery>,
    axum::extract::Form(params): axum::extract::Form<Vec<(String, String)>>,
) -> Result<axum::http::StatusCode, ApiError> {
    let settings = state
        .sms_status
        .clone()
        .ok_or_else(|| ApiError::forbidden("SMS status callbacks are not configured"))?;
    let signed_url = format!("{}?{}", settings.url, query.unwrap_or_default());
    crate::links::verify_twilio_request(&headers, &settings.auth_token, &signed_url, &params)?;
    let key = message.m;
    let get = |name: &str| crate::links::form_value(&params, name);
    let Some(report) = twilio_report(get("MessageStatus")) else {
        return Ok(axum::http::StatusCode::NO_CONTENT);
    };
    let code = get("ErrorCode");
    let detail = match code {
        "" => format!("{} {}", get("MessageStatus"), get("MessageSid")),
        code => format!(
            "{} {} (error {code})",
            get("MessageStatus"),
            get("MessageSid")
        ),
    };
    let bounce = code.parse().ok().and_then(twilio_suppression);
    let status = if bounce.is_some() { BOUNCED } else { report };
    if record(&state, &key, status, detail, bounce)
        .await?
        .is_none()
    {
        // Signed by the provider, so a message erased since: nothing to keep it on.
        tracing::info!("an SMS status callback for a message no longer stored");
    }
    Ok(axum::http::StatusCode::NO_CONTENT)
}

/// A provider's report about one message.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReportBody {
    /// The message's id (`id` in the person's messages; the `message_id` given to a
    /// generic SMS provider). Or:
    #[serde(default)]
    pub message: Option<String>,
    /// The Message-ID header of an email we sent, with or without angle brackets.
    #[serde(default)]
    pub email_message_id: Option<String>,
    /// `delivered`, `undelivered`, `bounced` (suppresses the address as a hard bounce) or
    /// `complained` (suppresses it as a complaint).
    pub status: String,
    /// What the provider said (an SMTP reply, a DSN's diagnostic code).
    #[serde(default)]
    pub detail: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReportView {
    /// The message's id.
    pub message: String,
    pub channel: String,
    pub status: String,
    /// Whether the report put the address on the suppression list.
    pub suppressed: bool,
}

/// Records a provider's report about a message: a delivery receipt, a bounce that came
/// back later, a complaint. A bounce or a complaint puts the address on the suppression
/// list. Reporting the same status twice keeps the first.
#[utoipa::path(post, path = "/v1/messages/reports", tag = "profiles",
    request_body = ReportBody,
    responses((status = 200, body = ReportView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody)),
    security(("admin_token" = [])))]
pub async fn post_report(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Result<axum::Json<ReportView>, ApiError> {
    state.keys.require_admin(&headers)?;
    let body: ReportBody = crate::templates::json_body(body).await?;
    if !REPORTS.contains(&body.status.as_str()) {
        return Err(ApiError::field(
            "invalid_status",
            "status",
            format!("{:?} is not one of {}", body.status, REPORTS.join(", ")),
        ));
    }
    let key = match (&body.message, &body.email_message_id) {
        (Some(key), None) => key.clone(),
        (None, Some(id)) => {
            let unknown = || ApiError::not_found(format!("{id} is not a Message-ID of ours"));
            let (seq, hash) = parse_email_message_id(id).ok_or_else(unknown)?;
            state
                .store
                .outbox_key(seq)
                .await?
                .filter(|key| delivery::message_id_matches(hash, key))
                .ok_or_else(unknown)?
        }
        _ => {
            return Err(ApiError::field(
                "missing_message",
                "message",
                "name the message by exactly one of message or email_message_id",
            ));
        }
    };
    let detail = body.detail.unwrap_or_default();
    let (item, suppressed) = record(&state, &key, &body.status, detail, None)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no message {key:?}")))?;
    let channel = item.message().map_or("", |m| m.channel.as_str());
    Ok(axum::Json(ReportView {
        message: key,
        channel: channel.to_owned(),
        status: body.status,
        suppressed,
    }))
}
