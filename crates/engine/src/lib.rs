//! The journey engine: one input (an event, a timer, a webhook's result) applied to one
//! person's state in one journey, returning the effects to carry out.
//!
//! Architecture invariant: no I/O, no clock, no randomness. Time comes in as `now`; the
//! "random" split is a hash of the instance and node, so the same inputs always give the
//! same path. The runtime stores the state and effects in one transaction; simulation runs
//! the same function on a virtual clock.

pub mod audience;
mod compile;
pub mod decisioning;
mod effect;
pub mod expression;
mod nodes;
pub mod run;
pub mod simulate;
pub mod stats;
pub mod winner;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use waymark_core::journey::NodeKind;
use waymark_core::time::Millis;
use waymark_core::{Event, ProfileState};

pub use compile::{CompiledJourney, ReentryRule, compile};
pub use effect::{
    DEFAULT_WEBHOOK_RETRIES, DEFAULT_WEBHOOK_TIMEOUT_MS, EFFECT_FORMAT, Effect, EffectKey, JumpTo,
    Message, ProfileUpdate, WebhookCall,
};
use expression::{Expression, Lazy, Prepared, Variables, prepare};

/// Finished instances kept per person and journey (the newest); older ones are dropped so a
/// journey people re-enter often does not grow its state without bound.
pub const KEEP_FINISHED_INSTANCES: usize = 20;

/// Timer id 0 is an instance's deadline (its timeout); step timers count up from 1.
pub const DEADLINE_TIMER: u64 = 0;
/// More steps than this in one input means a bug (validation rejects loops without waits).
const MAX_STEPS_PER_INPUT: usize = 10_000;

/// One person's state in one journey: every instance they have had, newest last.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JourneyState {
    pub instances: Vec<Instance>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Instance {
    /// 1 for the person's first entry into this journey, 2 for the next, ...
    pub number: u32,
    pub version: u32,
    pub status: Status,
    pub node: Option<String>,
    pub waiting: Option<Waiting>,
    pub entered_at: Millis,
    pub deadline: Millis,
    pub ended_at: Option<Millis>,
    /// The entry event and webhook responses (by node id), readable as `journey` in CEL.
    pub context: Map<String, Value>,
    pub steps: Vec<Step>,
    pub last_timer: u64,
    /// The deadline timer is not stored yet. It is stored when the instance first waits on
    /// a timer (or an event) in the future: an instance that ends within its input, or
    /// waits only on its webhooks (which the outbox always brings back, by their retry
    /// policy), never needs it, and its row would be written and deleted for nothing.
    /// Absent in states written before this field existed, whose deadline was stored at entry.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deadline_pending: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Active,
    Completed,
    Exited,
    TimedOut,
    Failed,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "for", rename_all = "snake_case")]
pub enum Waiting {
    Timer {
        node: String,
        due: Millis,
        timer: u64,
    },
    Event {
        node: String,
        name: String,
        due: Millis,
        timer: u64,
    },
    Webhook {
        node: String,
    },
}

/// What a step records. Stored (and served) as its snake_case name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepKind {
    /// The instance arrived at the node.
    Entered,
    /// A branch or condition node chose a path (`detail.branch`).
    Branch,
    /// Waiting on a timer or an event.
    Waiting,
    /// The wait ended (the event came, or the time).
    Resumed,
    /// A wait for an event ran out of time and took its timeout path.
    WaitTimedOut,
    /// A message was queued for its channel.
    Sent,
    /// A message was queued to go out later (quiet hours); `detail.until`.
    Held,
    /// A message was not sent (consent, the suppression list, a cap); `detail.reason`.
    Suppressed,
    /// A webhook was called.
    Called,
    /// Profile traits were updated.
    Updated,
    /// A split chose a path.
    Split,
    /// The instance went on in another journey.
    Jumped,
    /// Something at the node failed and the instance went on (or ended, by `failed`).
    Error,
    Completed,
    Exited,
    TimedOut,
    Failed,
    /// The journey was stopped by its owner.
    Stopped,
    /// The conversion goal was reached (`detail`: the event, its message id, revenue),
    /// credited to the step's node.
    Converted,
    /// The email the step's node sent was opened (first time), or a link in it clicked
    /// (first click on any of its links).
    Opened,
    Clicked,
}

impl StepKind {
    pub const ALL: [StepKind; 21] = {
        use StepKind::*;
        [
            Entered,
            Branch,
            Waiting,
            Resumed,
            WaitTimedOut,
            Sent,
            Held,
            Suppressed,
            Called,
            Updated,
            Split,
            Jumped,
            Error,
            Completed,
            Exited,
            TimedOut,
            Failed,
            Stopped,
            Converted,
            Opened,
            Clicked,
        ]
    };

    pub fn as_str(self) -> &'static str {
        match self {
            StepKind::Entered => "entered",
            StepKind::Branch => "branch",
            StepKind::Waiting => "waiting",
            StepKind::Resumed => "resumed",
            StepKind::WaitTimedOut => "wait_timed_out",
            StepKind::Sent => "sent",
            StepKind::Held => "held",
            StepKind::Suppressed => "suppressed",
            StepKind::Called => "called",
            StepKind::Updated => "updated",
            StepKind::Split => "split",
            StepKind::Jumped => "jumped",
            StepKind::Error => "error",
            StepKind::Completed => "completed",
            StepKind::Exited => "exited",
            StepKind::TimedOut => "timed_out",
            StepKind::Failed => "failed",
            StepKind::Stopped => "stopped",
            StepKind::Converted => "converted",
            StepKind::Opened => "opened",
            StepKind::Clicked => "clicked",
        }
    }
}

impl std::fmt::Display for StepKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Steps compare with their names, as they read in stored states and the API.
impl PartialEq<&str> for StepKind {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// One thing that happened to an instance, for "why is this person here?".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    pub at: Millis,
    pub node: String,
    pub what: StepKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<Value>,
}

/// How long an `in_app` message stays in the inbox unless its node says otherwise.
pub const INBOX_TTL_MS: Millis = 30 * 86_400_000;

pub enum Input<'a> {
    Event(&'a Event),
    Timer {
        instance: u32,
        timer: u64,
    },
    WebhookResult {
        instance: u32,
        node: &'a str,
        outcome: Result<Value, String>,
    },
    /// Another journey's `jump` node sent the person here: enter at the start node (the
    /// entry event and filter are the other journey's business; dates, re-entry and the
    /// rate limit still apply). Ignored while the person has an active instance here.
    Jump {
        from: &'a str,
        entry: &'a Value,
    },
    /// A read of the audience the journey's entry names found the person among its members:
    /// enter at the start node if dates, re-entry and `entry.when` (over `profile`; `event`
    /// is null) allow. Ignored while the person has an active instance here.
    Read {
        audience: &'a str,
        /// When the read began: the same for everyone it entered.
        started_at: Millis,
    },
}

pub struct Ctx<'a> {
    pub profile: &'a ProfileState,
    pub now: Millis,
    /// The winner nodes decided so far (`winner::decide`).
    pub winners: &'a winner::Winners,
}

/// Applies one input. Returns the effects; `state` is updated in place.
pub fn apply(
    j: &CompiledJourney,
    state: &mut JourneyState,
    input: Input<'_>,
    ctx: &Ctx<'_>,
) -> Vec<Effect> {
    let mut run = Run {
        j,
        ctx,
        effects: Vec::new(),
        overlay: Map::new(),
        cel_event: Lazy::default(),
        cel_profile: Lazy::default(),
        cel_journey: Lazy::default(),
    };
    if let Input::Event(event) = &input {
        run.convert(state, event);
        engage(j, state, event, ctx.now);
    }
    let may_enter = run.may_enter(state);
    let active = state
        .instances
        .last_mut()
        .filter(|i| i.status == Status::Active);
    match (input, active) {
        (Input::Event(event), Some(instance)) => run.on_event(instance, event),
        (Input::Event(event), None) => {
            if let Some(instance) = run.try_enter(state, event) {
                push_instance(state, instance);
            }
        }
        (Input::Jump { from, entry }, None) if may_enter => {
            let mut context = Map::new();
            context.insert("entry".into(), entry.clone());
            context.insert("jumped_from".into(), Value::String(from.to_owned()));
            let instance = run.start_instance(state, context, None);
            push_instance(state, instance);
        }
        (
            Input::Read {
                audience,
                started_at,
            },
            None,
        ) if may_enter && run.j.doc.entry.read_audience() == Some(audience) => {
            if let Some(when) = &run.j.entry_when
                && !run.eval(when, None, &Map::new()).unwrap_or(false)
            {
                return run.effects;
            }
            let mut context = Map::new();
            context.insert(
                "entry".into(),
                json!({"audience": audience, "read_at": started_at}),
            );
            let instance = run.start_instance(state, context, None);
            push_instance(state, instance);
        }
        (Input::Timer { instance: n, timer }, Some(instance)) if instance.number == n => {
            run.on_timer(instance, timer)
        }
        (
            Input::WebhookResult {
                instance: n,
                node,
                outcome,
            },
            Some(instance),
        ) if instance.number == n => {
            run.on_webhook(instance, node, outcome);
        }
        // A timer or result for an instance that has ended: nothing to do.
        _ => {}
    }
    run.effects
}

/// Records a first open of an email this journey sent, or a first click in it, as a step of
/// the instance that sent it, at the node that sent it: once per message for each.
fn engage(j: &CompiledJourney, state: &mut JourneyState, event: &Event, now: Millis) {
    let what = match event.display_name() {
        waymark_core::event::EMAIL_OPENED => StepKind::Opened,
        waymark_core::event::EMAIL_LINK_CLICKED => StepKind::Clicked,
        _ => return,
    };
    let Some(key) = event
        .properties
        .get("message")
        .and_then(Value::as_str)
        .and_then(EffectKey::parse)
    else {
        return;
    };
    if key.journey != j.doc.key {
        return;
    }
    let Some(instance) = state
        .instances
        .iter_mut()
        .find(|i| i.number == key.instance)
    else {
        return;
    };
    if instance
        .steps
        .iter()
        .any(|s| s.what == what && s.node == key.node)
    {
        return;
    }
    instance.steps.push(Step {
        at: now,
        node: key.node.to_owned(),
        what,
        detail: Some(json!({"message": event.properties.get("message")})),
    });
}

fn push_instance(state: &mut JourneyState, instance: Instance) {
    state.instances.push(instance);
    let excess = state
        .instances
        .len()
        .saturating_sub(KEEP_FINISHED_INSTANCES + 1);
    state.instances.drain(..excess);
}

/// A webhook's headers and body after rendering.
type RenderedRequest = (std::collections::BTreeMap<String, String>, Option<Value>);

struct Run<'a> {
    j: &'a CompiledJourney,
    ctx: &'a Ctx<'a>,
    effects: Vec<Effect>,
    /// Traits set by update_profile nodes during this input, visible to later conditions.
    overlay: Map<String, Value>,
    /// CEL values of `event`, `profile` and `journey`, built when an expression of this
    /// input first reads them (see [`Run::eval`]).
    cel_event: Lazy,
    cel_profile: Lazy,
    cel_journey: Lazy,
}

/// Hands an expression the variables it reads, each prepared on first use and pruned to
/// what the journey's expressions read: most read one of them, or only part of the data.
struct CelVars<'r, 'a> {
    run: &'r Run<'a>,
    event: Option<&'r Value>,
    journey: &'r Map<String, Value>,
}

impl Variables for CelVars<'_, '_> {
    fn variable(&self, name: &str) -> Option<&Prepared> {
        let run = self.run;
        let reads = &run.j.reads;
        Some(match name {
            "event" => run
                .cel_event
                .get(|| prepare(&reads.of_var(name).prune(self.event.unwrap_or(&Value::Null)))),
            "profile" => run
                .cel_profile
                .get(|| prepare(&reads.of_var(name).prune(&run.profile_json()))),
            "journey" => run
                .cel_journey
                .get(|| prepare(&reads.of_var(name).prune_object(self.journey))),
            _ => return None,
        })
    }
}

impl Run<'_> {
    fn profile_json(&self) -> Value {
        let p = self.ctx.profile;
        let mut traits = p.traits.clone();
        for (k, v) in &self.overlay {
            if v.is_null() {
                traits.remove(k);
            } else {
                traits.insert(k.clone(), v.clone());
            }
        }
        p.context_json(&traits)
    }

    /// A webhook's headers and body, rendered for this person, event and instance.
    fn render_webhook(
        &self,
        idx: usize,
        event: Option<&Value>,
        journey: &Map<String, Value>,
    ) -> Result<RenderedRequest, String> {
        let Some((headers, body)) = self.j.webhooks.get(&idx) else {
            return Ok(Default::default());
        };
        let reads_data = headers.reads_data() || body.as_ref().is_some_and(|b| b.reads_data());
        let data = if reads_data {
            json!({"profile": self.profile_json(), "event": event, "journey": journey})
        } else {
            Value::Null
        };
        let headers = match self.j.templates.render(headers, &data)? {
            Value::Object(m) => m
                .into_iter()
                .map(|(k, v)| {
                    let text = match v {
                        Value::String(s) => s,
                        Value::Null => String::new(),
                        other => other.to_string(),
                    };
                    (k, text)
                })
                .collect(),
            _ => Default::default(),
        };
        let body = body
            .as_ref()
            .map(|b| self.j.templates.render(b, &data))
            .transpose()?;
        Ok((headers, body))
    }

    /// Evaluates a compiled expression; anything but `true` (including a runtime error, such
    /// as a missing field) is false. Errors are returned so they can be recorded.
    ///
    /// The CEL values of `event`, `profile` and `journey` are built when first read and
    /// reused by every expression of this input; `overlay` and context changes clear them.
    fn eval(
        &self,
        expression: &Expression,
        event: Option<&Value>,
        journey: &Map<String, Value>,
    ) -> Result<bool, String> {
        let vars = CelVars {
            run: self,
            event,
            journey,
        };
        expression.test(&vars, self.ctx.now)
    }

    /// The journey's dates and re-entry rule allow a new instance now.
    fn may_enter(&self, state: &JourneyState) -> bool {
        let j = self.j;
        let now = self.ctx.now;
        if j.start_at.is_some_and(|s| now < s) || j.end_at.is_some_and(|e| now >= e) {
            return false;
        }
        match (&j.reentry, state.instances.last()) {
            (_, None) => true,
            (ReentryRule::Never, Some(_)) => false,
            (ReentryRule::Always, Some(_)) => true,
            (ReentryRule::After(ms), Some(last)) => now - last.entered_at >= *ms,
        }
    }

    /// Credits the person's latest instance with the journey's conversion goal, once, if
    /// `event` reaches it within the window after that entry: to the message node the
    /// instance last reached (sent, held or not sent: the variant they were assigned), else
    /// to the node where it is.
    fn convert(&mut self, state: &mut JourneyState, event: &Event) {
        let Some(goal) = &self.j.conversion else {
            return;
        };
        if event.display_name() != goal.event {
            return;
        }
        let Some(instance) = state.instances.last() else {
            return;
        };
        let at = event.timestamp;
        if at < instance.entered_at
            || at > instance.entered_at.saturating_add(goal.within_ms)
            || instance.steps.iter().any(|s| s.what == StepKind::Converted)
        {
            return;
        }
        if let Some(when) = &goal.when
            && !self
                .eval(when, Some(&event.to_json()), &Map::new())
                .unwrap_or(false)
        {
            return;
        }
        let node = instance
            .steps
            .iter()
            .rev()
            .find(|s| {
                matches!(
                    s.what,
                    StepKind::Sent | StepKind::Held | StepKind::Suppressed
                )
            })
            .or(instance.steps.last())
            .map(|s| s.node.clone())
            .unwrap_or_default();
        let revenue = goal
            .revenue
            .as_ref()
            .and_then(|p| event.properties.get(p))
            .and_then(Value::as_f64)
            .filter(|r| r.is_finite());
        let detail =
            json!({"event": goal.event, "messageId": event.message_id, "revenue": revenue});
        if let Some(instance) = state.instances.last_mut() {
            instance.steps.push(Step {
                at: self.ctx.now,
                node,
                what: StepKind::Converted,
                detail: Some(detail),
            });
        }
    }

    fn try_enter(&mut self, state: &JourneyState, event: &Event) -> Option<Instance> {
        if !self.j.doc.entry.accepts(event) || !self.may_enter(state) {
            return None;
        }
        let event_json = event.to_json();
        if let Some(when) = &self.j.entry_when
            && !self
                .eval(when, Some(&event_json), &Map::new())
                .unwrap_or(false)
        {
            return None;
        }
        let mut context = Map::new();
        // What later steps may read about the entry (`journey.entry.properties.total`). Only
        // the name and properties: the whole event would be stored with every instance.
        context.insert(
            "entry".into(),
            json!({"event": event.display_name(), "messageId": event.message_id, "properties": event.properties, "timestamp": event.timestamp}),
        );
        Some(self.start_instance(state, context, Some(&event_json)))
    }

    fn start_instance(
        &mut self,
        state: &JourneyState,
        context: Map<String, Value>,
        event_json: Option<&Value>,
    ) -> Instance {
        let j = self.j;
        let now = self.ctx.now;
        let number = state.instances.last().map_or(1, |i| i.number + 1);
        let mut instance = Instance {
            number,
            version: j.version,
            status: Status::Active,
            node: None,
            waiting: None,
            entered_at: now,
            deadline: now + j.timeout_ms,
            ended_at: None,
            context,
            steps: Vec::new(),
            last_timer: DEADLINE_TIMER,
            deadline_pending: true,
        };
        let start = j.doc.nodes[j.start].id.clone();
        self.cel_journey.clear(); // the entry filter saw an empty context; the instance has one now
        self.advance(&mut instance, start, event_json);
        instance
    }

    fn on_event(&mut self, instance: &mut Instance, event: &Event) {
        let event_json = event.to_json();
        if let Some(exit) = &self.j.doc.properties.exit {
            let by_name = exit.events.iter().any(|e| e == event.display_name());
            let by_rule = self.j.exit_when.as_ref().is_some_and(|p| {
                self.eval(p, Some(&event_json), &instance.context)
                    .unwrap_or(false)
            });
            if by_name || by_rule {
                self.end(
                    instance,
                    Status::Exited,
                    StepKind::Exited,
                    Some(json!({"event": event.display_name()})),
                );
                return;
            }
        }
        let Some(Waiting::Event { node, name, .. }) = &instance.waiting else {
            return;
        };
        if name != event.display_name() {
            return;
        }
        let node = node.clone();
        let idx = self.j.index[&node];
        if let Some(when) = self.j.wait_when.get(&idx)
            && !self
                .eval(when, Some(&event_json), &instance.context)
                .unwrap_or(false)
        {
            return;
        }
        let NodeKind::Wait { next, .. } = &self.j.doc.nodes[idx].kind else {
            return;
        };
        instance
            .context
            .insert(format!("{node}_event"), event_json.clone());
        self.cel_journey.clear();
        self.step(
            instance,
            &node,
            StepKind::Resumed,
            Some(json!({"event": event.display_name()})),
        );
        instance.waiting = None;
        self.advance(instance, next.clone(), Some(&event_json));
    }

    fn on_timer(&mut self, instance: &mut Instance, timer: u64) {
        if timer == DEADLINE_TIMER {
            self.end(instance, Status::TimedOut, StepKind::TimedOut, None);
            return;
        }
        let next = match &instance.waiting {
            Some(Waiting::Timer { node, timer: t, .. }) if *t == timer => {
                let idx = self.j.index[node];
                match &self.j.doc.nodes[idx].kind {
                    NodeKind::Wait { next, .. } => (node.clone(), next.clone(), StepKind::Resumed),
                    NodeKind::Winner { .. } => {
                        let node = node.clone();
                        instance.waiting = None;
                        match self.winner_path(instance, &node) {
                            Some(path) => self.advance(instance, path, None),
                            None => self.await_winner(instance, &node),
                        }
                        return;
                    }
                    _ => return,
                }
            }
            Some(Waiting::Event { node, timer: t, .. }) if *t == timer => {
                let NodeKind::Wait { event: Some(e), .. } =
                    &self.j.doc.nodes[self.j.index[node]].kind
                else {
                    return;
                };
                (node.clone(), e.timeout_next.clone(), StepKind::WaitTimedOut)
            }
            _ => return, // a stale timer: the instance moved on
        };
        self.step(instance, &next.0, next.2, None);
        instance.waiting = None;
        self.advance(instance, next.1, None);
    }

    fn on_webhook(&mut self, instance: &mut Instance, node: &str, outcome: Result<Value, String>) {
        let Some(Waiting::Webhook { node: waiting }) = &instance.waiting else {
            return;
        };
        if waiting != node {
            return;
        }
        let node = node.to_owned();
        let NodeKind::Webhook { next, on_error, .. } = &self.j.doc.nodes[self.j.index[&node]].kind
        else {
            return;
        };
        instance.waiting = None;
        match outcome {
            Ok(response) => {
                instance.context.insert(node.clone(), response);
                self.cel_journey.clear();
                self.step(instance, &node, StepKind::Called, None);
                self.advance(instance, next.clone(), None);
            }
            Err(reason) => match on_error {
                Some(path) => {
                    self.step(
                        instance,
                        &node,
                        StepKind::Error,
                        Some(json!({"reason": reason, "took": path})),
                    );
                    self.advance(instance, path.clone(), None);
                }
                None => self.end(
                    instance,
                    Status::Failed,
                    StepKind::Failed,
                    Some(json!({"node": node, "reason": reason})),
                ),
            },
        }
    }

    fn step(&self, instance: &mut Instance, node: &str, what: StepKind, detail: Option<Value>) {
        instance.steps.push(Step {
            at: self.ctx.now,
            node: node.to_owned(),
            what,
            detail,
        });
    }

    fn end(&self, instance: &mut Instance, status: Status, what: StepKind, detail: Option<Value>) {
        let node = instance.node.clone().unwrap_or_default();
        self.step(instance, &node, what, detail);
        instance.status = status;
        instance.waiting = None;
        instance.ended_at = Some(self.ctx.now);
    }

    fn key(&self, instance: &Instance, node: &str) -> String {
        EffectKey {
            journey: &self.j.doc.key,
            profile: &self.ctx.profile.id,
            instance: instance.number,
            node,
            step: instance.steps.len(),
        }
        .to_string()
    }

    fn schedule(&mut self, instance: &mut Instance, due: Millis) -> u64 {
        // A timer already due fires within this input (see `run::Collector`); only a wait
        // into the future needs the deadline behind it.
        if instance.deadline_pending && due > self.ctx.now {
            instance.deadline_pending = false;
            self.effects.push(Effect::Timer {
                instance: instance.number,
                timer: DEADLINE_TIMER,
                due: instance.deadline,
            });
        }
        instance.last_timer += 1;
        self.effects.push(Effect::Timer {
            instance: instance.number,
            timer: instance.last_timer,
            due,
        });
        instance.last_timer
    }
}

/// Where a `push` goes: every device token the person has, iOS first.
fn devices_of(channel: &str, profile: &ProfileState) -> Vec<(String, String)> {
    if channel != "push" {
        return Vec::new();
    }
    waymark_core::identity::Namespace::PUSH_TOKENS
        .iter()
        .flat_map(|(platform, namespace)| {
            profile
                .identities
                .get(*namespace)
                .into_iter()
                .flatten()
                .map(|token| ((*platform).to_owned(), token.clone()))
        })
        .collect()
}

/// Who a message on `channel` goes to: for `sms` the person's first `phone` identity, else
/// their `phone` trait (as updated earlier in this input); for `email` likewise `email`.
/// No address fails the message.
fn recipient(
    channel: &str,
    profile: &ProfileState,
    overlay: &Map<String, Value>,
) -> Result<Option<String>, String> {
    let field = match channel {
        "sms" => "phone",
        "email" => "email",
        _ => return Ok(None),
    };
    profile
        .identities
        .get(field)
        .and_then(|v| v.first().cloned())
        .or_else(|| {
            overlay
                .get(field)
                .or_else(|| profile.traits.get(field))
                .and_then(|v| v.as_str())
                .map(str::to_owned)
        })
        .map(Some)
        .ok_or_else(|| format!("the person has no {field} ({field} identity or trait)"))
}

/// The next instant strictly after `now` at which the wall clock in `zone` reads `HH:MM`.
pub fn next_local_time(hhmm: &str, now: Millis, zone: &jiff::tz::TimeZone) -> Millis {
    let (h, m) = (
        hhmm[..2].parse::<i8>().unwrap_or(0),
        hhmm[3..].parse::<i8>().unwrap_or(0),
    );
    let Ok(ts) = jiff::Timestamp::from_millisecond(now) else {
        return now;
    };
    let local = ts.to_zoned_datetime(zone.clone());
    let mut date = local.date();
    for _ in 0..3 {
        if let Ok(candidate) = date.at(h, m, 0, 0).to_zoned_datetime(zone.clone()) {
            let ms = candidate.timestamp().as_millisecond();
            if ms > now {
                return ms;
            }
        }
        match date.tomorrow() {
            Ok(d) => date = d,
            Err(_) => break,
        }
    }
    now
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod tests_run;
