//! Running journeys on PostgreSQL: the same rows and the same pure planning as the SQLite
//! store, inside the caller's transaction. Profiles are locked by the caller (ingest) or
//! here (timers), so one person's journey state changes in one transaction at a time.

use std::collections::HashMap;

use deadpool_postgres::GenericClient;
use waymark_core::journey::lifecycle::Status as JourneyStatus;
use waymark_core::time::Millis;
use waymark_core::{Event, ProfileState};
use waymark_engine::JourneyState;
use waymark_engine::run::{
    Catalog, EntryRate, JumpIn, OutboxRow, Planned, Runtime, TimerRow, plan_events, plan_jump,
    plan_timers, plan_webhook_result, state_keys,
};
use waymark_engine::stats::{Counts, JourneyStats, count_state_change, count_states};
use waymark_store::{Delivery, MessageEvent, OutboxEntry, OutboxItem, StoreError};

use crate::{Abort, db_error, decode_profile};

fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("journey run: {e}"))
}

async fn catalog(client: &impl GenericClient) -> Result<Catalog, Abort> {
    let rows = client
        .query(
            "SELECT key, status, live_version, entry_rate_limit, rate_window, rate_used FROM journeys",
            &[],
        )
        .await?;
    let mut c = Catalog::default();
    for row in rows {
        let (key, status, live): (String, String, Option<i32>) =
            (row.get(0), row.get(1), row.get(2));
        let status =
            JourneyStatus::parse(&status).ok_or_else(|| corrupt(format!("status {status:?}")))?;
        if let Some(limit) = row.get::<_, Option<i32>>(3) {
            c.rates.insert(
                key.clone(),
                EntryRate {
                    limit: limit as u32,
                    window: row.get(4),
                    used: row.get::<_, i32>(5) as u32,
                },
            );
        }
        c.journeys.insert(key, (status, live.map(|v| v as u32)));
    }
    Ok(c)
}

/// The catalog for inputs that may enter journeys: rate-limited journey rows are locked
/// (in key order) and read again, so concurrent transactions cannot both use the same room.
async fn catalog_for_entries(client: &impl GenericClient) -> Result<Catalog, Abort> {
    let mut c = catalog(client).await?;
    if !c.rates.is_empty() {
        let rows = client
            .query(
                "SELECT key, rate_window, rate_used FROM journeys WHERE entry_rate_limit IS NOT NULL ORDER BY key FOR UPDATE",
                &[],
            )
            .await?;
        for row in rows {
            if let Some(rate) = c.rates.get_mut(row.get::<_, &str>(0)) {
                rate.window = row.get(1);
                rate.used = row.get::<_, i32>(2) as u32;
            }
        }
    }
    Ok(c)
}

/// Counter rows are spread over shards, one per transaction, so concurrent transactions
/// seldom update the same row; readers sum the shards.
const COUNTER_SHARDS: u32 = 8;
static NEXT_SHARD: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

async fn add_counts(client: &impl GenericClient, counts: &Counts) -> Result<(), Abort> {
    if counts.is_empty() {
        return Ok(());
    }
    let shard =
        (NEXT_SHARD.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % COUNTER_SHARDS) as i16;
    let (mut journeys, mut nodes, mut names, mut values) = (vec![], vec![], vec![], vec![]);
    // Counts are ordered, so every transaction locks counter rows in the same order.
    for ((journey, node, name), value) in counts {
        journeys.push(journey.as_str());
        nodes.push(node.as_str());
        names.push(name.as_str());
        values.push(*value);
    }
    client
        .execute(
            "INSERT INTO journey_counters (journey_key, node, name, shard, value)
             SELECT j, n, c, $5, v FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[]) AS q(j, n, c, v)
             ON CONFLICT (journey_key, node, name, shard) DO UPDATE SET value = journey_counters.value + excluded.value",
            &[&journeys, &nodes, &names, &values, &shard],
        )
        .await?;
    Ok(())
}

/// Migration 6: counters for the states that exist, and the live versions' rate limits.
pub async fn backfill(client: &impl GenericClient) -> Result<(), StoreError> {
    let keys = client
        .query("SELECT key, live_version FROM journeys", &[])
        .await
        .map_err(db_error)?;
    for row in keys {
        let (key, live): (String, Option<i32>) = (row.get(0), row.get(1));
        let states = journey_states(client, &key).await?;
        add_counts(client, &count_states(&key, &states)).await?;
        if let Some(document) = match live {
            Some(v) => crate::journeys::version(client, &key, v as u32).await?,
            None => None,
        } {
            let limit = waymark_engine::run::entry_rate_limit(&document).map(|l| l as i32);
            client
                .execute(
                    "UPDATE journeys SET entry_rate_limit = $2 WHERE key = $1",
                    &[&key, &limit],
                )
                .await
                .map_err(db_error)?;
        }
    }
    Ok(())
}

/// Puts every version the inputs may need into `catalog`, compiling (once) those not cached.
async fn add_versions(
    client: &impl GenericClient,
    cache: &Runtime,
    catalog: &mut Catalog,
    states: &HashMap<(String, String), JourneyState>,
) -> Result<(), Abort> {
    for (key, version) in cache.fill(catalog, states) {
        let Some(document) = crate::journeys::version(client, &key, version).await? else {
            continue;
        };
        if let Err(problems) = cache.compile_into(catalog, key.clone(), version, document) {
            tracing::error!(journey = %key, version, %problems, "stored journey version does not compile; skipped");
        }
    }
    Ok(())
}

/// For frequency caps: each person's messages (not `log`, not failed) within the longest
/// cap window, read in the plan's transaction (the people are locked by then).
async fn add_recent_messages(
    client: &impl GenericClient,
    runtime: &Runtime,
    catalog: &mut Catalog,
    profile_ids: &[&str],
    now: Millis,
) -> Result<(), Abort> {
    let lookback = runtime.governance().lookback_ms();
    if lookback == 0 {
        return Ok(());
    }
    let rows = client
        .query(
            "SELECT profile_id, effect->>'channel', created_at FROM journey_outbox
             WHERE profile_id = ANY($1) AND kind = 'message' AND status <> 'failed'
               AND created_at > $2 AND effect->>'channel' <> 'log'",
            &[&profile_ids, &(now - lookback)],
        )
        .await?;
    for id in profile_ids {
        catalog.recent_messages.entry((*id).to_owned()).or_default();
    }
    for row in rows {
        catalog.recent_messages.entry(row.get(0)).or_default().push(
            waymark_core::governance::Sent {
                channel: row.get(1),
                at: row.get(2),
            },
        );
    }
    Ok(())
}

/// What governance needs to know about the people a plan may message: their recent
/// messages (for caps) and which of their addresses are on the suppression list.
async fn add_people(
    client: &impl GenericClient,
    runtime: &Runtime,
    catalog: &mut Catalog,
    people: &[&ProfileState],
    now: Millis,
) -> Result<(), Abort> {
    let ids: Vec<&str> = people.iter().map(|p| p.id.as_str()).collect();
    add_recent_messages(client, runtime, catalog, &ids, now).await?;
    if !catalog.sends_to_addresses() {
        return Ok(());
    }
    let (mut channels, mut addresses) = (Vec::new(), Vec::new());
    for p in people {
        for (channel, address) in waymark_engine::run::addresses(p) {
            channels.push(channel);
            addresses.push(address);
        }
    }
    if addresses.is_empty() {
        return Ok(());
    }
    let rows = client
        .query(
            "SELECT s.channel, s.address, s.reason FROM suppressions s
             JOIN unnest($1::text[], $2::text[]) AS wanted(channel, address)
               ON s.channel = wanted.channel AND s.address = wanted.address
             WHERE s.suppressed",
            &[&channels, &addresses],
        )
        .await?;
    for row in rows {
        catalog
            .suppressed
            .insert((row.get(0), row.get(1)), row.get(2));
    }
    Ok(())
}

/// What a plan reads besides its inputs: the (profile, journey) states, the catalog (with
/// rate-limited journeys locked when the plan may enter people), every version the states
/// may need, and what governance needs about the people.
async fn plan_inputs(
    client: &impl GenericClient,
    runtime: &Runtime,
    keys: &[(String, String)],
    people: &[&ProfileState],
    entries: bool,
    now: Millis,
) -> Result<(Catalog, waymark_engine::run::States), Abort> {
    let states = load_states(client, keys).await?;
    let mut catalog = if entries {
        catalog_for_entries(client).await?
    } else {
        catalog(client).await?
    };
    add_versions(client, runtime, &mut catalog, &states).await?;
    add_people(client, runtime, &mut catalog, people, now).await?;
    Ok((catalog, states))
}

async fn load_states(
    client: &impl GenericClient,
    keys: &[(String, String)],
) -> Result<HashMap<(String, String), JourneyState>, Abort> {
    let profiles: Vec<&str> = keys.iter().map(|(p, _)| p.as_str()).collect();
    let journeys: Vec<&str> = keys.iter().map(|(_, k)| k.as_str()).collect();
    let rows = client
        .query(
            "SELECT s.profile_id, s.journey_key, s.state::text FROM journey_states s
             JOIN unnest($1::text[], $2::text[]) AS q(p, k) ON s.profile_id = q.p AND s.journey_key = q.k",
            &[&profiles, &journeys],
        )
        .await?;
    let mut out = HashMap::new();
    for row in rows {
        let state: JourneyState =
            serde_json::from_str(&row.get::<_, String>(2)).map_err(corrupt)?;
        out.insert((row.get(0), row.get(1)), state);
    }
    Ok(out)
}

async fn write(client: &impl GenericClient, planned: &Planned, now: Millis) -> Result<(), Abort> {
    for (p, k, state) in &planned.states {
        let text = serde_json::to_string(state).map_err(corrupt)?;
        client
            .execute(
                "INSERT INTO journey_states (profile_id, journey_key, state, updated_at) VALUES ($1, $2, $3::text::jsonb, $4)
                 ON CONFLICT (profile_id, journey_key) DO UPDATE SET state = excluded.state, updated_at = excluded.updated_at",
                &[p, k, &text, &now],
            )
            .await?;
    }
    for t in &planned.timers {
        client
            .execute(
                "INSERT INTO journey_timers (due, profile_id, journey_key, instance, timer) VALUES ($1, $2, $3, $4, $5)",
                &[&t.due, &t.profile_id, &t.journey, &(t.instance as i32), &(t.timer as i64)],
            )
            .await?;
    }
    for (p, k, instance) in &planned.ended {
        client
            .execute("DELETE FROM journey_timers WHERE profile_id = $1 AND journey_key = $2 AND instance = $3", &[p, k, &(*instance as i32)])
            .await?;
    }
    for o in &planned.outbox {
        client
            .execute(
                "INSERT INTO journey_outbox (key, profile_id, journey_key, kind, effect, status, created_at, next_attempt_at, finished_at)
                 VALUES ($1, $2, $3, $4, $5::text::jsonb, $6, $7, $8, CASE WHEN $6::text = 'pending' THEN NULL ELSE $7::bigint END) ON CONFLICT (key) DO NOTHING",
                &[&o.key, &o.profile_id, &o.journey, &o.kind, &o.effect.to_string(), &o.status, &now, &o.due.unwrap_or(now)],
            )
            .await?;
    }
    for (key, r) in &planned.rates {
        client
            .execute(
                "UPDATE journeys SET rate_window = $2, rate_used = $3 WHERE key = $1",
                &[key, &r.window, &(r.used as i32)],
            )
            .await?;
    }
    add_counts(client, &planned.counts).await
}

pub async fn on_events(
    client: &impl GenericClient,
    cache: &Runtime,
    events: &[(&Event, &ProfileState)],
    now: Millis,
) -> Result<(), Abort> {
    let mut catalog = catalog_for_entries(client).await?;
    if catalog.is_empty() || events.is_empty() {
        return Ok(());
    }
    let keys = state_keys(&catalog, events.iter().map(|(_, p)| p.id.as_str()));
    let states = load_states(client, &keys).await?;
    add_versions(client, cache, &mut catalog, &states).await?;
    let people: Vec<&ProfileState> = events.iter().map(|(_, p)| *p).collect();
    add_people(client, cache, &mut catalog, &people, now).await?;
    let planned = plan_events(&catalog, states, events, now);
    write(client, &planned, now).await
}

pub async fn fire_due(
    client: &impl GenericClient,
    cache: &Runtime,
    now: Millis,
    limit: u32,
) -> Result<usize, Abort> {
    let rows = client
        .query(
            "SELECT seq, due, profile_id, journey_key, instance, timer FROM journey_timers
             WHERE due <= $1 ORDER BY due, seq LIMIT $2 FOR UPDATE SKIP LOCKED",
            &[&now, &i64::from(limit)],
        )
        .await?;
    if rows.is_empty() {
        return Ok(0);
    }
    let due: Vec<(i64, TimerRow)> = rows
        .iter()
        .map(|r| {
            (
                r.get(0),
                TimerRow {
                    due: r.get(1),
                    profile_id: r.get(2),
                    journey: r.get(3),
                    instance: r.get::<_, i32>(4) as u32,
                    timer: r.get::<_, i64>(5) as u64,
                },
            )
        })
        .collect();
    let mut ids: Vec<&str> = due.iter().map(|(_, t)| t.profile_id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    let mut profiles = HashMap::new();
    for row in client
        .query(
            "SELECT id, state::text FROM profiles WHERE id = ANY($1) ORDER BY id FOR UPDATE",
            &[&ids],
        )
        .await?
    {
        profiles.insert(
            row.get::<_, String>(0),
            decode_profile(&row.get::<_, String>(1))?,
        );
    }
    let keys: Vec<(String, String)> = due
        .iter()
        .map(|(_, t)| (t.profile_id.clone(), t.journey.clone()))
        .collect();
    let people: Vec<&ProfileState> = profiles.values().collect();
    let (catalog, states) = plan_inputs(client, cache, &keys, &people, false, now).await?;
    let inputs: Vec<(&TimerRow, &ProfileState)> = due
        .iter()
        .filter_map(|(_, t)| profiles.get(&t.profile_id).map(|p| (t, p)))
        .collect();
    let planned = plan_timers(&catalog, states, &inputs, now);
    write(client, &planned, now).await?;
    let seqs: Vec<i64> = due.iter().map(|(s, _)| *s).collect();
    client
        .execute("DELETE FROM journey_timers WHERE seq = ANY($1)", &[&seqs])
        .await?;
    Ok(due.len())
}

pub async fn merge(client: &impl GenericClient, from: &str, into: &str) -> Result<(), Abort> {
    let dropped = client
        .query(
            "SELECT f.journey_key, f.state::text FROM journey_states f JOIN journey_states i
             ON i.journey_key = f.journey_key AND i.profile_id = $2 WHERE f.profile_id = $1",
            &[&from, &into],
        )
        .await?;
    let mut counts = Counts::new();
    for row in dropped {
        let state: JourneyState =
            serde_json::from_str(&row.get::<_, String>(1)).map_err(corrupt)?;
        count_state_change(&mut counts, row.get(0), Some(&state), None);
    }
    add_counts(client, &counts).await?;
    client
        .execute(
            "DELETE FROM journey_states s WHERE s.profile_id = $1
               AND EXISTS (SELECT 1 FROM journey_states t WHERE t.profile_id = $2 AND t.journey_key = s.journey_key)",
            &[&from, &into],
        )
        .await?;
    for table in [
        "journey_states",
        "journey_timers",
        "journey_outbox",
        "inbox_marks",
    ] {
        client
            .execute(
                &format!("UPDATE {table} SET profile_id = $1 WHERE profile_id = $2"),
                &[&into, &from],
            )
            .await?;
    }
    Ok(())
}

pub async fn erase(client: &impl GenericClient, profile_id: &str) -> Result<(), Abort> {
    let mut counts = Counts::new();
    for (journey, state) in profile_journeys(client, profile_id).await? {
        count_state_change(&mut counts, &journey, Some(&state), None);
    }
    add_counts(client, &counts).await?;
    client
        .execute(
            "DELETE FROM message_events WHERE key IN (SELECT key FROM journey_outbox WHERE profile_id = $1)",
            &[&profile_id],
        )
        .await?;
    for table in [
        "journey_states",
        "journey_timers",
        "journey_outbox",
        "inbox_marks",
    ] {
        client
            .execute(
                &format!("DELETE FROM {table} WHERE profile_id = $1"),
                &[&profile_id],
            )
            .await?;
    }
    Ok(())
}

pub async fn profile_journeys(
    client: &impl GenericClient,
    profile_id: &str,
) -> Result<Vec<(String, JourneyState)>, StoreError> {
    let rows = client
        .query("SELECT journey_key, state::text FROM journey_states WHERE profile_id = $1 ORDER BY journey_key", &[&profile_id])
        .await
        .map_err(db_error)?;
    rows.into_iter()
        .map(|r| {
            Ok((
                r.get(0),
                serde_json::from_str(&r.get::<_, String>(1)).map_err(corrupt)?,
            ))
        })
        .collect()
}

/// See `JourneyRunStore::profile_outbox_page`.
pub async fn profile_outbox(
    client: &impl GenericClient,
    profile_id: &str,
    kind: Option<&str>,
    before: Option<i64>,
    limit: u32,
) -> Result<Vec<OutboxEntry>, StoreError> {
    let limit = i64::from(limit.min(waymark_store::MAX_PROFILE_OUTBOX));
    let rows = client
        .query(
            "SELECT key, journey_key, kind, effect::text, status, attempts, last_error, result::text, created_at, next_attempt_at, finished_at, seq
             FROM (SELECT * FROM journey_outbox WHERE profile_id = $1 AND seq < $3 AND ($4::text IS NULL OR kind = $4)
                   ORDER BY seq DESC LIMIT $2) AS newest
             ORDER BY seq",
            &[&profile_id, &limit, &before.unwrap_or(i64::MAX), &kind],
        )
        .await
        .map_err(db_error)?;
    let keys: Vec<&str> = rows.iter().map(|r| r.get::<_, &str>(0)).collect();
    let mut events: HashMap<String, Vec<MessageEvent>> = HashMap::new();
    for r in client
        .query(
            "SELECT key, status, detail, at FROM message_events WHERE key = ANY($1) ORDER BY at",
            &[&keys],
        )
        .await
        .map_err(db_error)?
    {
        events.entry(r.get(0)).or_default().push(MessageEvent {
            status: r.get(1),
            detail: r.get(2),
            at: r.get(3),
        });
    }
    rows.into_iter()
        .map(|r| {
            Ok(OutboxEntry {
                events: events.remove(r.get::<_, &str>(0)).unwrap_or_default(),
                row: OutboxRow {
                    key: r.get(0),
                    profile_id: profile_id.to_owned(),
                    journey: r.get(1),
                    kind: r.get(2),
                    effect: serde_json::from_str(&r.get::<_, String>(3)).map_err(corrupt)?,
                    status: r.get(4),
                    due: None,
                },
                attempts: r.get::<_, i32>(5) as u32,
                last_error: r.get(6),
                result: r
                    .get::<_, Option<String>>(7)
                    .map(|t| serde_json::from_str(&t).map_err(corrupt))
                    .transpose()?,
                created_at: r.get(8),
                next_attempt_at: r.get(9),
                finished_at: r.get(10),
                seq: r.get(11),
            })
        })
        .collect()
}

/// See `OutboxStore::record_message_event`.
pub async fn record_message_event(
    client: &impl GenericClient,
    key: &str,
    event: &MessageEvent,
) -> Result<Option<OutboxItem>, StoreError> {
    let Some(r) = client
        .query_opt(
            "SELECT seq, profile_id, journey_key, effect::text, attempts, created_at FROM journey_outbox
             WHERE key = $1 AND kind = 'message'",
            &[&key],
        )
        .await
        .map_err(db_error)?
    else {
        return Ok(None);
    };
    client
        .execute(
            "INSERT INTO message_events (key, status, detail, at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (key, status) DO NOTHING",
            &[&key, &event.status, &event.detail, &event.at],
        )
        .await
        .map_err(db_error)?;
    Ok(Some(OutboxItem {
        seq: r.get(0),
        key: key.to_owned(),
        profile_id: r.get(1),
        journey: r.get(2),
        kind: "message".into(),
        effect: serde_json::from_str(&r.get::<_, String>(3)).map_err(corrupt)?,
        attempts: r.get::<_, i32>(4) as u32,
        created_at: r.get(5),
    }))
}

pub async fn outbox_key(
    client: &impl GenericClient,
    seq: i64,
) -> Result<Option<String>, StoreError> {
    let row = client
        .query_opt("SELECT key FROM journey_outbox WHERE seq = $1", &[&seq])
        .await
        .map_err(db_error)?;
    Ok(row.map(|r| r.get(0)))
}

pub async fn claim(
    client: &impl GenericClient,
    now: Millis,
    limit: u32,
    lease_ms: Millis,
    owner: &str,
) -> Result<Vec<OutboxItem>, Abort> {
    let rows = client
        .query(
            "UPDATE journey_outbox SET leased_until = $3, leased_by = $4 WHERE seq IN (
                 SELECT seq FROM journey_outbox WHERE status = 'pending' AND next_attempt_at <= $1
                   AND (leased_until IS NULL OR leased_until <= $1)
                 ORDER BY next_attempt_at, seq LIMIT $2 FOR UPDATE SKIP LOCKED)
             RETURNING seq, key, profile_id, journey_key, kind, effect::text, attempts, created_at",
            &[&now, &i64::from(limit), &(now + lease_ms), &owner],
        )
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        out.push(OutboxItem {
            seq: r.get(0),
            key: r.get(1),
            profile_id: r.get(2),
            journey: r.get(3),
            kind: r.get(4),
            effect: serde_json::from_str(&r.get::<_, String>(5)).map_err(corrupt)?,
            attempts: r.get::<_, i32>(6) as u32,
            created_at: r.get(7),
        });
    }
    out.sort_by_key(|i| i.seq);
    Ok(out)
}

pub async fn complete(
    client: &impl GenericClient,
    cache: &Runtime,
    item: &OutboxItem,
    delivery: Delivery,
    now: Millis,
) -> Result<(), Abort> {
    // Lock the person first, as ingest and timers do, so their journey state changes in
    // one transaction at a time.
    let profile = client
        .query_opt(
            "SELECT state::text FROM profiles WHERE id = $1 FOR UPDATE",
            &[&item.profile_id],
        )
        .await?;
    let outcome = match &delivery {
        Delivery::Deferred { at } => {
            client
                .execute(
                    "UPDATE journey_outbox SET next_attempt_at = $2, leased_until = NULL WHERE seq = $1 AND status = 'pending'",
                    &[&item.seq, at],
                )
                .await?;
            return Ok(());
        }
        Delivery::Retry { at, error } => {
            client
                .execute(
                    "UPDATE journey_outbox SET attempts = attempts + 1, next_attempt_at = $2, last_error = $3, leased_until = NULL WHERE seq = $1 AND status = 'pending'",
                    &[&item.seq, at, error],
                )
                .await?;
            return Ok(());
        }
        Delivery::Delivered(value) => {
            let changed = client
                .execute(
                    "UPDATE journey_outbox SET attempts = attempts + 1, status = 'done', result = $2::text::jsonb, finished_at = $3 WHERE seq = $1 AND status = 'pending'",
                    &[&item.seq, &value.to_string(), &now],
                )
                .await?;
            if changed == 0 {
                return Ok(());
            }
            Ok(value.clone())
        }
        Delivery::Failed(error) => {
            let changed = client
                .execute(
                    "UPDATE journey_outbox SET attempts = attempts + 1, status = 'failed', last_error = $2, finished_at = $3 WHERE seq = $1 AND status = 'pending'",
                    &[&item.seq, error, &now],
                )
                .await?;
            if changed == 0 {
                return Ok(());
            }
            Err(error.clone())
        }
    };
    let Some(row) = profile else { return Ok(()) };
    let mut profile = decode_profile(&row.get::<_, String>(0))?;
    match item.kind.as_str() {
        "webhook" => {
            let (Some(instance), Some(node)) = (
                item.effect["instance"].as_u64(),
                item.effect["node"].as_str(),
            ) else {
                return Err(corrupt("webhook effect without instance or node").into());
            };
            let keys = vec![(item.profile_id.clone(), item.journey.clone())];
            let (catalog, states) =
                plan_inputs(client, cache, &keys, &[&profile], false, now).await?;
            let planned = plan_webhook_result(
                &catalog,
                states,
                &profile,
                waymark_engine::run::WebhookOutcome {
                    journey: &item.journey,
                    instance: instance as u32,
                    node,
                    outcome,
                },
                now,
            );
            write(client, &planned, now).await?;
        }
        "jump" if outcome.is_ok() => {
            let (Some(target), Some(from)) = (
                item.effect["journey"].as_str(),
                item.effect["from"].as_str(),
            ) else {
                return Err(corrupt("jump effect without journey or from").into());
            };
            let keys = vec![(item.profile_id.clone(), target.to_owned())];
            let (catalog, states) =
                plan_inputs(client, cache, &keys, &[&profile], true, now).await?;
            let jump = JumpIn {
                journey: target,
                from,
                entry: &item.effect["entry"],
            };
            let planned = plan_jump(&catalog, states, &profile, jump, now);
            write(client, &planned, now).await?;
        }
        "update_profile" if outcome.is_ok() => {
            let empty = serde_json::Map::new();
            let set = item.effect["set"].as_object().unwrap_or(&empty);
            let unset = item.effect["unset"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|v| v.as_str());
            profile.update_traits(set, unset, now);
            save_profile(client, &profile, now).await?;
        }
        _ => {}
    }
    Ok(())
}

/// Writes back a profile changed outside ingest (trait updates from journeys, a dropped
/// identity).
pub async fn save_profile(
    client: &impl GenericClient,
    profile: &ProfileState,
    now: Millis,
) -> Result<(), Abort> {
    let state = serde_json::to_string(profile).map_err(corrupt)?;
    client
        .execute(
            "UPDATE profiles SET state = $2::text::jsonb, updated_at = $3 WHERE id = $1",
            &[&profile.id, &state, &now],
        )
        .await?;
    Ok(())
}

/// Takes back the leases `owner` held: those of this process's own earlier run, which is
/// dead (the owner's lock file says so). Other processes' leases only ever run out.
pub async fn release_leases(client: &impl GenericClient, owner: &str) -> Result<u64, StoreError> {
    client
        .execute("UPDATE journey_outbox SET leased_until = NULL, leased_by = NULL WHERE status = 'pending' AND leased_until IS NOT NULL AND leased_by = $1", &[&owner])
        .await
        .map_err(db_error)
}

pub async fn journey_stats(
    client: &impl GenericClient,
    journey: &str,
) -> Result<JourneyStats, StoreError> {
    let rows = client
        .query(
            "SELECT node, name, sum(value)::bigint FROM journey_counters WHERE journey_key = $1 GROUP BY node, name",
            &[&journey],
        )
        .await
        .map_err(db_error)?;
    let rows: Vec<(String, String, i64)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    Ok(waymark_engine::stats::from_counters(
        rows.iter().map(|(n, c, v)| (n.as_str(), c.as_str(), *v)),
    ))
}

async fn journey_states(
    client: &impl GenericClient,
    journey: &str,
) -> Result<Vec<JourneyState>, StoreError> {
    let rows = client
        .query(
            "SELECT state::text FROM journey_states WHERE journey_key = $1",
            &[&journey],
        )
        .await
        .map_err(db_error)?;
    rows.iter()
        .map(|r| serde_json::from_str(&r.get::<_, String>(0)).map_err(corrupt))
        .collect()
}

/// Stop: every active instance of the journey ends now, and its timers go. Profiles are
/// locked first, in id order, as everywhere else.
pub async fn stop_journey(
    client: &impl GenericClient,
    journey: &str,
    now: Millis,
) -> Result<(), StoreError> {
    client
        .execute(
            "SELECT 1 FROM profiles WHERE id IN (SELECT profile_id FROM journey_states WHERE journey_key = $1) ORDER BY id FOR UPDATE",
            &[&journey],
        )
        .await
        .map_err(db_error)?;
    let rows = client
        .query(
            "SELECT profile_id, state::text FROM journey_states WHERE journey_key = $1",
            &[&journey],
        )
        .await
        .map_err(db_error)?;
    let mut states = Vec::with_capacity(rows.len());
    for r in rows {
        states.push((
            r.get::<_, String>(0),
            serde_json::from_str::<JourneyState>(&r.get::<_, String>(1)).map_err(corrupt)?,
        ));
    }
    let (changed, counts) = waymark_engine::run::stop_all(journey, states, now);
    add_counts(client, &counts).await?;
    for (p, state) in &changed {
        let text = serde_json::to_string(state).map_err(corrupt)?;
        client
            .execute(
                "UPDATE journey_states SET state = $3::text::jsonb, updated_at = $4 WHERE profile_id = $1 AND journey_key = $2",
                &[p, &journey, &text, &now],
            )
            .await
            .map_err(db_error)?;
    }
    client
        .execute(
            "DELETE FROM journey_timers WHERE journey_key = $1",
            &[&journey],
        )
        .await
        .map_err(db_error)?;
    Ok(())
}
