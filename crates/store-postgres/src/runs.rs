//! Journey rows on PostgreSQL: the reads and writes of a journey run (the run itself is
//! `waymark_store::pipeline`, the same as on SQLite) inside the caller's transaction, and the
//! outbox, stats and per-person views. People are locked (in id order) by the caller
//! (ingest) or by the run (timers, outcomes), so one person's journey state changes in one
//! transaction at a time.

use std::collections::HashMap;

use deadpool_postgres::GenericClient;
use serde_json::Value;
use waymark_core::governance::Sent;
use waymark_core::time::Millis;
use waymark_core::{Event, ProfileState};
use waymark_engine::audience::{AudiencePlan, BodyPart, HistoryEvent};
use waymark_engine::run::{EntryRate, OutboxRow, Planned, Runtime, States, TimerRow};
use waymark_engine::stats::{Counts, JourneyStats};
use waymark_engine::{Effect, JourneyState};
use waymark_store::pipeline::{self, JourneyRead, JourneyRow, RunTx};
use waymark_store::{Delivery, MessageEvent, OutboxEntry, OutboxItem, StoreError};

use crate::{Abort, audiences, db_error, decode_profile};

fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("journey run: {e}"))
}

/// A journey run's reads and writes in one transaction.
struct Run<'a, C>(&'a C);

pub async fn on_events(
    client: &impl GenericClient,
    runtime: &Runtime,
    events: &[(&Event, &ProfileState)],
    now: Millis,
) -> Result<(), Abort> {
    pipeline::on_events(&Run(client), runtime, events, now).await
}

pub async fn fire_due(
    client: &impl GenericClient,
    runtime: &Runtime,
    now: Millis,
    limit: u32,
) -> Result<usize, Abort> {
    pipeline::fire_due(&Run(client), runtime, now, limit).await
}

pub async fn enqueue(
    client: &impl GenericClient,
    rows: Vec<OutboxRow>,
    now: Millis,
) -> Result<(), Abort> {
    pipeline::enqueue(&Run(client), rows, now).await
}

pub async fn change_list_members(
    client: &impl GenericClient,
    runtime: &Runtime,
    key: &str,
    profile_ids: &[String],
    enter: bool,
    now: Millis,
) -> Result<u64, Abort> {
    pipeline::change_list_members(&Run(client), runtime, key, profile_ids, enter, now).await
}

/// One person's outcomes, in order.
pub async fn complete(
    client: &impl GenericClient,
    runtime: &Runtime,
    done: &[&(OutboxItem, Delivery)],
    now: Millis,
) -> Result<(), Abort> {
    pipeline::complete(&Run(client), runtime, done, now).await
}

pub async fn merge(client: &impl GenericClient, from: &str, into: &str) -> Result<(), Abort> {
    pipeline::merge(&Run(client), from, into).await
}

pub async fn erase(client: &impl GenericClient, profile_id: &str) -> Result<(), Abort> {
    pipeline::erase(&Run(client), profile_id).await
}

/// Stop: every active instance of the journey ends now, and its timers go.
/// See `pipeline::follow_status`.
pub async fn follow_status(
    client: &impl GenericClient,
    journey: &str,
    before: waymark_core::journey::lifecycle::Status,
    after: waymark_core::journey::lifecycle::Status,
    now: Millis,
) -> Result<(), StoreError> {
    Ok(pipeline::follow_status(&Run(client), journey, before, after, now).await?)
}

/// Migration 6: counters for the states that exist, and the live versions' rate limits.
pub async fn backfill(client: &impl GenericClient) -> Result<(), StoreError> {
    Ok(pipeline::backfill(&Run(client)).await?)
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

/// Adds the counter changes of a transaction at `now` to the hourly series too (sharded
/// like the totals).
async fn add_counts_at(
    client: &impl GenericClient,
    counts: &Counts,
    now: Millis,
) -> Result<(), Abort> {
    add_counts(client, counts).await?;
    let (mut journeys, mut nodes, mut names, mut values) = (vec![], vec![], vec![], vec![]);
    for (journey, node, name, value) in waymark_engine::stats::series_counts(counts) {
        journeys.push(journey);
        nodes.push(node);
        names.push(name);
        values.push(value);
    }
    if journeys.is_empty() {
        return Ok(());
    }
    let shard =
        (NEXT_SHARD.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % COUNTER_SHARDS) as i16;
    let hour = waymark_engine::stats::hour_of(now);
    client
        .execute(
            "INSERT INTO journey_counter_hours (journey_key, node, name, hour, shard, value)
             SELECT j, n, c, $5, $6, v FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[]) AS q(j, n, c, v)
             ON CONFLICT (journey_key, node, name, hour, shard) DO UPDATE SET value = journey_counter_hours.value + excluded.value",
            &[&journeys, &nodes, &names, &values, &hour, &shard],
        )
        .await?;
    Ok(())
}

/// A journey's hourly series: (hour, node, counter, value), in hour order.
pub async fn journey_series(
    client: &impl GenericClient,
    journey: &str,
) -> Result<Vec<(Millis, String, String, i64)>, StoreError> {
    let rows = client
        .query(
            "SELECT hour, node, name, sum(value)::bigint FROM journey_counter_hours WHERE journey_key = $1
             GROUP BY hour, node, name ORDER BY hour, node, name",
            &[&journey],
        )
        .await
        .map_err(db_error)?;
    Ok(rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect())
}

fn states_of(rows: Vec<tokio_postgres::Row>) -> Result<Vec<(String, JourneyState)>, Abort> {
    rows.into_iter()
        .map(|r| {
            let state = serde_json::from_str(&r.get::<_, String>(1)).map_err(corrupt)?;
            Ok((r.get(0), state))
        })
        .collect()
}

/// The tables holding a person's journey rows, by profile id.
const PERSON_ROWS: [&str; 5] = [
    "journey_states",
    "journey_timers",
    "journey_outbox",
    "inbox_marks",
    "placed_content",
];

impl<C: GenericClient> RunTx for Run<'_, C> {
    type Error = Abort;

    async fn journeys(&self, for_entries: bool) -> Result<Vec<JourneyRow>, Abort> {
        let rows = self
            .0
            .query(
                "SELECT key, status, live_version, entry_rate_limit, rate_window, rate_used FROM journeys",
                &[],
            )
            .await?;
        let mut out: Vec<JourneyRow> = rows
            .iter()
            .map(|row| JourneyRow {
                key: row.get(0),
                status: row.get(1),
                live_version: row.get::<_, Option<i32>>(2).map(|v| v as u32),
                rate: row.get::<_, Option<i32>>(3).map(|limit| EntryRate {
                    limit: limit as u32,
                    window: row.get(4),
                    used: row.get::<_, i32>(5) as u32,
                }),
            })
            .collect();
        if for_entries && out.iter().any(|j| j.rate.is_some()) {
            // Locked (in key order) and read again, so concurrent transactions cannot both
            // use the same room.
            let rows = self
                .0
                .query(
                    "SELECT key, rate_window, rate_used FROM journeys WHERE entry_rate_limit IS NOT NULL ORDER BY key FOR UPDATE",
                    &[],
                )
                .await?;
            for row in rows {
                let key: &str = row.get(0);
                if let Some(rate) = out
                    .iter_mut()
                    .find(|j| j.key == key)
                    .and_then(|j| j.rate.as_mut())
                {
                    rate.window = row.get(1);
                    rate.used = row.get::<_, i32>(2) as u32;
                }
            }
        }
        Ok(out)
    }

    async fn version(&self, journey: &str, version: u32) -> Result<Option<Value>, Abort> {
        Ok(self::version(self.0, journey, version).await?)
    }

    async fn states(&self, keys: &[(String, String)]) -> Result<States, Abort> {
        let profiles: Vec<&str> = keys.iter().map(|(p, _)| p.as_str()).collect();
        let journeys: Vec<&str> = keys.iter().map(|(_, k)| k.as_str()).collect();
        let rows = self
            .0
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

    async fn recent_messages(
        &self,
        profile_ids: &[&str],
        since: Millis,
    ) -> Result<Vec<(String, Sent)>, Abort> {
        let rows = self
            .0
            .query(
                "SELECT profile_id, effect->>'channel', created_at FROM journey_outbox
                 WHERE profile_id = ANY($1) AND kind = 'message' AND status <> 'failed'
                   AND created_at > $2 AND effect->>'channel' <> 'log'",
                &[&profile_ids, &since],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|row| {
                (
                    row.get(0),
                    Sent {
                        channel: row.get(1),
                        at: row.get(2),
                    },
                )
            })
            .collect())
    }

    async fn suppressed(
        &self,
        addresses: &[(&'static str, String)],
    ) -> Result<Vec<((String, String), String)>, Abort> {
        let channels: Vec<&str> = addresses.iter().map(|(c, _)| *c).collect();
        let addresses: Vec<&str> = addresses.iter().map(|(_, a)| a.as_str()).collect();
        let rows = self
            .0
            .query(
                "SELECT s.channel, s.address, s.reason FROM suppressions s
                 JOIN unnest($1::text[], $2::text[]) AS wanted(channel, address)
                   ON s.channel = wanted.channel AND s.address = wanted.address
                 WHERE s.suppressed",
                &[&channels, &addresses],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|row| ((row.get(0), row.get(1)), row.get(2)))
            .collect())
    }

    async fn lock_profiles(&self, ids: &[&str]) -> Result<HashMap<String, ProfileState>, Abort> {
        let mut profiles = HashMap::with_capacity(ids.len());
        for row in self
            .0
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
        Ok(profiles)
    }

    async fn due_timers(&self, now: Millis, limit: u32) -> Result<Vec<(i64, TimerRow)>, Abort> {
        let rows = self
            .0
            .query(
                "SELECT seq, due, profile_id, journey_key, instance, timer FROM journey_timers
                 WHERE due <= $1 ORDER BY due, seq LIMIT $2 FOR UPDATE SKIP LOCKED",
                &[&now, &i64::from(limit)],
            )
            .await?;
        Ok(rows
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
            .collect())
    }

    async fn profile_states(&self, profile_id: &str) -> Result<Vec<(String, JourneyState)>, Abort> {
        Ok(profile_journeys(self.0, profile_id).await?)
    }

    async fn shared_states(
        &self,
        from: &str,
        into: &str,
    ) -> Result<Vec<(String, JourneyState)>, Abort> {
        let rows = self
            .0
            .query(
                "SELECT f.journey_key, f.state::text FROM journey_states f JOIN journey_states i
                 ON i.journey_key = f.journey_key AND i.profile_id = $2 WHERE f.profile_id = $1",
                &[&from, &into],
            )
            .await?;
        states_of(rows)
    }

    async fn journey_states(&self, journey: &str) -> Result<Vec<(String, JourneyState)>, Abort> {
        self.0
            .execute(
                "SELECT 1 FROM profiles WHERE id IN (SELECT profile_id FROM journey_states WHERE journey_key = $1) ORDER BY id FOR UPDATE",
                &[&journey],
            )
            .await?;
        let rows = self
            .0
            .query(
                "SELECT profile_id, state::text FROM journey_states WHERE journey_key = $1",
                &[&journey],
            )
            .await?;
        states_of(rows)
    }

    async fn live_versions(&self) -> Result<Vec<(String, Option<u32>)>, Abort> {
        let rows = self
            .0
            .query("SELECT key, live_version FROM journeys", &[])
            .await?;
        Ok(rows
            .iter()
            .map(|r| (r.get(0), r.get::<_, Option<i32>>(1).map(|v| v as u32)))
            .collect())
    }

    async fn write(&self, planned: &Planned, now: Millis) -> Result<(), Abort> {
        let client = self.0;
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
            client
                .execute("DELETE FROM placed_content WHERE profile_id = $1 AND journey_key = $2 AND instance = $3", &[p, k, &(*instance as i32)])
                .await?;
        }
        for o in &planned.outbox {
            client
                .execute(
                    "INSERT INTO journey_outbox (key, profile_id, journey_key, kind, effect, status, created_at, next_attempt_at, finished_at)
                     VALUES ($1, $2, $3, $4, $5::text::jsonb, $6, $7, $8, CASE WHEN $6::text = 'pending' THEN NULL ELSE $7::bigint END) ON CONFLICT (key) DO NOTHING",
                    &[&o.key, &o.profile_id, &o.journey, &o.effect.kind(), &o.effect.encode(), &o.status, &now, &o.due.unwrap_or(now)],
                )
                .await?;
        }
        for (profile_id, p) in planned.placed(now) {
            let content = serde_json::to_string(&p.content).map_err(corrupt)?;
            client
                .execute(
                    "INSERT INTO placed_content (key, profile_id, journey_key, instance, surface, priority, placed_at, expires_at, content)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::text::jsonb) ON CONFLICT (key) DO NOTHING",
                    &[&p.key, &profile_id, &p.journey, &(p.instance as i32), &p.surface, &p.priority, &p.placed_at, &p.expires_at, &content],
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
        add_counts_at(client, &planned.counts, now).await
    }

    async fn add_counts(&self, counts: &Counts) -> Result<(), Abort> {
        add_counts(self.0, counts).await
    }

    async fn add_offer_counts(
        &self,
        counts: &[waymark_store::decisioning::OfferCount],
    ) -> Result<(), Abort> {
        crate::decisioning::add_counts(self.0, counts).await
    }

    async fn delete_timers(&self, seqs: &[i64]) -> Result<(), Abort> {
        self.0
            .execute("DELETE FROM journey_timers WHERE seq = ANY($1)", &[&seqs])
            .await?;
        Ok(())
    }

    async fn put_off(&self, seq: i64, at: Millis, retry_error: Option<&str>) -> Result<(), Abort> {
        match retry_error {
            None => self.0.execute(
                "UPDATE journey_outbox SET next_attempt_at = $2, leased_until = NULL WHERE seq = $1 AND status = 'pending'",
                &[&seq, &at],
            ).await?,
            Some(error) => self.0.execute(
                "UPDATE journey_outbox SET attempts = attempts + 1, next_attempt_at = $2, last_error = $3, leased_until = NULL WHERE seq = $1 AND status = 'pending'",
                &[&seq, &at, &error],
            ).await?,
        };
        Ok(())
    }

    async fn finish(
        &self,
        seq: i64,
        outcome: &Result<Value, String>,
        now: Millis,
    ) -> Result<bool, Abort> {
        let changed = match outcome {
            Ok(value) => self.0.execute(
                "UPDATE journey_outbox SET attempts = attempts + 1, status = 'done', result = $2::text::jsonb, finished_at = $3 WHERE seq = $1 AND status = 'pending'",
                &[&seq, &value.to_string(), &now],
            ).await?,
            Err(error) => self.0.execute(
                "UPDATE journey_outbox SET attempts = attempts + 1, status = 'failed', last_error = $2, finished_at = $3 WHERE seq = $1 AND status = 'pending'",
                &[&seq, error, &now],
            ).await?,
        };
        Ok(changed > 0)
    }

    async fn save_profile(&self, profile: &ProfileState, now: Millis) -> Result<(), Abort> {
        save_profile(self.0, profile, now).await
    }

    async fn move_journey_rows(&self, from: &str, into: &str) -> Result<(), Abort> {
        // Where both were in a journey, the surviving profile's state is kept: what the
        // other's instance placed goes with it.
        self.0
            .execute(
                "DELETE FROM placed_content WHERE profile_id = $1
                   AND journey_key IN (SELECT journey_key FROM journey_states WHERE profile_id = $2)",
                &[&from, &into],
            )
            .await?;
        self.0
            .execute(
                "DELETE FROM journey_states s WHERE s.profile_id = $1
                   AND EXISTS (SELECT 1 FROM journey_states t WHERE t.profile_id = $2 AND t.journey_key = s.journey_key)",
                &[&from, &into],
            )
            .await?;
        for table in PERSON_ROWS {
            self.0
                .execute(
                    &format!("UPDATE {table} SET profile_id = $1 WHERE profile_id = $2"),
                    &[&into, &from],
                )
                .await?;
        }
        Ok(())
    }

    async fn delete_journey_rows(&self, profile_id: &str) -> Result<(), Abort> {
        self.0
            .execute(
                "DELETE FROM message_events WHERE key IN (SELECT key FROM journey_outbox WHERE profile_id = $1)",
                &[&profile_id],
            )
            .await?;
        for table in PERSON_ROWS {
            self.0
                .execute(
                    &format!("DELETE FROM {table} WHERE profile_id = $1"),
                    &[&profile_id],
                )
                .await?;
        }
        Ok(())
    }

    async fn write_stopped(
        &self,
        journey: &str,
        changed: &[(String, JourneyState)],
        now: Millis,
    ) -> Result<(), Abort> {
        for (p, state) in changed {
            let text = serde_json::to_string(state).map_err(corrupt)?;
            self.0
                .execute(
                    "UPDATE journey_states SET state = $3::text::jsonb, updated_at = $4 WHERE profile_id = $1 AND journey_key = $2",
                    &[p, &journey, &text, &now],
                )
                .await?;
        }
        for table in ["journey_timers", "placed_content"] {
            self.0
                .execute(
                    &format!("DELETE FROM {table} WHERE journey_key = $1"),
                    &[&journey],
                )
                .await?;
        }
        Ok(())
    }

    async fn set_entry_rate_limit(&self, journey: &str, limit: Option<u32>) -> Result<(), Abort> {
        let limit = limit.map(|l| l as i32);
        self.0
            .execute(
                "UPDATE journeys SET entry_rate_limit = $2 WHERE key = $1",
                &[&journey, &limit],
            )
            .await?;
        Ok(())
    }

    async fn audience_versions(&self) -> Result<Vec<(String, u32)>, Abort> {
        audiences::newest_versions(self.0).await
    }

    async fn audience_document(&self, key: &str, version: u32) -> Result<Option<Value>, Abort> {
        audiences::version(self.0, key, version).await
    }

    async fn history(
        &self,
        profile_ids: &[&str],
        track_names: &[String],
        kinds: &[&'static str],
        bodies: BodyPart,
    ) -> Result<Vec<Vec<HistoryEvent>>, Abort> {
        audiences::history(self.0, profile_ids, track_names, kinds, bodies).await
    }

    async fn memberships(
        &self,
        profile_ids: &[&str],
    ) -> Result<Vec<(String, String, Millis)>, Abort> {
        audiences::memberships(self.0, profile_ids).await
    }

    async fn write_audiences(
        &self,
        plan: &AudiencePlan,
        events: &[(&str, &Event)],
        now: Millis,
    ) -> Result<(), Abort> {
        audiences::write(self.0, plan, events, now).await
    }

    async fn due_audience_checks(&self, now: Millis, limit: u32) -> Result<Vec<String>, Abort> {
        audiences::due_checks(self.0, now, limit).await
    }

    async fn forget_audiences(
        &self,
        profile_id: &str,
        recheck: Option<&str>,
        now: Millis,
    ) -> Result<(), Abort> {
        audiences::forget(self.0, profile_id, recheck, now).await
    }

    async fn journey_counters(&self, journey: &str) -> Result<JourneyStats, Abort> {
        Ok(journey_stats(self.0, journey).await?)
    }

    async fn winner_decision(&self, journey: &str, node: &str) -> Result<Option<String>, Abort> {
        Ok(crate::winners::decision(self.0, journey, node).await?)
    }

    async fn save_winner(
        &self,
        journey: &str,
        node: &str,
        decision: &waymark_engine::winner::Decision,
        now: Millis,
    ) -> Result<bool, Abort> {
        Ok(crate::winners::save(self.0, journey, node, decision, now).await?)
    }

    async fn hold_outbox(&self, journey: &str, hold: bool) -> Result<u64, Abort> {
        let sql = if hold {
            "UPDATE journey_outbox SET next_attempt_at = next_attempt_at + $2
             WHERE journey_key = $1 AND status = 'pending' AND next_attempt_at < $2"
        } else {
            "UPDATE journey_outbox SET next_attempt_at = next_attempt_at - $2
             WHERE journey_key = $1 AND status = 'pending' AND next_attempt_at >= $2"
        };
        Ok(self
            .0
            .execute(sql, &[&journey, &pipeline::HELD_OFFSET])
            .await?)
    }

    async fn cancel_messages(&self, journey: &str, why: &str, now: Millis) -> Result<u64, Abort> {
        Ok(self
            .0
            .execute(
                "UPDATE journey_outbox SET status = 'failed', last_error = $2, finished_at = $3
                 WHERE journey_key = $1 AND status = 'pending' AND kind = 'message'
                   AND (leased_until IS NULL OR leased_until <= $3)",
                &[&journey, &why, &now],
            )
            .await?)
    }

    async fn due_journey_read(&self, now: Millis) -> Result<Option<JourneyRead>, Abort> {
        Ok(crate::reads::due_journey_read(self.0, now).await?)
    }

    async fn save_journey_read(&self, read: &JourneyRead) -> Result<(), Abort> {
        Ok(crate::reads::save_journey_read(self.0, read).await?)
    }

    async fn audience_members_after(
        &self,
        audience: &str,
        after: &str,
        limit: u32,
    ) -> Result<Vec<String>, Abort> {
        let members = audiences::members(self.0, audience, Some(after), limit).await?;
        Ok(members.into_iter().map(|m| m.profile_id).collect())
    }

    async fn due_audience_runs(&self, now: Millis, limit: u32) -> Result<Vec<String>, Abort> {
        audiences::due_runs(self.0, now, limit).await
    }

    async fn start_audience_run(
        &self,
        key: &str,
        next_run: Option<Millis>,
        now: Millis,
    ) -> Result<(), Abort> {
        audiences::start_backfill(self.0, key, now).await?;
        audiences::set_next_run(self.0, key, next_run).await
    }

    async fn audience_backfills(&self) -> Result<Vec<(String, String)>, Abort> {
        audiences::backfills(self.0).await
    }

    async fn profiles_after(&self, after: &str, limit: u32) -> Result<Vec<String>, Abort> {
        audiences::profiles_after(self.0, after, limit).await
    }

    async fn advance_backfills(
        &self,
        keys: &[String],
        to: Option<&str>,
        decided: u64,
    ) -> Result<(), Abort> {
        audiences::advance_backfills(self.0, keys, to, decided).await
    }
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
            "SELECT key, journey_key, effect::text, status, attempts, last_error, result::text, created_at, next_attempt_at, finished_at, seq
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
                    effect: Effect::decode(r.get(2)).map_err(corrupt)?,
                    status: r.get(3),
                    due: None,
                },
                attempts: r.get::<_, i32>(4) as u32,
                last_error: r.get(5),
                result: r
                    .get::<_, Option<String>>(6)
                    .map(|t| serde_json::from_str(&t).map_err(corrupt))
                    .transpose()?,
                created_at: r.get(7),
                next_attempt_at: r.get(8),
                finished_at: r.get(9),
                seq: r.get(10),
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
    let first = client
        .execute(
            "INSERT INTO message_events (key, status, detail, at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (key, status) DO NOTHING",
            &[&key, &event.status, &event.detail, &event.at],
        )
        .await
        .map_err(db_error)?
        == 1;
    let item = OutboxItem {
        seq: r.get(0),
        key: key.to_owned(),
        profile_id: r.get(1),
        journey: r.get(2),
        effect: Effect::decode(r.get(3)).map_err(corrupt)?,
        attempts: r.get::<_, i32>(4) as u32,
        created_at: r.get(5),
    };
    if first {
        let counts = pipeline::message_report_counts(&item, &event.status);
        add_counts_at(client, &counts, event.at)
            .await
            .map_err(|e| match e {
                Abort::Fail(e) => e,
                Abort::Retry(why) => StoreError::Unavailable(why.into()),
            })?;
    }
    Ok(Some(item))
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
             RETURNING seq, key, profile_id, journey_key, effect::text, attempts, created_at",
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
            effect: Effect::decode(r.get(4)).map_err(corrupt)?,
            attempts: r.get::<_, i32>(5) as u32,
            created_at: r.get(6),
        });
    }
    out.sort_by_key(|i| i.seq);
    Ok(out)
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

/// A published version's document (journey runs compile it; the API shows it).
pub async fn version(
    client: &impl GenericClient,
    key: &str,
    version: u32,
) -> Result<Option<Value>, StoreError> {
    let row = client
        .query_opt(
            "SELECT document::text FROM journey_versions WHERE key = $1 AND version = $2",
            &[&key, &(version as i32)],
        )
        .await
        .map_err(db_error)?;
    row.map(|r| serde_json::from_str(&r.get::<_, String>(0)).map_err(corrupt))
        .transpose()
}
