//! The Segment-compatible ingest endpoints. A 200 is sent only after the store has committed
//! the events durably; a 4xx means nothing from the request was stored (batches are all or
//! nothing).

use std::io::Read;
use waymark_store::wall_clock_ms as now_ms;

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::http::header::CONTENT_ENCODING;
use serde::Serialize;
use utoipa::ToSchema;
use waymark_core::EventKind;
use waymark_core::segment::{Envelope, MAX_BATCH_BYTES, MAX_EVENT_BYTES, Receipt};

use crate::AppState;
use crate::auth::{Presented, WriteKey, presented};
use crate::error::{ApiError, ErrorBody};
use waymark_core::Sender;
use waymark_store::StoreError;

#[derive(Debug, Serialize, ToSchema)]
pub struct IngestResponse {
    /// Always `true`, as Segment answers.
    pub success: bool,
    /// Events newly stored.
    pub accepted: usize,
    /// Events whose `messageId` was already stored; they changed nothing.
    pub duplicates: usize,
}

/// Reads the body, inflating gzip, never holding more than `limit` bytes of either form.
async fn read_body(headers: &HeaderMap, body: Body, limit: usize) -> Result<Vec<u8>, ApiError> {
    let too_large = || {
        ApiError::bad_request(
            if limit == MAX_BATCH_BYTES {
                "batch_too_large"
            } else {
                "event_too_large"
            },
            format!(
                "request body is larger than {limit} bytes ({} KB)",
                limit / 1024
            ),
        )
    };
    let raw = crate::error::read_limited(body, limit, too_large).await?;
    let encoding = headers
        .get(CONTENT_ENCODING)
        .map(|v| v.to_str().unwrap_or("?").trim().to_ascii_lowercase());
    match encoding.as_deref() {
        None | Some("") | Some("identity") => Ok(raw.to_vec()),
        Some("gzip") | Some("x-gzip") => {
            let mut out = Vec::with_capacity(raw.len() * 4);
            let mut decoder = flate2::read::GzDecoder::new(&raw[..]).take(limit as u64 + 1);
            decoder.read_to_end(&mut out).map_err(|e| {
                ApiError::bad_request(
                    "invalid_gzip",
                    format!("request body is not valid gzip: {e}"),
                )
            })?;
            if out.len() > limit {
                return Err(too_large());
            }
            Ok(out)
        }
        Some(other) => Err(ApiError::bad_request(
            "unsupported_encoding",
            format!("Content-Encoding {other:?} is not supported; send gzip or no encoding"),
        )),
    }
}

async fn ingest(
    state: AppState,
    headers: HeaderMap,
    body: Body,
    kind: Option<EventKind>,
) -> Result<axum::Json<IngestResponse>, ApiError> {
    // A key in the header is checked before a byte of the body is read.
    let header_key = match presented(&headers) {
        Presented::Basic(key) => Some(key),
        Presented::None => None,
        Presented::Bearer(_) | Presented::Malformed => {
            return Err(ApiError::unauthorized(
                "send the write key as the HTTP Basic username",
            ));
        }
    };
    let header_key_kind = match &header_key {
        Some(key) => match state.keys.write_key(key) {
            Some(kind) => Some(kind),
            None => return Err(ApiError::unauthorized("invalid write key")),
        },
        None => None,
    };
    let limit = if kind.is_none() {
        MAX_BATCH_BYTES
    } else {
        MAX_EVENT_BYTES
    };
    let bytes = read_body(&headers, body, limit).await?;
    let envelope = match kind {
        None => Envelope::batch(&bytes),
        Some(kind) => Envelope::single(&bytes, kind),
    };
    // A key in the body (`writeKey`) is checked once the envelope is read, before any
    // message is parsed; validation details are only for callers who hold a write key.
    let envelope = match envelope {
        Ok(envelope) => envelope,
        Err(_) if header_key.is_none() => return Err(ApiError::unauthorized("missing write key")),
        Err(e) => return Err(rejected(e)),
    };
    let Some(key_kind) =
        header_key_kind.or_else(|| envelope.write_key().and_then(|k| state.keys.write_key(k)))
    else {
        return Err(ApiError::unauthorized("missing or invalid write key"));
    };
    let mut events = {
        let mut new_id = || uuid::Uuid::now_v7().to_string();
        let mut receipt = Receipt {
            received_at: now_ms(),
            new_message_id: &mut new_id,
        };
        envelope.events(&mut receipt).map_err(rejected)?
    };
    let header_hash = headers
        .get(crate::inbox::USER_HASH_HEADER)
        .and_then(|v| v.to_str().ok());
    for event in &mut events {
        event.sender = sender(&state, key_kind, event, header_hash);
    }
    let receipt = state.store.ingest(events).await.map_err(|e| match e {
        StoreError::Refused(mut refusal) if kind.is_none() => {
            refusal.error = refusal.error.at_index(refusal.index);
            StoreError::Refused(refusal)
        }
        e => e,
    })?;
    metrics::counter!("waymark_ingest_events_total", "outcome" => "accepted")
        .increment(receipt.accepted as u64);
    metrics::counter!("waymark_ingest_events_total", "outcome" => "duplicate")
        .increment(receipt.duplicates as u64);
    Ok(axum::Json(IngestResponse {
        success: true,
        accepted: receipt.accepted,
        duplicates: receipt.duplicates,
    }))
}

/// Who sent `event`, taking its user hash (`context.userHash`, else the request's
/// `X-Waymark-User-Hash`) out of it: a hash is a credential for that person and is not
/// stored. A client's hash counts only if it signs the event's own user id.
fn sender(
    state: &AppState,
    key: WriteKey,
    event: &mut waymark_core::Event,
    header_hash: Option<&str>,
) -> Sender {
    let own_hash = match event.context.remove("userHash") {
        Some(serde_json::Value::String(hash)) => Some(hash),
        _ => None,
    };
    if key == WriteKey::Server {
        return Sender::Server;
    }
    let hash = own_hash.as_deref().or(header_hash);
    let verified_user_id = match (state.identity_secret.as_deref(), hash) {
        (Some(secret), Some(hash)) => event
            .identities
            .iter()
            .find(|i| i.is_user_id())
            .filter(|id| {
                waymark_core::links::verify_user_hash(
                    secret,
                    id.namespace.as_str(),
                    &id.value,
                    hash,
                )
            })
            .map(|id| id.value.clone()),
        _ => None,
    };
    Sender::Client { verified_user_id }
}

fn rejected(e: waymark_core::FieldError) -> ApiError {
    metrics::counter!("waymark_ingest_rejected_total", "code" => e.code).increment(1);
    e.into()
}

macro_rules! single_endpoint {
    ($fn:ident, $path:literal, $kind:expr, $doc:literal) => {
        #[doc = $doc]
        #[utoipa::path(post, path = $path, tag = "ingest",
            request_body(content = serde_json::Value, description = "One Segment message of this type"),
            responses(
                (status = 200, description = "Committed durably", body = IngestResponse),
                (status = 400, description = "Invalid message; nothing stored", body = ErrorBody),
                (status = 401, description = "Missing or invalid write key", body = ErrorBody),
                (status = 403, description = "A client key changing a signed-in person's addresses without their user hash; nothing stored", body = ErrorBody),
                (status = 503, description = "Store unavailable; nothing stored, retry", body = ErrorBody),
            ),
            security(("write_key" = [])))]
        pub async fn $fn(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Result<axum::Json<IngestResponse>, ApiError> {
            ingest(state, headers, body, Some($kind)).await
        }
    };
}

single_endpoint!(
    identify,
    "/v1/identify",
    EventKind::Identify,
    "Segment `identify`: who the person is and their traits."
);
single_endpoint!(
    track,
    "/v1/track",
    EventKind::Track,
    "Segment `track`: something the person did."
);
single_endpoint!(
    page,
    "/v1/page",
    EventKind::Page,
    "Segment `page`: a web page view."
);
single_endpoint!(
    screen,
    "/v1/screen",
    EventKind::Screen,
    "Segment `screen`: an app screen view."
);
single_endpoint!(
    group,
    "/v1/group",
    EventKind::Group,
    "Segment `group`: the person's account or organisation."
);
single_endpoint!(
    alias,
    "/v1/alias",
    EventKind::Alias,
    "Segment `alias`: fold `previousId` into `userId`."
);

/// Segment `batch`: up to 500 KB of messages of any type, committed all or nothing.
#[utoipa::path(post, path = "/v1/batch", tag = "ingest",
    request_body(content = serde_json::Value, description = "`{\"batch\": [message, ...], \"sentAt\"?, \"context\"?}`"),
    responses(
        (status = 200, description = "Every message committed durably", body = IngestResponse),
        (status = 400, description = "An invalid message (its index in `field`); nothing stored", body = ErrorBody),
        (status = 401, description = "Missing or invalid write key", body = ErrorBody),
        (status = 403, description = "A client key changing a signed-in person's addresses without their user hash (its index in `field`); nothing stored", body = ErrorBody),
        (status = 503, description = "Store unavailable; nothing stored, retry", body = ErrorBody),
    ),
    security(("write_key" = [])))]
pub async fn batch(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<axum::Json<IngestResponse>, ApiError> {
    ingest(state, headers, body, None).await
}
