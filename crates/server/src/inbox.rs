//! The in-app / web inbox (write key, as apps and pages embed it, plus the person's user
//! hash, which the customer's backend issues): `in_app` messages that
//! journeys left for a person, newest first, until they expire or are dismissed. Reading
//! and dismissing are recorded as marks and as events (`In-App Message Read`, `In-App
//! Message Dismissed`), so journeys can wait for them.

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;
use waymark_core::Identity;
use waymark_core::time::format_iso8601;
use waymark_store::{InboxMark, OutboxEntry, wall_clock_ms};

use crate::AppState;
use crate::error::{ApiError, ErrorBody};

#[derive(Debug, Serialize, ToSchema)]
pub struct InboxMessage {
    /// The message id (for read / dismiss).
    pub id: String,
    pub journey: String,
    pub title: Option<String>,
    pub body: Option<String>,
    /// The template's `data` (deep links, images, buttons), as rendered.
    #[schema(value_type = Object)]
    pub data: Value,
    pub created_at: String,
    pub expires_at: Option<String>,
    pub read: bool,
    pub read_at: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct InboxView {
    pub messages: Vec<InboxMessage>,
    pub unread: usize,
}

fn identity(namespace: &str, value: &str) -> Result<Identity, ApiError> {
    Identity::parse(namespace, value).map_err(|m| ApiError::field("invalid_identity", "value", m))
}

/// The header a browser or app proves whose inbox it reads with (see `links::user_hash`).
pub const USER_HASH_HEADER: &str = "x-waymark-user-hash";

/// The write key alone ships inside every page and app, so it cannot say who is asking:
/// reading or changing one person's inbox also takes that person's user hash, which only
/// the customer's backend can make.
fn require_person(state: &AppState, headers: &HeaderMap, id: &Identity) -> Result<(), ApiError> {
    state.keys.require_write(headers)?;
    let secret = state.identity_secret.as_deref().ok_or_else(|| {
        ApiError::forbidden("identity verification is not configured on this server")
    })?;
    let hash = headers
        .get(USER_HASH_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if waymark_core::links::verify_user_hash(secret, id.namespace.as_str(), &id.value, hash) {
        Ok(())
    } else {
        let mut e = ApiError::forbidden(format!(
            "{USER_HASH_HEADER} must be the user hash of {}:{} (HMAC-SHA256 of it under the identity secret, hex)",
            id.namespace.as_str(),
            id.value
        ));
        e.body.code = "invalid_user_hash".into();
        Err(e)
    }
}

/// The person's in-app messages still in the inbox (delivered, not expired), with marks.
async fn current(
    state: &AppState,
    id: &Identity,
    now: i64,
) -> Result<Vec<(OutboxEntry, InboxMark)>, ApiError> {
    let outbox = state.store.profile_outbox(id).await?.unwrap_or_default();
    let live: Vec<OutboxEntry> = outbox
        .into_iter()
        .filter(|o| {
            o.row.effect.message().is_some_and(|m| {
                m.channel == "in_app"
                    && o.row.status == "done"
                    && m.expires_at.is_none_or(|at| at > now)
            })
        })
        .collect();
    let keys: Vec<String> = live.iter().map(|o| o.row.key.clone()).collect();
    let marks = state.store.inbox_marks(&keys).await?;
    Ok(live
        .into_iter()
        .map(|o| {
            let mark = marks.get(&o.row.key).copied().unwrap_or_default();
            (o, mark)
        })
        .collect())
}

fn view(o: &OutboxEntry, mark: InboxMark) -> InboxMessage {
    // Only messages reach here (see `live`).
    let message = o.row.effect.message();
    let field = |name: &str| message.and_then(|m| m.field(name)).map(str::to_owned);
    InboxMessage {
        id: o.row.key.clone(),
        journey: o.row.journey.clone(),
        title: field("title"),
        body: field("body"),
        data: message
            .and_then(|m| m.data())
            .cloned()
            .unwrap_or(Value::Null),
        created_at: format_iso8601(o.created_at),
        expires_at: message.and_then(|m| m.expires_at).map(format_iso8601),
        read: mark.read_at.is_some(),
        read_at: mark.read_at.map(format_iso8601),
    }
}

/// The person's inbox: messages not dismissed and not expired, newest first, and how many
/// are unread. A person Waymark does not know has an empty inbox.
#[utoipa::path(get, path = "/v1/inbox/{namespace}/{value}", tag = "inbox",
    params(("namespace" = String, Path), ("value" = String, Path)),
    responses((status = 200, body = InboxView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, description = "Missing or wrong X-Waymark-User-Hash", body = ErrorBody)),
    security(("write_key" = [])))]
pub async fn get_inbox(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((namespace, value)): Path<(String, String)>,
) -> Result<axum::Json<InboxView>, ApiError> {
    let id = identity(&namespace, &value)?;
    require_person(&state, &headers, &id)?;
    let mut messages: Vec<(i64, InboxMessage)> = current(&state, &id, wall_clock_ms())
        .await?
        .into_iter()
        .filter(|(_, mark)| mark.dismissed_at.is_none())
        .map(|(o, mark)| (o.created_at, view(&o, mark)))
        .collect();
    messages.sort_by_key(|(at, _)| std::cmp::Reverse(*at));
    let unread = messages.iter().filter(|(_, m)| !m.read).count();
    Ok(axum::Json(InboxView {
        messages: messages.into_iter().map(|(_, m)| m).collect(),
        unread,
    }))
}

/// Marks one message `read` or `dismissed` (dismissing also reads it). The first time
/// counts; repeating changes nothing. Records `In-App Message Read` / `In-App Message
/// Dismissed` with `{message, journey}` once per message.
#[utoipa::path(post, path = "/v1/inbox/{namespace}/{value}/{id}/{action}", tag = "inbox",
    params(("namespace" = String, Path), ("value" = String, Path), ("id" = String, Path),
        ("action" = String, Path, description = "read or dismiss")),
    responses((status = 200, body = InboxMessage), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, description = "Not a message in this person's inbox (or expired)", body = ErrorBody)),
    security(("write_key" = [])))]
pub async fn mark(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((namespace, value, message, action)): Path<(String, String, String, String)>,
) -> Result<axum::Json<InboxMessage>, ApiError> {
    let id = identity(&namespace, &value)?;
    require_person(&state, &headers, &id)?;
    let (dismiss, event) = match action.as_str() {
        "read" => (false, "In-App Message Read"),
        "dismiss" => (true, "In-App Message Dismissed"),
        other => {
            return Err(ApiError::field(
                "invalid_action",
                "action",
                format!("{other:?} is not read or dismiss"),
            ));
        }
    };
    let now = wall_clock_ms();
    let Some((entry, _)) = current(&state, &id, now)
        .await?
        .into_iter()
        .find(|(o, _)| o.row.key == message)
    else {
        return Err(ApiError::not_found(format!(
            "no message {message:?} in the inbox of {namespace}:{value}"
        )));
    };
    let mark = state
        .store
        .mark_inbox(&message, &entry.row.profile_id, true, dismiss, now)
        .await?;
    let e = crate::links::track_event(
        &id,
        event,
        format!("inbox-{action}-{message}"),
        [
            ("message", message.clone().into()),
            ("journey", entry.row.journey.clone().into()),
            ("channel", "in_app".into()),
        ],
    );
    state.store.ingest(vec![e]).await?;
    Ok(axum::Json(view(&entry, mark)))
}
