//! Turning a validated journey document into what the engine runs: CEL compiled once,
//! durations parsed once, node ids indexed.

use std::collections::HashMap;

use crate::expression::{Expression, FieldReads};
use waymark_core::journey::{Journey, NodeKind, Reentry, parse_duration_ms, validate};
use waymark_core::template::{JsonTemplate, Templates};
use waymark_core::time::{Millis, parse_iso8601};
use waymark_core::{FieldError, ProfileState};

/// Default instance timeout: 91 days, as AJO.
pub const DEFAULT_TIMEOUT_MS: Millis = 91 * 24 * 3600 * 1000;

#[derive(Debug, Clone, PartialEq)]
pub enum ReentryRule {
    Never,
    Always,
    After(Millis),
}

#[derive(Debug, Clone, PartialEq)]
enum Zone {
    Utc,
    Fixed(jiff::tz::TimeZone),
    /// The person's zone, else this one.
    Profile(jiff::tz::TimeZone),
}

pub struct CompiledJourney {
    pub doc: Journey,
    pub version: u32,
    pub(crate) start: usize,
    pub(crate) index: HashMap<String, usize>,
    pub(crate) entry_when: Option<Expression>,
    pub(crate) exit_when: Option<Expression>,
    pub(crate) branches: HashMap<(usize, usize), Expression>,
    pub(crate) wait_when: HashMap<usize, Expression>,
    /// Wait durations, event-wait timeouts, webhook timeouts, in-app message and placed
    /// content lifetimes,
    /// by node index.
    pub(crate) durations: HashMap<usize, Millis>,
    pub(crate) timeout_ms: Millis,
    pub(crate) reentry: ReentryRule,
    pub(crate) start_at: Option<Millis>,
    pub(crate) end_at: Option<Millis>,
    zone: Zone,
    pub(crate) templates: Templates,
    /// Webhook headers (as an object) and body, by node index.
    pub(crate) webhooks: HashMap<usize, (JsonTemplate, Option<JsonTemplate>)>,
    /// Pinned message templates, by key (partials are compiled into them).
    pub(crate) contents: HashMap<String, waymark_core::content::CompiledContent>,
    /// Whether a message node sends to an address (email, sms): only then do plans need
    /// the people's suppression list entries.
    pub(crate) addressed: bool,
    /// What the expressions read of `event`, `profile` and `journey`.
    pub(crate) reads: FieldReads,
    /// The conversion goal, if the journey has one.
    pub(crate) conversion: Option<Goal>,
    /// Winner nodes, with the time each decides: a store decides them (once, kept) when a
    /// plan that may need them runs at or after that time.
    pub winners: Vec<(String, Millis)>,
}

/// A conversion goal, compiled.
pub(crate) struct Goal {
    pub event: String,
    pub within_ms: Millis,
    pub when: Option<Expression>,
    pub revenue: Option<String>,
}

/// How long after entering a conversion counts, unless the journey says.
pub const DEFAULT_CONVERSION_WINDOW_MS: Millis = 7 * 86_400_000;

impl CompiledJourney {
    /// The time zone waits until a local time are computed in.
    pub fn zone(&self, profile: &ProfileState) -> jiff::tz::TimeZone {
        match &self.zone {
            Zone::Utc => jiff::tz::TimeZone::UTC,
            Zone::Fixed(tz) => tz.clone(),
            Zone::Profile(fallback) => zone_of(profile).unwrap_or_else(|| fallback.clone()),
        }
    }
}

/// The person's time zone: their `timezone` trait, else UTC.
pub(crate) fn person_zone(profile: &ProfileState) -> jiff::tz::TimeZone {
    zone_of(profile).unwrap_or(jiff::tz::TimeZone::UTC)
}

/// The zone the person's `timezone` trait names, if it names one.
fn zone_of(profile: &ProfileState) -> Option<jiff::tz::TimeZone> {
    profile
        .traits
        .get("timezone")
        .and_then(|v| v.as_str())
        .and_then(|name| jiff::tz::TimeZone::get(name).ok())
}

fn program(source: &str) -> Result<Expression, FieldError> {
    Expression::compile(source).map_err(|e| FieldError::new("invalid_expression", "", e))
}

fn ms(text: &str) -> Millis {
    parse_duration_ms(text).unwrap_or(0)
}

/// Validates and compiles. Every problem `validate` finds is returned.
pub fn compile(doc: Journey, version: u32) -> Result<CompiledJourney, Vec<FieldError>> {
    let problems = validate(&doc);
    if !problems.is_empty() {
        return Err(problems);
    }
    let wrap = |e: FieldError| vec![e];
    let index: HashMap<String, usize> = doc
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.id.clone(), i))
        .collect();
    let start = doc.start.as_ref().map_or(0, |s| index[s]);
    let entry_when = doc
        .entry
        .when
        .as_deref()
        .map(program)
        .transpose()
        .map_err(wrap)?;
    let exit_when = doc
        .properties
        .exit
        .as_ref()
        .and_then(|e| e.when.as_deref())
        .map(program)
        .transpose()
        .map_err(wrap)?;
    let mut branches = HashMap::new();
    let mut wait_when = HashMap::new();
    let mut durations = HashMap::new();
    let mut templates = Templates::default();
    let mut webhooks = HashMap::new();
    let template_error = |at: String, e: String| {
        vec![FieldError::new(
            "invalid_template",
            at,
            format!("does not compile: {e}"),
        )]
    };
    for (i, node) in doc.nodes.iter().enumerate() {
        if let NodeKind::Webhook { headers, body, .. } = &node.kind {
            let headers: serde_json::Map<String, serde_json::Value> = headers
                .iter()
                .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
                .collect();
            let headers = templates
                .json(&format!("{}.headers", node.id), &headers.into())
                .map_err(|(at, e)| template_error(format!("nodes[{i}].headers{at}"), e))?;
            let body = body
                .as_ref()
                .map(|b| templates.json(&format!("{}.body", node.id), b))
                .transpose()
                .map_err(|(at, e)| template_error(format!("nodes[{i}].body{at}"), e))?;
            webhooks.insert(i, (headers, body));
        }
        match &node.kind {
            NodeKind::Condition { branches: bs, .. } => {
                for (b, branch) in bs.iter().enumerate() {
                    branches.insert((i, b), program(&branch.when).map_err(wrap)?);
                }
            }
            NodeKind::Wait {
                duration, event, ..
            } => {
                if let Some(d) = duration {
                    durations.insert(i, ms(&d.0));
                }
                if let Some(e) = event {
                    durations.insert(i, ms(&e.timeout.0));
                    if let Some(when) = &e.when {
                        wait_when.insert(i, program(when).map_err(wrap)?);
                    }
                }
            }
            NodeKind::Webhook {
                timeout: Some(t), ..
            } => {
                durations.insert(i, ms(&t.0));
            }
            NodeKind::Message {
                expires: Some(e), ..
            } => {
                durations.insert(i, ms(&e.0));
            }
            _ => {}
        }
    }
    let partials = waymark_core::journey::partial_sources(&doc.templates);
    let mut contents = HashMap::new();
    for (key, pinned) in &doc.templates {
        if pinned.document.channel == "partial" {
            continue;
        }
        let compiled = waymark_core::content::compile(&pinned.document, &partials)?;
        contents.insert(key.clone(), compiled);
    }
    let p = &doc.properties;
    let reentry = match &p.reentry {
        Reentry::Never => ReentryRule::Never,
        Reentry::Always => ReentryRule::Always,
        Reentry::After { after } => ReentryRule::After(ms(&after.0)),
    };
    let zone = match p.timezone.as_deref() {
        None => Zone::Utc,
        Some("profile") => Zone::Profile(
            p.fallback_timezone
                .as_deref()
                .and_then(|name| jiff::tz::TimeZone::get(name).ok())
                .unwrap_or(jiff::tz::TimeZone::UTC),
        ),
        Some(name) => Zone::Fixed(jiff::tz::TimeZone::get(name).unwrap_or(jiff::tz::TimeZone::UTC)),
    };
    let addressed = doc.nodes.iter().any(|n| {
        matches!(&n.kind, NodeKind::Message { channel, .. }
            if waymark_core::governance::SUPPRESSIBLE.iter().any(|(c, _)| c == channel))
    });
    let conversion = match &doc.properties.conversion {
        Some(goal) => Some(Goal {
            event: goal.event.clone(),
            within_ms: goal
                .within
                .as_ref()
                .map_or(DEFAULT_CONVERSION_WINDOW_MS, |w| ms(&w.0)),
            when: goal
                .when
                .as_deref()
                .map(program)
                .transpose()
                .map_err(wrap)?,
            revenue: goal.revenue.clone(),
        }),
        None => None,
    };
    let winners = doc
        .nodes
        .iter()
        .filter_map(|n| match &n.kind {
            NodeKind::Winner { at, .. } => Some((n.id.clone(), parse_iso8601(at).unwrap_or(0))),
            _ => None,
        })
        .collect();
    let reads = FieldReads::of(
        entry_when
            .iter()
            .chain(&exit_when)
            .chain(branches.values())
            .chain(wait_when.values())
            .chain(conversion.iter().filter_map(|g| g.when.as_ref())),
    );
    Ok(CompiledJourney {
        winners,
        reads,
        conversion,
        addressed,
        timeout_ms: p.timeout.as_ref().map_or(DEFAULT_TIMEOUT_MS, |t| ms(&t.0)),
        start_at: p.start_at.as_deref().and_then(parse_iso8601),
        end_at: p.end_at.as_deref().and_then(parse_iso8601),
        reentry,
        zone,
        doc,
        version,
        start,
        index,
        entry_when,
        exit_when,
        branches,
        wait_when,
        durations,
        templates,
        webhooks,
        contents,
    })
}
