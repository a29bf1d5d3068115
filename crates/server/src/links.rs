//! Signed links people follow from messages. No API key: the signature is the credential,
//! and a link carries no URL, so it cannot be turned into an open redirect.

use axum::extract::{Query, State};
use serde::Deserialize;
use utoipa::IntoParams;
use waymark_core::event::{Event, EventKind};
use waymark_core::{Identity, links};
use waymark_store::wall_clock_ms;

use crate::AppState;
use crate::error::{ApiError, ErrorBody};

#[derive(Debug, Deserialize, IntoParams)]
pub struct UnsubscribeQuery {
    /// Channel: `email`.
    pub c: String,
    /// The identity the message went to (`email:ada@example.com`).
    pub i: String,
    /// The link's signature.
    pub s: String,
}

/// One-click unsubscribe (RFC 8058: mail clients POST `List-Unsubscribe=One-Click`; a person
/// clicking the link GETs it). Records, for the identity's profile, an identify call setting
/// the trait `unsubscribed_<channel>: true` and a track event `Unsubscribed` with
/// `{channel}`, so exit criteria and conditions can act on it.
#[utoipa::path(post, path = "/v1/unsubscribe", tag = "links", params(UnsubscribeQuery),
    responses((status = 200, description = "Unsubscribed (plain text)"),
        (status = 400, body = ErrorBody), (status = 403, description = "Forged or altered link", body = ErrorBody)))]
pub async fn unsubscribe(
    State(state): State<AppState>,
    Query(q): Query<UnsubscribeQuery>,
) -> Result<&'static str, ApiError> {
    let secret = state
        .link_secret
        .as_ref()
        .ok_or_else(|| ApiError::forbidden("this server signs no links"))?;
    if !links::verify(secret, &links::unsubscribe_payload(&q.i, &q.c), &q.s) {
        return Err(ApiError::forbidden("the link is not valid"));
    }
    let (namespace, value) =
        q.i.split_once(':')
            .ok_or_else(|| ApiError::field("invalid_identity", "i", "expected namespace:value"))?;
    let identity = Identity::parse(namespace, value)
        .map_err(|m| ApiError::field("invalid_identity", "i", m))?;
    let now = wall_clock_ms();
    let event = |kind: EventKind, suffix: &str| Event {
        message_id: format!(
            "unsubscribe-{}-{}-{now}-{suffix}",
            q.c,
            q.s.get(..16).unwrap_or("")
        ),
        kind,
        name: (kind == EventKind::Track).then(|| "Unsubscribed".to_owned()),
        user_id: None,
        anonymous_id: None,
        previous_id: None,
        group_id: None,
        traits: serde_json::Map::new(),
        properties: serde_json::Map::new(),
        context: serde_json::Map::new(),
        integrations: serde_json::Map::new(),
        timestamp: now,
        original_timestamp: None,
        sent_at: None,
        received_at: now,
        identities: vec![identity.clone()],
    };
    let mut identify = event(EventKind::Identify, "identify");
    identify.traits.insert(
        format!("unsubscribed_{}", q.c),
        serde_json::Value::Bool(true),
    );
    let mut track = event(EventKind::Track, "track");
    track
        .properties
        .insert("channel".into(), serde_json::Value::String(q.c.clone()));
    state.store.ingest(vec![identify, track]).await?;
    tracing::info!(channel = %q.c, "unsubscribed through a signed link");
    Ok("You are unsubscribed.\n")
}
