//! Audiences as documents: who, defined by a rule over a person's profile and behaviour.
//! The document is parsed here and everything that can be known wrong about it is checked
//! before it is stored (`validate`); the engine evaluates it (`waymark_engine::audience`).

pub mod rule;

use std::collections::{BTreeMap, BTreeSet};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use rule::{
    BehaviourCall, CalendarCall, CalendarField, EventFilter, Function, Rule, RuleError,
    profile_path,
};

pub use crate::event::{AUDIENCE_ENTERED as ENTERED, AUDIENCE_EXITED as EXITED};

pub use crate::schedule::Schedule;

use crate::FieldError;
use crate::journey::Format;

/// An audience document.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AudienceDoc {
    /// Stable identifier: lowercase letters, digits, `-` and `_`.
    pub key: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    /// CEL over `profile` and `now`, with `events.count/any/sum/last/first(…)` over the
    /// person's events and `in_audience("key")`. None for `refresh: upload`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub rule: String,
    /// How membership is kept (default `streaming`).
    #[serde(default, skip_serializing_if = "Refresh::is_streaming")]
    pub refresh: Refresh,
    /// When a `snapshot` audience is decided again for everyone, besides when it is saved
    /// and when asked (`POST /v1/audiences/{key}/run`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<Schedule>,
}

/// How an audience's membership is kept.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Refresh {
    /// Decided on every event that can change it and at the instant time flips it.
    #[default]
    Streaming,
    /// Decided for everyone at once (when saved, on demand, on its schedule); members stay
    /// as decided until the next run.
    Snapshot,
    /// Members only from uploaded lists of identities; no rule.
    Upload,
}

impl Refresh {
    pub fn is_streaming(&self) -> bool {
        *self == Refresh::Streaming
    }
}

/// The rule a document is decided by: its own, or `false` for an uploaded list (never
/// decided by a rule).
pub fn rule_text(doc: &AudienceDoc) -> &str {
    match doc.refresh {
        Refresh::Upload => "false",
        _ => &doc.rule,
    }
}

/// Parses a document (YAML or JSON). Syntax and shape errors carry the line and column.
pub fn parse(text: &str, format: Format) -> Result<AudienceDoc, FieldError> {
    crate::journey::parse_document(text, format)
}

/// What validation knows of the other audiences: their keys and the audiences each rule
/// reads, so unknown references and cycles are found before anything is stored.
pub type Catalog = BTreeMap<String, Vec<String>>;

/// Checks a parsed audience against the other audiences (`others`, without this one) and
/// the longest event history kept (`retention_ms`: a window longer than it could never be
/// filled). Returns the parsed rule, or every problem found with its path, line and column.
pub fn validate(
    doc: &AudienceDoc,
    others: &Catalog,
    retention_ms: Option<i64>,
) -> Result<Rule, Vec<FieldError>> {
    let mut problems = Vec::new();
    if !crate::journey::valid_key(&doc.key) {
        problems.push(FieldError::new(
            "invalid_key",
            "key",
            "a key is 1 to 64 of a-z, 0-9, - and _",
        ));
    }
    match (doc.refresh, doc.rule.trim().is_empty()) {
        (Refresh::Upload, false) => problems.push(FieldError::new(
            "rule_not_allowed",
            "rule",
            "an audience with refresh: upload has its members from uploads, not a rule",
        )),
        (Refresh::Streaming | Refresh::Snapshot, true) => problems.push(FieldError::new(
            "missing_field",
            "rule",
            "a rule is required (or refresh: upload for a list of members)",
        )),
        _ => {}
    }
    if let Some(schedule) = &doc.schedule {
        if doc.refresh != Refresh::Snapshot {
            problems.push(FieldError::new(
                "schedule_not_allowed",
                "schedule",
                "only a refresh: snapshot audience runs on a schedule",
            ));
        }
        if let Err(e) = crate::schedule::next_run(schedule, 0) {
            problems.push(e);
        }
    }
    let missing_rule = doc.refresh != Refresh::Upload && doc.rule.trim().is_empty();
    if missing_rule {
        return Err(problems);
    }
    let rule = match Rule::parse(rule_text(doc)) {
        Ok(rule) => rule,
        Err(errors) => {
            problems.extend(errors.into_iter().map(FieldError::from));
            return Err(problems);
        }
    };
    if let Some(retention) = retention_ms {
        for call in &rule.calls {
            if let Some(window) = call.window_ms
                && window > retention
            {
                problems.push(FieldError::new(
                    "window_too_long",
                    "rule",
                    format!(
                        "{}: the window is longer than the events kept ({} days, retention.max_event_age_days)",
                        call.text,
                        retention / 86_400_000
                    ),
                ));
            }
        }
    }
    for key in &rule.audiences {
        if *key == doc.key {
            problems.push(FieldError::new(
                "audience_cycle",
                "rule",
                format!("in_audience({key:?}): an audience cannot contain itself"),
            ));
        } else if !others.contains_key(key) {
            problems.push(FieldError::new(
                "unknown_audience",
                "rule",
                format!("in_audience({key:?}): there is no audience {key:?}"),
            ));
        }
    }
    if let Some(path) = cycle_through(&doc.key, &rule.audiences, others) {
        problems.push(FieldError::new(
            "audience_cycle",
            "rule",
            format!(
                "audiences would read each other in a loop: {}",
                path.join(" → ")
            ),
        ));
    }
    if problems.is_empty() {
        Ok(rule)
    } else {
        Err(problems)
    }
}

/// A path back to `key` through the audiences it reads, if there is one (iterative, with
/// one predecessor kept per audience, so a long chain costs neither stack nor quadratic
/// copies).
fn cycle_through(key: &str, reads: &[String], others: &Catalog) -> Option<Vec<String>> {
    let mut came_from: BTreeMap<&str, &str> = BTreeMap::new();
    let mut stack: Vec<&str> = Vec::new();
    for r in reads.iter().filter(|r| *r != key) {
        if !came_from.contains_key(r.as_str()) {
            came_from.insert(r, key);
            stack.push(r);
        }
    }
    while let Some(at) = stack.pop() {
        for next in others.get(at).into_iter().flatten() {
            if next == key {
                let mut back = Vec::new();
                let mut step = at;
                while step != key {
                    back.push(step.to_owned());
                    step = came_from.get(step).copied().unwrap_or(key);
                }
                back.reverse();
                let mut path = vec![key.to_owned()];
                path.extend(back);
                path.push(key.to_owned());
                return Some(path);
            }
            if !came_from.contains_key(next.as_str()) {
                came_from.insert(next, at);
                stack.push(next);
            }
        }
    }
    None
}

/// The order to evaluate audiences in so each one's `in_audience` references are decided
/// before it: dependencies first. Audiences in a cycle (refused at save, so only from a
/// damaged store) are left out.
pub fn evaluation_order(catalog: &Catalog) -> Vec<String> {
    let mut order = Vec::with_capacity(catalog.len());
    let mut placed = BTreeSet::new();
    // Kahn's algorithm over the keys, repeated until nothing more can be placed.
    loop {
        let mut progress = false;
        for (key, reads) in catalog {
            if placed.contains(key) {
                continue;
            }
            if reads
                .iter()
                .all(|r| placed.contains(r) || !catalog.contains_key(r))
            {
                placed.insert(key.clone());
                order.push(key.clone());
                progress = true;
            }
        }
        if !progress {
            return order;
        }
    }
}

#[cfg(test)]
mod tests;
