//! Running journeys against a store, written once above the backends: what a run reads
//! (catalog → state keys → states → versions → people), the plan (the engine's, pure) and
//! what it writes. A backend implements [`RunTx`]: plain reads and writes inside the
//! transaction the run commits in, so an event and the steps it causes commit together on
//! every store, and no backend holds journey logic.
//!
//! The methods are async so PostgreSQL can await its queries. SQLite's writer thread answers
//! them without waiting and drives a run with [`run_now`].

use std::borrow::Borrow;
use std::collections::HashMap;
use std::future::Future;

use serde_json::Value;
use waymark_core::governance::Sent;
use waymark_core::journey::lifecycle::Status as JourneyStatus;
use waymark_core::time::Millis;
use waymark_core::{Event, ProfileState};
use waymark_engine::run::{
    Catalog, EntryRate, JumpIn, OutboxRow, Planned, Runtime, States, TimerRow, WebhookOutcome,
    addresses, plan_events, plan_jump, plan_timers, plan_webhook_results, state_keys, stop_all,
};
use waymark_engine::stats::{Counts, JourneyStats, count_state_change, count_states};
use waymark_engine::winner::Decision;
use waymark_engine::{Effect, JourneyState};

use waymark_engine::audience::{AudiencePlan, BodyPart, HistoryEvent};

use crate::{Delivery, OutboxItem, StoreError};

mod audiences;
mod reads;

pub use audiences::change_list_members;
pub use reads::JourneyRead;

/// A journey row as the catalog reads it.
#[derive(Debug, Clone)]
pub struct JourneyRow {
    pub key: String,
    pub status: String,
    pub live_version: Option<u32>,
    /// The live version's entry rate limit and its use, if it has one.
    pub rate: Option<EntryRate>,
}

/// The reads and writes a journey run makes, inside one store transaction.
///
/// Where the store has concurrent writers, "lock" means the rows stay locked until the
/// transaction ends; people are always locked in id order, as ingest locks them.
// Implemented and called with concrete types only (the two backends), so callers see
// whether a run's future is `Send`; no `dyn` use needs the desugared form.
#[allow(async_fn_in_trait)]
pub trait RunTx {
    type Error: From<StoreError>;

    /// Every journey. `for_entries`: the run may enter people, so rate-limited journey rows
    /// are locked and their use read under the lock.
    async fn journeys(&self, for_entries: bool) -> Result<Vec<JourneyRow>, Self::Error>;
    /// A published version's document.
    async fn version(&self, journey: &str, version: u32) -> Result<Option<Value>, Self::Error>;
    /// The states of these (profile id, journey key) pairs that exist.
    async fn states(&self, keys: &[(String, String)]) -> Result<States, Self::Error>;
    /// The messages of these people recorded after `since` that count towards frequency
    /// caps (not `log`, not failed), as (profile id, message).
    async fn recent_messages(
        &self,
        profile_ids: &[&str],
        since: Millis,
    ) -> Result<Vec<(String, Sent)>, Self::Error>;
    /// Which of these (channel, address) pairs are suppressed, with the reason.
    async fn suppressed(
        &self,
        addresses: &[(&'static str, String)],
    ) -> Result<Vec<((String, String), String)>, Self::Error>;
    /// These people's profiles (those that exist), locked.
    async fn lock_profiles(
        &self,
        ids: &[&str],
    ) -> Result<HashMap<String, ProfileState>, Self::Error>;
    /// Up to `limit` timers due at `now`, in due order, as (seq, timer), locked (and
    /// skipped where another transaction holds them).
    async fn due_timers(
        &self,
        now: Millis,
        limit: u32,
    ) -> Result<Vec<(i64, TimerRow)>, Self::Error>;
    /// One person's state in every journey they entered, by journey key.
    async fn profile_states(
        &self,
        profile_id: &str,
    ) -> Result<Vec<(String, JourneyState)>, Self::Error>;
    /// The states of `from` in journeys where `into` has a state too.
    async fn shared_states(
        &self,
        from: &str,
        into: &str,
    ) -> Result<Vec<(String, JourneyState)>, Self::Error>;
    /// Every person's state in one journey, as (profile id, state), the people locked.
    async fn journey_states(
        &self,
        journey: &str,
    ) -> Result<Vec<(String, JourneyState)>, Self::Error>;
    /// Every journey with its live version.
    async fn live_versions(&self) -> Result<Vec<(String, Option<u32>)>, Self::Error>;
    /// A journey's counters, as they stand in this transaction.
    async fn journey_counters(&self, journey: &str) -> Result<JourneyStats, Self::Error>;
    /// The path a winner node decided, if it did.
    async fn winner_decision(
        &self,
        journey: &str,
        node: &str,
    ) -> Result<Option<String>, Self::Error>;
    /// Keeps a winner node's decision, unless one is kept already (returns false then).
    async fn save_winner(
        &self,
        journey: &str,
        node: &str,
        decision: &Decision,
        now: Millis,
    ) -> Result<bool, Self::Error>;

    /// The rows a plan produced.
    async fn write(&self, planned: &Planned, now: Millis) -> Result<(), Self::Error>;
    async fn add_counts(&self, counts: &Counts) -> Result<(), Self::Error>;
    /// Adds displays and clicks to the offer counts, for offers and placements that
    /// exist (feedback naming anything else is kept as an event, not counted).
    async fn add_offer_counts(
        &self,
        counts: &[crate::decisioning::OfferCount],
    ) -> Result<(), Self::Error>;
    async fn delete_timers(&self, seqs: &[i64]) -> Result<(), Self::Error>;
    /// Makes a pending row due again at `at`: a retry (counted, with its error) or a
    /// deferral (not attempted, so not counted).
    async fn put_off(
        &self,
        seq: i64,
        at: Millis,
        retry_error: Option<&str>,
    ) -> Result<(), Self::Error>;
    /// Marks a pending row done (with what the delivery gave back) or failed (with why).
    /// Returns false when it was no longer pending (a lease ran out while the call was slow
    /// and another attempt completed it).
    async fn finish(
        &self,
        seq: i64,
        outcome: &Result<Value, String>,
        now: Millis,
    ) -> Result<bool, Self::Error>;
    /// Writes back a profile changed outside ingest.
    async fn save_profile(&self, profile: &ProfileState, now: Millis) -> Result<(), Self::Error>;
    /// Gives `into` the journey rows (states, timers, outbox, inbox marks) of `from`; where
    /// both had a state in the same journey, `from`'s goes.
    async fn move_journey_rows(&self, from: &str, into: &str) -> Result<(), Self::Error>;
    /// Deletes a person's journey rows and delivery records.
    async fn delete_journey_rows(&self, profile_id: &str) -> Result<(), Self::Error>;
    /// Writes the states a stop changed, and drops every timer of the journey.
    async fn write_stopped(
        &self,
        journey: &str,
        changed: &[(String, JourneyState)],
        now: Millis,
    ) -> Result<(), Self::Error>;
    async fn set_entry_rate_limit(
        &self,
        journey: &str,
        limit: Option<u32>,
    ) -> Result<(), Self::Error>;
    /// Holds (`true`) or releases the journey's pending outbox rows: a held row's due time
    /// is moved [`HELD_OFFSET`] on (never due), a released one's moved back.
    async fn hold_outbox(&self, journey: &str, hold: bool) -> Result<u64, Self::Error>;
    /// Ends the journey's pending message rows as failed with `why`, except those a
    /// delivery has taken (where the store can tell).
    async fn cancel_messages(
        &self,
        journey: &str,
        why: &str,
        now: Millis,
    ) -> Result<u64, Self::Error>;

    /// The newest version of every audience, by key.
    async fn audience_versions(&self) -> Result<Vec<(String, u32)>, Self::Error>;
    /// One audience version's document.
    async fn audience_document(
        &self,
        key: &str,
        version: u32,
    ) -> Result<Option<Value>, Self::Error>;
    /// These people's kept events that are track events named one of `track_names` or
    /// calls of one of `kinds`: each person's, in the order of `profile_ids` (distinct);
    /// the body as much as `bodies` says (null for nothing, `{"properties": ...}` for
    /// properties).
    async fn history(
        &self,
        profile_ids: &[&str],
        track_names: &[String],
        kinds: &[&'static str],
        bodies: BodyPart,
    ) -> Result<Vec<Vec<HistoryEvent>>, Self::Error>;
    /// These people's memberships, as (profile id, audience, since).
    async fn memberships(
        &self,
        profile_ids: &[&str],
    ) -> Result<Vec<(String, String, Millis)>, Self::Error>;
    /// Writes a membership plan: entries and exits (with the audiences' sizes and last
    /// change), the events they record (owned by the person named beside each, ignored if
    /// already recorded), and the people's next checks.
    async fn write_audiences(
        &self,
        plan: &AudiencePlan,
        events: &[(&str, &Event)],
        now: Millis,
    ) -> Result<(), Self::Error>;
    /// Up to `limit` people whose audience check is due at `now`, soonest first, locked
    /// (and skipped where another transaction holds them).
    async fn due_audience_checks(
        &self,
        now: Millis,
        limit: u32,
    ) -> Result<Vec<String>, Self::Error>;
    /// Up to `limit` scheduled audiences whose run is due at `now`, locked.
    async fn due_audience_runs(&self, now: Millis, limit: u32) -> Result<Vec<String>, Self::Error>;
    /// Starts an audience's run (its backfill, from the first person) and sets when it
    /// runs next (none: no more scheduled runs).
    async fn start_audience_run(
        &self,
        key: &str,
        next_run: Option<Millis>,
        now: Millis,
    ) -> Result<(), Self::Error>;
    /// The backfills in progress, as (audience key, the last profile id decided), furthest
    /// behind first in the order `profiles_after` reads, locked.
    async fn audience_backfills(&self) -> Result<Vec<(String, String)>, Self::Error>;
    /// Up to `limit` profile ids after `after`, in id order.
    async fn profiles_after(&self, after: &str, limit: u32) -> Result<Vec<String>, Self::Error>;
    /// Moves these backfills on to `to` (those already past it stay) and counts `decided`
    /// people for each; `to: None` ends them.
    async fn advance_backfills(
        &self,
        keys: &[String],
        to: Option<&str>,
        decided: u64,
    ) -> Result<(), Self::Error>;
    /// The audience read due first (`due_at` reached) of a live journey, locked (skipped
    /// where another transaction holds it).
    async fn due_journey_read(&self, now: Millis) -> Result<Option<JourneyRead>, Self::Error>;
    /// Writes a journey's read as it now stands.
    async fn save_journey_read(&self, read: &JourneyRead) -> Result<(), Self::Error>;
    /// Up to `limit` members of an audience after the profile id `after`, in id order.
    async fn audience_members_after(
        &self,
        audience: &str,
        after: &str,
        limit: u32,
    ) -> Result<Vec<String>, Self::Error>;
    /// Drops a person's memberships and check (merged away or erased); with `recheck`, that
    /// person's audiences are decided again now (the profile that took over the history).
    async fn forget_audiences(
        &self,
        profile_id: &str,
        recheck: Option<&str>,
        now: Millis,
    ) -> Result<(), Self::Error>;
}

/// Entries and exits of one audience in one transaction, as its size and size history
/// record them.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SizeChange {
    pub entered: u64,
    pub exited: u64,
    /// The latest of them.
    pub at: Millis,
}

impl SizeChange {
    pub fn add(&mut self, entered: bool, at: Millis) {
        if entered {
            self.entered += 1;
        } else {
            self.exited += 1;
        }
        self.at = self.at.max(at);
    }

    pub fn delta(&self) -> i64 {
        self.entered as i64 - self.exited as i64
    }

    /// The start of the hour of size history it belongs to.
    pub fn hour(&self) -> Millis {
        self.at - self.at.rem_euclid(HOUR_MS)
    }
}

const HOUR_MS: Millis = 3_600_000;

/// Gives scanned people their memberships, as (profile id, audience, since) of any order.
pub fn attach_memberships(
    people: &mut [crate::ScannedPerson],
    memberships: Vec<(String, String, Millis)>,
) {
    if memberships.is_empty() {
        return;
    }
    let index: HashMap<String, usize> = people
        .iter()
        .enumerate()
        .map(|(i, p)| (p.profile.id.clone(), i))
        .collect();
    for (profile, audience, since) in memberships {
        if let Some(i) = index.get(&profile) {
            people[*i].members.insert(audience, since);
        }
    }
}

fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("journey run: {e}"))
}

/// Runs a future that never waits (a run over a synchronous transaction) to its end.
pub fn run_now<T>(run: impl Future<Output = Result<T, StoreError>>) -> Result<T, StoreError> {
    let mut run = std::pin::pin!(run);
    match run
        .as_mut()
        .poll(&mut std::task::Context::from_waker(std::task::Waker::noop()))
    {
        std::task::Poll::Ready(result) => result,
        // Only reachable if a synchronous backend's read started waiting on something.
        std::task::Poll::Pending => Err(StoreError::Unavailable(
            "a synchronous journey run waited".into(),
        )),
    }
}

async fn catalog<T: RunTx>(tx: &T, for_entries: bool) -> Result<Catalog, T::Error> {
    let mut c = Catalog::default();
    for row in tx.journeys(for_entries).await? {
        let status = JourneyStatus::parse(&row.status)
            .ok_or_else(|| corrupt(format!("status {:?}", row.status)))?;
        if let Some(rate) = row.rate {
            c.rates.insert(row.key.clone(), rate);
        }
        c.journeys.insert(row.key, (status, row.live_version));
    }
    Ok(c)
}

/// Puts every version the states may need into `catalog`, compiling (once) those not cached.
async fn add_versions<T: RunTx>(
    tx: &T,
    runtime: &Runtime,
    catalog: &mut Catalog,
    states: &States,
) -> Result<(), T::Error> {
    for (key, version) in runtime.fill(catalog, states) {
        let Some(document) = tx.version(&key, version).await? else {
            continue;
        };
        if let Err(problems) = runtime.compile_into(catalog, key.clone(), version, document) {
            tracing::error!(journey = %key, version, %problems, "stored journey version does not compile; skipped");
        }
    }
    Ok(())
}

/// Puts into `catalog` the decisions of the winner nodes whose time has come in its
/// versions, deciding those not yet decided from the journey's counters now (once: the
/// first transaction to keep a decision wins, the others read it).
async fn add_winners<T: RunTx>(
    tx: &T,
    runtime: &Runtime,
    catalog: &mut Catalog,
    now: Millis,
) -> Result<(), T::Error> {
    for (key, node, journey) in runtime.fill_winners(catalog, now) {
        if let Some(path) = tx.winner_decision(&key, &node).await? {
            // Committed (a decision is written once): kept for the next plans.
            runtime.keep_winner(catalog, &key, &node, path);
            continue;
        }
        let stats = tx.journey_counters(&key).await?;
        let Some(decision) = waymark_engine::winner::decide(&journey, &node, &stats) else {
            continue;
        };
        if tx.save_winner(&key, &node, &decision, now).await? {
            tracing::info!(journey = %key, node = %node, chosen = %decision.chosen, significant = decision.significant, "winner decided");
            // Not kept beyond this plan until it commits: a later plan reads it back.
            catalog.winners.insert((key, node), decision.chosen);
        } else if let Some(path) = tx.winner_decision(&key, &node).await? {
            runtime.keep_winner(catalog, &key, &node, path);
        }
    }
    Ok(())
}

/// What governance needs to know about the people a plan may message: their recent
/// messages (for caps) and which of their addresses are on the suppression list.
async fn add_people<T: RunTx>(
    tx: &T,
    runtime: &Runtime,
    catalog: &mut Catalog,
    people: &[&ProfileState],
    now: Millis,
) -> Result<(), T::Error> {
    let lookback = runtime.governance().lookback_ms();
    if lookback > 0 {
        let mut ids: Vec<&str> = people
            .iter()
            .map(|p| p.id.as_str())
            .filter(|id| !catalog.recent_messages.contains_key(*id))
            .collect();
        ids.sort_unstable();
        ids.dedup();
        if !ids.is_empty() {
            for id in &ids {
                catalog.recent_messages.insert((*id).to_owned(), Vec::new());
            }
            for (id, sent) in tx.recent_messages(&ids, now - lookback).await? {
                catalog.recent_messages.entry(id).or_default().push(sent);
            }
        }
    }
    if !catalog.sends_to_addresses() {
        return Ok(());
    }
    let mut wanted = Vec::new();
    for p in people {
        for pair in addresses(p) {
            if !wanted.contains(&pair) {
                wanted.push(pair);
            }
        }
    }
    if !wanted.is_empty() {
        catalog.suppressed.extend(tx.suppressed(&wanted).await?);
    }
    Ok(())
}

/// What a plan reads besides its inputs: the (profile, journey) states, the catalog with
/// every version they may need, and what governance needs about the people.
async fn plan_inputs<T: RunTx>(
    tx: &T,
    runtime: &Runtime,
    keys: &[(String, String)],
    people: &[&ProfileState],
    for_entries: bool,
    now: Millis,
) -> Result<(Catalog, States), T::Error> {
    let states = tx.states(keys).await?;
    let mut catalog = catalog(tx, for_entries).await?;
    add_versions(tx, runtime, &mut catalog, &states).await?;
    add_winners(tx, runtime, &mut catalog, now).await?;
    add_people(tx, runtime, &mut catalog, people, now).await?;
    Ok((catalog, states))
}

/// Decides the audiences the accepted events of an ingest can change, then runs every
/// live journey on the events and on the entries and exits they caused, inside the
/// ingest's transaction (the people are locked by then).
pub async fn on_events<T: RunTx>(
    tx: &T,
    runtime: &Runtime,
    events: &[(&Event, &ProfileState)],
    now: Millis,
) -> Result<(), T::Error> {
    if events.is_empty() {
        return Ok(());
    }
    let feedback = crate::decisioning::feedback_counts(events, now);
    if !feedback.is_empty() {
        tx.add_offer_counts(&feedback).await?;
    }
    let caused = audiences::on_events(tx, runtime, events, now).await?;
    if caused.is_empty() {
        return run_journeys(tx, runtime, events, now).await;
    }
    let mut all = events.to_vec();
    all.extend(caused.iter().map(|(e, p)| (e, *p)));
    run_journeys(tx, runtime, &all, now).await
}

/// Runs every live journey on events, in the caller's transaction.
async fn run_journeys<T: RunTx>(
    tx: &T,
    runtime: &Runtime,
    events: &[(&Event, &ProfileState)],
    now: Millis,
) -> Result<(), T::Error> {
    if events.is_empty() {
        return Ok(());
    }
    let mut catalog = catalog(tx, true).await?;
    if catalog.is_empty() {
        return Ok(());
    }
    let keys = state_keys(&catalog, events.iter().map(|(_, p)| p.id.as_str()));
    let states = tx.states(&keys).await?;
    add_versions(tx, runtime, &mut catalog, &states).await?;
    add_winners(tx, runtime, &mut catalog, now).await?;
    let people: Vec<&ProfileState> = events.iter().map(|(_, p)| *p).collect();
    add_people(tx, runtime, &mut catalog, &people, now).await?;
    let planned = plan_events(&catalog, states, events, now);
    tx.write(&planned, now).await
}

/// Fires up to `limit` due journey timers, in due order, then up to `limit` due audience
/// checks (people whose audiences time alone may have changed), then starts the scheduled
/// audience runs that are due, then decides the next `limit` people of the audience
/// backfills in progress; returns how much was done.
pub async fn fire_due<T: RunTx>(
    tx: &T,
    runtime: &Runtime,
    now: Millis,
    limit: u32,
) -> Result<usize, T::Error> {
    let timers = fire_due_timers(tx, runtime, now, limit).await?;
    let checks = audiences::fire_checks(tx, runtime, now, limit).await?;
    let runs = audiences::start_scheduled_runs(tx, now, limit).await?;
    let backfilled = audiences::backfill(tx, runtime, now, limit).await?;
    let read = reads::read_audiences(tx, runtime, now, limit).await?;
    Ok(timers + checks + runs + backfilled + read)
}

async fn fire_due_timers<T: RunTx>(
    tx: &T,
    runtime: &Runtime,
    now: Millis,
    limit: u32,
) -> Result<usize, T::Error> {
    let due = tx.due_timers(now, limit).await?;
    if due.is_empty() {
        return Ok(0);
    }
    let mut ids: Vec<&str> = due.iter().map(|(_, t)| t.profile_id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    let profiles = tx.lock_profiles(&ids).await?;
    let keys: Vec<(String, String)> = due
        .iter()
        .map(|(_, t)| (t.profile_id.clone(), t.journey.clone()))
        .collect();
    let people: Vec<&ProfileState> = profiles.values().collect();
    let (catalog, states) = plan_inputs(tx, runtime, &keys, &people, false, now).await?;
    let inputs: Vec<(&TimerRow, &ProfileState)> = due
        .iter()
        .filter_map(|(_, t)| profiles.get(&t.profile_id).map(|p| (t, p)))
        .collect();
    let planned = plan_timers(&catalog, states, &inputs, now);
    tx.write(&planned, now).await?;
    let seqs: Vec<i64> = due.iter().map(|(s, _)| *s).collect();
    tx.delete_timers(&seqs).await?;
    Ok(due.len())
}

/// Queues effects that no journey step made (campaign proofs): outbox rows only.
pub async fn enqueue<T: RunTx>(tx: &T, rows: Vec<OutboxRow>, now: Millis) -> Result<(), T::Error> {
    let planned = Planned {
        outbox: rows,
        ..Planned::default()
    };
    tx.write(&planned, now).await
}

/// The counters a provider's first report of `status` on a message adds: at the node that
/// sent it.
pub fn message_report_counts(item: &OutboxItem, status: &str) -> Counts {
    let mut counts = Counts::new();
    if let Effect::Message(m) = &item.effect {
        waymark_engine::stats::count_message_report(&mut counts, &item.journey, &m.node, status);
    }
    counts
}

/// Effects whose outcome changes journey state or the profile (a message's does not).
fn acts_on_person(effect: &Effect) -> bool {
    matches!(
        effect,
        Effect::Webhook(_) | Effect::Jump(_) | Effect::UpdateProfile(_)
    )
}

/// Records delivery outcomes, in order. Profile updates and jumps are applied as they come;
/// webhook results move their instances on together, in one plan (one catalog read, the
/// counters added up once), after them.
pub async fn complete<T: RunTx, D: Borrow<(OutboxItem, Delivery)>>(
    tx: &T,
    runtime: &Runtime,
    done: &[D],
    now: Millis,
) -> Result<(), T::Error> {
    let done = || done.iter().map(Borrow::borrow);
    // The people first, as ingest and timers lock them, so one person's journey state
    // changes in one transaction at a time.
    let mut ids: Vec<&str> = done()
        .filter(|(item, _)| acts_on_person(&item.effect))
        .map(|(item, _)| item.profile_id.as_str())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    let mut profiles = if ids.is_empty() {
        HashMap::new()
    } else {
        tx.lock_profiles(&ids).await?
    };
    let mut webhooks = Vec::new();
    for (item, delivery) in done() {
        let outcome = match delivery {
            Delivery::Deferred { at } => {
                tx.put_off(item.seq, *at, None).await?;
                continue;
            }
            Delivery::Retry { at, error } => {
                tx.put_off(item.seq, *at, Some(error)).await?;
                continue;
            }
            Delivery::Delivered(value) => Ok(value.clone()),
            Delivery::Failed(error) => Err(error.clone()),
        };
        if !tx.finish(item.seq, &outcome, now).await? {
            continue;
        }
        match &item.effect {
            Effect::Webhook(call) => webhooks.push((item, call, outcome)),
            Effect::Jump(to) if outcome.is_ok() => {
                let Some(profile) = profiles.get(&item.profile_id) else {
                    continue; // erased meanwhile
                };
                let keys = [(item.profile_id.clone(), to.journey.clone())];
                let (catalog, states) =
                    plan_inputs(tx, runtime, &keys, &[profile], true, now).await?;
                let jump = JumpIn {
                    journey: &to.journey,
                    from: &to.from,
                    entry: &to.entry,
                };
                let planned = plan_jump(&catalog, states, profile, jump, now);
                tx.write(&planned, now).await?;
            }
            Effect::UpdateProfile(update) if outcome.is_ok() => {
                let Some(profile) = profiles.get_mut(&item.profile_id) else {
                    continue;
                };
                let unset = update.unset.iter().map(String::as_str);
                profile.update_traits(&update.set, unset, now);
                tx.save_profile(profile, now).await?;
            }
            _ => {}
        }
    }
    let webhooks: Vec<_> = webhooks
        .into_iter()
        .filter(|(item, _, _)| profiles.contains_key(&item.profile_id))
        .collect();
    if webhooks.is_empty() {
        return Ok(());
    }
    let keys: Vec<(String, String)> = webhooks
        .iter()
        .map(|(item, _, _)| (item.profile_id.clone(), item.journey.clone()))
        .collect();
    let mut people: Vec<&ProfileState> = Vec::new();
    for (item, _, _) in &webhooks {
        if let Some(p) = profiles.get(&item.profile_id)
            && !people.iter().any(|q| q.id == p.id)
        {
            people.push(p);
        }
    }
    let (catalog, states) = plan_inputs(tx, runtime, &keys, &people, false, now).await?;
    let mut results = Vec::with_capacity(webhooks.len());
    for (item, call, outcome) in webhooks {
        let Some(profile) = profiles.get(&item.profile_id) else {
            continue;
        };
        results.push((
            profile,
            WebhookOutcome {
                journey: &item.journey,
                instance: call.instance,
                node: &call.node,
                outcome,
            },
        ));
    }
    let planned = plan_webhook_results(&catalog, states, results, now);
    tx.write(&planned, now).await
}

/// Moves journey rows of a merged-away profile to the profile it merged into. Where both
/// had a state in the same journey, the surviving profile's is kept (the other leaves the
/// counters).
pub async fn merge<T: RunTx>(tx: &T, from: &str, into: &str) -> Result<(), T::Error> {
    // The merged history is decided again, as the surviving person's.
    tx.forget_audiences(from, Some(into), crate::wall_clock_ms())
        .await?;
    let mut counts = Counts::new();
    for (journey, state) in tx.shared_states(from, into).await? {
        count_state_change(&mut counts, &journey, Some(&state), None);
    }
    tx.add_counts(&counts).await?;
    tx.move_journey_rows(from, into).await
}

/// Forgets a person's journeys (erasure); their states leave the counters.
pub async fn erase<T: RunTx>(tx: &T, profile_id: &str) -> Result<(), T::Error> {
    tx.forget_audiences(profile_id, None, crate::wall_clock_ms())
        .await?;
    let mut counts = Counts::new();
    for (journey, state) in tx.profile_states(profile_id).await? {
        count_state_change(&mut counts, &journey, Some(&state), None);
    }
    tx.add_counts(&counts).await?;
    tx.delete_journey_rows(profile_id).await
}

/// How far a held outbox row's due time is moved: past any real time (about 35,000 years),
/// so held rows are never due, and an offset, so releasing restores each row's own time
/// (a message held by quiet hours keeps its hour).
pub const HELD_OFFSET: Millis = 1 << 50;

/// Why the messages of a stopped journey were not sent.
pub const STOPPED_MESSAGE: &str = "not sent: the journey (or campaign) was stopped";

/// What a journey's status change does to what it has queued, in the transaction of the
/// change: a pause holds its outbox rows (sending stops with the deliveries already under
/// way), leaving the pause releases them at the times they had, and a stop ends the
/// instances and fails the messages not yet taken, so nothing more is sent.
pub async fn follow_status<T: RunTx>(
    tx: &T,
    journey: &str,
    before: JourneyStatus,
    after: JourneyStatus,
    now: Millis,
) -> Result<(), T::Error> {
    if after == JourneyStatus::Stopped {
        stop_journey(tx, journey, now).await?;
        tx.cancel_messages(journey, STOPPED_MESSAGE, now).await?;
    }
    match (
        before == JourneyStatus::Paused,
        after == JourneyStatus::Paused,
    ) {
        (false, true) => {
            tx.hold_outbox(journey, true).await?;
        }
        (true, false) => {
            tx.hold_outbox(journey, false).await?;
        }
        _ => {}
    }
    Ok(())
}

/// Stop: every active instance of the journey ends now, and its timers go.
pub async fn stop_journey<T: RunTx>(tx: &T, journey: &str, now: Millis) -> Result<(), T::Error> {
    let states = tx.journey_states(journey).await?;
    let (changed, counts) = stop_all(journey, states, now);
    tx.add_counts(&counts).await?;
    tx.write_stopped(journey, &changed, now).await
}

/// A migration: counters for the states that exist, and the live versions' rate limits on
/// the journey rows.
pub async fn backfill<T: RunTx>(tx: &T) -> Result<(), T::Error> {
    for (key, live) in tx.live_versions().await? {
        let states = tx.journey_states(&key).await?;
        tx.add_counts(&count_states(&key, states.iter().map(|(_, s)| s)))
            .await?;
        let Some(live) = live else { continue };
        if let Some(document) = tx.version(&key, live).await? {
            let limit = waymark_engine::run::entry_rate_limit(&document);
            tx.set_entry_rate_limit(&key, limit).await?;
        }
    }
    Ok(())
}
