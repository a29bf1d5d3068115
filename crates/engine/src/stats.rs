//! Per-node counts for one journey, kept as counters that each transaction changes by the
//! difference its states made ([`count_change`]), so reading them never scans instances.
//! Counters also outlive the finished instances a state drops (`KEEP_FINISHED_INSTANCES`).

use std::collections::BTreeMap;

use serde::Serialize;

use crate::{Instance, JourneyState, Status, StepKind, Waiting};

#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct NodeStats {
    /// Times an instance reached the node.
    pub entered: u64,
    /// Active instances at the node now (waiting on a timer, an event or a webhook).
    pub waiting: u64,
    /// Times an instance went on from the node.
    pub passed: u64,
    /// Errors recorded at the node (failed expressions, failed webhooks).
    pub errored: u64,
    /// Messages from the node held for later (quiet hours) when they were decided.
    pub held: u64,
    /// Messages from the node not sent (suppression list, unsubscribed, frequency caps).
    pub suppressed: u64,
    /// Instances that ended at the node without completing (exited, timed out, failed, stopped).
    pub exited: u64,
    /// Conversions credited to the node, and the revenue they brought in hundredths of
    /// the event's unit (counters are integers).
    pub converted: u64,
    pub revenue_cents: i64,
    /// Emails from the node opened, and clicked, once per message each.
    pub opened: u64,
    pub clicked: u64,
    /// Messages from the node the provider reported delivered, undelivered, bounced, or
    /// complained about (spam), once per message each.
    pub delivered: u64,
    pub undelivered: u64,
    pub bounced: u64,
    pub complained: u64,
}

#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct JourneyStats {
    pub instances: u64,
    pub active: u64,
    pub completed: u64,
    pub exited: u64,
    pub timed_out: u64,
    pub failed: u64,
    /// Entries refused by the journey's entry rate limit.
    pub rate_limited: u64,
    pub nodes: BTreeMap<String, NodeStats>,
}

/// Counter changes: (journey key, node id or `""` for the journey as a whole, counter) →
/// amount to add. Ordered, so backends update counter rows in one order (no deadlocks).
pub type Counts = BTreeMap<(String, String, String), i64>;

/// The node-level counter a journey node name cannot be: journey totals use it.
pub const JOURNEY: &str = "";

fn add(c: &mut Counts, journey: &str, node: &str, name: &str, n: i64) {
    if n != 0 {
        *c.entry((journey.to_owned(), node.to_owned(), name.to_owned()))
            .or_default() += n;
    }
}

fn status_counter(s: Status) -> &'static str {
    match s {
        Status::Active => "active",
        Status::Completed => "completed",
        Status::Exited => "exited",
        Status::TimedOut => "timed_out",
        Status::Failed => "failed",
    }
}

/// What counting a change and noticing one need of an instance as it was before an input:
/// its scalar fields and how long its history was. A plan keeps these instead of a clone of
/// each state it touches (whose context and history are most of its size). Every change
/// the engine makes to an instance appends a step or changes one of these fields.
#[derive(Debug, Clone, PartialEq)]
pub struct Mark {
    pub number: u32,
    pub status: Status,
    pub node: Option<String>,
    pub waiting: Option<Waiting>,
    pub ended_at: Option<waymark_core::time::Millis>,
    pub steps: usize,
    pub last_timer: u64,
    pub deadline_pending: bool,
}

impl Mark {
    pub fn of(i: &Instance) -> Self {
        Self {
            number: i.number,
            status: i.status,
            node: i.node.clone(),
            waiting: i.waiting.clone(),
            ended_at: i.ended_at,
            steps: i.steps.len(),
            last_timer: i.last_timer,
            deadline_pending: i.deadline_pending,
        }
    }
}

/// The marks of every instance of a state, oldest first.
pub fn marks(state: &JourneyState) -> Vec<Mark> {
    state.instances.iter().map(Mark::of).collect()
}

/// Whether `state` is still what `before` marked.
pub fn unchanged(before: &[Mark], state: &JourneyState) -> bool {
    before.len() == state.instances.len()
        && before.iter().zip(&state.instances).all(|(m, i)| {
            m.number == i.number
                && m.status == i.status
                && m.node == i.node
                && m.waiting == i.waiting
                && m.ended_at == i.ended_at
                && m.steps == i.steps.len()
                && m.last_timer == i.last_timer
                && m.deadline_pending == i.deadline_pending
        })
}

/// Where an instance counts as "still here": waiting at its node while active, or exited
/// there if it ended without completing.
fn resting(status: Status, node: Option<&str>) -> Option<(&str, &'static str)> {
    let node = node?;
    match status {
        Status::Active => Some((node, "waiting")),
        Status::Exited | Status::TimedOut | Status::Failed => Some((node, "exited")),
        Status::Completed => None,
    }
}

/// Adds to `c` what one instance's change did. `after = None` means the instance is gone:
/// dropped as an old finished one (nothing changes) or erased with its person (it no longer
/// counts as active or waiting; what it did before still counts).
pub fn count_change(
    c: &mut Counts,
    journey: &str,
    before: Option<&Mark>,
    after: Option<&Instance>,
) {
    let Some(after) = after else {
        if let Some(b) = before.filter(|b| b.status == Status::Active) {
            add(c, journey, JOURNEY, "active", -1);
            if let Some((node, "waiting")) = resting(b.status, b.node.as_deref()) {
                add(c, journey, node, "waiting", -1);
            }
        }
        return;
    };
    match before {
        None => add(c, journey, JOURNEY, "instances", 1),
        Some(b) => {
            add(c, journey, JOURNEY, status_counter(b.status), -1);
            if let Some((node, name)) = resting(b.status, b.node.as_deref()) {
                add(c, journey, node, name, -1);
            }
        }
    }
    add(c, journey, JOURNEY, status_counter(after.status), 1);
    if let Some((node, name)) = resting(after.status, after.node.as_deref()) {
        add(c, journey, node, name, 1);
    }
    let seen = before.map_or(0, |b| b.steps);
    for step in after.steps.iter().skip(seen) {
        let counter = match step.what {
            StepKind::Entered => "entered",
            StepKind::Error => "errored",
            StepKind::Held => "held",
            StepKind::Suppressed => "suppressed",
            StepKind::Opened => "opened",
            StepKind::Clicked => "clicked",
            StepKind::Converted => {
                // Counters are integers: revenue is kept in hundredths.
                let cents = step
                    .detail
                    .as_ref()
                    .and_then(|d| d["revenue"].as_f64())
                    .map_or(0, |r| (r * 100.0).round() as i64);
                add(c, journey, &step.node, "revenue_cents", cents);
                "converted"
            }
            _ => continue,
        };
        add(c, journey, &step.node, counter, 1);
    }
}

/// Adds to `c` what a person's state change in one journey did (`after = None`: erased).
pub fn count_state_change(
    c: &mut Counts,
    journey: &str,
    before: Option<&JourneyState>,
    after: Option<&JourneyState>,
) {
    count_marked_change(c, journey, &before.map(marks).unwrap_or_default(), after);
}

/// [`count_state_change`] from the marks of the state before.
pub fn count_marked_change(
    c: &mut Counts,
    journey: &str,
    before_instances: &[Mark],
    after: Option<&JourneyState>,
) {
    let after_instances = after.map_or(&[][..], |s| &s.instances[..]);
    for a in after_instances {
        let b = before_instances.iter().find(|b| b.number == a.number);
        count_change(c, journey, b, Some(a));
    }
    for b in before_instances {
        if !after_instances.iter().any(|a| a.number == b.number) {
            count_change(c, journey, Some(b), None);
        }
    }
}

/// Node counters that are also kept per hour (a journey's time series): those that only
/// count things happening. An erasure takes a person out of the totals, not out of the
/// hours already counted.
pub const SERIES: &[&str] = &[
    "entered",
    "held",
    "suppressed",
    "converted",
    "revenue_cents",
    "opened",
    "clicked",
    "delivered",
    "undelivered",
    "bounced",
    "complained",
];

/// The counter changes of a transaction that go into the hour starting at `hour`: the
/// increases of node counters named in [`SERIES`].
pub fn series_counts(counts: &Counts) -> impl Iterator<Item = (&str, &str, &str, i64)> {
    counts.iter().filter_map(|((journey, node, name), value)| {
        (node != JOURNEY && *value > 0 && SERIES.contains(&name.as_str())).then_some((
            journey.as_str(),
            node.as_str(),
            name.as_str(),
            *value,
        ))
    })
}

/// The start of the hour `at` falls in.
pub fn hour_of(at: waymark_core::time::Millis) -> waymark_core::time::Millis {
    at - at.rem_euclid(3_600_000)
}

/// Counts a provider's report on a message the node sent (first report of its status for
/// that message only: the caller records each (message, status) once).
pub fn count_message_report(c: &mut Counts, journey: &str, node: &str, status: &str) {
    if waymark_core::delivery::REPORTS.contains(&status) {
        add(c, journey, node, status, 1);
    }
}

/// Records entries refused by the rate limit.
pub fn count_rate_limited(c: &mut Counts, journey: &str, n: i64) {
    add(c, journey, JOURNEY, "rate_limited", n);
}

/// Reads stored counters (node, counter, value) back as stats.
pub fn from_counters<'a>(rows: impl IntoIterator<Item = (&'a str, &'a str, i64)>) -> JourneyStats {
    let mut s = JourneyStats::default();
    for (node, name, value) in rows {
        let v = value.max(0) as u64;
        if node == JOURNEY {
            match name {
                "instances" => s.instances += v,
                "active" => s.active += v,
                "completed" => s.completed += v,
                "exited" => s.exited += v,
                "timed_out" => s.timed_out += v,
                "failed" => s.failed += v,
                "rate_limited" => s.rate_limited += v,
                _ => {}
            }
            continue;
        }
        let n = s.nodes.entry(node.to_owned()).or_default();
        match name {
            "entered" => n.entered += v,
            "waiting" => n.waiting += v,
            "errored" => n.errored += v,
            "held" => n.held += v,
            "suppressed" => n.suppressed += v,
            "exited" => n.exited += v,
            "converted" => n.converted += v,
            "opened" => n.opened += v,
            "clicked" => n.clicked += v,
            "delivered" => n.delivered += v,
            "undelivered" => n.undelivered += v,
            "bounced" => n.bounced += v,
            "complained" => n.complained += v,
            // Negative revenue (refunds recorded as conversions) is kept.
            "revenue_cents" => n.revenue_cents += value,
            _ => {}
        }
    }
    for node in s.nodes.values_mut() {
        // A completed instance's last node ("end", "jump") counts as passed.
        node.passed = node.entered.saturating_sub(node.waiting + node.exited);
    }
    s
}

/// The counters of a set of states counted from scratch: what a store starts from when it
/// adds counters to existing data, and what the incremental counts must agree with.
pub fn count_states<'a>(
    journey: &str,
    states: impl IntoIterator<Item = &'a JourneyState>,
) -> Counts {
    let mut c = Counts::new();
    for state in states {
        count_state_change(&mut c, journey, None, Some(state));
    }
    c
}

/// Stats of a set of states, counted from scratch.
pub fn compute<'a>(states: impl IntoIterator<Item = &'a JourneyState>) -> JourneyStats {
    let counts = count_states("", states);
    from_counters(
        counts
            .iter()
            .map(|((_, node, name), v)| (node.as_str(), name.as_str(), *v)),
    )
}
