//! The Segment HTTP Tracking API's message format, parsed into [`Event`]s.
//!
//! Rules followed (as Segment documents them):
//! - every message needs `userId` or `anonymousId` (`alias` needs `userId` and `previousId`,
//!   `group` needs `groupId`, `track` needs `event`);
//! - `messageId` deduplicates; when absent one is generated;
//! - clock-skew correction: when the message carries both an original timestamp and a
//!   `sentAt` (its own or the batch's), `timestamp = receivedAt - (sentAt - originalTimestamp)`;
//!   with only a timestamp it is taken as given; with none, `receivedAt` is used;
//! - 32 KB per message, 500 KB per batch request.

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::identity::Namespace;
use crate::time::{Millis, parse_iso8601};
use crate::{Event, EventKind, FieldError, Identity};

pub const MAX_EVENT_BYTES: usize = 32 * 1024;
pub const MAX_BATCH_BYTES: usize = 500 * 1024;
pub const MAX_MESSAGE_ID_LEN: usize = 256;
pub const MAX_EVENT_NAME_LEN: usize = 256;

/// What the server knows about a request when it arrives.
pub struct Receipt<'a> {
    pub received_at: Millis,
    /// Makes a `messageId` for messages that lack one.
    pub new_message_id: &'a mut dyn FnMut() -> String,
}

/// A parsed request body: its events and, if the sender put it there, the write key.
#[derive(Debug)]
pub struct Parsed {
    pub events: Vec<Event>,
    pub write_key: Option<String>,
}

fn json_error(err: &serde_json::Error) -> FieldError {
    FieldError::new(
        "invalid_json",
        "",
        format!("request body is not valid JSON: {err}"),
    )
}

#[derive(Deserialize)]
struct BatchBody<'a> {
    #[serde(borrow)]
    batch: Option<Vec<&'a RawValue>>,
    #[serde(rename = "sentAt")]
    sent_at: Option<Value>,
    context: Option<Value>,
    integrations: Option<Value>,
    #[serde(rename = "writeKey")]
    write_key: Option<Value>,
}

/// Parses a `/v1/batch` body. All or nothing: the first invalid message fails the whole
/// batch with its index, so a client can fix and resend it as it is.
pub fn parse_batch(body: &[u8], receipt: &mut Receipt<'_>) -> Result<Parsed, FieldError> {
    let envelope: BatchBody<'_> = serde_json::from_slice(body).map_err(|e| json_error(&e))?;
    let Some(items) = envelope.batch else {
        return Err(FieldError::new(
            "missing_field",
            "batch",
            "batch is required: an array of messages",
        ));
    };
    let batch_sent_at = optional_time(envelope.sent_at.as_ref(), "sentAt")?;
    let batch_context = optional_object(envelope.context, "context")?;
    let batch_integrations = optional_object(envelope.integrations, "integrations")?;
    let write_key = optional_string(envelope.write_key, "writeKey")?;
    let defaults = Defaults {
        sent_at: batch_sent_at,
        context: batch_context.as_ref(),
        integrations: batch_integrations.as_ref(),
    };
    let mut events = Vec::with_capacity(items.len());
    for (index, raw) in items.into_iter().enumerate() {
        let event = parse_raw(raw, None, &defaults, receipt).map_err(|e| e.at_index(index))?;
        events.push(event);
    }
    Ok(Parsed { events, write_key })
}

/// Parses the body of a single-message endpoint (`/v1/track`, `/v1/identify`, ...).
pub fn parse_single(
    body: &[u8],
    kind: EventKind,
    receipt: &mut Receipt<'_>,
) -> Result<Parsed, FieldError> {
    let raw: &RawValue = serde_json::from_slice(body).map_err(|e| json_error(&e))?;
    let mut object = match serde_json::from_str::<Value>(raw.get()) {
        Ok(Value::Object(map)) => map,
        Ok(_) => {
            return Err(FieldError::new(
                "invalid_type",
                "",
                "request body must be a JSON object",
            ));
        }
        Err(e) => return Err(json_error(&e)),
    };
    let write_key = optional_string(object.remove("writeKey"), "writeKey")?;
    let event = parse_object(
        object,
        raw.get().len(),
        Some(kind),
        &Defaults::default(),
        receipt,
    )?;
    Ok(Parsed {
        events: vec![event],
        write_key,
    })
}

#[derive(Default)]
struct Defaults<'a> {
    sent_at: Option<Millis>,
    context: Option<&'a Map<String, Value>>,
    integrations: Option<&'a Map<String, Value>>,
}

fn parse_raw(
    raw: &RawValue,
    kind: Option<EventKind>,
    defaults: &Defaults<'_>,
    receipt: &mut Receipt<'_>,
) -> Result<Event, FieldError> {
    let object = match serde_json::from_str::<Value>(raw.get()) {
        Ok(Value::Object(map)) => map,
        Ok(_) => {
            return Err(FieldError::new(
                "invalid_type",
                "",
                "each batch item must be a JSON object",
            ));
        }
        Err(e) => return Err(json_error(&e)),
    };
    parse_object(object, raw.get().len(), kind, defaults, receipt)
}

fn parse_object(
    mut m: Map<String, Value>,
    size: usize,
    endpoint_kind: Option<EventKind>,
    defaults: &Defaults<'_>,
    receipt: &mut Receipt<'_>,
) -> Result<Event, FieldError> {
    if size > MAX_EVENT_BYTES {
        return Err(FieldError::new(
            "event_too_large",
            "",
            format!("message is {size} bytes; the limit is {MAX_EVENT_BYTES} bytes (32 KB)"),
        ));
    }
    let declared = optional_string(m.remove("type"), "type")?;
    let kind = match (endpoint_kind, declared.as_deref()) {
        (Some(kind), None) => kind,
        (Some(kind), Some(t)) if t == kind.as_str() => kind,
        (Some(kind), Some(t)) => {
            return Err(FieldError::new(
                "invalid_value",
                "type",
                format!("type {t:?} sent to the /v1/{} endpoint", kind.as_str()),
            ));
        }
        (None, Some(t)) => EventKind::parse(t).ok_or_else(|| {
            FieldError::new(
                "invalid_value",
                "type",
                format!(
                    "unknown type {t:?}; expected identify, track, page, screen, group or alias"
                ),
            )
        })?,
        (None, None) => {
            return Err(FieldError::new(
                "missing_field",
                "type",
                "type is required for batch items",
            ));
        }
    };

    let user_id = id_like(m.remove("userId"), "userId")?;
    let anonymous_id = id_like(m.remove("anonymousId"), "anonymousId")?;
    let previous_id = id_like(m.remove("previousId"), "previousId")?;
    let group_id = id_like(m.remove("groupId"), "groupId")?;
    let message_id = match optional_string(m.remove("messageId"), "messageId")? {
        Some(id) if id.is_empty() => {
            return Err(FieldError::new(
                "invalid_value",
                "messageId",
                "messageId must not be empty",
            ));
        }
        Some(id) if id.len() > MAX_MESSAGE_ID_LEN => {
            return Err(FieldError::new(
                "invalid_value",
                "messageId",
                format!("messageId is longer than {MAX_MESSAGE_ID_LEN} bytes"),
            ));
        }
        Some(id) => id,
        None => (receipt.new_message_id)(),
    };

    let name = match kind {
        EventKind::Track => match optional_string(m.remove("event"), "event")? {
            Some(name) if !name.trim().is_empty() => Some(name),
            Some(_) => {
                return Err(FieldError::new(
                    "invalid_value",
                    "event",
                    "event must not be empty",
                ));
            }
            None => {
                return Err(FieldError::new(
                    "missing_field",
                    "event",
                    "track calls need an event name",
                ));
            }
        },
        EventKind::Page | EventKind::Screen => optional_string(m.remove("name"), "name")?,
        _ => None,
    };
    if let Some(name) = &name
        && name.len() > MAX_EVENT_NAME_LEN
    {
        let field = if kind == EventKind::Track {
            "event"
        } else {
            "name"
        };
        return Err(FieldError::new(
            "invalid_value",
            field,
            format!("{field} is longer than {MAX_EVENT_NAME_LEN} bytes"),
        ));
    }

    match kind {
        EventKind::Alias => {
            if user_id.is_none() {
                return Err(FieldError::new(
                    "missing_field",
                    "userId",
                    "alias calls need userId",
                ));
            }
            if previous_id.is_none() {
                return Err(FieldError::new(
                    "missing_field",
                    "previousId",
                    "alias calls need previousId",
                ));
            }
        }
        _ if user_id.is_none() && anonymous_id.is_none() => {
            return Err(FieldError::new(
                "missing_field",
                "userId",
                "either userId or anonymousId is required",
            ));
        }
        EventKind::Group if group_id.is_none() => {
            return Err(FieldError::new(
                "missing_field",
                "groupId",
                "group calls need groupId",
            ));
        }
        _ => {}
    }

    let traits = optional_object(m.remove("traits"), "traits")?.unwrap_or_default();
    let properties = optional_object(m.remove("properties"), "properties")?.unwrap_or_default();
    let mut context = optional_object(m.remove("context"), "context")?.unwrap_or_default();
    if let Some(batch_context) = defaults.context {
        for (key, value) in batch_context {
            context.entry(key.clone()).or_insert_with(|| value.clone());
        }
    }
    let mut integrations =
        optional_object(m.remove("integrations"), "integrations")?.unwrap_or_default();
    if let Some(batch_integrations) = defaults.integrations {
        for (key, value) in batch_integrations {
            integrations
                .entry(key.clone())
                .or_insert_with(|| value.clone());
        }
    }

    let original = match optional_time(m.get("originalTimestamp"), "originalTimestamp")? {
        Some(t) => Some(t),
        None => optional_time(m.get("timestamp"), "timestamp")?,
    };
    let sent_at = optional_time(m.get("sentAt"), "sentAt")?.or(defaults.sent_at);
    let received_at = receipt.received_at;
    let timestamp = match (original, sent_at) {
        (Some(original), Some(sent)) => received_at - (sent - original),
        (Some(original), None) => original,
        (None, _) => received_at,
    };

    let identities = identities_of(
        kind,
        user_id.as_deref(),
        anonymous_id.as_deref(),
        previous_id.as_deref(),
        &traits,
        &context,
    )?;

    Ok(Event {
        message_id,
        kind,
        name,
        user_id,
        anonymous_id,
        previous_id,
        group_id,
        traits,
        properties,
        context,
        integrations,
        timestamp,
        original_timestamp: original,
        sent_at,
        received_at,
        identities,
    })
}

/// The identities a message names, most specific first: `userId`, then `anonymousId`, then
/// (on identify) the `email` and `phone` traits, then `context.externalIds` (Segment's
/// convention for custom identifiers: `[{"type": "crm_id", "id": "C-1"}]`).
fn identities_of(
    kind: EventKind,
    user_id: Option<&str>,
    anonymous_id: Option<&str>,
    previous_id: Option<&str>,
    traits: &Map<String, Value>,
    context: &Map<String, Value>,
) -> Result<Vec<Identity>, FieldError> {
    let mut out = Vec::new();
    if let Some(id) = user_id {
        out.push(Identity::from_field(Namespace::USER_ID, id, "userId")?);
    }
    if let Some(id) = anonymous_id {
        out.push(Identity::from_field(
            Namespace::ANONYMOUS_ID,
            id,
            "anonymousId",
        )?);
    }
    if kind == EventKind::Alias
        && let Some(id) = previous_id
    {
        // Validated here; the resolver decides which namespace it lives in.
        Identity::from_field(Namespace::ANONYMOUS_ID, id, "previousId")?;
    }
    if kind == EventKind::Identify {
        for (trait_name, namespace) in [("email", Namespace::EMAIL), ("phone", Namespace::PHONE)] {
            match traits.get(trait_name) {
                None | Some(Value::Null) => {}
                Some(Value::String(s)) if s.trim().is_empty() => {}
                Some(Value::String(s)) => out.push(Identity::from_field(
                    namespace,
                    s,
                    &format!("traits.{trait_name}"),
                )?),
                Some(_) => {
                    return Err(FieldError::new(
                        "invalid_type",
                        format!("traits.{trait_name}"),
                        format!("traits.{trait_name} must be a string"),
                    ));
                }
            }
        }
    }
    // A push token (Segment's `context.device.token`): an identity in `apns_token` for iOS
    // devices, `fcm_token` for the rest (Android and web push go through FCM).
    if let Some(Value::Object(device)) = context.get("device")
        && let Some(Value::String(token)) = device.get("token")
        && !token.trim().is_empty()
    {
        let ios = device
            .get("type")
            .and_then(Value::as_str)
            .is_some_and(|t| t.eq_ignore_ascii_case("ios"));
        let namespace = if ios {
            Namespace::APNS_TOKEN
        } else {
            Namespace::FCM_TOKEN
        };
        let identity = Identity::from_field(namespace, token.trim(), "context.device.token")?;
        if !out.contains(&identity) {
            out.push(identity);
        }
    }
    match context.get("externalIds") {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                let field = format!("context.externalIds[{i}]");
                let (Some(ns), Some(id)) = (
                    item.get("type").and_then(Value::as_str),
                    item.get("id").and_then(Value::as_str),
                ) else {
                    return Err(FieldError::new(
                        "invalid_value",
                        field,
                        "each external id needs string fields type and id",
                    ));
                };
                let identity = Identity::parse(ns, id)
                    .map_err(|m| FieldError::new("invalid_value", field, m))?;
                if !out.contains(&identity) {
                    out.push(identity);
                }
            }
        }
        Some(_) => {
            return Err(FieldError::new(
                "invalid_type",
                "context.externalIds",
                "context.externalIds must be an array",
            ));
        }
    }
    Ok(out)
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn optional_string(value: Option<Value>, field: &str) -> Result<Option<String>, FieldError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(FieldError::new(
            "invalid_type",
            field,
            format!("{field} must be a string, not {}", type_name(&other)),
        )),
    }
}

/// `userId` and friends: strings, or numbers (some clients send numeric ids), never empty.
fn id_like(value: Option<Value>, field: &str) -> Result<Option<String>, FieldError> {
    let text = match value {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(s)) => s,
        Some(Value::Number(n)) => n.to_string(),
        Some(other) => {
            return Err(FieldError::new(
                "invalid_type",
                field,
                format!("{field} must be a string, not {}", type_name(&other)),
            ));
        }
    };
    if text.is_empty() {
        return Err(FieldError::new(
            "invalid_value",
            field,
            format!("{field} must not be empty"),
        ));
    }
    if text.len() > crate::identity::MAX_IDENTITY_VALUE_LEN {
        return Err(FieldError::new(
            "invalid_value",
            field,
            format!(
                "{field} is longer than {} bytes",
                crate::identity::MAX_IDENTITY_VALUE_LEN
            ),
        ));
    }
    Ok(Some(text))
}

fn optional_object(
    value: Option<Value>,
    field: &str,
) -> Result<Option<Map<String, Value>>, FieldError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(m)) => Ok(Some(m)),
        Some(other) => Err(FieldError::new(
            "invalid_type",
            field,
            format!("{field} must be an object, not {}", type_name(&other)),
        )),
    }
}

fn optional_time(value: Option<&Value>, field: &str) -> Result<Option<Millis>, FieldError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => parse_iso8601(s).map(Some).ok_or_else(|| {
            FieldError::new("invalid_value", field, format!("{field} {s:?} is not an ISO 8601 date-time with an offset, e.g. 2026-11-29T10:15:30.123Z"))
        }),
        Some(other) => Err(FieldError::new("invalid_type", field, format!("{field} must be an ISO 8601 string, not {}", type_name(other)))),
    }
}

#[cfg(test)]
mod tests;
