//! An event as Waymark keeps it: one Segment message, validated, with its identities
//! extracted and its time corrected for client clock skew.

use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::{Map, Value};

use crate::Identity;
use crate::time::{Millis, format_iso8601};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    Identify,
    Track,
    Page,
    Screen,
    Group,
    Alias,
}

impl EventKind {
    pub const ALL: [EventKind; 6] = [
        EventKind::Identify,
        EventKind::Track,
        EventKind::Page,
        EventKind::Screen,
        EventKind::Group,
        EventKind::Alias,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Identify => "identify",
            EventKind::Track => "track",
            EventKind::Page => "page",
            EventKind::Screen => "screen",
            EventKind::Group => "group",
            EventKind::Alias => "alias",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == text)
    }

    /// The name journeys, counters and audiences know an event of this kind by: a track
    /// event's own name, or Segment's conventional names for the other calls.
    pub fn display_name(self, name: Option<&str>) -> &str {
        match (self, name) {
            (EventKind::Track, Some(name)) => name,
            (EventKind::Track, None) => "",
            (EventKind::Identify, _) => "Identify",
            (EventKind::Page, _) => "Page Viewed",
            (EventKind::Screen, _) => "Screen Viewed",
            (EventKind::Group, _) => "Group",
            (EventKind::Alias, _) => "Alias",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub message_id: String,
    pub kind: EventKind,
    /// `event` of a track call, `name` of a page or screen call.
    pub name: Option<String>,
    pub user_id: Option<String>,
    pub anonymous_id: Option<String>,
    /// The identity an `alias` call folds into `user_id`.
    pub previous_id: Option<String>,
    pub group_id: Option<String>,
    pub traits: Map<String, Value>,
    pub properties: Map<String, Value>,
    pub context: Map<String, Value>,
    pub integrations: Map<String, Value>,
    /// When it happened, corrected for the sender's clock skew (see `segment`).
    pub timestamp: Millis,
    pub original_timestamp: Option<Millis>,
    pub sent_at: Option<Millis>,
    pub received_at: Millis,
    /// Every identity the message names, in resolution priority order.
    pub identities: Vec<Identity>,
    /// Who sent it, which decides what it may change about a known person. Not stored.
    pub sender: Sender,
}

/// Who sent an event, as far as identity changes are concerned.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Sender {
    /// The customer's own systems (a server write key, a journey, the admin API): trusted
    /// with any identity change.
    #[default]
    Server,
    /// A web page or app, holding a key anyone can read. It may attach or move an address
    /// (email, phone, push token) onto a known person only when it proves it is that person:
    /// `verified_user_id` is the user id its user hash signs, if it sent a valid one.
    Client { verified_user_id: Option<String> },
}

impl Event {
    /// The name journeys and counters know this event by: the track event's name, or
    /// Segment's conventional names for the other calls.
    pub fn display_name(&self) -> &str {
        self.kind.display_name(self.name.as_deref())
    }

    /// The event in Segment's own JSON shape, as stored and as served back by the API.
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

/// The events a tracked email's open pixel and links record (first open of each message,
/// first click on each link), with the message's outbox key as `properties.message`.
pub const EMAIL_OPENED: &str = "Email Opened";
pub const EMAIL_LINK_CLICKED: &str = "Email Link Clicked";

/// The event a person's history records when they enter an audience.
pub const AUDIENCE_ENTERED: &str = "Audience Entered";
/// ... and when they leave one.
pub const AUDIENCE_EXITED: &str = "Audience Exited";

/// The stored `(kind, name)` pairs an event display name stands for, as a query asks for
/// them: track events by name, and the other calls by kind (`Identify`, `Page Viewed`...).
/// A track event named like a call (`Page Viewed`) counts too, as journeys see it.
pub fn stored_names(display_names: &[String]) -> (Vec<String>, Vec<&'static str>) {
    let mut track = Vec::new();
    let mut kinds = Vec::new();
    for name in display_names {
        let call = EventKind::ALL
            .into_iter()
            .find(|k| *k != EventKind::Track && k.display_name(None) == name);
        if let Some(k) = call {
            kinds.push(k.as_str());
        }
        track.push(name.clone());
    }
    (track, kinds)
}

/// The display name of a stored event, from its kind and name columns.
pub fn display_name(kind: &str, name: Option<&str>) -> String {
    EventKind::parse(kind)
        .map_or("", |k| k.display_name(name))
        .to_owned()
}

/// Serialises straight from the event's fields (no intermediate `Value`), because every
/// stored event goes through here on the write path.
impl Serialize for Event {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut out = serializer.serialize_map(None)?;
        out.serialize_entry("messageId", &self.message_id)?;
        out.serialize_entry("type", self.kind.as_str())?;
        match self.kind {
            EventKind::Track => out.serialize_entry("event", &self.name)?,
            EventKind::Page | EventKind::Screen => {
                if let Some(name) = &self.name {
                    out.serialize_entry("name", name)?;
                }
            }
            _ => {}
        }
        let optional = [
            ("userId", &self.user_id),
            ("anonymousId", &self.anonymous_id),
            ("previousId", &self.previous_id),
            ("groupId", &self.group_id),
        ];
        for (key, value) in optional {
            if let Some(value) = value {
                out.serialize_entry(key, value)?;
            }
        }
        let maps = [
            ("traits", &self.traits),
            ("properties", &self.properties),
            ("context", &self.context),
            ("integrations", &self.integrations),
        ];
        for (key, map) in maps {
            if !map.is_empty() {
                out.serialize_entry(key, map)?;
            }
        }
        out.serialize_entry("timestamp", &format_iso8601(self.timestamp))?;
        if let Some(t) = self.original_timestamp {
            out.serialize_entry("originalTimestamp", &format_iso8601(t))?;
        }
        if let Some(t) = self.sent_at {
            out.serialize_entry("sentAt", &format_iso8601(t))?;
        }
        out.serialize_entry("receivedAt", &format_iso8601(self.received_at))?;
        out.end()
    }
}
