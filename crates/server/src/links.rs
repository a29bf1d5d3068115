//! Signed requests from outside: links people follow from messages, and the SMS provider's
//! inbound webhook. No API key: the signature is the credential (a link carries no URL, so
//! it cannot be turned into an open redirect).

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
    record_consent(&state, identity, &q.c, false).await?;
    tracing::info!(channel = %q.c, "unsubscribed through a signed link");
    Ok("You are unsubscribed.\n")
}

/// An event about one identity, received now (not from a Segment client).
fn event_for(identity: &Identity, kind: EventKind, message_id: String) -> Event {
    let now = wall_clock_ms();
    Event {
        message_id,
        kind,
        name: None,
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
    }
}

/// Records a consent change for an identity's profile: an identify setting
/// `unsubscribed_<channel>` and a track event `Unsubscribed` or `Subscribed` with `{channel}`.
async fn record_consent(
    state: &AppState,
    identity: Identity,
    channel: &str,
    subscribed: bool,
) -> Result<(), ApiError> {
    let id = |what: &str| format!("consent-{channel}-{identity}-{}-{what}", wall_clock_ms());
    let mut identify = event_for(&identity, EventKind::Identify, id("identify"));
    identify.traits.insert(
        format!("unsubscribed_{channel}"),
        serde_json::Value::Bool(!subscribed),
    );
    let mut track = event_for(&identity, EventKind::Track, id("track"));
    track.name = Some(
        if subscribed {
            "Subscribed"
        } else {
            "Unsubscribed"
        }
        .to_owned(),
    );
    track.properties.insert(
        "channel".into(),
        serde_json::Value::String(channel.to_owned()),
    );
    state.store.ingest(vec![identify, track]).await?;
    Ok(())
}

/// Inbound SMS settings: the provider signs with `auth_token` over `url`.
pub struct SmsInbound {
    pub auth_token: String,
    /// The full URL configured at the provider (what it signs), e.g.
    /// `https://waymark.example.com/v1/sms/inbound`.
    pub url: String,
    /// The reply to HELP.
    pub help_text: String,
}

/// Inbound SMS from a Twilio-compatible provider (form-encoded `From`, `Body`, signed with
/// `X-Twilio-Signature`). Keywords, as carriers require: STOP, STOPALL, UNSUBSCRIBE, CANCEL,
/// END, QUIT opt the sender out of SMS (`unsubscribed_sms: true`, event `Unsubscribed`);
/// START, YES, UNSTOP opt back in; HELP and INFO get the configured help text as the reply.
/// Any other message is recorded as an `SMS Received` event. Answers TwiML.
#[utoipa::path(post, path = "/v1/sms/inbound", tag = "links",
    responses((status = 200, description = "TwiML (`<Response/>`, or a reply message for HELP)"),
        (status = 403, description = "Missing or wrong signature", body = ErrorBody)))]
pub async fn sms_inbound(
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
    axum::extract::Form(params): axum::extract::Form<Vec<(String, String)>>,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    let inbound = state
        .sms_inbound
        .clone()
        .ok_or_else(|| ApiError::forbidden("inbound SMS is not configured"))?;
    let signature = headers
        .get("x-twilio-signature")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !links::verify_twilio(&inbound.auth_token, &inbound.url, &params, signature) {
        return Err(ApiError::forbidden("the request signature is not valid"));
    }
    let get = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or_default()
    };
    let from = Identity::parse("phone", get("From"))
        .map_err(|m| ApiError::field("invalid_identity", "From", m))?;
    let body = get("Body").trim();
    let keyword = body
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_ascii_uppercase();
    let twiml = |message: Option<&str>| {
        let inner = message.map_or(String::new(), |m| {
            format!("<Message>{}</Message>", xml_escape(m))
        });
        (
            [(axum::http::header::CONTENT_TYPE, "text/xml")],
            format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response>{inner}</Response>"),
        )
            .into_response()
    };
    match keyword.as_str() {
        "STOP" | "STOPALL" | "UNSUBSCRIBE" | "CANCEL" | "END" | "QUIT" => {
            record_consent(&state, from, "sms", false).await?;
            Ok(twiml(None))
        }
        "START" | "YES" | "UNSTOP" => {
            record_consent(&state, from, "sms", true).await?;
            Ok(twiml(None))
        }
        "HELP" | "INFO" => Ok(twiml(Some(&inbound.help_text))),
        _ => {
            // The provider's message id, so a webhook it retries is recorded once.
            let id = match get("MessageSid") {
                "" => format!("sms-{from}-{}", wall_clock_ms()),
                sid => format!("sms-{sid}"),
            };
            let mut received = event_for(&from, EventKind::Track, id);
            received.name = Some("SMS Received".into());
            received
                .properties
                .insert("body".into(), serde_json::Value::String(body.to_owned()));
            state.store.ingest(vec![received]).await?;
            Ok(twiml(None))
        }
    }
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
