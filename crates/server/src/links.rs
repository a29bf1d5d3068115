//! Signed requests from outside: links people follow from messages (unsubscribe, email open
//! pixels, click redirects), and the SMS provider's inbound webhook. No API key: the
//! signature is the credential. A click redirect goes only to the URL signed into it, which
//! was a link in the message, so it cannot be turned into an open redirect.

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
    /// What to leave: a channel (`email`) or a subscription list (`list:newsletter`).
    pub c: String,
    /// The identity the message went to (`email:ada@example.com`).
    pub i: String,
    /// The link's signature.
    pub s: String,
}

/// The unsubscribe link, followed by a person (or fetched by a mail scanner): a page that
/// asks for confirmation with a button, and changes nothing. The button POSTs the same link.
#[utoipa::path(get, path = "/v1/unsubscribe", tag = "links", params(UnsubscribeQuery),
    responses((status = 200, description = "A confirmation page (HTML) whose button unsubscribes"),
        (status = 400, body = ErrorBody), (status = 403, description = "Forged or altered link", body = ErrorBody)))]
pub async fn unsubscribe_page(
    State(state): State<AppState>,
    Query(q): Query<UnsubscribeQuery>,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    verify_unsubscribe(&state, &q)?;
    let what = match q.c.strip_prefix("list:") {
        Some(list) => format!("the {list} list"),
        None => format!("{} messages", q.c),
    };
    let action = format!(
        "/v1/unsubscribe?c={}&i={}&s={}",
        query_escape(&q.c),
        query_escape(&q.i),
        query_escape(&q.s)
    );
    let page = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\">\
         <meta name=\"robots\" content=\"noindex\"><title>Unsubscribe</title></head>\
         <body style=\"font-family:sans-serif;max-width:32em;margin:3em auto\">\
         <p>Stop sending {} to {}?</p>\
         <form method=\"post\" action=\"{}\"><button type=\"submit\">Unsubscribe</button></form></body></html>",
        xml_escape(&what),
        xml_escape(q.i.split_once(':').map_or(q.i.as_str(), |(_, v)| v)),
        xml_escape(&action),
    );
    Ok((
        [
            (axum::http::header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (axum::http::header::CACHE_CONTROL, "no-store"),
        ],
        page,
    )
        .into_response())
}

/// Unsubscribes: mail clients POST `List-Unsubscribe=One-Click` (RFC 8058), and the page's
/// button POSTs the link. The address the message went to goes on the channel's suppression
/// list (reason `unsubscribed`; a list unsubscribe leaves the address alone), and the
/// identity's profile gets the trait `unsubscribed_<channel>: true` and a track event
/// `Unsubscribed` with `{channel}` (or `{list}`), once: a repeated POST changes nothing.
#[utoipa::path(post, path = "/v1/unsubscribe", tag = "links", params(UnsubscribeQuery),
    responses((status = 200, description = "Unsubscribed (plain text)"),
        (status = 400, body = ErrorBody), (status = 403, description = "Forged or altered link", body = ErrorBody)))]
pub async fn unsubscribe(
    State(state): State<AppState>,
    Query(q): Query<UnsubscribeQuery>,
) -> Result<&'static str, ApiError> {
    verify_unsubscribe(&state, &q)?;
    let identity = link_identity(&q.i)?;
    record_consent(&state, identity, &q.c, false, "unsubscribe link").await?;
    tracing::info!(channel = %q.c, "unsubscribed through a signed link");
    Ok("You are unsubscribed.\n")
}

fn verify_unsubscribe(state: &AppState, q: &UnsubscribeQuery) -> Result<(), ApiError> {
    let secret = link_secret(state)?;
    if links::verify(secret, &links::unsubscribe_payload(&q.i, &q.c), &q.s) {
        Ok(())
    } else {
        Err(ApiError::forbidden("the link is not valid"))
    }
}

fn query_escape(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// The identity a link carries (`email:ada@example.com`).
fn link_identity(text: &str) -> Result<Identity, ApiError> {
    let (namespace, value) = text
        .split_once(':')
        .ok_or_else(|| ApiError::field("invalid_identity", "i", "expected namespace:value"))?;
    Identity::parse(namespace, value).map_err(|m| ApiError::field("invalid_identity", "i", m))
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct TrackingQuery {
    /// The message (its outbox key).
    pub m: String,
    /// The journey that sent it.
    pub j: String,
    /// The identity it went to (`email:ada@example.com`).
    pub i: String,
    /// Click links only: where the link in the message pointed.
    pub u: Option<String>,
    /// The link's signature.
    pub s: String,
}

/// A transparent 1x1 GIF.
const PIXEL: &[u8] = &[
    0x47, 0x49, 0x46, 0x38, 0x39, 0x61, 0x01, 0x00, 0x01, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00,
    0xff, 0xff, 0xff, 0x21, 0xf9, 0x04, 0x01, 0x00, 0x00, 0x00, 0x00, 0x2c, 0x00, 0x00, 0x00, 0x00,
    0x01, 0x00, 0x01, 0x00, 0x00, 0x02, 0x02, 0x44, 0x01, 0x00, 0x3b,
];

/// An engagement event (`Email Opened`, `Email Link Clicked`) for the identity a tracking
/// link carries. Its message id is fixed per message (and link), so only the first open of
/// a message, and the first click on each of its links, is recorded: a journey waiting for
/// the event sees it once, and repeated loads by mail clients add nothing.
async fn record_engagement(
    state: &AppState,
    q: &TrackingQuery,
    name: &str,
    message_id: String,
    headers: &axum::http::HeaderMap,
) -> Result<(), ApiError> {
    let identity = link_identity(&q.i)?;
    let mut event = track_event(
        &identity,
        name,
        message_id,
        [
            ("message", q.m.clone().into()),
            ("journey", q.j.clone().into()),
            ("channel", "email".into()),
        ],
    );
    let props = &mut event.properties;
    if let Some(u) = &q.u {
        props.insert("url".into(), u.clone().into());
    }
    if let Some(agent) = headers
        .get(axum::http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
    {
        props.insert("user_agent".into(), agent.into());
    }
    state.store.ingest(vec![event]).await?;
    Ok(())
}

fn link_secret(state: &AppState) -> Result<&[u8], ApiError> {
    state
        .link_secret
        .as_deref()
        .map(Vec::as_slice)
        .ok_or_else(|| ApiError::forbidden("this server signs no links"))
}

/// The open pixel of an email: records `Email Opened` (first open of each message) with
/// `{message, journey, channel, user_agent}` and answers a 1x1 GIF.
#[utoipa::path(get, path = "/v1/email/open", tag = "links", params(TrackingQuery),
    responses((status = 200, description = "A 1x1 GIF"),
        (status = 400, body = ErrorBody), (status = 403, description = "Forged or altered link", body = ErrorBody)))]
pub async fn email_open(
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
    Query(q): Query<TrackingQuery>,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    if !links::verify(
        link_secret(&state)?,
        &links::open_payload(&q.m, &q.j, &q.i),
        &q.s,
    ) {
        return Err(ApiError::forbidden("the link is not valid"));
    }
    record_engagement(
        &state,
        &q,
        waymark_core::event::EMAIL_OPENED,
        format!("email-opened-{}", q.m),
        &headers,
    )
    .await?;
    Ok((
        [
            (axum::http::header::CONTENT_TYPE, "image/gif"),
            (axum::http::header::CACHE_CONTROL, "no-store, max-age=0"),
        ],
        PIXEL,
    )
        .into_response())
}

/// A tracked link of an email: records `Email Link Clicked` with `{message, journey,
/// channel, url, user_agent}` (first click on each link of each message) and redirects (302)
/// to the link's URL, which the signature covers. The person reaches the page even if the
/// event cannot be recorded right now (that is logged and counted).
#[utoipa::path(get, path = "/v1/email/click", tag = "links", params(TrackingQuery),
    responses((status = 302, description = "Redirect to the link's URL"),
        (status = 400, body = ErrorBody), (status = 403, description = "Forged or altered link", body = ErrorBody)))]
pub async fn email_click(
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
    Query(q): Query<TrackingQuery>,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    let url =
        q.u.as_deref()
            .ok_or_else(|| ApiError::field("missing_field", "u", "a click link carries its URL"))?;
    if !links::verify(
        link_secret(&state)?,
        &links::click_payload(&q.m, &q.j, &q.i, url),
        &q.s,
    ) {
        return Err(ApiError::forbidden("the link is not valid"));
    }
    let lower = url.to_ascii_lowercase();
    if !(lower.starts_with("https://") || lower.starts_with("http://")) {
        return Err(ApiError::field(
            "invalid_url",
            "u",
            "only http(s) links are tracked",
        ));
    }
    // The signature is 64 hex characters (verified above) and differs per link.
    let id = format!("email-clicked-{}-{}", q.m, &q.s[..32]);
    if let Err(e) = record_engagement(
        &state,
        &q,
        waymark_core::event::EMAIL_LINK_CLICKED,
        id,
        &headers,
    )
    .await
    {
        metrics::counter!("waymark_link_events_lost_total").increment(1);
        tracing::warn!(error = ?e, "could not record a click; redirecting anyway");
    }
    Ok((
        axum::http::StatusCode::FOUND,
        [
            (axum::http::header::LOCATION, url),
            (axum::http::header::CACHE_CONTROL, "no-store"),
        ],
    )
        .into_response())
}

/// An event about one identity, received now (not from a Segment client).
/// A track event about one identity, received now, with these properties.
pub(crate) fn track_event<'a>(
    identity: &Identity,
    name: &str,
    message_id: String,
    properties: impl IntoIterator<Item = (&'a str, serde_json::Value)>,
) -> Event {
    let mut event = event_for(identity, EventKind::Track, message_id);
    event.name = Some(name.to_owned());
    event
        .properties
        .extend(properties.into_iter().map(|(k, v)| (k.to_owned(), v)));
    event
}

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
        sender: waymark_core::Sender::Server,
    }
}

/// Records a consent change. For a channel (`email`, `sms`), the address itself: an opt-out
/// puts the address the message went to on the suppression list, so it gets nothing more
/// whoever it belongs to by then; opting back in takes off an opt-out entry (never a bounce
/// or a complaint). For the identity's profile: the trait `unsubscribed_<channel>` (or
/// `unsubscribed_list_<list>`) and a track event `Unsubscribed` or `Subscribed`, only when
/// that changes the trait, so repeated clicks or keywords record one event.
async fn record_consent(
    state: &AppState,
    identity: Identity,
    channel: &str,
    subscribed: bool,
    how: &str,
) -> Result<(), ApiError> {
    use waymark_core::governance;
    let now = wall_clock_ms();
    let address = governance::SUPPRESSIBLE
        .iter()
        .find(|(c, namespace)| *c == channel && *namespace == identity.namespace.as_str())
        .and_then(|(c, _)| governance::suppression_address(c, &identity.value).ok());
    if let Some(address) = &address {
        let entry = state.store.suppression(channel, address).await?;
        let opt_out = |e: &waymark_store::Suppression| {
            e.reason == governance::UNSUBSCRIBED || e.reason == governance::CARRIER_OPT_OUT
        };
        match entry {
            Some(e) if subscribed && e.suppressed && opt_out(&e) => {
                state.store.unsuppress(channel, address).await?;
            }
            Some(e) if !subscribed && e.suppressed => {}
            _ if !subscribed => {
                state
                    .store
                    .suppress(channel, address, governance::UNSUBSCRIBED, how, now)
                    .await?;
            }
            _ => {}
        }
    }
    // A channel (`email`), or a subscription list (`list:newsletter`).
    let (trait_name, property) = match channel.strip_prefix("list:") {
        Some(list) => (format!("unsubscribed_list_{list}"), ("list", list)),
        None => (format!("unsubscribed_{channel}"), ("channel", channel)),
    };
    let unsubscribed_now = state
        .store
        .profile(&identity)
        .await?
        .is_some_and(|p| p.traits.get(&trait_name) == Some(&serde_json::Value::Bool(true)));
    if unsubscribed_now != subscribed {
        return Ok(());
    }
    let id = |what: &str| format!("consent-{channel}-{identity}-{now}-{what}");
    let mut identify = event_for(&identity, EventKind::Identify, id("identify"));
    identify
        .traits
        .insert(trait_name, serde_json::Value::Bool(!subscribed));
    let name = if subscribed {
        "Subscribed"
    } else {
        "Unsubscribed"
    };
    let track = track_event(
        &identity,
        name,
        id("track"),
        [(property.0, property.1.into())],
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
    verify_twilio_request(&headers, &inbound.auth_token, &inbound.url, &params)?;
    let get = |name: &str| form_value(&params, name);
    let from = Identity::parse("phone", get("From"))
        .map_err(|m| ApiError::field("invalid_identity", "From", m))?;
    let body = get("Body").trim();
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
    use waymark_core::governance::{SmsKeyword, sms_keyword};
    match sms_keyword(body) {
        Some(SmsKeyword::OptOut) => {
            record_consent(&state, from, "sms", false, "SMS keyword").await?;
            Ok(twiml(None))
        }
        Some(SmsKeyword::OptIn) => {
            record_consent(&state, from, "sms", true, "SMS keyword").await?;
            Ok(twiml(None))
        }
        Some(SmsKeyword::Help) => Ok(twiml(Some(&inbound.help_text))),
        None => {
            // The provider's message id, so a webhook it retries is recorded once.
            let id = match get("MessageSid") {
                "" => format!("sms-{from}-{}", wall_clock_ms()),
                sid => format!("sms-{sid}"),
            };
            let received = track_event(&from, "SMS Received", id, [("body", body.into())]);
            state.store.ingest(vec![received]).await?;
            Ok(twiml(None))
        }
    }
}

/// Refuses a provider request without a valid `X-Twilio-Signature` over `url` and `params`.
pub(crate) fn verify_twilio_request(
    headers: &axum::http::HeaderMap,
    auth_token: &str,
    url: &str,
    params: &[(String, String)],
) -> Result<(), ApiError> {
    let signature = headers
        .get("x-twilio-signature")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if links::verify_twilio(auth_token, url, params, signature) {
        Ok(())
    } else {
        Err(ApiError::forbidden("the request signature is not valid"))
    }
}

/// A form field's value, or `""`.
pub(crate) fn form_value<'a>(params: &'a [(String, String)], name: &str) -> &'a str {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .unwrap_or_default()
}

/// Escapes text for XML and HTML, attribute values included.
fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}
