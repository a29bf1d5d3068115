//! The single writer thread and its group commit.

use std::sync::atomic::Ordering;
use std::time::Instant;
use waymark_store::wall_clock_ms as now_ms;

use rusqlite::{Connection, OptionalExtension, Transaction, params};
use tokio::sync::{mpsc, oneshot};
use waymark_core::ingest::{Outcome, WorkingSet, lookups, plan};
use waymark_core::time::Millis;
use waymark_core::{Event, Identity};
use waymark_store::{Erasure, IngestReceipt, StoreError, StoreOptions};

use crate::{decode_profile, profile_id_of, unavailable};

/// Most events committed in one transaction; bounds the latency a request waits behind others.
const MAX_GROUP_EVENTS: usize = 20_000;
pub const PRUNE_CHUNK: u64 = 10_000;

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

pub enum Command {
    Ingest {
        events: Vec<Event>,
        /// Each event's stored JSON, serialised before it reaches the writer thread.
        bodies: Vec<String>,
        reply: Reply<IngestReceipt>,
    },
    Erase {
        identity: Identity,
        reply: Reply<Option<Erasure>>,
    },
    Prune {
        now: Millis,
        reply: Reply<u64>,
    },
    /// Any other write: runs inside the group's transaction; its answer is released by
    /// calling the returned closure, which happens only after the commit.
    Exec(Exec),
}

pub type Exec =
    Box<dyn FnOnce(&Transaction<'_>) -> Result<Box<dyn FnOnce() + Send>, StoreError> + Send>;

/// What one command asks the transaction to do, split from where its answer goes.
enum Work {
    Ingest(Vec<Event>, Vec<String>),
    Erase(Identity),
    Prune(Millis),
    Exec(Exec),
}

enum Done {
    Ingest(IngestReceipt),
    Erase(Option<Erasure>),
    Prune(u64),
    Exec(Box<dyn FnOnce() + Send>),
}

enum Answer {
    Ingest(Reply<IngestReceipt>),
    Erase(Reply<Option<Erasure>>),
    Prune(Reply<u64>),
    /// Exec commands carry their own reply inside the closure.
    Exec,
}

impl Command {
    fn split(self) -> (Work, Answer) {
        match self {
            Command::Ingest {
                events,
                bodies,
                reply,
            } => (Work::Ingest(events, bodies), Answer::Ingest(reply)),
            Command::Erase { identity, reply } => (Work::Erase(identity), Answer::Erase(reply)),
            Command::Prune { now, reply } => (Work::Prune(now), Answer::Prune(reply)),
            Command::Exec(f) => (Work::Exec(f), Answer::Exec),
        }
    }
}

impl Work {
    fn weight(&self) -> usize {
        match self {
            Work::Ingest(events, _) => events.len(),
            _ => 1,
        }
    }
}

impl Answer {
    fn send(self, result: Result<Done, &StoreError>) {
        let err = |e: &StoreError| match e {
            StoreError::Refused(refusal) => StoreError::Refused(refusal.clone()),
            e => StoreError::Unavailable(e.to_string()),
        };
        // A closed receiver means the caller went away; the work is committed regardless.
        match (self, result) {
            (Answer::Ingest(r), Ok(Done::Ingest(v))) => drop(r.send(Ok(v))),
            (Answer::Erase(r), Ok(Done::Erase(v))) => drop(r.send(Ok(v))),
            (Answer::Prune(r), Ok(Done::Prune(v))) => drop(r.send(Ok(v))),
            (Answer::Ingest(r), Err(e)) => drop(r.send(Err(err(e)))),
            (Answer::Erase(r), Err(e)) => drop(r.send(Err(err(e)))),
            (Answer::Prune(r), Err(e)) => drop(r.send(Err(err(e)))),
            (Answer::Ingest(r), Ok(_)) => {
                drop(r.send(Err(StoreError::Corrupt("mismatched answer".into()))))
            }
            (Answer::Erase(r), Ok(_)) => {
                drop(r.send(Err(StoreError::Corrupt("mismatched answer".into()))))
            }
            (Answer::Prune(r), Ok(_)) => {
                drop(r.send(Err(StoreError::Corrupt("mismatched answer".into()))))
            }
            // After the commit, release the answer; on failure the closure (and its reply
            // sender) was dropped, which the caller sees as "not committed".
            (Answer::Exec, Ok(Done::Exec(release))) => release(),
            (Answer::Exec, _) => {}
        }
    }
}

pub struct Config {
    pub partitions: u32,
    pub options: StoreOptions,
    pub cache: std::sync::Arc<waymark_engine::run::Runtime>,
    /// Told after every commit (see `OutboxStore::outbox_activity`).
    pub activity: std::sync::Arc<tokio::sync::Notify>,
    pub health: std::sync::Arc<waymark_store::CommitHealth>,
    /// Set by the checkpointer when the WAL is past its limit (see `checkpointer`).
    pub rewind: std::sync::Arc<crate::checkpointer::Rewind>,
}

pub fn run(mut conn: Connection, mut rx: mpsc::Receiver<Command>, config: Config) {
    while let Some(first) = rx.blocking_recv() {
        let (work, answer) = first.split();
        let mut weight = work.weight();
        let mut works = vec![work];
        let mut answers = vec![answer];
        while weight < MAX_GROUP_EVENTS {
            match rx.try_recv() {
                Ok(cmd) => {
                    let (work, answer) = cmd.split();
                    weight += work.weight();
                    works.push(work);
                    answers.push(answer);
                }
                Err(_) => break,
            }
        }
        let started = Instant::now();
        match commit_group(&mut conn, works, &config) {
            Ok(results) => {
                config.health.committed();
                config.activity.notify_one();
                metrics::histogram!("waymark_store_commit_seconds", "backend" => "sqlite")
                    .record(started.elapsed().as_secs_f64());
                metrics::histogram!("waymark_store_commit_events", "backend" => "sqlite")
                    .record(weight as f64);
                metrics::histogram!("waymark_store_commit_requests", "backend" => "sqlite")
                    .record(answers.len() as f64);
                for (answer, result) in answers.into_iter().zip(results) {
                    match result {
                        Ok(done) => answer.send(Ok(done)),
                        Err(err) => answer.send(Err(&err)),
                    }
                }
            }
            Err(err) => {
                config.health.failed(&err);
                tracing::error!(error = %err, requests = answers.len(), "sqlite group commit failed; rolled back");
                metrics::counter!("waymark_store_commit_failures_total", "backend" => "sqlite")
                    .increment(1);
                for answer in answers {
                    answer.send(Err(&err));
                }
            }
        }
        if config.rewind.wanted.swap(false, Ordering::Relaxed) {
            let started = Instant::now();
            match crate::checkpointer::rewind(&conn, crate::BUSY_TIMEOUT) {
                Ok(true) => metrics::histogram!("waymark_store_wal_rewind_seconds")
                    .record(started.elapsed().as_secs_f64()),
                Ok(false) => tracing::debug!("WAL not rewound: a reader held on; asked again"),
                Err(e) => tracing::warn!(error = %e, "WAL rewind failed; asked again"),
            }
        }
    }
    tracing::info!("sqlite writer stopped");
}

/// Runs every command of the group in one transaction and commits it. Consecutive ingests
/// are planned together, so one lookup pass serves them all. Each command runs inside a
/// savepoint, so one that fails is rolled back alone and answered with its error while the
/// others commit; if ingests planned together fail, each is retried alone. Only a failure
/// that ends the transaction (a failed COMMIT, a full disk) fails the whole group.
fn commit_group(
    conn: &mut Connection,
    works: Vec<Work>,
    config: &Config,
) -> Result<Vec<Result<Done, StoreError>>, StoreError> {
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(unavailable)?;
    let mut results = Vec::with_capacity(works.len());
    let mut run: Vec<(Vec<Event>, Vec<String>)> = Vec::new();
    for work in works {
        match work {
            Work::Ingest(events, bodies) => {
                run.push((events, bodies));
                continue;
            }
            Work::Erase(identity) => {
                flush_ingests(&tx, &mut run, &mut results, config)?;
                let done = isolated(&tx, |tx| erase(tx, &identity).map(Done::Erase))?;
                results.push(done);
            }
            Work::Prune(now) => {
                flush_ingests(&tx, &mut run, &mut results, config)?;
                let done = isolated(&tx, |tx| prune(tx, now, config).map(Done::Prune))?;
                results.push(done);
            }
            Work::Exec(f) => {
                flush_ingests(&tx, &mut run, &mut results, config)?;
                results.push(isolated(&tx, |tx| f(tx).map(Done::Exec))?);
            }
        }
    }
    flush_ingests(&tx, &mut run, &mut results, config)?;
    tx.commit().map_err(unavailable)?;
    Ok(results)
}

/// Runs `work` inside a savepoint: on its error only its own writes are rolled back and the
/// error is its answer. The outer `Err` means the transaction itself is gone.
fn isolated<T>(
    tx: &Transaction<'_>,
    work: impl FnOnce(&Transaction<'_>) -> Result<T, StoreError>,
) -> Result<Result<T, StoreError>, StoreError> {
    tx.execute_batch("SAVEPOINT work").map_err(unavailable)?;
    match work(tx) {
        Ok(value) => {
            tx.execute_batch("RELEASE work").map_err(unavailable)?;
            Ok(Ok(value))
        }
        Err(err) => {
            // SQLite ends the whole transaction on some errors (SQLITE_FULL, I/O errors);
            // then nothing of the group can commit.
            if tx.is_autocommit() {
                return Err(err);
            }
            tx.execute_batch("ROLLBACK TO work; RELEASE work")
                .map_err(unavailable)?;
            Ok(Err(err))
        }
    }
}

fn flush_ingests(
    tx: &Transaction<'_>,
    run: &mut Vec<(Vec<Event>, Vec<String>)>,
    results: &mut Vec<Result<Done, StoreError>>,
    config: &Config,
) -> Result<(), StoreError> {
    if run.is_empty() {
        return Ok(());
    }
    let requests = std::mem::take(run);
    let sizes: Vec<usize> = requests.iter().map(|(e, _)| e.len()).collect();
    let (mut all, mut bodies) = (Vec::new(), Vec::new());
    for (events, b) in requests {
        all.extend(events);
        bodies.extend(b);
    }
    if sizes.len() > 1 {
        match isolated(tx, |tx| ingest(tx, &all, &bodies, config))? {
            Ok(outcomes) => {
                let mut outcomes = outcomes.into_iter();
                for size in sizes {
                    let receipt = outcomes.by_ref().take(size).collect();
                    results.push(Ok(Done::Ingest(receipt)));
                }
                return Ok(());
            }
            // A refusal is a client's doing (and any client can cause one): not worth a warning.
            Err(StoreError::Refused(_)) => tracing::debug!(
                requests = sizes.len(),
                "an ingest group held a refused request; retrying each request alone"
            ),
            Err(e) => tracing::warn!(
                error = %e,
                requests = sizes.len(),
                "an ingest group failed; retrying each request alone"
            ),
        }
    }
    let mut start = 0;
    for size in sizes {
        let range = start..start + size;
        start += size;
        let done = isolated(tx, |tx| {
            ingest(tx, &all[range.clone()], &bodies[range.clone()], config)
        })?;
        results.push(done.map(|outcomes| Done::Ingest(outcomes.into_iter().collect())));
    }
    Ok(())
}

fn ingest(
    tx: &Transaction<'_>,
    events: &[Event],
    bodies: &[String],
    config: &Config,
) -> Result<Vec<Outcome>, StoreError> {
    let look = lookups(events);
    let mut ws = WorkingSet::default();
    {
        let mut profile_stmt = tx
            .prepare_cached("SELECT state FROM profiles WHERE id = ?1")
            .map_err(unavailable)?;
        for identity in look.identities {
            let Some(owner) = profile_id_of(tx, &identity).map_err(unavailable)? else {
                continue;
            };
            if !ws.profiles.contains_key(&owner) {
                let state: Option<String> = profile_stmt
                    .query_row([&owner], |r| r.get(0))
                    .optional()
                    .map_err(unavailable)?;
                if let Some(state) = state {
                    ws.profiles.insert(owner.clone(), decode_profile(&state)?);
                }
            }
            ws.owners.insert(identity, owner);
        }
        let mut seen_stmt = tx
            .prepare_cached("SELECT 1 FROM events WHERE message_id = ?1")
            .map_err(unavailable)?;
        for message_id in look.message_ids {
            if seen_stmt.exists([&message_id]).map_err(unavailable)? {
                ws.seen_message_ids.insert(message_id);
            }
        }
    }
    let now = now_ms();
    let plan = plan(ws, events, config.partitions, now, &mut || {
        uuid::Uuid::now_v7().to_string()
    })
    .map_err(StoreError::Refused)?;

    for merge in &plan.merges {
        crate::runs::merge(tx, &merge.from, &merge.into)?;
        tx.prepare_cached("UPDATE identities SET profile_id = ?1 WHERE profile_id = ?2")
            .and_then(|mut s| s.execute(params![merge.into, merge.from]))
            .and_then(|_| {
                tx.prepare_cached("UPDATE events SET profile_id = ?1 WHERE profile_id = ?2")
            })
            .and_then(|mut s| s.execute(params![merge.into, merge.from]))
            .and_then(|_| tx.prepare_cached("DELETE FROM profiles WHERE id = ?1"))
            .and_then(|mut s| s.execute([&merge.from]))
            .and_then(|_| {
                tx.prepare_cached("INSERT INTO merges (from_id, into_id, at) VALUES (?1, ?2, ?3)")
            })
            .and_then(|mut s| s.execute(params![merge.from, merge.into, now]))
            .map_err(unavailable)?;
    }
    {
        let mut stmt = tx
            .prepare_cached(
                "UPDATE identities SET profile_id = ?3 WHERE namespace = ?1 AND value = ?2",
            )
            .map_err(unavailable)?;
        for (identity, owner) in &plan.moved_identities {
            stmt.execute(params![identity.namespace.as_str(), identity.value, owner])
                .map_err(unavailable)?;
        }
    }
    {
        let mut stmt = tx
            .prepare_cached(
                "INSERT INTO identities (namespace, value, profile_id) VALUES (?1, ?2, ?3)",
            )
            .map_err(unavailable)?;
        for (identity, owner) in &plan.new_identities {
            stmt.execute(params![identity.namespace.as_str(), identity.value, owner])
                .map_err(unavailable)?;
        }
    }
    {
        let mut stmt = tx
            .prepare_cached(
                "INSERT INTO events (message_id, profile_id, kind, name, timestamp, received_at, body)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )
            .map_err(unavailable)?;
        for (index, owner) in &plan.events {
            let e = &events[*index];
            let body = &bodies[*index];
            stmt.execute(params![
                e.message_id,
                owner,
                e.kind.as_str(),
                e.name,
                e.timestamp,
                e.received_at,
                body
            ])
            .map_err(unavailable)?;
        }
    }
    {
        let mut upsert = tx
            .prepare_cached(
                "INSERT INTO profiles (id, partition, state, updated_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (id) DO UPDATE SET state = excluded.state, updated_at = excluded.updated_at",
            )
            .map_err(unavailable)?;
        let mut trim = tx
            .prepare_cached(
                "DELETE FROM events WHERE profile_id = ?1 AND seq NOT IN (
                     SELECT seq FROM events WHERE profile_id = ?1 ORDER BY timestamp DESC, seq DESC LIMIT ?2)",
            )
            .map_err(unavailable)?;
        let max = i64::try_from(config.options.max_events_per_profile).unwrap_or(i64::MAX);
        for profile in &plan.profiles {
            let state =
                serde_json::to_string(profile).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            upsert
                .execute(params![profile.id, profile.partition, state, now])
                .map_err(unavailable)?;
            if profile.event_count > config.options.max_events_per_profile {
                trim.execute(params![profile.id, max])
                    .map_err(unavailable)?;
            }
        }
    }
    // Live journeys act on the accepted events in this same transaction: an event that is
    // committed has also moved every journey it should move.
    let states: std::collections::HashMap<&str, &waymark_core::ProfileState> =
        plan.profiles.iter().map(|p| (p.id.as_str(), p)).collect();
    let inputs: Vec<(&Event, &waymark_core::ProfileState)> = plan
        .events
        .iter()
        .filter_map(|(i, owner)| states.get(owner.as_str()).map(|p| (&events[*i], *p)))
        .collect();
    crate::runs::on_events(tx, &config.cache, &inputs, now)?;
    Ok(plan.outcomes)
}

fn erase(tx: &Transaction<'_>, identity: &Identity) -> Result<Option<Erasure>, StoreError> {
    let Some(profile_id) = profile_id_of(tx, identity).map_err(unavailable)? else {
        return Ok(None);
    };
    crate::runs::erase(tx, &profile_id)?;
    let events_deleted = tx
        .execute("DELETE FROM events WHERE profile_id = ?1", [&profile_id])
        .map_err(unavailable)?;
    let identities_deleted = tx
        .execute(
            "DELETE FROM identities WHERE profile_id = ?1",
            [&profile_id],
        )
        .map_err(unavailable)?;
    tx.execute("DELETE FROM profiles WHERE id = ?1", [&profile_id])
        .map_err(unavailable)?;
    tx.execute(
        "DELETE FROM merges WHERE into_id = ?1 OR from_id = ?1",
        [&profile_id],
    )
    .map_err(unavailable)?;
    Ok(Some(Erasure {
        profile_id,
        events_deleted: events_deleted as u64,
        identities_deleted: identities_deleted as u64,
    }))
}

/// One chunk of retention: up to `PRUNE_CHUNK` rows of each kind; the caller repeats
/// while a full chunk was deleted.
fn prune(tx: &Transaction<'_>, now: Millis, config: &Config) -> Result<u64, StoreError> {
    let mut deleted = 0;
    if let Some(max_age) = config.options.max_event_age_ms {
        deleted += tx
            .execute(
                "DELETE FROM events WHERE seq IN (SELECT seq FROM events WHERE timestamp < ?1 LIMIT ?2)",
                params![now - max_age, PRUNE_CHUNK as i64],
            )
            .map_err(unavailable)?;
        deleted += tx
            .execute(
                "DELETE FROM merges WHERE rowid IN (SELECT rowid FROM merges WHERE at < ?1 LIMIT ?2)",
                params![now - max_age, PRUNE_CHUNK as i64],
            )
            .map_err(unavailable)?;
    }
    if let Some(cutoff) = config.options.message_cutoff(now) {
        let keys: Vec<(i64, String)> = tx
            .prepare_cached(
                "SELECT seq, key FROM journey_outbox WHERE finished_at < ?1 AND status != 'pending' LIMIT ?2",
            )
            .and_then(|mut s| {
                s.query_map(params![cutoff, PRUNE_CHUNK as i64], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })?
                .collect()
            })
            .map_err(unavailable)?;
        for (seq, key) in &keys {
            for sql in [
                "DELETE FROM message_events WHERE key = ?1",
                "DELETE FROM inbox_marks WHERE key = ?1",
            ] {
                tx.prepare_cached(sql)
                    .and_then(|mut s| s.execute([key]))
                    .map_err(unavailable)?;
            }
            tx.prepare_cached("DELETE FROM journey_outbox WHERE seq = ?1")
                .and_then(|mut s| s.execute([seq]))
                .map_err(unavailable)?;
        }
        deleted += keys.len();
    }
    // Content past its `expires` is no longer shown; the rows go.
    deleted += tx
        .execute(
            "DELETE FROM placed_content WHERE key IN (SELECT key FROM placed_content WHERE expires_at <= ?1 LIMIT ?2)",
            params![now, PRUNE_CHUNK as i64],
        )
        .map_err(unavailable)?;
    Ok(deleted as u64)
}
