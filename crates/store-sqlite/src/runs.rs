//! Running journeys on SQLite: the catalog of journeys and compiled versions, journey
//! states, timers and the outbox. Called from the writer thread inside its transaction.

use std::collections::HashMap;

use rusqlite::{Connection, OptionalExtension, Transaction, params};
use serde_json::Value;
use waymark_core::journey::lifecycle::Status as JourneyStatus;
use waymark_core::time::Millis;
use waymark_core::{Event, ProfileState};
use waymark_engine::JourneyState;
use waymark_engine::run::{
    Catalog, EntryRate, JumpIn, OutboxRow, Planned, Runtime, TimerRow, WebhookOutcome, addresses,
    plan_events, plan_jump, plan_timers, plan_webhook_results, state_keys,
};
use waymark_engine::stats::{Counts, JourneyStats, count_state_change, count_states};
use waymark_store::{Delivery, MessageEvent, OutboxEntry, OutboxItem, StoreError};

use crate::{decode_profile, unavailable};

fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("journey run: {e}"))
}

fn catalog(conn: &Connection) -> Result<Catalog, StoreError> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT key, status, live_version, entry_rate_limit, rate_window, rate_used FROM journeys",
        )
        .map_err(unavailable)?;
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, Option<i64>>(2)?,
                r.get::<_, Option<i64>>(3)?,
                r.get::<_, i64>(4)?,
                r.get::<_, i64>(5)?,
            ))
        })
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(unavailable)?;
    let mut c = Catalog::default();
    for (key, status, live, limit, window, used) in rows {
        let status =
            JourneyStatus::parse(&status).ok_or_else(|| corrupt(format!("status {status:?}")))?;
        if let Some(limit) = limit {
            c.rates.insert(
                key.clone(),
                EntryRate {
                    limit: limit as u32,
                    window,
                    used: used as u32,
                },
            );
        }
        c.journeys.insert(key, (status, live.map(|v| v as u32)));
    }
    Ok(c)
}

/// Puts every version the inputs may need into `catalog`, compiling (once) those not cached.
fn add_versions(
    conn: &Connection,
    cache: &Runtime,
    catalog: &mut Catalog,
    states: &HashMap<(String, String), JourneyState>,
) -> Result<(), StoreError> {
    for (key, version) in cache.fill(catalog, states) {
        let Some(document) = crate::journeys::version(conn, &key, version)? else {
            continue;
        };
        if let Err(problems) = cache.compile_into(catalog, key.clone(), version, document) {
            tracing::error!(journey = %key, version, %problems, "stored journey version does not compile; skipped");
        }
    }
    Ok(())
}

/// For frequency caps: each person's messages (not `log`, not failed) within the longest
/// cap window, read in the plan's transaction.
fn add_recent_messages<'a>(
    conn: &Connection,
    runtime: &Runtime,
    catalog: &mut Catalog,
    profile_ids: impl IntoIterator<Item = &'a str>,
    now: Millis,
) -> Result<(), StoreError> {
    let lookback = runtime.governance().lookback_ms();
    if lookback == 0 {
        return Ok(());
    }
    let mut stmt = conn
        .prepare_cached(
            "SELECT json_extract(effect, '$.channel'), created_at FROM journey_outbox
             WHERE profile_id = ?1 AND kind = 'message' AND status != 'failed' AND created_at > ?2
               AND json_extract(effect, '$.channel') != 'log'",
        )
        .map_err(unavailable)?;
    for id in profile_ids {
        if catalog.recent_messages.contains_key(id) {
            continue;
        }
        let sent = stmt
            .query_map(params![id, now - lookback], |r| {
                Ok(waymark_core::governance::Sent {
                    channel: r.get(0)?,
                    at: r.get(1)?,
                })
            })
            .and_then(Iterator::collect::<Result<Vec<_>, _>>)
            .map_err(unavailable)?;
        catalog.recent_messages.insert(id.to_owned(), sent);
    }
    Ok(())
}

/// What governance needs to know about the people a plan may message: their recent
/// messages (for caps) and which of their addresses are on the suppression list.
fn add_people<'a>(
    conn: &Connection,
    runtime: &Runtime,
    catalog: &mut Catalog,
    people: impl IntoIterator<Item = &'a ProfileState> + Clone,
    now: Millis,
) -> Result<(), StoreError> {
    add_recent_messages(
        conn,
        runtime,
        catalog,
        people.clone().into_iter().map(|p| p.id.as_str()),
        now,
    )?;
    if !catalog.sends_to_addresses() {
        return Ok(());
    }
    for p in people {
        crate::suppressions::listed(conn, &addresses(p), &mut catalog.suppressed)?;
    }
    Ok(())
}

/// What a plan reads besides its inputs: the (profile, journey) states, the catalog with
/// every version they may need, and what governance needs about the people.
fn plan_inputs<'a>(
    tx: &Transaction<'_>,
    runtime: &Runtime,
    keys: &[(String, String)],
    people: impl IntoIterator<Item = &'a ProfileState> + Clone,
    now: Millis,
) -> Result<(Catalog, waymark_engine::run::States), StoreError> {
    let states = load_states(tx, keys)?;
    let mut catalog = catalog(tx)?;
    add_versions(tx, runtime, &mut catalog, &states)?;
    add_people(tx, runtime, &mut catalog, people, now)?;
    Ok((catalog, states))
}

fn load_states(
    conn: &Connection,
    keys: &[(String, String)],
) -> Result<HashMap<(String, String), JourneyState>, StoreError> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT state FROM journey_states WHERE profile_id = ?1 AND journey_key = ?2",
        )
        .map_err(unavailable)?;
    let mut out = HashMap::new();
    for (p, k) in keys {
        let state: Option<String> = stmt
            .query_row(params![p, k], |r| r.get(0))
            .optional()
            .map_err(unavailable)?;
        if let Some(state) = state {
            out.insert(
                (p.clone(), k.clone()),
                serde_json::from_str(&state).map_err(corrupt)?,
            );
        }
    }
    Ok(out)
}

fn write(tx: &Transaction<'_>, planned: &Planned, now: Millis) -> Result<(), StoreError> {
    let mut upsert = tx
        .prepare_cached(
            "INSERT INTO journey_states (profile_id, journey_key, state, updated_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (profile_id, journey_key) DO UPDATE SET state = excluded.state, updated_at = excluded.updated_at",
        )
        .map_err(unavailable)?;
    for (p, k, state) in &planned.states {
        let text = serde_json::to_string(state).map_err(corrupt)?;
        upsert
            .execute(params![p, k, text, now])
            .map_err(unavailable)?;
    }
    let mut timer = tx
        .prepare_cached("INSERT INTO journey_timers (due, profile_id, journey_key, instance, timer) VALUES (?1, ?2, ?3, ?4, ?5)")
        .map_err(unavailable)?;
    for t in &planned.timers {
        timer
            .execute(params![
                t.due,
                t.profile_id,
                t.journey,
                i64::from(t.instance),
                t.timer as i64
            ])
            .map_err(unavailable)?;
    }
    let mut cancel = tx
        .prepare_cached("DELETE FROM journey_timers WHERE profile_id = ?1 AND journey_key = ?2 AND instance = ?3")
        .map_err(unavailable)?;
    for (p, k, instance) in &planned.ended {
        cancel
            .execute(params![p, k, i64::from(*instance)])
            .map_err(unavailable)?;
    }
    let mut outbox = tx
        .prepare_cached(
            "INSERT INTO journey_outbox (key, profile_id, journey_key, kind, effect, status, created_at, next_attempt_at, finished_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, CASE WHEN ?6 = 'pending' THEN NULL ELSE ?7 END) ON CONFLICT (key) DO NOTHING",
        )
        .map_err(unavailable)?;
    for o in &planned.outbox {
        outbox
            .execute(params![
                o.key,
                o.profile_id,
                o.journey,
                o.kind,
                o.effect.to_string(),
                o.status,
                now,
                o.due.unwrap_or(now)
            ])
            .map_err(unavailable)?;
    }
    let mut rate = tx
        .prepare_cached("UPDATE journeys SET rate_window = ?2, rate_used = ?3 WHERE key = ?1")
        .map_err(unavailable)?;
    for (key, r) in &planned.rates {
        rate.execute(params![key, r.window, r.used])
            .map_err(unavailable)?;
    }
    add_counts(tx, &planned.counts)
}

fn add_counts(tx: &Transaction<'_>, counts: &Counts) -> Result<(), StoreError> {
    let mut add = tx
        .prepare_cached(
            "INSERT INTO journey_counters (journey_key, node, name, value) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (journey_key, node, name) DO UPDATE SET value = value + excluded.value",
        )
        .map_err(unavailable)?;
    for ((journey, node, name), value) in counts {
        add.execute(params![journey, node, name, value])
            .map_err(unavailable)?;
    }
    Ok(())
}

/// Migration 6: counters for the states that exist, and the live versions' rate limits.
pub fn backfill(tx: &Transaction<'_>) -> Result<(), StoreError> {
    let keys: Vec<(String, Option<i64>)> = tx
        .prepare("SELECT key, live_version FROM journeys")
        .and_then(|mut s| {
            s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<_, _>>()
        })
        .map_err(unavailable)?;
    for (key, live) in keys {
        let states = journey_states(tx, &key)?;
        add_counts(tx, &count_states(&key, &states))?;
        if let Some(document) = live
            .map(|v| crate::journeys::version(tx, &key, v as u32))
            .transpose()?
            .flatten()
        {
            tx.execute(
                "UPDATE journeys SET entry_rate_limit = ?2 WHERE key = ?1",
                params![key, waymark_engine::run::entry_rate_limit(&document)],
            )
            .map_err(unavailable)?;
        }
    }
    Ok(())
}

/// Runs every live journey on the accepted events of an ingest, inside its transaction.
pub fn on_events(
    tx: &Transaction<'_>,
    cache: &Runtime,
    events: &[(&Event, &ProfileState)],
    now: Millis,
) -> Result<(), StoreError> {
    let mut catalog = catalog(tx)?;
    if catalog.is_empty() || events.is_empty() {
        return Ok(());
    }
    let keys = state_keys(&catalog, events.iter().map(|(_, p)| p.id.as_str()));
    let states = load_states(tx, &keys)?;
    add_versions(tx, cache, &mut catalog, &states)?;
    add_people(tx, cache, &mut catalog, events.iter().map(|(_, p)| *p), now)?;
    let planned = plan_events(&catalog, states, events, now);
    write(tx, &planned, now)
}

/// Fires due timers, in due order; returns how many.
pub fn fire_due(
    tx: &Transaction<'_>,
    cache: &Runtime,
    now: Millis,
    limit: u32,
) -> Result<usize, StoreError> {
    let mut stmt = tx
        .prepare_cached("SELECT seq, due, profile_id, journey_key, instance, timer FROM journey_timers WHERE due <= ?1 ORDER BY due, seq LIMIT ?2")
        .map_err(unavailable)?;
    let due: Vec<(i64, TimerRow)> = stmt
        .query_map(params![now, i64::from(limit)], |r| {
            Ok((
                r.get(0)?,
                TimerRow {
                    due: r.get(1)?,
                    profile_id: r.get(2)?,
                    journey: r.get(3)?,
                    instance: r.get::<_, i64>(4)? as u32,
                    timer: r.get::<_, i64>(5)? as u64,
                },
            ))
        })
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(unavailable)?;
    drop(stmt);
    if due.is_empty() {
        return Ok(0);
    }
    let mut profiles: HashMap<String, ProfileState> = HashMap::new();
    for (_, t) in &due {
        if profiles.contains_key(&t.profile_id) {
            continue;
        }
        let state: Option<String> = tx
            .prepare_cached("SELECT state FROM profiles WHERE id = ?1")
            .and_then(|mut s| s.query_row([&t.profile_id], |r| r.get(0)).optional())
            .map_err(unavailable)?;
        if let Some(state) = state {
            profiles.insert(t.profile_id.clone(), decode_profile(&state)?);
        }
    }
    let keys: Vec<(String, String)> = due
        .iter()
        .map(|(_, t)| (t.profile_id.clone(), t.journey.clone()))
        .collect();
    let (catalog, states) = plan_inputs(tx, cache, &keys, profiles.values(), now)?;
    let inputs: Vec<(&TimerRow, &ProfileState)> = due
        .iter()
        .filter_map(|(_, t)| profiles.get(&t.profile_id).map(|p| (t, p)))
        .collect();
    let planned = plan_timers(&catalog, states, &inputs, now);
    write(tx, &planned, now)?;
    let mut delete = tx
        .prepare_cached("DELETE FROM journey_timers WHERE seq = ?1")
        .map_err(unavailable)?;
    for (seq, _) in &due {
        delete.execute([seq]).map_err(unavailable)?;
    }
    Ok(due.len())
}

/// Moves journey rows of a merged-away profile to the profile it merged into. Where both
/// had a state in the same journey, the surviving profile's is kept.
pub fn merge(tx: &Transaction<'_>, from: &str, into: &str) -> Result<(), StoreError> {
    let dropped: Vec<(String, String)> = tx
        .prepare_cached(
            "SELECT f.journey_key, f.state FROM journey_states f JOIN journey_states i
             ON i.journey_key = f.journey_key AND i.profile_id = ?2 WHERE f.profile_id = ?1",
        )
        .and_then(|mut s| {
            s.query_map(params![from, into], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<_, _>>()
        })
        .map_err(unavailable)?;
    let mut counts = Counts::new();
    for (journey, state) in dropped {
        let state: JourneyState = serde_json::from_str(&state).map_err(corrupt)?;
        count_state_change(&mut counts, &journey, Some(&state), None);
    }
    add_counts(tx, &counts)?;
    tx.execute(
        "UPDATE OR IGNORE journey_states SET profile_id = ?1 WHERE profile_id = ?2",
        params![into, from],
    )
    .map_err(unavailable)?;
    tx.execute("DELETE FROM journey_states WHERE profile_id = ?1", [from])
        .map_err(unavailable)?;
    tx.execute(
        "UPDATE journey_timers SET profile_id = ?1 WHERE profile_id = ?2",
        params![into, from],
    )
    .map_err(unavailable)?;
    for table in ["journey_outbox", "inbox_marks"] {
        tx.execute(
            &format!("UPDATE {table} SET profile_id = ?1 WHERE profile_id = ?2"),
            params![into, from],
        )
        .map_err(unavailable)?;
    }
    Ok(())
}

pub fn erase(tx: &Transaction<'_>, profile_id: &str) -> Result<(), StoreError> {
    let mut counts = Counts::new();
    for (journey, state) in profile_journeys(tx, profile_id)? {
        count_state_change(&mut counts, &journey, Some(&state), None);
    }
    add_counts(tx, &counts)?;
    tx.execute(
        "DELETE FROM message_events WHERE key IN (SELECT key FROM journey_outbox WHERE profile_id = ?1)",
        [profile_id],
    )
    .map_err(unavailable)?;
    for table in [
        "journey_states",
        "journey_timers",
        "journey_outbox",
        "inbox_marks",
    ] {
        tx.execute(
            &format!("DELETE FROM {table} WHERE profile_id = ?1"),
            [profile_id],
        )
        .map_err(unavailable)?;
    }
    Ok(())
}

pub fn profile_journeys(
    conn: &Connection,
    profile_id: &str,
) -> Result<Vec<(String, JourneyState)>, StoreError> {
    let mut stmt = conn.prepare_cached("SELECT journey_key, state FROM journey_states WHERE profile_id = ?1 ORDER BY journey_key").map_err(unavailable)?;
    let rows = stmt
        .query_map([profile_id], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
        })
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(unavailable)?;
    rows.into_iter()
        .map(|(k, s)| Ok((k, serde_json::from_str(&s).map_err(corrupt)?)))
        .collect()
}

/// See `JourneyRunStore::profile_outbox_page`.
pub fn profile_outbox(
    conn: &Connection,
    profile_id: &str,
    kind: Option<&str>,
    before: Option<i64>,
    limit: u32,
) -> Result<Vec<OutboxEntry>, StoreError> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT key, journey_key, kind, effect, status, attempts, last_error, result, created_at, next_attempt_at, finished_at, seq
             FROM (SELECT * FROM journey_outbox WHERE profile_id = ?1 AND seq < ?3 AND (?4 IS NULL OR kind = ?4)
                   ORDER BY seq DESC LIMIT ?2)
             ORDER BY seq",
        )
        .map_err(unavailable)?;
    type Raw = (
        String,
        String,
        String,
        String,
        String,
        i64,
        Option<String>,
        Option<String>,
        i64,
        i64,
        Option<i64>,
        i64,
    );
    let limit = limit.min(waymark_store::MAX_PROFILE_OUTBOX);
    let rows: Vec<Raw> = stmt
        .query_map(
            params![profile_id, limit, before.unwrap_or(i64::MAX), kind],
            |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                    r.get(7)?,
                    r.get(8)?,
                    r.get(9)?,
                    r.get(10)?,
                    r.get(11)?,
                ))
            },
        )
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(unavailable)?;
    let mut events = message_events_of(conn, rows.iter().map(|r| r.0.as_str()))?;
    rows.into_iter()
        .map(
            |(
                key,
                journey,
                kind,
                effect,
                status,
                attempts,
                last_error,
                result,
                created_at,
                next,
                finished_at,
                seq,
            )| {
                Ok(OutboxEntry {
                    seq,
                    events: events.remove(&key).unwrap_or_default(),
                    row: OutboxRow {
                        key,
                        profile_id: profile_id.to_owned(),
                        journey,
                        kind,
                        effect: serde_json::from_str(&effect).map_err(corrupt)?,
                        status,
                        due: None,
                    },
                    attempts: attempts as u32,
                    last_error,
                    result: result
                        .map(|t| serde_json::from_str(&t).map_err(corrupt))
                        .transpose()?,
                    created_at,
                    next_attempt_at: next,
                    finished_at,
                })
            },
        )
        .collect()
}

/// The provider reports of these messages, by message key, each list oldest first.
fn message_events_of<'a>(
    conn: &Connection,
    keys: impl Iterator<Item = &'a str>,
) -> Result<HashMap<String, Vec<MessageEvent>>, StoreError> {
    let mut stmt = conn
        .prepare_cached("SELECT status, detail, at FROM message_events WHERE key = ?1 ORDER BY at")
        .map_err(unavailable)?;
    let mut events: HashMap<String, Vec<MessageEvent>> = HashMap::new();
    for key in keys {
        let rows = stmt
            .query_map([key], |r| {
                Ok(MessageEvent {
                    status: r.get(0)?,
                    detail: r.get(1)?,
                    at: r.get(2)?,
                })
            })
            .and_then(Iterator::collect::<Result<Vec<_>, _>>)
            .map_err(unavailable)?;
        if !rows.is_empty() {
            events.insert(key.to_owned(), rows);
        }
    }
    Ok(events)
}

/// See `OutboxStore::record_message_event`.
pub fn record_message_event(
    tx: &Transaction<'_>,
    key: &str,
    event: &MessageEvent,
) -> Result<Option<OutboxItem>, StoreError> {
    let item = tx
        .prepare_cached(&format!(
            "SELECT {OUTBOX_ITEM} FROM journey_outbox WHERE key = ?1 AND kind = 'message'"
        ))
        .and_then(|mut s| s.query_row([key], outbox_item).optional())
        .map_err(unavailable)?
        .transpose()?;
    let Some(item) = item else {
        return Ok(None);
    };
    tx.prepare_cached(
        "INSERT INTO message_events (key, status, detail, at) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (key, status) DO NOTHING",
    )
    .and_then(|mut s| s.execute(params![key, event.status, event.detail, event.at]))
    .map_err(unavailable)?;
    Ok(Some(item))
}

/// The columns [`outbox_item`] reads, in its order.
const OUTBOX_ITEM: &str = "seq, key, profile_id, journey_key, kind, effect, attempts, created_at";

/// An outbox row selected as [`OUTBOX_ITEM`]; its effect must be valid JSON.
fn outbox_item(r: &rusqlite::Row<'_>) -> rusqlite::Result<Result<OutboxItem, StoreError>> {
    let effect: String = r.get(5)?;
    let effect = match serde_json::from_str(&effect) {
        Ok(effect) => effect,
        Err(e) => return Ok(Err(corrupt(e))),
    };
    Ok(Ok(OutboxItem {
        seq: r.get(0)?,
        key: r.get(1)?,
        profile_id: r.get(2)?,
        journey: r.get(3)?,
        kind: r.get(4)?,
        effect,
        attempts: r.get::<_, i64>(6)? as u32,
        created_at: r.get(7)?,
    }))
}

pub fn outbox_key(conn: &Connection, seq: i64) -> Result<Option<String>, StoreError> {
    conn.prepare_cached("SELECT key FROM journey_outbox WHERE seq = ?1")
        .and_then(|mut s| s.query_row([seq], |r| r.get(0)).optional())
        .map_err(unavailable)
}

/// Due rows nobody holds a lease on, oldest due first. A read: the leases are the caller's.
pub fn claim_unleased(
    conn: &Connection,
    now: Millis,
    limit: u32,
    leased: &HashMap<i64, Millis>,
) -> Result<Vec<OutboxItem>, StoreError> {
    // The leased rows are among the oldest due, so read past as many: from the index alone.
    let mut due = conn
        .prepare_cached(
            "SELECT seq FROM journey_outbox WHERE status = 'pending' AND next_attempt_at <= ?1
             ORDER BY next_attempt_at, seq LIMIT ?2",
        )
        .map_err(unavailable)?;
    let seqs: Vec<i64> = due
        .query_map(params![now, i64::from(limit) + leased.len() as i64], |r| {
            r.get(0)
        })
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(unavailable)?;
    let mut row = conn
        .prepare_cached(&format!(
            "SELECT {OUTBOX_ITEM} FROM journey_outbox WHERE seq = ?1"
        ))
        .map_err(unavailable)?;
    seqs.into_iter()
        .filter(|s| !leased.contains_key(s))
        .take(limit as usize)
        .map(|seq| row.query_row([seq], outbox_item).map_err(unavailable)?)
        .collect()
}

pub(crate) fn load_profile(
    conn: &Connection,
    id: &str,
) -> Result<Option<ProfileState>, StoreError> {
    let state: Option<String> = conn
        .prepare_cached("SELECT state FROM profiles WHERE id = ?1")
        .and_then(|mut s| s.query_row([id], |r| r.get(0)).optional())
        .map_err(unavailable)?;
    state.as_deref().map(decode_profile).transpose()
}

/// Writes back a profile changed outside ingest (trait updates from journeys, a dropped
/// identity).
pub(crate) fn save_profile(
    tx: &Transaction<'_>,
    profile: &ProfileState,
    now: Millis,
) -> Result<(), StoreError> {
    let state = serde_json::to_string(profile).map_err(corrupt)?;
    tx.execute(
        "UPDATE profiles SET state = ?2, updated_at = ?3 WHERE id = ?1",
        params![profile.id, state, now],
    )
    .map_err(unavailable)?;
    Ok(())
}

/// Records delivery outcomes, in order, in the caller's transaction. Webhook results move
/// their instances on in one plan (one catalog read, counters added up once); profile
/// updates and jumps are applied before them, in order.
pub fn complete_many(
    tx: &Transaction<'_>,
    cache: &Runtime,
    done: &[(OutboxItem, Delivery)],
    now: Millis,
) -> Result<(), StoreError> {
    let mut webhooks = Vec::new();
    for (item, delivery) in done {
        let Some(outcome) = record_delivery(tx, item, delivery, now)? else {
            continue;
        };
        match item.kind.as_str() {
            "webhook" => webhooks.push((item, outcome)),
            _ => apply_effect(tx, cache, item, outcome, now)?,
        }
    }
    if webhooks.is_empty() {
        return Ok(());
    }
    let mut profiles: HashMap<String, ProfileState> = HashMap::new();
    let mut keys = Vec::with_capacity(webhooks.len());
    for (item, _) in &webhooks {
        if !profiles.contains_key(&item.profile_id)
            && let Some(p) = load_profile(tx, &item.profile_id)?
        {
            profiles.insert(item.profile_id.clone(), p);
        }
        keys.push((item.profile_id.clone(), item.journey.clone()));
    }
    let (catalog, states) = plan_inputs(tx, cache, &keys, profiles.values(), now)?;
    let mut results = Vec::with_capacity(webhooks.len());
    for (item, outcome) in webhooks {
        let Some(profile) = profiles.get(&item.profile_id) else {
            continue; // erased meanwhile
        };
        let (Some(instance), Some(node)) = (
            item.effect["instance"].as_u64(),
            item.effect["node"].as_str(),
        ) else {
            return Err(corrupt("webhook effect without instance or node"));
        };
        results.push((
            profile,
            WebhookOutcome {
                journey: &item.journey,
                instance: instance as u32,
                node,
                outcome,
            },
        ));
    }
    let planned = plan_webhook_results(&catalog, states, results, now);
    write(tx, &planned, now)
}

/// Marks the row delivered, failed or due again. Returns the final outcome to act on, or
/// `None` when there is nothing more to do (a retry, or a row already completed because a
/// lease ran out while the call was slow).
fn record_delivery(
    tx: &Transaction<'_>,
    item: &OutboxItem,
    delivery: &Delivery,
    now: Millis,
) -> Result<Option<Result<Value, String>>, StoreError> {
    match delivery {
        Delivery::Deferred { at } => {
            tx.prepare_cached(
                "UPDATE journey_outbox SET next_attempt_at = ?2 WHERE seq = ?1 AND status = 'pending'",
            )
            .and_then(|mut s| s.execute(params![item.seq, at]))
            .map_err(unavailable)?;
            Ok(None)
        }
        Delivery::Retry { at, error } => {
            tx.prepare_cached(
                "UPDATE journey_outbox SET attempts = attempts + 1, next_attempt_at = ?2, last_error = ?3 WHERE seq = ?1 AND status = 'pending'",
            )
            .and_then(|mut s| s.execute(params![item.seq, at, error]))
            .map_err(unavailable)?;
            Ok(None)
        }
        Delivery::Delivered(value) => {
            let changed = tx
                .prepare_cached(
                    "UPDATE journey_outbox SET attempts = attempts + 1, status = 'done', result = ?2, finished_at = ?3 WHERE seq = ?1 AND status = 'pending'",
                )
                .and_then(|mut s| s.execute(params![item.seq, value.to_string(), now]))
                .map_err(unavailable)?;
            Ok((changed > 0).then(|| Ok(value.clone())))
        }
        Delivery::Failed(error) => {
            let changed = tx
                .prepare_cached(
                    "UPDATE journey_outbox SET attempts = attempts + 1, status = 'failed', last_error = ?2, finished_at = ?3 WHERE seq = ?1 AND status = 'pending'",
                )
                .and_then(|mut s| s.execute(params![item.seq, error, now]))
                .map_err(unavailable)?;
            Ok((changed > 0).then(|| Err(error.clone())))
        }
    }
}

/// What a delivered `update_profile` or `jump` does to the store.
fn apply_effect(
    tx: &Transaction<'_>,
    cache: &Runtime,
    item: &OutboxItem,
    outcome: Result<Value, String>,
    now: Millis,
) -> Result<(), StoreError> {
    if outcome.is_err() {
        return Ok(());
    }
    let Some(mut profile) = load_profile(tx, &item.profile_id)? else {
        return Ok(());
    };
    match item.kind.as_str() {
        "jump" => {
            let (Some(target), Some(from)) = (
                item.effect["journey"].as_str(),
                item.effect["from"].as_str(),
            ) else {
                return Err(corrupt("jump effect without journey or from"));
            };
            let keys = vec![(item.profile_id.clone(), target.to_owned())];
            let (catalog, states) = plan_inputs(tx, cache, &keys, [&profile], now)?;
            let jump = JumpIn {
                journey: target,
                from,
                entry: &item.effect["entry"],
            };
            let planned = plan_jump(&catalog, states, &profile, jump, now);
            write(tx, &planned, now)?;
        }
        "update_profile" => {
            let empty = serde_json::Map::new();
            let set = item.effect["set"].as_object().unwrap_or(&empty);
            let unset = item.effect["unset"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|v| v.as_str());
            profile.update_traits(set, unset, now);
            save_profile(tx, &profile, now)?;
        }
        _ => {}
    }
    Ok(())
}

pub fn release_leases(tx: &Transaction<'_>) -> Result<u64, StoreError> {
    let n = tx.execute("UPDATE journey_outbox SET leased_until = NULL WHERE status = 'pending' AND leased_until IS NOT NULL", []).map_err(unavailable)?;
    Ok(n as u64)
}

pub fn journey_stats(conn: &Connection, journey: &str) -> Result<JourneyStats, StoreError> {
    let rows: Vec<(String, String, i64)> = conn
        .prepare_cached("SELECT node, name, value FROM journey_counters WHERE journey_key = ?1")
        .and_then(|mut s| {
            s.query_map([journey], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect::<Result<_, _>>()
        })
        .map_err(unavailable)?;
    Ok(waymark_engine::stats::from_counters(
        rows.iter().map(|(n, c, v)| (n.as_str(), c.as_str(), *v)),
    ))
}

fn journey_states(conn: &Connection, journey: &str) -> Result<Vec<JourneyState>, StoreError> {
    let mut stmt = conn
        .prepare_cached("SELECT state FROM journey_states WHERE journey_key = ?1")
        .map_err(unavailable)?;
    let rows = stmt
        .query_map([journey], |r| r.get::<_, String>(0))
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(unavailable)?;
    rows.iter()
        .map(|s| serde_json::from_str(s).map_err(corrupt))
        .collect()
}

/// Stop: every active instance of the journey ends now, and its timers go.
pub fn stop_journey(tx: &Transaction<'_>, journey: &str, now: Millis) -> Result<(), StoreError> {
    let mut stmt = tx
        .prepare_cached("SELECT profile_id, state FROM journey_states WHERE journey_key = ?1")
        .map_err(unavailable)?;
    let rows = stmt
        .query_map([journey], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
        })
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(unavailable)?;
    drop(stmt);
    let mut states = Vec::with_capacity(rows.len());
    for (p, s) in rows {
        states.push((
            p,
            serde_json::from_str::<JourneyState>(&s).map_err(corrupt)?,
        ));
    }
    let (changed, counts) = waymark_engine::run::stop_all(journey, states, now);
    add_counts(tx, &counts)?;
    for (p, state) in &changed {
        let text = serde_json::to_string(state).map_err(corrupt)?;
        tx.execute("UPDATE journey_states SET state = ?3, updated_at = ?4 WHERE profile_id = ?1 AND journey_key = ?2", params![p, journey, text, now])
            .map_err(unavailable)?;
    }
    tx.execute(
        "DELETE FROM journey_timers WHERE journey_key = ?1",
        [journey],
    )
    .map_err(unavailable)?;
    Ok(())
}
