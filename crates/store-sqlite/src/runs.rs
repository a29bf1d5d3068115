//! Journey rows on SQLite: the reads and writes of a journey run (the run itself is
//! `waymark_store::pipeline`, called from the writer thread inside its transaction), and the
//! outbox, stats and per-person views.

use std::collections::HashMap;

use rusqlite::{Connection, OptionalExtension, Transaction, params};
use serde_json::Value;
use waymark_core::governance::Sent;
use waymark_core::time::Millis;
use waymark_core::{Event, ProfileState};
use waymark_engine::audience::{AudiencePlan, BodyPart, HistoryEvent};
use waymark_engine::run::{EntryRate, OutboxRow, Planned, Runtime, States, TimerRow};
use waymark_engine::stats::{Counts, JourneyStats};
use waymark_engine::{Effect, JourneyState};
use waymark_store::pipeline::{self, JourneyRead, JourneyRow, RunTx, run_now};
use waymark_store::{Delivery, MessageEvent, OutboxEntry, OutboxItem, StoreError};

use crate::{audiences, decode_profile, unavailable};

fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("journey run: {e}"))
}

/// A journey run's reads and writes in the writer's transaction. None of them waits, so a
/// run over it is driven with [`run_now`].
struct Run<'a, 'c>(&'a Transaction<'c>);

/// Runs every live journey on the accepted events of an ingest, inside its transaction.
pub fn on_events(
    tx: &Transaction<'_>,
    runtime: &Runtime,
    events: &[(&Event, &ProfileState)],
    now: Millis,
) -> Result<(), StoreError> {
    run_now(pipeline::on_events(&Run(tx), runtime, events, now))
}

pub fn fire_due(
    tx: &Transaction<'_>,
    runtime: &Runtime,
    now: Millis,
    limit: u32,
) -> Result<usize, StoreError> {
    run_now(pipeline::fire_due(&Run(tx), runtime, now, limit))
}

pub fn enqueue(tx: &Transaction<'_>, rows: Vec<OutboxRow>, now: Millis) -> Result<(), StoreError> {
    run_now(pipeline::enqueue(&Run(tx), rows, now))
}

pub fn change_list_members(
    tx: &Transaction<'_>,
    runtime: &Runtime,
    key: &str,
    profile_ids: &[String],
    enter: bool,
    now: Millis,
) -> Result<u64, StoreError> {
    run_now(pipeline::change_list_members(
        &Run(tx),
        runtime,
        key,
        profile_ids,
        enter,
        now,
    ))
}

pub fn complete_many(
    tx: &Transaction<'_>,
    runtime: &Runtime,
    done: &[(OutboxItem, Delivery)],
    now: Millis,
) -> Result<(), StoreError> {
    run_now(pipeline::complete(&Run(tx), runtime, done, now))
}

pub fn merge(tx: &Transaction<'_>, from: &str, into: &str) -> Result<(), StoreError> {
    run_now(pipeline::merge(&Run(tx), from, into))
}

pub fn erase(tx: &Transaction<'_>, profile_id: &str) -> Result<(), StoreError> {
    run_now(pipeline::erase(&Run(tx), profile_id))
}

/// See `pipeline::follow_status`.
pub fn follow_status(
    tx: &Transaction<'_>,
    journey: &str,
    before: waymark_core::journey::lifecycle::Status,
    after: waymark_core::journey::lifecycle::Status,
    now: Millis,
) -> Result<(), StoreError> {
    run_now(pipeline::follow_status(
        &Run(tx),
        journey,
        before,
        after,
        now,
    ))
}

/// Migration 6: counters for the states that exist, and the live versions' rate limits.
pub fn backfill(tx: &Transaction<'_>) -> Result<(), StoreError> {
    run_now(pipeline::backfill(&Run(tx)))
}

fn states_where(
    conn: &Connection,
    sql: &str,
    args: impl rusqlite::Params,
) -> Result<Vec<(String, JourneyState)>, StoreError> {
    let rows: Vec<(String, String)> = conn
        .prepare_cached(sql)
        .and_then(|mut s| {
            s.query_map(args, |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<_, _>>()
        })
        .map_err(unavailable)?;
    rows.into_iter()
        .map(|(k, s)| Ok((k, serde_json::from_str(&s).map_err(corrupt)?)))
        .collect()
}

/// Adds the counter changes of a transaction at `now` to the hourly series too.
fn add_counts_at(tx: &Transaction<'_>, counts: &Counts, now: Millis) -> Result<(), StoreError> {
    add_counts(tx, counts)?;
    let hour = waymark_engine::stats::hour_of(now);
    let mut add = tx
        .prepare_cached(
            "INSERT INTO journey_counter_hours (journey_key, node, name, hour, value) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (journey_key, node, name, hour) DO UPDATE SET value = value + excluded.value",
        )
        .map_err(unavailable)?;
    for (journey, node, name, value) in waymark_engine::stats::series_counts(counts) {
        add.execute(params![journey, node, name, hour, value])
            .map_err(unavailable)?;
    }
    Ok(())
}

/// A journey's hourly series: (hour, node, counter, value), in hour order.
pub fn journey_series(
    conn: &Connection,
    journey: &str,
) -> Result<Vec<(Millis, String, String, i64)>, StoreError> {
    conn.prepare_cached(
        "SELECT hour, node, name, value FROM journey_counter_hours WHERE journey_key = ?1 ORDER BY hour, node, name",
    )
    .and_then(|mut s| {
        s.query_map([journey], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
            .collect::<Result<_, _>>()
    })
    .map_err(unavailable)
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

impl RunTx for Run<'_, '_> {
    type Error = StoreError;

    async fn journeys(&self, _for_entries: bool) -> Result<Vec<JourneyRow>, StoreError> {
        // One writer: nothing to lock.
        let mut stmt = self
            .0
            .prepare_cached(
                "SELECT key, status, live_version, entry_rate_limit, rate_window, rate_used FROM journeys",
            )
            .map_err(unavailable)?;
        stmt.query_map([], |r| {
            let limit: Option<i64> = r.get(3)?;
            Ok(JourneyRow {
                key: r.get(0)?,
                status: r.get(1)?,
                live_version: r.get::<_, Option<i64>>(2)?.map(|v| v as u32),
                rate: match limit {
                    Some(limit) => Some(EntryRate {
                        limit: limit as u32,
                        window: r.get(4)?,
                        used: r.get::<_, i64>(5)? as u32,
                    }),
                    None => None,
                },
            })
        })
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(unavailable)
    }

    async fn version(&self, journey: &str, version: u32) -> Result<Option<Value>, StoreError> {
        self::version(self.0, journey, version)
    }

    async fn states(&self, keys: &[(String, String)]) -> Result<States, StoreError> {
        let mut stmt = self
            .0
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

    async fn recent_messages(
        &self,
        profile_ids: &[&str],
        since: Millis,
    ) -> Result<Vec<(String, Sent)>, StoreError> {
        let mut stmt = self
            .0
            .prepare_cached(
                "SELECT json_extract(effect, '$.channel'), created_at FROM journey_outbox
                 WHERE profile_id = ?1 AND kind = 'message' AND status != 'failed' AND created_at > ?2
                   AND json_extract(effect, '$.channel') != 'log'",
            )
            .map_err(unavailable)?;
        let mut out = Vec::new();
        for id in profile_ids {
            let sent = stmt
                .query_map(params![id, since], |r| {
                    Ok(Sent {
                        channel: r.get(0)?,
                        at: r.get(1)?,
                    })
                })
                .and_then(Iterator::collect::<Result<Vec<_>, _>>)
                .map_err(unavailable)?;
            out.extend(sent.into_iter().map(|s| ((*id).to_owned(), s)));
        }
        Ok(out)
    }

    async fn suppressed(
        &self,
        addresses: &[(&'static str, String)],
    ) -> Result<Vec<((String, String), String)>, StoreError> {
        let mut found = HashMap::new();
        crate::suppressions::listed(self.0, addresses, &mut found)?;
        Ok(found.into_iter().collect())
    }

    async fn lock_profiles(
        &self,
        ids: &[&str],
    ) -> Result<HashMap<String, ProfileState>, StoreError> {
        // One writer: the transaction is the lock.
        let mut out = HashMap::with_capacity(ids.len());
        for id in ids {
            if let Some(p) = load_profile(self.0, id)? {
                out.insert((*id).to_owned(), p);
            }
        }
        Ok(out)
    }

    async fn due_timers(
        &self,
        now: Millis,
        limit: u32,
    ) -> Result<Vec<(i64, TimerRow)>, StoreError> {
        self.0
            .prepare_cached("SELECT seq, due, profile_id, journey_key, instance, timer FROM journey_timers WHERE due <= ?1 ORDER BY due, seq LIMIT ?2")
            .and_then(|mut stmt| {
                stmt.query_map(params![now, i64::from(limit)], |r| {
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
                })?
                .collect()
            })
            .map_err(unavailable)
    }

    async fn profile_states(
        &self,
        profile_id: &str,
    ) -> Result<Vec<(String, JourneyState)>, StoreError> {
        profile_journeys(self.0, profile_id)
    }

    async fn shared_states(
        &self,
        from: &str,
        into: &str,
    ) -> Result<Vec<(String, JourneyState)>, StoreError> {
        states_where(
            self.0,
            "SELECT f.journey_key, f.state FROM journey_states f JOIN journey_states i
             ON i.journey_key = f.journey_key AND i.profile_id = ?2 WHERE f.profile_id = ?1",
            params![from, into],
        )
    }

    async fn journey_states(
        &self,
        journey: &str,
    ) -> Result<Vec<(String, JourneyState)>, StoreError> {
        states_where(
            self.0,
            "SELECT profile_id, state FROM journey_states WHERE journey_key = ?1",
            [journey],
        )
    }

    async fn live_versions(&self) -> Result<Vec<(String, Option<u32>)>, StoreError> {
        self.0
            .prepare("SELECT key, live_version FROM journeys")
            .and_then(|mut s| {
                s.query_map([], |r| {
                    Ok((r.get(0)?, r.get::<_, Option<i64>>(1)?.map(|v| v as u32)))
                })?
                .collect::<Result<_, _>>()
            })
            .map_err(unavailable)
    }

    async fn write(&self, planned: &Planned, now: Millis) -> Result<(), StoreError> {
        let tx = self.0;
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
        let mut take_down = tx
            .prepare_cached("DELETE FROM placed_content WHERE profile_id = ?1 AND journey_key = ?2 AND instance = ?3")
            .map_err(unavailable)?;
        for (p, k, instance) in &planned.ended {
            cancel
                .execute(params![p, k, i64::from(*instance)])
                .map_err(unavailable)?;
            take_down
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
                    o.effect.kind(),
                    o.effect.encode(),
                    o.status,
                    now,
                    o.due.unwrap_or(now)
                ])
                .map_err(unavailable)?;
        }
        let mut place = tx
            .prepare_cached(
                "INSERT INTO placed_content (key, profile_id, journey_key, instance, surface, priority, placed_at, expires_at, content)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) ON CONFLICT (key) DO NOTHING",
            )
            .map_err(unavailable)?;
        for (profile_id, p) in planned.placed(now) {
            let content = serde_json::to_string(&p.content).map_err(corrupt)?;
            place
                .execute(params![
                    p.key,
                    profile_id,
                    p.journey,
                    i64::from(p.instance),
                    p.surface,
                    p.priority,
                    p.placed_at,
                    p.expires_at,
                    content
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
        add_counts_at(tx, &planned.counts, now)
    }

    async fn add_counts(&self, counts: &Counts) -> Result<(), StoreError> {
        add_counts(self.0, counts)
    }

    async fn add_offer_counts(
        &self,
        counts: &[waymark_store::decisioning::OfferCount],
    ) -> Result<(), StoreError> {
        crate::decisioning::add_counts(self.0, counts)
    }

    async fn delete_timers(&self, seqs: &[i64]) -> Result<(), StoreError> {
        let mut delete = self
            .0
            .prepare_cached("DELETE FROM journey_timers WHERE seq = ?1")
            .map_err(unavailable)?;
        for seq in seqs {
            delete.execute([seq]).map_err(unavailable)?;
        }
        Ok(())
    }

    async fn put_off(
        &self,
        seq: i64,
        at: Millis,
        retry_error: Option<&str>,
    ) -> Result<(), StoreError> {
        // Leases are the process's, in memory: nothing to end here.
        match retry_error {
            None => self.0.prepare_cached(
                "UPDATE journey_outbox SET next_attempt_at = ?2 WHERE seq = ?1 AND status = 'pending'",
            )
            .and_then(|mut s| s.execute(params![seq, at])),
            Some(error) => self.0.prepare_cached(
                "UPDATE journey_outbox SET attempts = attempts + 1, next_attempt_at = ?2, last_error = ?3 WHERE seq = ?1 AND status = 'pending'",
            )
            .and_then(|mut s| s.execute(params![seq, at, error])),
        }
        .map_err(unavailable)?;
        Ok(())
    }

    async fn finish(
        &self,
        seq: i64,
        outcome: &Result<Value, String>,
        now: Millis,
    ) -> Result<bool, StoreError> {
        let changed = match outcome {
            Ok(value) => self.0.prepare_cached(
                "UPDATE journey_outbox SET attempts = attempts + 1, status = 'done', result = ?2, finished_at = ?3 WHERE seq = ?1 AND status = 'pending'",
            )
            .and_then(|mut s| s.execute(params![seq, value.to_string(), now])),
            Err(error) => self.0.prepare_cached(
                "UPDATE journey_outbox SET attempts = attempts + 1, status = 'failed', last_error = ?2, finished_at = ?3 WHERE seq = ?1 AND status = 'pending'",
            )
            .and_then(|mut s| s.execute(params![seq, error, now])),
        }
        .map_err(unavailable)?;
        Ok(changed > 0)
    }

    async fn save_profile(&self, profile: &ProfileState, now: Millis) -> Result<(), StoreError> {
        save_profile(self.0, profile, now)
    }

    async fn move_journey_rows(&self, from: &str, into: &str) -> Result<(), StoreError> {
        let tx = self.0;
        // Where both were in a journey, the surviving profile's state is kept: what the
        // other's instance placed goes with it.
        tx.execute(
            "DELETE FROM placed_content WHERE profile_id = ?2
               AND journey_key IN (SELECT journey_key FROM journey_states WHERE profile_id = ?1)",
            params![into, from],
        )
        .map_err(unavailable)?;
        tx.execute(
            "UPDATE OR IGNORE journey_states SET profile_id = ?1 WHERE profile_id = ?2",
            params![into, from],
        )
        .map_err(unavailable)?;
        tx.execute("DELETE FROM journey_states WHERE profile_id = ?1", [from])
            .map_err(unavailable)?;
        for table in [
            "journey_timers",
            "journey_outbox",
            "inbox_marks",
            "placed_content",
        ] {
            tx.execute(
                &format!("UPDATE {table} SET profile_id = ?1 WHERE profile_id = ?2"),
                params![into, from],
            )
            .map_err(unavailable)?;
        }
        Ok(())
    }

    async fn delete_journey_rows(&self, profile_id: &str) -> Result<(), StoreError> {
        let tx = self.0;
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
            "placed_content",
        ] {
            tx.execute(
                &format!("DELETE FROM {table} WHERE profile_id = ?1"),
                [profile_id],
            )
            .map_err(unavailable)?;
        }
        Ok(())
    }

    async fn write_stopped(
        &self,
        journey: &str,
        changed: &[(String, JourneyState)],
        now: Millis,
    ) -> Result<(), StoreError> {
        let tx = self.0;
        for (p, state) in changed {
            let text = serde_json::to_string(state).map_err(corrupt)?;
            tx.execute("UPDATE journey_states SET state = ?3, updated_at = ?4 WHERE profile_id = ?1 AND journey_key = ?2", params![p, journey, text, now])
                .map_err(unavailable)?;
        }
        tx.execute(
            "DELETE FROM journey_timers WHERE journey_key = ?1",
            [journey],
        )
        .map_err(unavailable)?;
        tx.execute(
            "DELETE FROM placed_content WHERE journey_key = ?1",
            [journey],
        )
        .map_err(unavailable)?;
        Ok(())
    }

    async fn set_entry_rate_limit(
        &self,
        journey: &str,
        limit: Option<u32>,
    ) -> Result<(), StoreError> {
        self.0
            .execute(
                "UPDATE journeys SET entry_rate_limit = ?2 WHERE key = ?1",
                params![journey, limit],
            )
            .map_err(unavailable)?;
        Ok(())
    }

    async fn audience_versions(&self) -> Result<Vec<(String, u32)>, StoreError> {
        audiences::newest_versions(self.0)
    }

    async fn audience_document(
        &self,
        key: &str,
        version: u32,
    ) -> Result<Option<Value>, StoreError> {
        audiences::version(self.0, key, version)
    }

    async fn history(
        &self,
        profile_ids: &[&str],
        track_names: &[String],
        kinds: &[&'static str],
        bodies: BodyPart,
    ) -> Result<Vec<Vec<HistoryEvent>>, StoreError> {
        audiences::history(self.0, profile_ids, track_names, kinds, bodies)
    }

    async fn memberships(
        &self,
        profile_ids: &[&str],
    ) -> Result<Vec<(String, String, Millis)>, StoreError> {
        audiences::memberships(self.0, profile_ids)
    }

    async fn write_audiences(
        &self,
        plan: &AudiencePlan,
        events: &[(&str, &Event)],
        now: Millis,
    ) -> Result<(), StoreError> {
        audiences::write(self.0, plan, events, now)
    }

    async fn due_audience_checks(
        &self,
        now: Millis,
        limit: u32,
    ) -> Result<Vec<String>, StoreError> {
        // One writer: nothing to lock.
        audiences::due_checks(self.0, now, limit)
    }

    async fn forget_audiences(
        &self,
        profile_id: &str,
        recheck: Option<&str>,
        now: Millis,
    ) -> Result<(), StoreError> {
        audiences::forget(self.0, profile_id, recheck, now)
    }

    async fn journey_counters(&self, journey: &str) -> Result<JourneyStats, StoreError> {
        journey_stats(self.0, journey)
    }

    async fn winner_decision(
        &self,
        journey: &str,
        node: &str,
    ) -> Result<Option<String>, StoreError> {
        crate::winners::decision(self.0, journey, node)
    }

    async fn save_winner(
        &self,
        journey: &str,
        node: &str,
        decision: &waymark_engine::winner::Decision,
        now: Millis,
    ) -> Result<bool, StoreError> {
        crate::winners::save(self.0, journey, node, decision, now)
    }

    async fn hold_outbox(&self, journey: &str, hold: bool) -> Result<u64, StoreError> {
        let sql = if hold {
            "UPDATE journey_outbox SET next_attempt_at = next_attempt_at + ?2
             WHERE journey_key = ?1 AND status = 'pending' AND next_attempt_at < ?2"
        } else {
            "UPDATE journey_outbox SET next_attempt_at = next_attempt_at - ?2
             WHERE journey_key = ?1 AND status = 'pending' AND next_attempt_at >= ?2"
        };
        let n = self
            .0
            .execute(sql, params![journey, pipeline::HELD_OFFSET])
            .map_err(unavailable)?;
        Ok(n as u64)
    }

    async fn cancel_messages(
        &self,
        journey: &str,
        why: &str,
        now: Millis,
    ) -> Result<u64, StoreError> {
        // Leases live in the store's memory here, not in this transaction: a message under
        // delivery at the stop is failed too, and its outcome, when it comes, finds the row
        // no longer pending and is dropped.
        let n = self
            .0
            .execute(
                "UPDATE journey_outbox SET status = 'failed', last_error = ?2, finished_at = ?3
                 WHERE journey_key = ?1 AND status = 'pending' AND kind = 'message'",
                params![journey, why, now],
            )
            .map_err(unavailable)?;
        Ok(n as u64)
    }

    async fn due_journey_read(&self, now: Millis) -> Result<Option<JourneyRead>, StoreError> {
        // One writer: nothing to lock.
        crate::reads::due_journey_read(self.0, now)
    }

    async fn save_journey_read(&self, read: &JourneyRead) -> Result<(), StoreError> {
        crate::reads::save_journey_read(self.0, read)
    }

    async fn audience_members_after(
        &self,
        audience: &str,
        after: &str,
        limit: u32,
    ) -> Result<Vec<String>, StoreError> {
        let members = audiences::members(self.0, audience, Some(after), limit)?;
        Ok(members.into_iter().map(|m| m.profile_id).collect())
    }

    async fn due_audience_runs(&self, now: Millis, limit: u32) -> Result<Vec<String>, StoreError> {
        // One writer: nothing to lock.
        audiences::due_runs(self.0, now, limit)
    }

    async fn start_audience_run(
        &self,
        key: &str,
        next_run: Option<Millis>,
        now: Millis,
    ) -> Result<(), StoreError> {
        audiences::start_backfill(self.0, key, now)?;
        audiences::set_next_run(self.0, key, next_run)
    }

    async fn audience_backfills(&self) -> Result<Vec<(String, String)>, StoreError> {
        // One writer: nothing to lock.
        audiences::backfills(self.0)
    }

    async fn profiles_after(&self, after: &str, limit: u32) -> Result<Vec<String>, StoreError> {
        audiences::profiles_after(self.0, after, limit)
    }

    async fn advance_backfills(
        &self,
        keys: &[String],
        to: Option<&str>,
        decided: u64,
    ) -> Result<(), StoreError> {
        audiences::advance_backfills(self.0, keys, to, decided)
    }
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
            "SELECT key, journey_key, effect, status, attempts, last_error, result, created_at, next_attempt_at, finished_at, seq
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
                        effect: Effect::decode(&effect).map_err(corrupt)?,
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
    let first = tx
        .prepare_cached(
            "INSERT INTO message_events (key, status, detail, at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (key, status) DO NOTHING",
        )
        .and_then(|mut s| s.execute(params![key, event.status, event.detail, event.at]))
        .map_err(unavailable)?
        == 1;
    if first {
        let counts = pipeline::message_report_counts(&item, &event.status);
        add_counts_at(tx, &counts, event.at)?;
    }
    Ok(Some(item))
}

/// The columns [`outbox_item`] reads, in its order.
const OUTBOX_ITEM: &str = "seq, key, profile_id, journey_key, effect, attempts, created_at";

/// An outbox row selected as [`OUTBOX_ITEM`]; its effect must be valid JSON.
fn outbox_item(r: &rusqlite::Row<'_>) -> rusqlite::Result<Result<OutboxItem, StoreError>> {
    let effect: String = r.get(4)?;
    let effect = match Effect::decode(&effect) {
        Ok(effect) => effect,
        Err(e) => return Ok(Err(corrupt(e))),
    };
    Ok(Ok(OutboxItem {
        seq: r.get(0)?,
        key: r.get(1)?,
        profile_id: r.get(2)?,
        journey: r.get(3)?,
        effect,
        attempts: r.get::<_, i64>(5)? as u32,
        created_at: r.get(6)?,
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

/// A published version's document (journey runs compile it; the API shows it).
pub fn version(conn: &Connection, key: &str, version: u32) -> Result<Option<Value>, StoreError> {
    let doc: Option<String> = conn
        .prepare_cached("SELECT document FROM journey_versions WHERE key = ?1 AND version = ?2")
        .and_then(|mut s| {
            s.query_row(params![key, i64::from(version)], |r| r.get(0))
                .optional()
        })
        .map_err(unavailable)?;
    doc.map(|d| serde_json::from_str(&d).map_err(corrupt))
        .transpose()
}
