//! The Segment HTTP Tracking API's message format, parsed into [`Event`]s.
//!
//! Rules followed (as Segment documents them):
//! - every message needs `userId` or `anonymousId` (`alias` needs `userId` and `previousId`,
//!   `group` needs `groupId`, `track` needs `event`);
//! - `messageId` deduplicates; when absent one is generated;
//! - clock-skew correction: when the message carries both an original timestamp and a
//!   `sentAt` (its own or the batch's), `timestamp = receivedAt - (sentAt - originalTimestamp)`;
//!   with only a timestamp it is taken as given; with none, `receivedAt` is used;
//! - 32 KB per message, 500 KB per batch request; a message's size counts the batch-level
//!   `context` and `integrations` it inherits, and a batch may not pass 1 MB so counted.

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::identity::Namespace;
use crate::time::{Millis, parse_iso8601};
use crate::{Event, EventKind, FieldError, Identity};

pub const MAX_EVENT_BYTES: usize = 32 * 1024;
pub const MAX_BATCH_BYTES: usize = 500 * 1024;
/// A batch's messages together, each with the batch's `context` and `integrations` merged
/// in: what a batch may become once stored, whatever it was on the wire.
pub const MAX_MERGED_BATCH_BYTES: usize = 1024 * 1024;
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
    #[serde(borrow)]
    context: Option<&'a RawValue>,
    #[serde(borrow)]
    integrations: Option<&'a RawValue>,
    #[serde(rename = "writeKey")]
    write_key: Option<Value>,
}

/// A request body read just far enough to know who sent it: the write key it carries (if
/// any) is known before a single message is parsed, so a caller can refuse an
/// unauthenticated body before spending memory on it.
pub enum Envelope<'a> {
    Batch {
        items: Vec<&'a RawValue>,
        sent_at: Option<Value>,
        context: Option<&'a RawValue>,
        integrations: Option<&'a RawValue>,
        write_key: Option<String>,
    },
    Single {
        kind: EventKind,
        object: Map<String, Value>,
        size: usize,
        write_key: Option<String>,
    },
}

impl<'a> Envelope<'a> {
    /// Reads a `/v1/batch` body's envelope; the messages stay unparsed text.
    pub fn batch(body: &'a [u8]) -> Result<Self, FieldError> {
        let envelope: BatchBody<'a> = serde_json::from_slice(body).map_err(|e| json_error(&e))?;
        let Some(items) = envelope.batch else {
            return Err(FieldError::new(
                "missing_field",
                "batch",
                "batch is required: an array of messages",
            ));
        };
        Ok(Envelope::Batch {
            items,
            sent_at: envelope.sent_at,
            context: envelope.context,
            integrations: envelope.integrations,
            write_key: optional_string(envelope.write_key, "writeKey")?,
        })
    }

    /// Reads the body of a single-message endpoint (`/v1/track`, `/v1/identify`, ...).
    pub fn single(body: &'a [u8], kind: EventKind) -> Result<Self, FieldError> {
        if body.len() > MAX_EVENT_BYTES {
            return Err(too_large(body.len()));
        }
        let mut object = object_of(
            serde_json::from_slice(body),
            "request body must be a JSON object",
        )?;
        let write_key = optional_string(object.remove("writeKey"), "writeKey")?;
        Ok(Envelope::Single {
            kind,
            object,
            size: body.len(),
            write_key,
        })
    }

    /// The write key the body carries (`writeKey`), if any.
    pub fn write_key(&self) -> Option<&str> {
        match self {
            Envelope::Batch { write_key, .. } | Envelope::Single { write_key, .. } => {
                write_key.as_deref()
            }
        }
    }

    /// The events and the write key together.
    fn parsed(self, receipt: &mut Receipt<'_>) -> Result<Parsed, FieldError> {
        let write_key = self.write_key().map(str::to_owned);
        Ok(Parsed {
            events: self.events(receipt)?,
            write_key,
        })
    }

    /// Parses and validates every message. All or nothing: the first invalid message fails
    /// the whole batch with its index, so a client can fix and resend it as it is.
    pub fn events(self, receipt: &mut Receipt<'_>) -> Result<Vec<Event>, FieldError> {
        match self {
            Envelope::Single {
                kind, object, size, ..
            } => Ok(vec![parse_object(
                object,
                size,
                Some(kind),
                &Defaults::default(),
                receipt,
            )?]),
            Envelope::Batch {
                items,
                sent_at,
                context,
                integrations,
                ..
            } => {
                let defaults = Defaults {
                    sent_at: optional_time(sent_at.as_ref(), "sentAt")?,
                    context: Shared::read(context, "context")?,
                    integrations: Shared::read(integrations, "integrations")?,
                };
                let mut events = Vec::with_capacity(items.len());
                let mut merged_bytes = 0usize;
                for (index, raw) in items.into_iter().enumerate() {
                    let (event, size) =
                        parse_raw(raw, &defaults, receipt).map_err(|e| e.at_index(index))?;
                    merged_bytes += size;
                    if merged_bytes > MAX_MERGED_BATCH_BYTES {
                        return Err(FieldError::new(
                            "batch_too_large",
                            format!("batch[{index}]"),
                            format!(
                                "the batch's messages, with the batch's context and integrations merged into each, \
                                 pass {MAX_MERGED_BATCH_BYTES} bytes (1 MB) at this message; send fewer messages per batch"
                            ),
                        ));
                    }
                    events.push(event);
                }
                Ok(events)
            }
        }
    }
}

/// Parses a `/v1/batch` body (envelope and messages together).
pub fn parse_batch(body: &[u8], receipt: &mut Receipt<'_>) -> Result<Parsed, FieldError> {
    Envelope::batch(body)?.parsed(receipt)
}

/// Parses the body of a single-message endpoint (`/v1/track`, `/v1/identify`, ...).
pub fn parse_single(
    body: &[u8],
    kind: EventKind,
    receipt: &mut Receipt<'_>,
) -> Result<Parsed, FieldError> {
    Envelope::single(body, kind)?.parsed(receipt)
}

/// A batch-level object (`context`, `integrations`) that every message inherits, with the
/// stored size of each entry, so a message's size is measured as it will be stored: with
/// the inherited entries merged in.
#[derive(Default)]
struct Shared {
    entries: Vec<(String, Value, usize)>,
}

impl Shared {
    fn read(raw: Option<&RawValue>, field: &str) -> Result<Self, FieldError> {
        let Some(raw) = raw else {
            return Ok(Self::default());
        };
        let value: Value = serde_json::from_str(raw.get()).map_err(|e| json_error(&e))?;
        let Some(map) = optional_object(Some(value), field)? else {
            return Ok(Self::default());
        };
        let entries = map
            .into_iter()
            .map(|(key, value)| {
                // `"key":value,` as serde_json writes it.
                let bytes = key.len() + 4 + serde_json::to_string(&value).map_or(0, |s| s.len());
                (key, value, bytes)
            })
            .collect();
        Ok(Self { entries })
    }

    /// Adds the entries `target` lacks.
    fn merge_into(&self, target: &mut Map<String, Value>) {
        for (key, value, _) in &self.entries {
            if !target.contains_key(key) {
                target.insert(key.clone(), value.clone());
            }
        }
    }

    /// What merging into `target` would add, without doing it.
    fn would_add(&self, target: &Map<String, Value>) -> usize {
        self.entries
            .iter()
            .filter(|(key, _, _)| !target.contains_key(key))
            .map(|(_, _, bytes)| bytes)
            .sum()
    }
}

#[derive(Default)]
struct Defaults {
    sent_at: Option<Millis>,
    context: Shared,
    integrations: Shared,
}

/// A parsed JSON value that must be an object.
fn object_of(
    parsed: serde_json::Result<Value>,
    not_an_object: &str,
) -> Result<Map<String, Value>, FieldError> {
    match parsed {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(FieldError::new("invalid_type", "", not_an_object)),
        Err(e) => Err(json_error(&e)),
    }
}

fn too_large(size: usize) -> FieldError {
    FieldError::new(
        "event_too_large",
        "",
        format!(
            "message is {size} bytes; the limit is {MAX_EVENT_BYTES} bytes (32 KB), counting the batch's context and integrations it inherits"
        ),
    )
}

/// Parses one batch item; returns the event and its size with the batch's shared objects
/// merged in.
fn parse_raw(
    raw: &RawValue,
    defaults: &Defaults,
    receipt: &mut Receipt<'_>,
) -> Result<(Event, usize), FieldError> {
    let object = object_of(
        serde_json::from_str(raw.get()),
        "each batch item must be a JSON object",
    )?;
    // Measure before merging anything: a large shared context must not be copied into
    // thousands of messages only to be refused afterwards.
    let inherited = |name: &str, shared: &Shared| match object.get(name) {
        Some(Value::Object(own)) => shared.would_add(own),
        _ => shared.would_add(&Map::new()),
    };
    let size = raw.get().len()
        + inherited("context", &defaults.context)
        + inherited("integrations", &defaults.integrations);
    let event = parse_object(object, size, None, defaults, receipt)?;
    Ok((event, size))
}

fn parse_object(
    mut m: Map<String, Value>,
    size: usize,
    endpoint_kind: Option<EventKind>,
    defaults: &Defaults,
    receipt: &mut Receipt<'_>,
) -> Result<Event, FieldError> {
    if size > MAX_EVENT_BYTES {
        return Err(too_large(size));
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
    defaults.context.merge_into(&mut context);
    let mut integrations =
        optional_object(m.remove("integrations"), "integrations")?.unwrap_or_default();
    defaults.integrations.merge_into(&mut integrations);

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

    // Every report of one display (or click) of an offer in one proposition is one message,
    // whatever id its sender gave it, so ingest keeps it once.
    let message_id = name
        .as_deref()
        .filter(|_| kind == EventKind::Track)
        .and_then(|n| crate::decisioning::feedback_message_id(n, &properties))
        .unwrap_or(message_id);
    let event = Event {
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
        sender: crate::Sender::Server,
    };
    reject_nul(&event)?;
    Ok(event)
}

/// Refuses a NUL character anywhere in a message, keys included: PostgreSQL can store it
/// neither in text nor in jsonb, and SQLite's text functions stop at it, so a message that
/// carries one could be acknowledged by one store and refused by the other.
fn reject_nul(event: &Event) -> Result<(), FieldError> {
    let nul = |field: String| {
        FieldError::new(
            "invalid_value",
            field.clone(),
            format!("{field} contains a NUL character (\\u0000), which cannot be stored"),
        )
    };
    for (field, value) in [
        ("messageId", Some(&event.message_id)),
        ("event", event.name.as_ref()),
        ("userId", event.user_id.as_ref()),
        ("anonymousId", event.anonymous_id.as_ref()),
        ("previousId", event.previous_id.as_ref()),
        ("groupId", event.group_id.as_ref()),
    ] {
        if value.is_some_and(|v| v.contains('\0')) {
            let field = if field == "event" && event.kind != EventKind::Track {
                "name"
            } else {
                field
            };
            return Err(nul(field.to_owned()));
        }
    }
    for (field, map) in [
        ("traits", &event.traits),
        ("properties", &event.properties),
        ("context", &event.context),
        ("integrations", &event.integrations),
    ] {
        if let Some(path) = nul_path(map, field) {
            return Err(nul(path));
        }
    }
    Ok(())
}

/// The path of the first key or string holding a NUL. Iterative: JSON depth is bounded by
/// the parser, but a walk over user data should not lean on that. Paths are only built
/// once a NUL is known to be there, so clean messages cost one scan.
fn nul_path(map: &Map<String, Value>, root: &str) -> Option<String> {
    let mut found = map.keys().any(|k| k.contains('\0'));
    let mut stack: Vec<&Value> = map.values().collect();
    while !found && let Some(value) = stack.pop() {
        match value {
            Value::String(s) => found = s.contains('\0'),
            Value::Array(items) => stack.extend(items),
            Value::Object(map) => {
                found = map.keys().any(|k| k.contains('\0'));
                stack.extend(map.values());
            }
            _ => {}
        }
    }
    if !found {
        return None;
    }
    // Entries of an object onto the stack, or the path of a key holding a NUL.
    fn push_entries<'v>(
        map: &'v Map<String, Value>,
        at: &str,
        paths: &mut Vec<(&'v Value, String)>,
    ) -> Option<String> {
        for (key, value) in map {
            let path = format!("{at}.{key}");
            if key.contains('\0') {
                return Some(path);
            }
            paths.push((value, path));
        }
        None
    }
    let mut paths: Vec<(&Value, String)> = Vec::new();
    if let Some(found) = push_entries(map, root, &mut paths) {
        return Some(found);
    }
    while let Some((value, path)) = paths.pop() {
        match value {
            Value::String(s) if s.contains('\0') => return Some(path),
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    paths.push((item, format!("{path}[{i}]")));
                }
            }
            Value::Object(map) => {
                if let Some(found) = push_entries(map, &path, &mut paths) {
                    return Some(found);
                }
            }
            _ => {}
        }
    }
    Some(root.to_owned())
}

/// The request field an identity of `namespace` comes from (custom ones: an entry of
/// `context.externalIds`), for parse errors and for the planner's refusals.
pub fn identity_field(namespace: &str) -> &'static str {
    match namespace {
        Namespace::USER_ID => "userId",
        Namespace::ANONYMOUS_ID => "anonymousId",
        Namespace::EMAIL => "traits.email",
        Namespace::PHONE => "traits.phone",
        Namespace::APNS_TOKEN | Namespace::FCM_TOKEN => "context.device.token",
        _ => "context.externalIds",
    }
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
        let ns = Namespace::USER_ID;
        out.push(Identity::from_field(ns, id, identity_field(ns))?);
    }
    if let Some(id) = anonymous_id {
        let ns = Namespace::ANONYMOUS_ID;
        out.push(Identity::from_field(ns, id, identity_field(ns))?);
    }
    if kind == EventKind::Alias
        && let Some(id) = previous_id
    {
        // Validated here; the resolver decides which namespace it lives in.
        Identity::from_field(Namespace::ANONYMOUS_ID, id, "previousId")?;
    }
    if kind == EventKind::Identify {
        for (trait_name, namespace) in [("email", Namespace::EMAIL), ("phone", Namespace::PHONE)] {
            let field = identity_field(namespace);
            match traits.get(trait_name) {
                None | Some(Value::Null) => {}
                Some(Value::String(s)) if s.trim().is_empty() => {}
                Some(Value::String(s)) => out.push(Identity::from_field(namespace, s, field)?),
                Some(_) => {
                    return Err(FieldError::new(
                        "invalid_type",
                        field,
                        format!("{field} must be a string"),
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
        let identity = Identity::from_field(namespace, token.trim(), identity_field(namespace))?;
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
