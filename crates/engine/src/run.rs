//! Running journeys for a store: which journey and version handles each input, and the
//! rows (states, timers, outbox) that result. Pure, like `core::ingest::plan`: a backend
//! reads what is needed, calls these functions inside its transaction, and writes the
//! returned rows in the same transaction.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use waymark_core::governance::{Decision, Policy, Sent};
use waymark_core::journey::lifecycle::Status as JourneyStatus;
use waymark_core::time::Millis;
use waymark_core::{Event, ProfileState};

use crate::stats::{
    Counts, Mark, count_change, count_marked_change, count_rate_limited, marks, unchanged,
};
use crate::{CompiledJourney, Ctx, Effect, Input, JourneyState, Message, Status, StepKind, apply};

/// The journeys a store has, as the engine needs them.
#[derive(Default)]
pub struct Catalog {
    /// Journey key -> its status and live version.
    pub journeys: BTreeMap<String, (JourneyStatus, Option<u32>)>,
    /// Every compiled version an input may need (live ones, and those instances run on).
    pub versions: HashMap<(String, u32), Arc<CompiledJourney>>,
    /// Entry rate limits of live versions that have one, with the entries already made in
    /// the current one-second window.
    pub rates: HashMap<String, EntryRate>,
    /// The delivery rules every message is decided by.
    pub governance: Arc<Policy>,
    /// Messages each person (by profile id) was sent or has queued within the longest cap
    /// window, read in the plan's transaction.
    pub recent_messages: HashMap<String, Vec<Sent>>,
    /// Suppressed addresses among the people's (see `addresses`): (channel, address) ->
    /// reason, read in the plan's transaction.
    pub suppressed: HashMap<(String, String), String>,
    /// Winner nodes decided, of the versions in `versions` whose winners are due.
    pub winners: crate::winner::Winners,
}

/// Every address a person's messages may go to, per suppressible channel, normalised as the
/// suppression list keys them: their email / phone identities and traits.
pub fn addresses(profile: &ProfileState) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    for (channel, namespace) in waymark_core::governance::SUPPRESSIBLE {
        let raw = profile
            .identities
            .get(*namespace)
            .into_iter()
            .flatten()
            .map(String::as_str)
            .chain(profile.traits.get(*namespace).and_then(|v| v.as_str()));
        for r in raw {
            if let Ok(a) = waymark_core::governance::suppression_address(channel, r)
                && !out.contains(&(*channel, a.clone()))
            {
                out.push((*channel, a));
            }
        }
    }
    out
}

/// A journey's entry rate limit and its use: at most `limit` entries per second of wall
/// clock (fixed windows starting at whole seconds). Entries over the limit are refused and
/// counted as `rate_limited`; the event is still stored and other journeys still see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryRate {
    pub limit: u32,
    /// Start of the window `used` counts in (ms, a whole second).
    pub window: Millis,
    pub used: u32,
}

/// The entry rate limit a journey document sets. Stores keep it on the journey row at
/// publish, so each ingest reads (and PostgreSQL locks) it without the document.
pub fn entry_rate_limit(document: &Value) -> Option<u32> {
    document["properties"]["entry_rate_limit"]
        .as_u64()
        .and_then(|v| u32::try_from(v).ok())
}

impl EntryRate {
    pub fn window_of(now: Millis) -> Millis {
        now - now.rem_euclid(1000)
    }

    /// Entries still allowed at `now`.
    fn room(&self, now: Millis) -> u32 {
        if self.window == Self::window_of(now) {
            self.limit.saturating_sub(self.used)
        } else {
            self.limit
        }
    }

    fn take(&mut self, now: Millis) {
        let window = Self::window_of(now);
        if self.window != window {
            self.window = window;
            self.used = 0;
        }
        self.used += 1;
    }
}

impl Catalog {
    /// Journeys that may act on an input: all but drafts and stopped ones.
    pub fn active_keys(&self) -> impl Iterator<Item = &String> {
        self.journeys
            .iter()
            .filter(|(_, (s, _))| !matches!(s, JourneyStatus::Draft | JourneyStatus::Stopped))
            .map(|(k, _)| k)
    }

    pub fn is_empty(&self) -> bool {
        self.active_keys().next().is_none()
    }

    /// How many more people may enter the journey in the current second (its entry rate
    /// limit's room; `u32::MAX` without one).
    pub fn entry_room(&self, key: &str, now: Millis) -> u32 {
        self.rates.get(key).map_or(u32::MAX, |r| r.room(now))
    }

    /// Whether any version in the catalog may send to an address, i.e. whether a plan
    /// needs the people's suppression list entries read at all.
    pub fn sends_to_addresses(&self) -> bool {
        self.versions.values().any(|v| v.addressed)
    }
}

/// What every plan needs besides the rows it reads, kept by a store across transactions:
/// compiled journey versions (which never change once published; a cache, so a poisoned
/// lock is taken over, not reported) and the delivery governance policy.
#[derive(Default)]
pub struct Runtime {
    compiled: Mutex<HashMap<(String, u32), Arc<CompiledJourney>>>,
    governance: Arc<Policy>,
    /// The audience catalog compiled for the newest versions it was built from.
    audiences: Mutex<Option<AudienceVersions>>,
    /// Winner nodes decided (decisions never change once kept).
    winners: Mutex<crate::winner::Winners>,
}

/// (key, version) of every audience, and the catalog compiled from them.
type AudienceVersions = (Vec<(String, u32)>, Arc<crate::audience::AudienceCatalog>);

impl Runtime {
    pub fn new(governance: Policy) -> Self {
        Self {
            compiled: Mutex::default(),
            governance: Arc::new(governance),
            audiences: Mutex::default(),
            winners: Mutex::default(),
        }
    }

    /// The winner nodes of the catalog's versions whose time has come, as (journey key,
    /// node, version); those already decided are put into `catalog.winners`, the rest
    /// returned for the store to read or decide.
    pub fn fill_winners(
        &self,
        catalog: &mut Catalog,
        now: Millis,
    ) -> Vec<(String, String, Arc<CompiledJourney>)> {
        let due: Vec<(String, String, Arc<CompiledJourney>)> = catalog
            .versions
            .iter()
            .flat_map(|((key, _), j)| {
                j.winners
                    .iter()
                    .filter(|(_, at)| *at <= now)
                    .map(|(node, _)| (key.clone(), node.clone(), j.clone()))
            })
            .collect();
        if due.is_empty() {
            return due;
        }
        let decided = self
            .winners
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut missing = Vec::new();
        for (key, node, j) in due {
            let slot = (key, node);
            match decided.get(&slot) {
                Some(path) => {
                    catalog.winners.insert(slot, path.clone());
                }
                None if !missing.iter().any(|(k, n, _)| (k, n) == (&slot.0, &slot.1)) => {
                    missing.push((slot.0, slot.1, j));
                }
                None => {}
            }
        }
        missing
    }

    /// Keeps a winner node's decision for the next plans, and puts it in `catalog`.
    pub fn keep_winner(&self, catalog: &mut Catalog, key: &str, node: &str, path: String) {
        let slot = (key.to_owned(), node.to_owned());
        self.winners
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(slot.clone(), path.clone());
        catalog.winners.insert(slot, path);
    }

    pub fn governance(&self) -> &Policy {
        &self.governance
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, u32), Arc<CompiledJourney>>> {
        self.compiled
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Puts into `catalog` every version the inputs may need (live ones, and those active
    /// instances run on) that is already compiled; returns the ones the store must load.
    pub fn fill(&self, catalog: &mut Catalog, states: &States) -> Vec<(String, u32)> {
        let mut needed: Vec<(String, u32)> = catalog
            .journeys
            .iter()
            .filter_map(|(k, (_, v))| v.map(|v| (k.clone(), v)))
            .collect();
        for ((_, key), state) in states {
            if let Some(active) = state
                .instances
                .last()
                .filter(|i| i.status == Status::Active)
            {
                needed.push((key.clone(), active.version));
            }
        }
        catalog.governance = self.governance.clone();
        let cache = self.lock();
        let mut missing = Vec::new();
        for (key, version) in needed {
            match cache.get(&(key.clone(), version)) {
                Some(compiled) => {
                    catalog.versions.insert((key, version), compiled.clone());
                }
                None => missing.push((key, version)),
            }
        }
        missing
    }

    /// The audience catalog, if it was built from exactly these versions.
    pub fn audience_catalog(
        &self,
        versions: &[(String, u32)],
    ) -> Option<Arc<crate::audience::AudienceCatalog>> {
        let cached = self
            .audiences
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        cached
            .as_ref()
            .filter(|(built_from, _)| built_from.as_slice() == versions)
            .map(|(_, catalog)| catalog.clone())
    }

    /// Keeps the catalog built from `versions` for the next runs.
    pub fn keep_audience_catalog(
        &self,
        versions: Vec<(String, u32)>,
        catalog: Arc<crate::audience::AudienceCatalog>,
    ) {
        *self
            .audiences
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some((versions, catalog));
    }

    /// Compiles a stored version document into the cache and `catalog`.
    pub fn compile_into(
        &self,
        catalog: &mut Catalog,
        key: String,
        version: u32,
        document: Value,
    ) -> Result<(), String> {
        let journey = serde_json::from_value(document).map_err(|e| e.to_string())?;
        let compiled =
            Arc::new(crate::compile(journey, version).map_err(|problems| format!("{problems:?}"))?);
        self.lock().insert((key.clone(), version), compiled.clone());
        catalog.versions.insert((key, version), compiled);
        Ok(())
    }
}

/// A timer as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimerRow {
    pub due: Millis,
    pub profile_id: String,
    pub journey: String,
    pub instance: u32,
    pub timer: u64,
}

/// An effect waiting for the dispatcher (or, for the `log` channel, already done).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutboxRow {
    /// The effect's idempotency key; unique.
    pub key: String,
    pub profile_id: String,
    pub journey: String,
    /// What to carry out; its `kind()` is the row's kind.
    pub effect: Effect,
    /// `pending` for the dispatcher, `done` when nothing remains to be delivered.
    pub status: String,
    /// Not to be delivered before this (a message held by quiet hours); now if absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub due: Option<Millis>,
}

#[derive(Debug, Default)]
pub struct Planned {
    /// States that changed, to upsert.
    pub states: Vec<(String, String, JourneyState)>,
    pub timers: Vec<TimerRow>,
    pub outbox: Vec<OutboxRow>,
    /// Instances that ended: their remaining timers (the deadline, a pending wait) can go.
    pub ended: Vec<(String, String, u32)>,
    /// Stats counter changes.
    pub counts: Counts,
    /// Entry rate windows that changed, by journey key.
    pub rates: BTreeMap<String, EntryRate>,
}

/// Journey states by (profile id, journey key), as plans read and return them.
pub type States = HashMap<(String, String), JourneyState>;

fn journey_for<'c>(
    catalog: &'c Catalog,
    key: &str,
    state: &JourneyState,
) -> Option<&'c Arc<CompiledJourney>> {
    let (status, live) = catalog.journeys.get(key)?;
    match state
        .instances
        .last()
        .filter(|i| i.status == Status::Active)
    {
        Some(active) => catalog.versions.get(&(key.to_owned(), active.version)),
        None if status.accepts_entries() => catalog.versions.get(&(key.to_owned(), (*live)?)),
        None => None,
    }
}

struct Collector<'a> {
    catalog: &'a Catalog,
    states: States,
    /// Each touched state's instances as they were before this plan.
    original: HashMap<(String, String), Vec<Mark>>,
    out: Planned,
    /// Each person's recent messages, with those decided in this plan added.
    recent: HashMap<String, Vec<Sent>>,
}

impl<'a> Collector<'a> {
    fn new(catalog: &'a Catalog, states: States) -> Self {
        Self {
            catalog,
            states,
            original: HashMap::new(),
            out: Planned::default(),
            recent: HashMap::new(),
        }
    }

    fn run(&mut self, profile: &ProfileState, key: &str, input: Input<'_>, now: Millis) {
        let slot = (profile.id.clone(), key.to_owned());
        let state = self.states.entry(slot.clone()).or_default();
        if matches!(
            self.catalog.journeys.get(key),
            Some((JourneyStatus::Stopped, _))
        ) {
            // A stopped journey's instances end at their next input (event or timer).
            if state
                .instances
                .last()
                .is_some_and(|i| i.status == Status::Active)
            {
                self.original.entry(slot).or_insert_with(|| marks(state));
            }
            end_as_stopped(state, now);
            return;
        }
        let Some(journey) = journey_for(self.catalog, key, state) else {
            return;
        };
        self.original
            .entry(slot.clone())
            .or_insert_with(|| marks(state));
        let is_entry = matches!(
            input,
            Input::Event(_) | Input::Jump { .. } | Input::Read { .. }
        ) && !state
            .instances
            .last()
            .is_some_and(|i| i.status == Status::Active);
        let rate = is_entry
            .then(|| {
                self.out
                    .rates
                    .get(key)
                    .or_else(|| self.catalog.rates.get(key))
                    .copied()
            })
            .flatten();
        // Without room in the window, an entry is undone; the state is kept to restore.
        let kept = rate
            .filter(|r| r.room(now) == 0)
            .map(|_| state.instances.clone());
        let instances_before = state.instances.last().map(|i| i.number);
        let effects = apply(
            journey,
            state,
            input,
            &Ctx {
                profile,
                now,
                winners: &self.catalog.winners,
            },
        );
        if let Some(mut rate) = rate
            && state.instances.last().map(|i| i.number) != instances_before
        {
            if let Some(kept) = kept {
                state.instances = kept;
                count_rate_limited(&mut self.out.counts, key, 1);
                return;
            }
            rate.take(now);
            self.out.rates.insert(key.to_owned(), rate);
        }
        let mut effects: std::collections::VecDeque<Effect> = effects.into();
        while let Some(effect) = effects.pop_front() {
            match effect {
                // A timer already due (a wait of 0 s, or a local time just reached) fires in
                // this same transaction: the step is as durable, and one transaction cheaper.
                Effect::Timer {
                    instance,
                    timer,
                    due,
                } if due <= now && timer != crate::DEADLINE_TIMER => {
                    let Some(journey) = journey_for(self.catalog, key, state) else {
                        continue;
                    };
                    effects.extend(apply(
                        journey,
                        state,
                        Input::Timer { instance, timer },
                        &Ctx {
                            profile,
                            now,
                            winners: &self.catalog.winners,
                        },
                    ));
                }
                Effect::Timer {
                    instance,
                    timer,
                    due,
                } => {
                    self.out.timers.push(TimerRow {
                        due,
                        profile_id: profile.id.clone(),
                        journey: key.to_owned(),
                        instance,
                        timer,
                    });
                }
                other => {
                    let due =
                        match govern(self.catalog, &mut self.recent, profile, state, &other, now) {
                            Gate::Record { due } => due,
                            Gate::Suppressed => continue,
                        };
                    let done = match &other {
                        // Nothing to deliver: `log` records, `code_based` content is on its
                        // surface once committed, and an `in_app` message is in the inbox
                        // (unless quiet hours hold it).
                        Effect::Message(m) => {
                            m.channel == "log"
                                || m.channel == "code_based"
                                || (m.channel == "in_app" && due.is_none())
                        }
                        Effect::Webhook(_) | Effect::UpdateProfile(_) | Effect::Jump(_) => false,
                        Effect::Timer { .. } => continue,
                    };
                    self.out.outbox.push(OutboxRow {
                        key: other.key().unwrap_or_default().to_owned(),
                        profile_id: profile.id.clone(),
                        journey: key.to_owned(),
                        effect: other,
                        status: if done {
                            "done".into()
                        } else {
                            "pending".into()
                        },
                        due,
                    });
                }
            }
        }
    }

    fn finish(mut self) -> Planned {
        for (slot, before) in self.original {
            if let Some(after) = self.states.remove(&slot)
                && !unchanged(&before, &after)
            {
                // Ended in this input: not active now, and active before or not there at all.
                let ended_before = |n: u32| {
                    before
                        .iter()
                        .any(|i| i.number == n && i.status != Status::Active)
                };
                for i in after
                    .instances
                    .iter()
                    .filter(|i| i.status != Status::Active && !ended_before(i.number))
                {
                    self.out
                        .ended
                        .push((slot.0.clone(), slot.1.clone(), i.number));
                }
                count_marked_change(&mut self.out.counts, &slot.1, &before, Some(&after));
                self.out.states.push((slot.0, slot.1, after));
            }
        }
        self.out
            .states
            .sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        self.out
    }
}

/// What governance made of a message.
enum Gate {
    /// Record it; not to be delivered before `due` (held by quiet hours) if set.
    Record { due: Option<Millis> },
    /// Not sent; the instance has a `suppressed` step saying why.
    Suppressed,
}

/// Applies the delivery policy to one effect (only messages on real channels are subject
/// to it), recording `held` and `suppressed` decisions as steps of the instance and counting
/// what goes out in the person's recent messages, so later messages in this plan see it.
fn govern(
    catalog: &Catalog,
    recent: &mut HashMap<String, Vec<Sent>>,
    profile: &ProfileState,
    state: &mut JourneyState,
    effect: &Effect,
    now: Millis,
) -> Gate {
    let Effect::Message(Message {
        channel,
        transactional,
        instance,
        node,
        to,
        ..
    }) = effect
    else {
        return Gate::Record { due: None };
    };
    let governed = |channel: &str| {
        waymark_core::channel::Channel::parse(channel).is_some_and(|c| c.governed())
    };
    if !governed(channel) {
        return Gate::Record { due: None };
    }
    // The decision replaces the node's `sent` step where it stands (the instance has gone on
    // since, maybe to its end): the trace says `held` or `suppressed` at the message node.
    let mut record = |what: StepKind, detail: Value| {
        let Some(i) = state.instances.iter_mut().find(|i| i.number == *instance) else {
            return;
        };
        let planned = i
            .steps
            .iter_mut()
            .rev()
            .find(|s| s.node == *node && s.what == StepKind::Sent);
        match planned {
            Some(step) => {
                let mut merged = step.detail.take().unwrap_or_else(|| serde_json::json!({}));
                if let (Some(into), Value::Object(from)) = (merged.as_object_mut(), detail) {
                    into.extend(from);
                }
                step.what = what;
                step.detail = Some(merged);
            }
            None => i.steps.push(crate::Step {
                at: now,
                node: node.clone(),
                what,
                detail: Some(detail),
            }),
        }
    };
    // The suppression list binds transactional messages too: the address does not work
    // (bounces) or its owner complained.
    let listed = to.as_deref().and_then(|to| {
        let address = waymark_core::governance::suppression_address(channel, to).ok()?;
        catalog.suppressed.get(&(channel.clone(), address))
    });
    if let Some(reason) = listed {
        record(
            StepKind::Suppressed,
            serde_json::json!({"reason": format!("suppression list: {reason}"), "channel": channel}),
        );
        return Gate::Suppressed;
    }
    if catalog.governance.is_empty() {
        return Gate::Record { due: None };
    }
    let recent = recent.entry(profile.id.clone()).or_insert_with(|| {
        catalog
            .recent_messages
            .get(&profile.id)
            .map(|sent| {
                sent.iter()
                    .filter(|s| governed(&s.channel))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    });
    let decision = catalog.governance.decide(
        channel,
        *transactional,
        now,
        &crate::compile::person_zone(profile),
        recent,
    );
    let due = match decision {
        Decision::Send => None,
        Decision::Hold { until, reason } => {
            let until_text = waymark_core::time::format_iso8601(until);
            record(
                StepKind::Held,
                serde_json::json!({"reason": reason, "until": until_text}),
            );
            Some(until)
        }
        Decision::Suppress { reason } => {
            record(
                StepKind::Suppressed,
                serde_json::json!({"reason": reason, "channel": channel}),
            );
            return Gate::Suppressed;
        }
    };
    recent.push(Sent {
        channel: channel.clone(),
        at: now,
    });
    Gate::Record { due }
}

/// The (profile, journey) states a batch of events needs loaded.
pub fn state_keys<'a>(
    catalog: &'a Catalog,
    profile_ids: impl IntoIterator<Item = &'a str>,
) -> Vec<(String, String)> {
    let mut keys = Vec::new();
    for p in profile_ids {
        for k in catalog.active_keys() {
            keys.push((p.to_owned(), k.clone()));
        }
    }
    keys.sort();
    keys.dedup();
    keys
}

/// Applies events, in order, to every journey that may act on them.
pub fn plan_events(
    catalog: &Catalog,
    states: States,
    events: &[(&Event, &ProfileState)],
    now: Millis,
) -> Planned {
    let mut c = Collector::new(catalog, states);
    let keys: Vec<String> = catalog.active_keys().cloned().collect();
    for (event, profile) in events {
        for key in &keys {
            c.run(profile, key, Input::Event(event), now);
        }
    }
    c.finish()
}

/// Fires timers, in the order given (due order).
pub fn plan_timers(
    catalog: &Catalog,
    states: States,
    timers: &[(&TimerRow, &ProfileState)],
    now: Millis,
) -> Planned {
    let mut c = Collector::new(catalog, states);
    for (timer, profile) in timers {
        c.run(
            profile,
            &timer.journey,
            Input::Timer {
                instance: timer.instance,
                timer: timer.timer,
            },
            now,
        );
    }
    c.finish()
}

/// A webhook's final outcome (after its retries), for the instance that called it.
pub struct WebhookOutcome<'a> {
    pub journey: &'a str,
    pub instance: u32,
    pub node: &'a str,
    pub outcome: Result<Value, String>,
}

/// Feeds a webhook's outcome back into the instance that called it.
pub fn plan_webhook_result(
    catalog: &Catalog,
    states: States,
    profile: &ProfileState,
    result: WebhookOutcome<'_>,
    now: Millis,
) -> Planned {
    plan_webhook_results(catalog, states, vec![(profile, result)], now)
}

/// Feeds many webhook outcomes back, in order, in one plan (one transaction's worth).
pub fn plan_webhook_results(
    catalog: &Catalog,
    states: States,
    results: Vec<(&ProfileState, WebhookOutcome<'_>)>,
    now: Millis,
) -> Planned {
    let mut c = Collector::new(catalog, states);
    for (profile, result) in results {
        let input = Input::WebhookResult {
            instance: result.instance,
            node: result.node,
            outcome: result.outcome,
        };
        c.run(profile, result.journey, input, now);
    }
    c.finish()
}

/// A jump from another journey, as the outbox carries it.
pub struct JumpIn<'a> {
    pub journey: &'a str,
    pub from: &'a str,
    pub entry: &'a Value,
}

/// Enters the person into the journey a `jump` node named.
pub fn plan_jump(
    catalog: &Catalog,
    states: States,
    profile: &ProfileState,
    jump: JumpIn<'_>,
    now: Millis,
) -> Planned {
    let mut c = Collector::new(catalog, states);
    let input = Input::Jump {
        from: jump.from,
        entry: jump.entry,
    };
    c.run(profile, jump.journey, input, now);
    c.finish()
}

/// A read of an audience for a journey: its members found in one chunk.
pub struct ReadIn<'a> {
    pub journey: &'a str,
    pub audience: &'a str,
    pub started_at: Millis,
}

/// Enters members of the audience a journey reads (those its entry rules allow). The
/// reader takes no more people than [`Catalog::entry_room`] allows, so none is refused.
pub fn plan_read(
    catalog: &Catalog,
    states: States,
    people: &[&ProfileState],
    read: ReadIn<'_>,
    now: Millis,
) -> Planned {
    let mut c = Collector::new(catalog, states);
    for profile in people {
        let input = Input::Read {
            audience: read.audience,
            started_at: read.started_at,
        };
        c.run(profile, read.journey, input, now);
    }
    c.finish()
}

/// Ends the person's active instance, if any, as stopped. Returns whether there was one.
fn end_as_stopped(state: &mut JourneyState, now: Millis) -> bool {
    let Some(active) = state
        .instances
        .last_mut()
        .filter(|i| i.status == Status::Active)
    else {
        return false;
    };
    let node = active.node.clone().unwrap_or_default();
    active.steps.push(crate::Step {
        at: now,
        node,
        what: StepKind::Stopped,
        detail: None,
    });
    active.status = Status::Exited;
    active.waiting = None;
    active.ended_at = Some(now);
    true
}

/// Ends every active instance of a journey that is being stopped, recording why. Returns
/// the states that changed and the counter changes (the caller drops the journey's timers).
pub fn stop_all(
    journey: &str,
    states: Vec<(String, JourneyState)>,
    now: Millis,
) -> (Vec<(String, JourneyState)>, Counts) {
    let mut counts = Counts::new();
    let changed = states
        .into_iter()
        .filter_map(|(profile_id, mut state)| {
            let before = state
                .instances
                .last()
                .filter(|i| i.status == Status::Active)
                .map(Mark::of)?;
            end_as_stopped(&mut state, now);
            count_change(&mut counts, journey, Some(&before), state.instances.last());
            Some((profile_id, state))
        })
        .collect();
    (changed, counts)
}
