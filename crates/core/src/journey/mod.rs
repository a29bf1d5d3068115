//! Journeys as documents: the YAML or JSON a user writes, parsed into a model, and checked
//! before anything runs (`validate`). The engine that runs them comes next; this is the
//! contract it will run.

mod cel_check;
mod duration;
pub mod lifecycle;
mod validate;

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use duration::{DurationText, parse_duration_ms};
pub use validate::{MAX_WEBHOOK_TIMEOUT_MS, partial_sources, valid_key, validate};

use crate::FieldError;
use crate::time::Millis;

/// What a message is for, which decides the governance rules it is subject to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    #[default]
    Marketing,
    Transactional,
}

/// A journey document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Journey {
    /// Stable identifier: lowercase letters, digits, `-` and `_`.
    pub key: String,
    /// Human-readable name.
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    pub entry: Entry,
    #[serde(default)]
    pub properties: Properties,
    /// Id of the first node; defaults to the first node listed.
    #[serde(default)]
    pub start: Option<String>,
    pub nodes: Vec<Node>,
    /// The message templates (and partials they include) that message nodes use, by key.
    /// Publishing through the API fills this in from the templates API, pinning the newest
    /// version of each, so a published version always sends the same content.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub templates: BTreeMap<String, PinnedTemplate>,
    /// Set by the campaigns API on the journey it runs a campaign with: the campaign
    /// document (`document`) and its launch and approval (`launch_requested_at`,
    /// `approved_at`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub campaign: Option<Value>,
}

/// A template as a journey version carries it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PinnedTemplate {
    /// The template's version in the templates API (absent if written inline).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u32>,
    pub document: crate::content::ContentDoc,
}

/// What starts a person's journey: an event, entering (or leaving) an audience, or a read
/// of an audience's members (a brand-initiated send: everyone in it enters).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// Segment event name (`Signed Up`), or `Identify`, `Page Viewed`, `Screen Viewed`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub event: String,
    /// Or an audience's key: the journey starts when a person enters it (or, with
    /// `on: exit`, leaves it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
    /// With `audience`: `enter` (default), `exit`, or `read` (every member enters when the
    /// audience is read: once at `properties.start_at` or at publish, or on `schedule`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on: Option<AudienceSide>,
    /// With `on: read`: read the audience again on this cron schedule (in its time zone);
    /// who may enter again is `properties.reentry`'s rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<crate::schedule::Schedule>,
    /// With `on: read`: members of any of these audiences are left out of the read.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub except: Vec<String>,
    /// Optional CEL filter over `event` and `profile`.
    #[serde(default)]
    pub when: Option<String>,
}

/// Which audience change starts a journey.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AudienceSide {
    #[default]
    Enter,
    Exit,
    /// Every member, when the audience is read.
    Read,
}

impl Entry {
    /// The name of the events that can start the journey: the entry event, or for an
    /// audience entry `Audience Entered` / `Audience Exited`.
    /// Empty for a read entry: no event starts it.
    pub fn event_name(&self) -> &str {
        match (&self.audience, self.on.unwrap_or_default()) {
            (None, _) => &self.event,
            (Some(_), AudienceSide::Enter) => crate::event::AUDIENCE_ENTERED,
            (Some(_), AudienceSide::Exit) => crate::event::AUDIENCE_EXITED,
            (Some(_), AudienceSide::Read) => "",
        }
    }

    /// The audience whose members a read entry enters.
    pub fn read_audience(&self) -> Option<&str> {
        match self.on {
            Some(AudienceSide::Read) => self.audience.as_deref(),
            _ => None,
        }
    }

    /// Whether an event of the entry's name starts the journey (for an audience entry, it
    /// must be about that audience).
    pub fn accepts(&self, event: &crate::Event) -> bool {
        if self.read_audience().is_some() || event.display_name() != self.event_name() {
            return false;
        }
        match &self.audience {
            None => true,
            Some(key) => event.properties.get("audience").and_then(|a| a.as_str()) == Some(key),
        }
    }
}

impl Journey {
    /// When a version published at `now` first reads its audience (a read entry only): at
    /// `start_at` (or now, if that has passed), or with a schedule at its first run from
    /// then. `None` for other entries, and for a schedule that never runs.
    pub fn first_read(&self, now: Millis) -> Option<Millis> {
        self.entry.read_audience()?;
        let start = self
            .properties
            .start_at
            .as_deref()
            .and_then(crate::time::parse_iso8601)
            .map_or(now, |s| s.max(now));
        match &self.entry.schedule {
            // A run exactly at `start` counts: next_run looks strictly after its argument.
            Some(schedule) => crate::schedule::next_run(schedule, start - 1).ok(),
            None => Some(start),
        }
    }

    /// When the read after one that started at `started` runs: the schedule's next run,
    /// if it has one (and it is before `end_at`).
    pub fn next_read(&self, started: Millis) -> Option<Millis> {
        self.entry.read_audience()?;
        let next = crate::schedule::next_run(self.entry.schedule.as_ref()?, started).ok()?;
        let end = self
            .properties
            .end_at
            .as_deref()
            .and_then(crate::time::parse_iso8601);
        end.is_none_or(|e| next < e).then_some(next)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Properties {
    /// `never` (default), `always`, or `{after: 7d}`.
    #[serde(default)]
    pub reentry: Reentry,
    /// Leave the journey at any step when one of these happens.
    #[serde(default)]
    pub exit: Option<Exit>,
    /// Every instance ends after this long (default 91d).
    #[serde(default)]
    pub timeout: Option<DurationText>,
    /// `profile` (the person's `timezone` trait) or an IANA zone such as `Europe/Oslo`. Default UTC.
    #[serde(default)]
    pub timezone: Option<String>,
    /// With `timezone: profile`, the zone of people without a valid `timezone` trait
    /// (default UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback_timezone: Option<String>,
    /// No entries before this instant (RFC 3339).
    #[serde(default)]
    pub start_at: Option<String>,
    /// No entries after this instant (RFC 3339).
    #[serde(default)]
    pub end_at: Option<String>,
    /// Most entries per second; further entries are refused and counted.
    #[serde(default)]
    pub entry_rate_limit: Option<u32>,
    /// Where journeys place content on the same surface (`code_based`), the higher goes
    /// first (default 0; ties: the newest content first).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub priority: i64,
    /// The goal an entry is measured by: an event within a window after it, credited to
    /// the message node the person last reached (or, with none, the node they were at).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversion: Option<Conversion>,
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

/// A conversion goal: the first `event` (passing `when`) within `within` of entering.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Conversion {
    /// Segment event name (`Order Completed`).
    pub event: String,
    /// How long after entering an event still counts (default 7d).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub within: Option<DurationText>,
    /// Optional CEL over `event` and `profile`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<String>,
    /// The event property holding the revenue (a number), summed per node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revenue: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Reentry {
    #[default]
    Never,
    Always,
    /// Re-enter only after this long since the last entry.
    #[serde(untagged)]
    After {
        after: DurationText,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Exit {
    /// Event names that end the instance.
    #[serde(default)]
    pub events: Vec<String>,
    /// CEL over `event` and `profile`, checked at every step.
    #[serde(default)]
    pub when: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Node {
    /// Unique within the journey: lowercase letters, digits, `-` and `_`.
    pub id: String,
    #[serde(flatten)]
    pub kind: NodeKind,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum NodeKind {
    /// Ordered CEL branches; the first true one is taken, else `else`.
    Condition {
        branches: Vec<Branch>,
        #[serde(rename = "else")]
        otherwise: String,
    },
    /// Wait a duration, until a local time, or for an event (with a timeout path).
    Wait {
        #[serde(default)]
        duration: Option<DurationText>,
        /// Local time `HH:MM` in the journey's time zone: the next such time.
        #[serde(default)]
        until: Option<String>,
        #[serde(default)]
        event: Option<WaitEvent>,
        next: String,
    },
    /// Send a message on a channel with a template.
    Message {
        channel: String,
        template: String,
        /// `marketing` (default: frequency caps and quiet hours apply) or `transactional`
        /// (receipts, password resets: they do not; consent still does).
        #[serde(default)]
        category: Category,
        /// The subscription list this message belongs to (`newsletter`): people with the
        /// trait `unsubscribed_list_<list>: true` do not get it, and an email's unsubscribe
        /// link leaves this list only.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        subscription: Option<String>,
        /// `in_app`: how long the message stays in the person's inbox (default 30d).
        /// `code_based`: how long the content stays on its surface at most (by default as
        /// long as the person is in the journey).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expires: Option<DurationText>,
        /// `code_based` only: the placement the content goes on, by key or surface URI
        /// (`web://shop.example/home#hero`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        surface: Option<String>,
        next: String,
    },
    /// Call an HTTP endpoint (custom action).
    Webhook {
        #[serde(default = "default_method")]
        method: String,
        url: String,
        #[serde(default)]
        headers: BTreeMap<String, String>,
        #[serde(default)]
        body: Option<Value>,
        #[serde(default)]
        timeout: Option<DurationText>,
        #[serde(default)]
        retries: Option<u32>,
        /// Follow redirects to the same host (never to another: a redirect must not carry
        /// this call's headers elsewhere). Off by default: a redirect is then an error.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        follow_redirects: bool,
        next: String,
        /// Taken when the call still fails after its retries.
        #[serde(default)]
        on_error: Option<String>,
    },
    /// Set or unset profile traits.
    UpdateProfile {
        #[serde(default)]
        set: BTreeMap<String, Value>,
        #[serde(default)]
        unset: Vec<String>,
        next: String,
    },
    /// Percent-weighted paths (A/B tests, holdouts); percents add up to 100.
    RandomSplit {
        paths: Vec<SplitPath>,
    },
    /// The end of an A/B test: waits until `at`, then sends everyone who reaches it down
    /// the path (a message node of the test) that did best on `metric`; the decision is
    /// taken once, from the paths' counts at that moment, and kept.
    Winner {
        /// The message nodes compared (at least two).
        paths: Vec<String>,
        /// `opened` or `clicked` (per message sent) or `converted` (per person who reached
        /// the node; needs `properties.conversion`).
        metric: WinnerMetric,
        /// When the test ends (RFC 3339).
        at: String,
        /// Taken when no path beats every other with 95% confidence; without it, the path
        /// with the best rate is taken anyway (ties: the first listed).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        inconclusive: Option<String>,
    },
    /// Continue in another journey.
    Jump {
        journey: String,
    },
    End {},
}

/// What a winner is picked on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum WinnerMetric {
    /// Unique opens per message sent (tracked email).
    Opened,
    /// Unique clicks per message sent (tracked email).
    Clicked,
    /// Conversions per person who reached the path.
    Converted,
}

impl WinnerMetric {
    pub fn as_str(self) -> &'static str {
        match self {
            WinnerMetric::Opened => "opened",
            WinnerMetric::Clicked => "clicked",
            WinnerMetric::Converted => "converted",
        }
    }
}

fn default_method() -> String {
    "POST".into()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Branch {
    pub when: String,
    pub next: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WaitEvent {
    pub name: String,
    #[serde(default)]
    pub when: Option<String>,
    pub timeout: DurationText,
    /// Taken when the timeout passes first.
    pub timeout_next: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SplitPath {
    pub percent: u32,
    pub next: String,
}

impl NodeKind {
    pub fn type_name(&self) -> &'static str {
        match self {
            NodeKind::Condition { .. } => "condition",
            NodeKind::Wait { .. } => "wait",
            NodeKind::Message { .. } => "message",
            NodeKind::Webhook { .. } => "webhook",
            NodeKind::UpdateProfile { .. } => "update_profile",
            NodeKind::RandomSplit { .. } => "random_split",
            NodeKind::Winner { .. } => "winner",
            NodeKind::Jump { .. } => "jump",
            NodeKind::End {} => "end",
        }
    }

    /// Every edge out of this node, with the document path of the field that names it.
    pub fn edges(&self) -> Vec<(String, &str)> {
        match self {
            NodeKind::Condition {
                branches,
                otherwise,
            } => {
                let mut out: Vec<(String, &str)> = branches
                    .iter()
                    .enumerate()
                    .map(|(i, b)| (format!("branches[{i}].next"), b.next.as_str()))
                    .collect();
                out.push(("else".into(), otherwise.as_str()));
                out
            }
            NodeKind::Wait { event, next, .. } => {
                let mut out = vec![("next".to_owned(), next.as_str())];
                if let Some(e) = event {
                    out.push(("event.timeout_next".into(), e.timeout_next.as_str()));
                }
                out
            }
            NodeKind::Message { next, .. } | NodeKind::UpdateProfile { next, .. } => {
                vec![("next".into(), next.as_str())]
            }
            NodeKind::Webhook { next, on_error, .. } => {
                let mut out = vec![("next".to_owned(), next.as_str())];
                if let Some(e) = on_error {
                    out.push(("on_error".into(), e.as_str()));
                }
                out
            }
            NodeKind::RandomSplit { paths } => paths
                .iter()
                .enumerate()
                .map(|(i, p)| (format!("paths[{i}].next"), p.next.as_str()))
                .collect(),
            NodeKind::Winner {
                paths,
                inconclusive,
                ..
            } => {
                let mut out: Vec<(String, &str)> = paths
                    .iter()
                    .enumerate()
                    .map(|(i, p)| (format!("paths[{i}]"), p.as_str()))
                    .collect();
                if let Some(other) = inconclusive
                    && !paths.contains(other)
                {
                    out.push(("inconclusive".into(), other.as_str()));
                }
                out
            }
            NodeKind::Jump { .. } | NodeKind::End {} => Vec::new(),
        }
    }
}

/// The document formats a journey may be written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Yaml,
    Json,
}

impl Format {
    /// By file extension: `.json` is JSON, anything else YAML (a superset of JSON).
    pub fn from_path(path: &str) -> Self {
        if path.ends_with(".json") {
            Format::Json
        } else {
            Format::Yaml
        }
    }
}

/// Parses a journey document. Syntax and shape errors carry the line and column where known.
pub fn parse(text: &str, format: Format) -> Result<Journey, FieldError> {
    parse_document(text, format)
}

/// Parses any document kind (journeys, audiences) from YAML or JSON, with the path, line
/// and column of the first problem.
pub fn parse_document<T: serde::de::DeserializeOwned>(
    text: &str,
    format: Format,
) -> Result<T, FieldError> {
    match format {
        Format::Json => {
            let de = &mut serde_json::Deserializer::from_str(text);
            serde_path_to_error::deserialize(de).map_err(|e| {
                let inner = e.inner();
                FieldError::new(
                    "invalid_document",
                    e.path().to_string(),
                    format!("line {} column {}: {inner}", inner.line(), inner.column()),
                )
            })
        }
        Format::Yaml => {
            let de = serde_norway::Deserializer::from_str(text);
            serde_path_to_error::deserialize(de).map_err(|e| {
                let path = e.path().to_string();
                let path = if path == "." { String::new() } else { path };
                // serde_norway's message already names the path and the line and column.
                let message = e.into_inner().to_string();
                let message = message
                    .strip_prefix(&format!("{path}: "))
                    .map(str::to_owned)
                    .unwrap_or(message);
                FieldError::new("invalid_document", path, message)
            })
        }
    }
}

/// The JSON Schema of the journey document (also committed as `docs/journey.schema.json`).
pub fn json_schema() -> Value {
    serde_json::to_value(schemars::schema_for!(Journey)).unwrap_or(Value::Null)
}
#[cfg(test)]
mod tests;
