//! Campaigns: a brand-initiated send to an audience, written as a short document and run as
//! a journey that reads the audience (`entry.on: read`). The journey is made here, from the
//! document alone, so what a campaign does is what its journey shows: a split into the
//! variants and a holdout (a path that sends nothing, to measure against), one message node
//! per variant, and the audience read at the campaign's time and pace.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::FieldError;
use crate::journey::{
    AudienceSide, Category, Conversion, DurationText, Entry, Journey, Node, NodeKind, Properties,
    Reentry, SplitPath, WinnerMetric, parse_duration_ms, valid_key,
};
use crate::schedule::Schedule;
use crate::time::{Millis, format_iso8601, parse_iso8601};

/// The node a campaign's holdout takes: it sends nothing.
pub const HOLDOUT_NODE: &str = "holdout";
/// The node every variant's message goes on to.
pub const SENT_NODE: &str = "sent";
/// The split between variants (and the holdout), when there is more than one path.
pub const SPLIT_NODE: &str = "assign";
/// The wait for each person's local send time.
pub const LOCAL_TIME_NODE: &str = "local-time";
/// Where the rest of the audience waits for the winning variant.
pub const WINNER_NODE: &str = "winner";
/// Where the content of a `code_based` campaign stays on its surface (`expires`).
pub const ON_SURFACE_NODE: &str = "on-surface";
/// How long a `code_based` campaign's content stays on its surface by default.
pub const DEFAULT_ON_SURFACE: &str = "30d";
/// The test share of a campaign with a winner, when its variants give no percents.
pub const DEFAULT_TEST_PERCENT: u32 = 20;

/// The message node of a variant.
pub fn variant_node(variant: &str) -> String {
    format!("variant-{variant}")
}

/// A campaign document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Campaign {
    /// Stable identifier: lowercase letters, digits, `-` and `_`.
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The audience sent to (any kind: streaming, snapshot, uploaded list).
    pub audience: String,
    /// Members of these audiences are left out.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
    /// `email`, `sms`, `push`, `in_app`, `direct_mail`, `code_based` or `log`.
    pub channel: String,
    /// `code_based`: the placement the content goes on, by key or surface URI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub surface: Option<String>,
    /// `code_based`: how long the content stays on the surface for each person (default
    /// 30d; stopping the campaign takes it down at once). `in_app`: how long the message
    /// stays in the inbox (default 30d).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<DurationText>,
    /// `code_based`: where journeys and campaigns place content on the same surface, the
    /// higher goes first (default 0).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub priority: i64,
    /// The template of a campaign with one variant (or give `variants`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    /// Variants with their share of the audience in percent; shares left out are split
    /// evenly over what the holdout leaves.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub variants: Vec<Variant>,
    /// Percent of the audience that gets nothing and is measured against.
    #[serde(default)]
    pub holdout: u32,
    /// `marketing` (default) or `transactional`.
    #[serde(default)]
    pub category: Category,
    /// The subscription list the messages belong to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscription: Option<String>,
    /// When to send (RFC 3339); default: at launch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send_at: Option<String>,
    /// Send again on a cron schedule in a time zone (from `send_at`, if given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<Schedule>,
    /// For a recurring campaign: who gets it again (`never` by default, `always`, or
    /// `{after: 30d}`).
    #[serde(default)]
    pub reentry: Reentry,
    /// Send at this local time (`HH:MM`) in each person's own time zone (their `timezone`
    /// trait, else `fallback_timezone`, else UTC): the audience is read at `send_at` and
    /// each person waits for the next such time where they are.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback_timezone: Option<String>,
    /// Most messages started per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<u32>,
    /// Whether launching needs a second action (`approve`) before anything is sent.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub requires_approval: bool,
    /// The goal measured per variant and against the holdout: an event within a window
    /// after the send, optionally filtered, with a revenue property.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversion: Option<Conversion>,
    /// Test the variants on a share of the audience, then send the best one to the rest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub winner: Option<WinnerRule>,
}

/// Automatic winner selection: the variants go to a test share of the audience (their
/// percents); the rest waits `after` from the send, then gets the variant with the best
/// rate on `metric`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WinnerRule {
    /// `opened` or `clicked` (per email sent; tracked email) or `converted` (per person
    /// assigned; needs `conversion`).
    pub metric: WinnerMetric,
    /// How long the test runs, from `send_at` (else the launch).
    pub after: DurationText,
    /// Percent of the audience in the test, split evenly over the variants that give no
    /// percent (default 20).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_percent: Option<u32>,
    /// The variant the rest gets when no variant beats every other with 95% confidence;
    /// without it, the variant with the best rate (ties: the first listed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inconclusive: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Variant {
    /// Lowercase letters, digits, `-` and `_`; unique in the campaign.
    pub key: String,
    pub template: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<u32>,
}

impl Campaign {
    /// The variants as (key, template, percent), shares filled in: those not given split
    /// what the holdout and the given ones leave (with a winner: what the given ones leave
    /// of the test share), evenly, the remainder to the first.
    pub fn shares(&self) -> Vec<(String, String, u32)> {
        let listed: Vec<Variant> = match (&self.template, self.variants.is_empty()) {
            (Some(template), true) => vec![Variant {
                key: "main".into(),
                template: template.clone(),
                percent: None,
            }],
            _ => self.variants.clone(),
        };
        let given = listed
            .iter()
            .filter_map(|v| v.percent)
            .fold(0u32, u32::saturating_add);
        let open = listed.iter().filter(|v| v.percent.is_none()).count() as u32;
        let left = match &self.winner {
            Some(w) => w
                .test_percent
                .unwrap_or(DEFAULT_TEST_PERCENT)
                .saturating_sub(given),
            None => 100u32.saturating_sub(self.holdout.saturating_add(given)),
        };
        let (each, mut extra) = match open {
            0 => (0, 0),
            n => (left / n, left % n),
        };
        listed
            .into_iter()
            .map(|v| {
                let percent = v.percent.unwrap_or_else(|| {
                    let p = each + extra;
                    extra = 0;
                    p
                });
                (v.key, v.template, percent)
            })
            .collect()
    }

    /// Problems with the campaign's own fields (the journey it makes is checked too,
    /// see `journey_field`).
    pub fn problems(&self) -> Vec<FieldError> {
        let mut out = Vec::new();
        let mut add = |code, field: String, message: String| {
            out.push(FieldError::new(code, field, message));
        };
        for (field, key) in [("key", &self.key), ("audience", &self.audience)] {
            if !valid_key(key) {
                add(
                    "invalid_key",
                    field.into(),
                    format!("{key:?} must be 1 to 64 characters of a-z, 0-9, - and _"),
                );
            }
        }
        match (&self.template, self.variants.is_empty()) {
            (None, true) => add(
                "missing_field",
                "template".into(),
                "a campaign sends a template, or gives variants".into(),
            ),
            (Some(_), false) => add(
                "invalid_value",
                "variants".into(),
                "give template or variants, not both".into(),
            ),
            _ => {}
        }
        let mut seen = std::collections::BTreeSet::new();
        for (i, v) in self.variants.iter().enumerate() {
            if !valid_key(&v.key) || !seen.insert(v.key.as_str()) {
                add(
                    "invalid_key",
                    format!("variants[{i}].key"),
                    format!("{:?} must be a unique key of a-z, 0-9, - and _", v.key),
                );
            }
            if v.percent == Some(0) {
                add(
                    "invalid_value",
                    format!("variants[{i}].percent"),
                    "a variant of 0 percent is never sent".into(),
                );
            }
        }
        let shares = self.shares();
        let total: u64 =
            shares.iter().map(|(_, _, p)| u64::from(*p)).sum::<u64>() + u64::from(self.holdout);
        let some_each = shares.iter().all(|(_, _, p)| *p > 0);
        match &self.winner {
            None if total != 100 || !some_each => add(
                "invalid_value",
                "variants".into(),
                format!(
                    "variants and holdout must share 100 percent, each variant some: they come to {total}"
                ),
            ),
            Some(_) if total >= 100 || !some_each => add(
                "invalid_value",
                "variants".into(),
                format!(
                    "with a winner, variants (the test) and holdout must leave some of the audience for the winner, each variant some: they come to {total}"
                ),
            ),
            _ => {}
        }
        if let Some(w) = &self.winner {
            self.winner_problems(w, &mut add);
        }
        out
    }

    fn winner_problems(&self, w: &WinnerRule, add: &mut impl FnMut(&'static str, String, String)) {
        if self.shares().len() < 2 {
            add(
                "invalid_value",
                "winner".into(),
                "a winner needs at least two variants to compare".into(),
            );
        }
        if self.schedule.is_some() {
            add(
                "invalid_value",
                "winner".into(),
                "a recurring campaign cannot pick a winner (each run would be its own test); send once".into(),
            );
        }
        if !matches!(parse_duration_ms(&w.after.0), Ok(ms) if ms > 0) {
            add(
                "invalid_value",
                "winner.after".into(),
                format!("{:?} is not a duration such as 4h or 1d", w.after.0),
            );
        }
        if w.metric == WinnerMetric::Converted && self.conversion.is_none() {
            add(
                "missing_field",
                "conversion".into(),
                "a winner on conversions needs the conversion goal".into(),
            );
        }
        if w.metric != WinnerMetric::Converted && self.channel != "email" {
            add(
                "invalid_value",
                "winner.metric".into(),
                format!(
                    "opens and clicks are tracked for email only; on {} pick the winner on converted",
                    self.channel
                ),
            );
        }
        if let Some(key) = &w.inconclusive
            && !self.variants.iter().any(|v| &v.key == key)
        {
            add(
                "invalid_value",
                "winner.inconclusive".into(),
                format!("{key:?} is not one of the variants"),
            );
        }
    }

    /// The journey that runs the campaign, before its launch (see `to_journey_launched`).
    pub fn to_journey(&self) -> Journey {
        self.to_journey_launched(None)
    }

    /// The people read per second for `rate` sends per second: the holdout (and, with a
    /// winner, the rest, sent at the winner's time) take part of each second's reading
    /// without a send, so more are read to keep the sends at `rate`.
    pub fn entry_rate(&self) -> Option<u32> {
        let rate = u64::from(self.rate?);
        let sent: u64 = self.shares().iter().map(|(_, _, p)| u64::from(*p)).sum();
        if sent == 0 {
            return self.rate;
        }
        let people = (rate * 100).div_ceil(sent.min(100));
        Some(u32::try_from(people).unwrap_or(u32::MAX))
    }

    /// When the winner's test ends: `winner.after` from `send_at`, else from the launch
    /// (before a launch, from the epoch: a placeholder the launch replaces).
    pub fn winner_at(&self, launched_at: Option<Millis>) -> Option<Millis> {
        let w = self.winner.as_ref()?;
        let from = self
            .send_at
            .as_deref()
            .and_then(parse_iso8601)
            .or(launched_at)
            .unwrap_or(0);
        Some(from.saturating_add(parse_duration_ms(&w.after.0).unwrap_or(0)))
    }

    /// The journey that runs the campaign, launched at `launched_at`. It carries the
    /// campaign document, so the journey's versions are the campaign's.
    pub fn to_journey_launched(&self, launched_at: Option<Millis>) -> Journey {
        let shares = self.shares();
        let mut nodes = Vec::new();
        let mut paths: Vec<SplitPath> = shares
            .iter()
            .map(|(key, _, percent)| SplitPath {
                percent: *percent,
                next: variant_node(key),
            })
            .collect();
        if self.holdout > 0 {
            paths.push(SplitPath {
                percent: self.holdout,
                next: HOLDOUT_NODE.into(),
            });
        }
        let tested: u32 = paths.iter().map(|p| p.percent).fold(0, u32::saturating_add);
        let winner_at = self.winner_at(launched_at);
        if winner_at.is_some() && tested < 100 {
            paths.push(SplitPath {
                percent: 100 - tested,
                next: WINNER_NODE.into(),
            });
        }
        // No paths is a campaign without variants, refused by `problems`; its journey
        // still has to be made, for the journey's own checks.
        let first = match paths.as_slice() {
            [only] => only.next.clone(),
            [] => SENT_NODE.to_owned(),
            _ => SPLIT_NODE.to_owned(),
        };
        if let Some(local) = &self.local_time {
            nodes.push(Node {
                id: LOCAL_TIME_NODE.into(),
                kind: NodeKind::Wait {
                    duration: None,
                    until: Some(local.clone()),
                    event: None,
                    next: first,
                },
            });
        }
        if paths.len() > 1 {
            nodes.push(Node {
                id: SPLIT_NODE.into(),
                kind: NodeKind::RandomSplit { paths },
            });
        }
        if let (Some(w), Some(at)) = (&self.winner, winner_at) {
            nodes.push(Node {
                id: WINNER_NODE.into(),
                kind: NodeKind::Winner {
                    paths: shares.iter().map(|(key, _, _)| variant_node(key)).collect(),
                    metric: w.metric,
                    at: format_iso8601(at),
                    inconclusive: w.inconclusive.as_deref().map(variant_node),
                },
            });
        }
        // Content placed on a surface stays while the person's instance lasts: they wait
        // there for `expires`.
        let placed = self.channel == "code_based";
        for (key, template, _) in &shares {
            nodes.push(Node {
                id: variant_node(key),
                kind: NodeKind::Message {
                    channel: self.channel.clone(),
                    template: template.clone(),
                    category: self.category,
                    subscription: self.subscription.clone(),
                    expires: (!placed).then(|| self.expires.clone()).flatten(),
                    surface: self.surface.clone(),
                    next: if placed { ON_SURFACE_NODE } else { SENT_NODE }.into(),
                },
            });
        }
        if placed {
            nodes.push(Node {
                id: ON_SURFACE_NODE.into(),
                kind: NodeKind::Wait {
                    duration: Some(
                        self.expires
                            .clone()
                            .unwrap_or_else(|| DurationText(DEFAULT_ON_SURFACE.into())),
                    ),
                    until: None,
                    event: None,
                    next: SENT_NODE.into(),
                },
            });
        }
        nodes.push(Node {
            id: SENT_NODE.into(),
            kind: NodeKind::End {},
        });
        if self.holdout > 0 {
            nodes.push(Node {
                id: HOLDOUT_NODE.into(),
                kind: NodeKind::End {},
            });
        }
        Journey {
            key: self.key.clone(),
            name: self.name.clone(),
            description: self.description.clone(),
            entry: Entry {
                event: String::new(),
                audience: Some(self.audience.clone()),
                on: Some(AudienceSide::Read),
                schedule: self.schedule.clone(),
                except: self.exclude.clone(),
                when: None,
            },
            properties: Properties {
                reentry: self.reentry.clone(),
                start_at: self.send_at.clone(),
                entry_rate_limit: self.entry_rate(),
                conversion: self.conversion.clone(),
                timezone: self.local_time.as_ref().map(|_| "profile".to_owned()),
                fallback_timezone: self.fallback_timezone.clone(),
                priority: self.priority,
                ..Properties::default()
            },
            start: None,
            nodes,
            templates: Default::default(),
            campaign: Some(json!({"document": self})),
        }
    }
}

/// Where in a campaign a problem the journey validation found lies, given its path in
/// `journey`, the journey `to_journey` made of it.
pub fn journey_field(campaign: &Campaign, journey: &Journey, field: &str) -> String {
    let rename = [
        ("entry.audience", "audience".to_owned()),
        ("entry.schedule", "schedule".to_owned()),
        ("entry.except", "exclude".to_owned()),
        ("properties.start_at", "send_at".to_owned()),
        ("properties.entry_rate_limit", "rate".to_owned()),
        ("properties.reentry", "reentry".to_owned()),
        ("properties.conversion", "conversion".to_owned()),
        ("properties.priority", "priority".to_owned()),
        (
            "properties.fallback_timezone",
            "fallback_timezone".to_owned(),
        ),
    ];
    for (from, to) in rename {
        if let Some(rest) = field.strip_prefix(from) {
            return format!("{to}{rest}");
        }
    }
    if let Some(rest) = field.strip_prefix("nodes[")
        && let Some((index, rest)) = rest.split_once(']')
        && let Some(node) = index
            .parse::<usize>()
            .ok()
            .and_then(|i| journey.nodes.get(i))
    {
        if node.id == LOCAL_TIME_NODE {
            return "local_time".into();
        }
        if node.id == WINNER_NODE {
            return "winner".into();
        }
        if node.id == ON_SURFACE_NODE {
            return "expires".into();
        }
        let Some(variant) = node.id.strip_prefix("variant-") else {
            return field.to_owned();
        };
        let rest = rest.trim_start_matches('.');
        return match rest {
            "template" => match campaign.variants.iter().position(|v| v.key == variant) {
                Some(i) => format!("variants[{i}].template"),
                None => "template".into(),
            },
            other => other.to_owned(),
        };
    }
    field.to_owned()
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

/// The share `hits` is of `n` (0 with nobody) and its 95% Wilson interval.
pub fn proportion(hits: u64, n: u64) -> (f64, [f64; 2]) {
    let (lo, hi) = rate_interval(hits, n);
    let rate = if n == 0 { 0.0 } else { hits as f64 / n as f64 };
    (rate, [lo, hi])
}

/// The 95% Wilson score interval of a rate of `hits` in `n` (a proportion's interval that
/// stays within 0..1 and behaves for small counts); `(0, 0)` with nobody.
pub fn rate_interval(hits: u64, n: u64) -> (f64, f64) {
    if n == 0 {
        return (0.0, 0.0);
    }
    let (z, n, p) = (1.96f64, n as f64, hits as f64 / n as f64);
    let scale = 1.0 + z * z / n;
    let center = (p + z * z / (2.0 * n)) / scale;
    let half = z * (p * (1.0 - p) / n + z * z / (4.0 * n * n)).sqrt() / scale;
    ((center - half).max(0.0), (center + half).min(1.0))
}

/// The probability that a variant's true rate (`hits` of `n`) is above the control's
/// (`control_hits` of `control_n`), by the normal approximation of the difference of the
/// two rates; 0.5 when either group is empty or neither varies.
pub fn chance_to_beat(hits: u64, n: u64, control_hits: u64, control_n: u64) -> f64 {
    if n == 0 || control_n == 0 {
        return 0.5;
    }
    let (p1, p0) = (
        hits as f64 / n as f64,
        control_hits as f64 / control_n as f64,
    );
    let se = (p1 * (1.0 - p1) / n as f64 + p0 * (1.0 - p0) / control_n as f64).sqrt();
    if se == 0.0 {
        return if p1 > p0 {
            1.0
        } else if p1 < p0 {
            0.0
        } else {
            0.5
        };
    }
    0.5 * (1.0 + libm::erf((p1 - p0) / se / std::f64::consts::SQRT_2))
}

/// The campaign a journey was made from, if it was.
pub fn of_journey(document: &Value) -> Option<Campaign> {
    serde_json::from_value(document.get("campaign")?.get("document")?.clone()).ok()
}

#[cfg(test)]
mod tests;
