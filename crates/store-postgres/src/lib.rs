//! The PostgreSQL store: the same traits and the same rules as the embedded store, on a
//! database several Waymark nodes can share.
//!
//! Concurrency: each ingest is one READ COMMITTED transaction that first takes transaction
//! advisory locks on the hashes of every identity it names (in sorted order, so two
//! transactions never wait on each other in a cycle), then locks the profiles those
//! identities point at (`FOR UPDATE`, sorted by id), then re-reads the identities. If a
//! concurrent merge moved or deleted anything in between, it rolls back and retries. The
//! few races left (two transactions inserting the same message id) end in a unique
//! violation, which is retried the same way.

mod audiences;
mod decisioning;
mod inbox;
mod journeys;
mod reads;
mod runs;
mod schema;
mod suppressions;
mod templates;
mod versioned;
mod winners;

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use waymark_store::wall_clock_ms as now_ms;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Transaction};
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::NoTls;
use tokio_postgres::error::SqlState;
use waymark_core::ingest::{Outcome, WorkingSet, lookups, plan};
use waymark_core::time::Millis;
use waymark_core::{Event, Identity, ProfileState};
use waymark_store::{
    AudienceMember, AudienceRecord, AudienceSave, AudienceStatus, AudienceStore, Delivery, Erasure,
    EventPage, InboxMark, InboxStore, IngestReceipt, JourneyAction, JourneyRecord, JourneyRunStore,
    JourneyState, JourneyStats, JourneyStore, OutboxItem, OutboxStore, PageRequest, ProfileStore,
    ScanReads, ScannedPerson, SizeAt, Store, StoreError, StoreOptions, StoredEvent, Suppression,
    SuppressionStore, TemplateRecord, TemplateStore, Transition, decode_cursor,
};

const MAX_ATTEMPTS: u32 = 20;

/// Most events one group-commit transaction takes.
const MAX_GROUP_EVENTS: usize = 5_000;
/// Transactions committing groups at once. More than one, so a group waiting on its
/// commit's WAL flush does not stop the next group from being planned.
const COMMITTERS: usize = 4;

type Reply = oneshot::Sender<Result<IngestReceipt, StoreError>>;
/// One ingest call waiting for a committer: its events and where its answer goes.
type Request = (Vec<Event>, Reply);

pub struct PostgresStore {
    shared: Arc<Shared>,
    queue: Mutex<Option<mpsc::Sender<Request>>>,
    committers: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

/// What the committer tasks and the read paths share.
pub struct Shared {
    health: waymark_store::CommitHealth,
    pool: Pool,
    partitions: u32,
    options: StoreOptions,
    cache: waymark_engine::run::Runtime,
}

impl std::ops::Deref for PostgresStore {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.shared
    }
}

/// Group commit: each committer takes every request waiting in the queue (up to
/// `MAX_GROUP_EVENTS`), plans and commits them in one transaction, then answers each.
/// Without it every HTTP request would pay its own WAL flush.
async fn committer(shared: Arc<Shared>, queue: Arc<tokio::sync::Mutex<mpsc::Receiver<Request>>>) {
    loop {
        let mut group = Vec::new();
        {
            let mut rx = queue.lock().await;
            let Some(first) = rx.recv().await else { return };
            let mut weight = first.0.len();
            group.push(first);
            while weight < MAX_GROUP_EVENTS {
                match rx.try_recv() {
                    Ok(next) => {
                        weight += next.0.len();
                        group.push(next);
                    }
                    Err(_) => break,
                }
            }
        }
        metrics::histogram!("waymark_store_commit_requests", "backend" => "postgres")
            .record(group.len() as f64);
        let sizes: Vec<usize> = group.iter().map(|(e, _)| e.len()).collect();
        let mut events = Vec::with_capacity(sizes.iter().sum());
        let mut replies = Vec::with_capacity(group.len());
        for (batch, reply) in group {
            events.extend(batch);
            replies.push(reply);
        }
        let results: Vec<Result<IngestReceipt, StoreError>> = match shared
            .ingest_with_retry(&events)
            .await
        {
            Ok(outcomes) => {
                let mut outcomes = outcomes.into_iter();
                sizes
                    .iter()
                    .map(|size| Ok(outcomes.by_ref().take(*size).collect()))
                    .collect()
            }
            Err(e) if sizes.len() == 1 => vec![Err(e)],
            // One request the database refuses must not fail the others planned with
            // it: each is retried alone and answered with its own result.
            Err(e) => {
                if matches!(e, StoreError::Refused(_)) {
                    tracing::debug!(
                        requests = sizes.len(),
                        "a postgres group held a refused request; retrying each request alone"
                    );
                } else {
                    tracing::warn!(error = %e, requests = sizes.len(), "postgres group commit failed; retrying each request alone");
                }
                let mut alone = Vec::with_capacity(sizes.len());
                let mut start = 0;
                for size in &sizes {
                    let events = &events[start..start + size];
                    start += size;
                    alone.push(
                        shared
                            .ingest_with_retry(events)
                            .await
                            .map(IngestReceipt::from_iter),
                    );
                }
                alone
            }
        };
        for (result, reply) in results.into_iter().zip(replies) {
            match &result {
                Ok(_) => shared.health.committed(),
                Err(StoreError::Refused(_)) => {}
                Err(e) => {
                    shared.health.failed(e);
                    tracing::error!(error = %e, "postgres ingest failed");
                }
            }
            let _ = reply.send(result);
        }
    }
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

pub(crate) fn db_error(e: tokio_postgres::Error) -> StoreError {
    match e.as_db_error() {
        Some(db) => {
            StoreError::Unavailable(format!("postgres: {} ({})", db.message(), db.code().code()))
        }
        None => StoreError::Unavailable(format!("postgres: {e}")),
    }
}

fn retryable(e: &tokio_postgres::Error) -> bool {
    matches!(
        e.code(),
        Some(c) if *c == SqlState::T_R_SERIALIZATION_FAILURE || *c == SqlState::T_R_DEADLOCK_DETECTED || *c == SqlState::UNIQUE_VIOLATION
    )
}

/// A read-only transaction that sees one snapshot for all its reads.
pub(crate) async fn snapshot(
    client: &mut deadpool_postgres::Client,
) -> Result<deadpool_postgres::Transaction<'_>, StoreError> {
    client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(db_error)
}

pub(crate) fn decode_profile(json: &str) -> Result<ProfileState, StoreError> {
    serde_json::from_str(json).map_err(|e| StoreError::Corrupt(format!("profile state: {e}")))
}

fn identity_lock_key(identity: &Identity) -> i64 {
    let mut bytes =
        Vec::with_capacity(identity.namespace.as_str().len() + identity.value.len() + 1);
    bytes.extend_from_slice(identity.namespace.as_str().as_bytes());
    bytes.push(0);
    bytes.extend_from_slice(identity.value.as_bytes());
    xxhash_rust::xxh3::xxh3_64(&bytes) as i64
}

/// Why an attempt did not commit: a race to retry, or a real failure.
pub(crate) enum Abort {
    Retry(&'static str),
    Fail(StoreError),
}

impl From<tokio_postgres::Error> for Abort {
    fn from(e: tokio_postgres::Error) -> Self {
        if retryable(&e) {
            Abort::Retry("conflict")
        } else {
            Abort::Fail(db_error(e))
        }
    }
}

/// Where a retry is not possible (outside `with_retry`), a race is reported as unavailable.
impl From<Abort> for StoreError {
    fn from(e: Abort) -> Self {
        match e {
            Abort::Fail(e) => e,
            Abort::Retry(why) => StoreError::Unavailable(why.into()),
        }
    }
}

impl From<StoreError> for Abort {
    fn from(e: StoreError) -> Self {
        Abort::Fail(e)
    }
}

impl PostgresStore {
    /// Connects with a `postgres://` URL (or key=value string), migrating the schema.
    pub async fn open(url: &str, options: StoreOptions) -> Result<Self, StoreError> {
        let config = tokio_postgres::Config::from_str(url)
            .map_err(|e| unavailable(format!("invalid postgres url: {e}")))?;
        Self::open_with_config(config, options).await
    }

    pub async fn open_with_config(
        config: tokio_postgres::Config,
        options: StoreOptions,
    ) -> Result<Self, StoreError> {
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(16)
            .build()
            .map_err(unavailable)?;
        let mut client = pool
            .get()
            .await
            .map_err(|e| unavailable(format!("cannot connect to postgres: {e}")))?;
        schema::migrate(&mut client).await?;
        let partitions = schema::partitions(&client, options.partitions)
            .await
            .map_err(db_error)?;
        let shared = Arc::new(Shared {
            health: Default::default(),
            pool,
            partitions,
            cache: waymark_engine::run::Runtime::new(options.governance.clone()),
            options,
        });
        let (tx, rx) = mpsc::channel(4096);
        let rx = Arc::new(tokio::sync::Mutex::new(rx));
        let committers = (0..COMMITTERS)
            .map(|_| tokio::spawn(committer(shared.clone(), rx.clone())))
            .collect();
        Ok(Self {
            shared,
            queue: Mutex::new(Some(tx)),
            committers: Mutex::new(committers),
        })
    }
}

impl Shared {
    async fn client(&self) -> Result<deadpool_postgres::Client, StoreError> {
        self.pool
            .get()
            .await
            .map_err(|e| unavailable(format!("postgres pool: {e}")))
    }

    /// Takes the identity's advisory lock, as ingest does, then finds its profile.
    async fn lock_identity(
        tx: &Transaction<'_>,
        identity: &Identity,
    ) -> Result<Option<String>, StoreError> {
        tx.execute(
            "SELECT pg_advisory_xact_lock($1)",
            &[&identity_lock_key(identity)],
        )
        .await
        .map_err(db_error)?;
        Self::profile_id_of(tx, identity).await
    }

    async fn profile_id_of(
        client: &impl deadpool_postgres::GenericClient,
        identity: &Identity,
    ) -> Result<Option<String>, StoreError> {
        let row = client
            .query_opt(
                "SELECT profile_id FROM identities WHERE namespace = $1 AND value = $2",
                &[&identity.namespace.as_str(), &identity.value],
            )
            .await
            .map_err(db_error)?;
        Ok(row.map(|r| r.get(0)))
    }

    async fn owners(
        tx: &Transaction<'_>,
        identities: &[Identity],
    ) -> Result<HashMap<Identity, String>, tokio_postgres::Error> {
        let namespaces: Vec<&str> = identities.iter().map(|i| i.namespace.as_str()).collect();
        let values: Vec<&str> = identities.iter().map(|i| i.value.as_str()).collect();
        let rows = tx
            .query(
                "SELECT i.namespace, i.value, i.profile_id FROM identities i
                 JOIN unnest($1::text[], $2::text[]) AS q(ns, v) ON i.namespace = q.ns AND i.value = q.v",
                &[&namespaces, &values],
            )
            .await?;
        let mut owners = HashMap::with_capacity(rows.len());
        for row in rows {
            let (ns, value, owner): (String, String, String) = (row.get(0), row.get(1), row.get(2));
            if let Ok(identity) = Identity::parse(&ns, &value) {
                owners.insert(identity, owner);
            }
        }
        Ok(owners)
    }

    async fn ingest_with_retry(&self, events: &[Event]) -> Result<Vec<Outcome>, StoreError> {
        let started = std::time::Instant::now();
        for attempt in 1..=MAX_ATTEMPTS {
            match self.try_ingest(events).await {
                Ok(outcomes) => {
                    metrics::histogram!("waymark_store_commit_seconds", "backend" => "postgres")
                        .record(started.elapsed().as_secs_f64());
                    metrics::histogram!("waymark_store_commit_events", "backend" => "postgres")
                        .record(events.len() as f64);
                    return Ok(outcomes);
                }
                Err(Abort::Retry(why)) => {
                    metrics::counter!("waymark_store_retries_total", "backend" => "postgres")
                        .increment(1);
                    tracing::debug!(attempt, why, "retrying postgres ingest");
                    tokio::time::sleep(std::time::Duration::from_millis(u64::from(
                        attempt.min(10),
                    )))
                    .await;
                }
                Err(Abort::Fail(e)) => return Err(e),
            }
        }
        Err(StoreError::Unavailable(format!(
            "ingest still conflicting after {MAX_ATTEMPTS} attempts"
        )))
    }

    async fn try_ingest(&self, events: &[Event]) -> Result<Vec<Outcome>, Abort> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let look = lookups(events);

        let mut keys: Vec<i64> = look.identities.iter().map(identity_lock_key).collect();
        keys.sort_unstable();
        keys.dedup();
        tx.execute(
            "SELECT pg_advisory_xact_lock(k) FROM (SELECT k FROM unnest($1::bigint[]) AS k ORDER BY k) AS sorted",
            &[&keys],
        )
        .await?;

        let owners = Self::owners(&tx, &look.identities).await?;
        let mut profile_ids: Vec<&String> = owners.values().collect();
        profile_ids.sort();
        profile_ids.dedup();
        let rows = tx
            .query(
                "SELECT id, state::text FROM profiles WHERE id = ANY($1) ORDER BY id FOR UPDATE",
                &[&profile_ids],
            )
            .await?;
        if rows.len() != profile_ids.len() {
            return Err(Abort::Retry("a profile was merged away concurrently"));
        }
        let recheck = Self::owners(&tx, &look.identities).await?;
        if recheck != owners {
            return Err(Abort::Retry("an identity moved concurrently"));
        }
        let mut ws = WorkingSet {
            owners,
            ..WorkingSet::default()
        };
        for row in rows {
            let (id, state): (String, String) = (row.get(0), row.get(1));
            ws.profiles.insert(id, decode_profile(&state)?);
        }
        let seen = tx
            .query(
                "SELECT message_id FROM events WHERE message_id = ANY($1)",
                &[&look.message_ids],
            )
            .await?;
        ws.seen_message_ids = seen.into_iter().map(|r| r.get(0)).collect();

        let now = now_ms();
        let plan = plan(ws, events, self.partitions, now, &mut || {
            uuid::Uuid::now_v7().to_string()
        })
        .map_err(|refusal| Abort::Fail(StoreError::Refused(refusal)))?;

        for m in &plan.merges {
            runs::merge(&tx, &m.from, &m.into).await?;
            tx.execute(
                "UPDATE identities SET profile_id = $1 WHERE profile_id = $2",
                &[&m.into, &m.from],
            )
            .await?;
            tx.execute(
                "UPDATE events SET profile_id = $1 WHERE profile_id = $2",
                &[&m.into, &m.from],
            )
            .await?;
            tx.execute("DELETE FROM profiles WHERE id = $1", &[&m.from])
                .await?;
            tx.execute(
                "INSERT INTO merges (from_id, into_id, at) VALUES ($1, $2, $3)",
                &[&m.from, &m.into, &now],
            )
            .await?;
        }
        for (identity, owner) in &plan.moved_identities {
            tx.execute(
                "UPDATE identities SET profile_id = $3 WHERE namespace = $1 AND value = $2",
                &[&identity.namespace.as_str(), &identity.value, owner],
            )
            .await?;
        }
        if !plan.new_identities.is_empty() {
            let ns: Vec<&str> = plan
                .new_identities
                .iter()
                .map(|(i, _)| i.namespace.as_str())
                .collect();
            let vals: Vec<&str> = plan
                .new_identities
                .iter()
                .map(|(i, _)| i.value.as_str())
                .collect();
            let owners: Vec<&str> = plan
                .new_identities
                .iter()
                .map(|(_, o)| o.as_str())
                .collect();
            tx.execute(
                "INSERT INTO identities (namespace, value, profile_id) SELECT * FROM unnest($1::text[], $2::text[], $3::text[])",
                &[&ns, &vals, &owners],
            )
            .await?;
        }
        if !plan.events.is_empty() {
            let n = plan.events.len();
            let (mut ids, mut owners, mut kinds, mut names, mut times, mut received, mut bodies) = (
                Vec::with_capacity(n),
                Vec::with_capacity(n),
                Vec::with_capacity(n),
                Vec::with_capacity(n),
                Vec::with_capacity(n),
                Vec::with_capacity(n),
                Vec::with_capacity(n),
            );
            for (index, owner) in &plan.events {
                let e = &events[*index];
                ids.push(e.message_id.as_str());
                owners.push(owner.as_str());
                kinds.push(e.kind.as_str());
                names.push(e.name.as_deref());
                times.push(e.timestamp);
                received.push(e.received_at);
                bodies.push(e.to_json().to_string());
            }
            tx.execute(
                "INSERT INTO events (message_id, profile_id, kind, name, timestamp, received_at, body)
                 SELECT m, p, k, n, t, r, b::jsonb
                 FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::bigint[], $7::text[])
                   WITH ORDINALITY AS u(m, p, k, n, t, r, b, o)
                 ORDER BY o",
                &[&ids, &owners, &kinds, &names, &times, &received, &bodies],
            )
            .await?;
        }
        if !plan.profiles.is_empty() {
            let ids: Vec<&str> = plan.profiles.iter().map(|p| p.id.as_str()).collect();
            let partitions: Vec<i32> = plan.profiles.iter().map(|p| p.partition as i32).collect();
            let mut states = Vec::with_capacity(plan.profiles.len());
            for p in &plan.profiles {
                states.push(
                    serde_json::to_string(p).map_err(|e| StoreError::Corrupt(e.to_string()))?,
                );
            }
            tx.execute(
                "INSERT INTO profiles (id, partition, state, updated_at)
                 SELECT id, part, st::jsonb, $4 FROM unnest($1::text[], $2::int[], $3::text[]) AS u(id, part, st)
                 ON CONFLICT (id) DO UPDATE SET state = excluded.state, updated_at = excluded.updated_at",
                &[&ids, &partitions, &states, &now],
            )
            .await?;
            let max = i64::try_from(self.options.max_events_per_profile).unwrap_or(i64::MAX);
            for p in plan
                .profiles
                .iter()
                .filter(|p| p.event_count > self.options.max_events_per_profile)
            {
                tx.execute(
                    "DELETE FROM events WHERE profile_id = $1 AND seq NOT IN (
                         SELECT seq FROM events WHERE profile_id = $1 ORDER BY timestamp DESC, seq DESC LIMIT $2)",
                    &[&p.id, &max],
                )
                .await?;
            }
        }
        // Live journeys act on the accepted events in this same transaction.
        let states: HashMap<&str, &ProfileState> =
            plan.profiles.iter().map(|p| (p.id.as_str(), p)).collect();
        let inputs: Vec<(&Event, &ProfileState)> = plan
            .events
            .iter()
            .filter_map(|(i, owner)| states.get(owner.as_str()).map(|p| (&events[*i], *p)))
            .collect();
        runs::on_events(&tx, &self.cache, &inputs, now).await?;
        tx.commit().await?;
        Ok(plan.outcomes)
    }
}

#[async_trait]
impl ProfileStore for PostgresStore {
    async fn ingest(&self, events: Vec<Event>) -> Result<IngestReceipt, StoreError> {
        if events.is_empty() {
            return Ok(IngestReceipt::default());
        }
        let sender = self
            .queue
            .lock()
            .map_err(|_| StoreError::Closed)?
            .clone()
            .ok_or(StoreError::Closed)?;
        let (reply, answer) = oneshot::channel();
        sender
            .send((events, reply))
            .await
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    async fn profile(&self, identity: &Identity) -> Result<Option<ProfileState>, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT p.state::text FROM identities i JOIN profiles p ON p.id = i.profile_id
                 WHERE i.namespace = $1 AND i.value = $2",
                &[&identity.namespace.as_str(), &identity.value],
            )
            .await
            .map_err(db_error)?;
        row.map(|r| decode_profile(&r.get::<_, String>(0)))
            .transpose()
    }

    async fn events(
        &self,
        identity: &Identity,
        page: PageRequest,
    ) -> Result<Option<EventPage>, StoreError> {
        let client = self.client().await?;
        let Some(profile_id) = Shared::profile_id_of(&client, identity).await? else {
            return Ok(None);
        };
        let (before_ts, before_seq) = page
            .before
            .as_deref()
            .and_then(decode_cursor)
            .unwrap_or((Millis::MAX, i64::MAX));
        let limit = page.limit.max(1);
        let rows = client
            .query(
                "SELECT timestamp, seq, body::text FROM events
                 WHERE profile_id = $1 AND (timestamp, seq) < ($2, $3)
                 ORDER BY timestamp DESC, seq DESC LIMIT $4",
                &[
                    &profile_id,
                    &before_ts,
                    &before_seq,
                    &(i64::from(limit) + 1),
                ],
            )
            .await
            .map_err(db_error)?;
        let mut events = Vec::with_capacity(rows.len());
        for row in rows {
            let (timestamp, seq, body): (i64, i64, String) = (row.get(0), row.get(1), row.get(2));
            let body = serde_json::from_str(&body)
                .map_err(|e| StoreError::Corrupt(format!("event {seq}: {e}")))?;
            events.push(StoredEvent {
                timestamp,
                seq,
                body,
            });
        }
        Ok(Some(EventPage::from_rows(events, limit)))
    }

    async fn erase(&self, identity: &Identity) -> Result<Option<Erasure>, StoreError> {
        for _ in 0..MAX_ATTEMPTS {
            let mut client = self.client().await?;
            let tx = client.transaction().await.map_err(db_error)?;
            let Some(profile_id) = Shared::lock_identity(&tx, identity).await? else {
                return Ok(None);
            };
            let locked = tx
                .query_opt(
                    "SELECT 1 FROM profiles WHERE id = $1 FOR UPDATE",
                    &[&profile_id],
                )
                .await
                .map_err(db_error)?;
            if locked.is_none() {
                continue; // merged away meanwhile; look again
            }
            runs::erase(&tx, &profile_id).await?;
            let events_deleted = tx
                .execute("DELETE FROM events WHERE profile_id = $1", &[&profile_id])
                .await
                .map_err(db_error)?;
            let identities_deleted = tx
                .execute(
                    "DELETE FROM identities WHERE profile_id = $1",
                    &[&profile_id],
                )
                .await
                .map_err(db_error)?;
            tx.execute("DELETE FROM profiles WHERE id = $1", &[&profile_id])
                .await
                .map_err(db_error)?;
            tx.execute(
                "DELETE FROM merges WHERE into_id = $1 OR from_id = $1",
                &[&profile_id],
            )
            .await
            .map_err(db_error)?;
            tx.commit().await.map_err(db_error)?;
            return Ok(Some(Erasure {
                profile_id,
                events_deleted,
                identities_deleted,
            }));
        }
        Err(StoreError::Unavailable(
            "erase kept racing with merges".into(),
        ))
    }

    async fn forget_identity(&self, identity: &Identity, now: Millis) -> Result<bool, StoreError> {
        // Locked as ingest locks: the identity, then its profile.
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db_error)?;
        let Some(profile_id) = Shared::lock_identity(&tx, identity).await? else {
            return Ok(false);
        };
        let (namespace, value) = (identity.namespace.as_str(), identity.value.as_str());
        tx.execute(
            "DELETE FROM identities WHERE namespace = $1 AND value = $2",
            &[&namespace, &value],
        )
        .await
        .map_err(db_error)?;
        if let Some(row) = tx
            .query_opt(
                "SELECT state::text FROM profiles WHERE id = $1 FOR UPDATE",
                &[&profile_id],
            )
            .await
            .map_err(db_error)?
        {
            let mut profile = decode_profile(&row.get::<_, String>(0))?;
            profile.forget_identity(namespace, value);
            runs::save_profile(&tx, &profile, now).await?;
        }
        tx.commit().await.map_err(db_error)?;
        Ok(true)
    }

    async fn prune_expired(&self, now: Millis) -> Result<u64, StoreError> {
        const CHUNK: u64 = 10_000;
        let client = self.client().await?;
        let mut steps: Vec<(&str, Millis)> = Vec::new();
        if let Some(max_age) = self.options.max_event_age_ms {
            steps.push((
                "DELETE FROM events WHERE seq IN (SELECT seq FROM events WHERE timestamp < $1 LIMIT 10000)",
                now - max_age,
            ));
            steps.push((
                "DELETE FROM merges WHERE ctid IN (SELECT ctid FROM merges WHERE at < $1 LIMIT 10000)",
                now - max_age,
            ));
        }
        if let Some(cutoff) = self.options.message_cutoff(now) {
            // A finished row goes with its provider reports and inbox marks, in one statement.
            steps.push((
                "WITH gone AS (
                     DELETE FROM journey_outbox WHERE seq IN (
                         SELECT seq FROM journey_outbox
                          WHERE finished_at < $1 AND status != 'pending' LIMIT 10000)
                     RETURNING key),
                 reports AS (DELETE FROM message_events WHERE key IN (SELECT key FROM gone)),
                 marks AS (DELETE FROM inbox_marks WHERE key IN (SELECT key FROM gone))
                 SELECT count(*) FROM gone",
                cutoff,
            ));
        }
        // Content past its `expires` is no longer shown; the rows go.
        steps.push((
            "DELETE FROM placed_content WHERE key IN (SELECT key FROM placed_content WHERE expires_at <= $1 LIMIT 10000)",
            now,
        ));
        let mut total = 0;
        for (sql, before) in steps {
            loop {
                let n = if sql.starts_with("WITH") {
                    let row = client.query_one(sql, &[&before]).await.map_err(db_error)?;
                    row.get::<_, i64>(0) as u64
                } else {
                    client.execute(sql, &[&before]).await.map_err(db_error)?
                };
                total += n;
                if n < CHUNK {
                    break;
                }
            }
        }
        Ok(total)
    }
}

#[async_trait]
impl InboxStore for PostgresStore {
    async fn mark_inbox(
        &self,
        key: &str,
        profile_id: &str,
        read: bool,
        dismissed: bool,
        now: Millis,
    ) -> Result<InboxMark, StoreError> {
        let client = self.client().await?;
        inbox::mark_inbox(&client, key, profile_id, read, dismissed, now).await
    }

    async fn inbox_marks(
        &self,
        keys: &[String],
    ) -> Result<std::collections::HashMap<String, InboxMark>, StoreError> {
        let client = self.client().await?;
        inbox::inbox_marks(&client, keys).await
    }
}

#[async_trait]
impl SuppressionStore for PostgresStore {
    async fn suppress(
        &self,
        channel: &str,
        address: &str,
        reason: &str,
        detail: &str,
        now: Millis,
    ) -> Result<(), StoreError> {
        let client = self.client().await?;
        suppressions::suppress(&client, channel, address, reason, detail, now).await
    }

    async fn soft_bounce(
        &self,
        channel: &str,
        address: &str,
        detail: &str,
        limit: u32,
        now: Millis,
    ) -> Result<Suppression, StoreError> {
        let client = self.client().await?;
        suppressions::soft_bounce(&client, channel, address, detail, limit, now).await
    }

    async fn unsuppress(&self, channel: &str, address: &str) -> Result<bool, StoreError> {
        let client = self.client().await?;
        suppressions::unsuppress(&client, channel, address).await
    }

    async fn suppression(
        &self,
        channel: &str,
        address: &str,
    ) -> Result<Option<Suppression>, StoreError> {
        let client = self.client().await?;
        suppressions::read(&client, channel, address).await
    }

    async fn suppressions(
        &self,
        channel: Option<&str>,
        after: Option<(&str, &str)>,
        limit: u32,
    ) -> Result<Vec<Suppression>, StoreError> {
        let client = self.client().await?;
        suppressions::list(&client, channel, after, limit).await
    }
}

#[async_trait]
impl TemplateStore for PostgresStore {
    async fn put_template(
        &self,
        key: &str,
        document: &serde_json::Value,
        now: Millis,
    ) -> Result<(TemplateRecord, bool), StoreError> {
        let mut client = self.client().await?;
        templates::put(&mut client, key, document, now).await
    }

    async fn template(&self, key: &str) -> Result<Option<TemplateRecord>, StoreError> {
        let client = self.client().await?;
        templates::read(&client, key).await
    }

    async fn template_version(
        &self,
        key: &str,
        version: u32,
    ) -> Result<Option<serde_json::Value>, StoreError> {
        let client = self.client().await?;
        templates::version(&client, key, version).await
    }

    async fn templates(&self) -> Result<Vec<TemplateRecord>, StoreError> {
        let client = self.client().await?;
        templates::list(&client).await
    }
}

#[async_trait]
impl waymark_store::decisioning::DecisioningStore for PostgresStore {
    async fn put_catalogue(
        &self,
        kind: waymark_core::decisioning::Kind,
        key: &str,
        document: &serde_json::Value,
        check: waymark_store::decisioning::CatalogueCheck,
        now: Millis,
    ) -> Result<Result<(waymark_store::Versions, bool), Vec<waymark_core::FieldError>>, StoreError>
    {
        let mut client = self.client().await?;
        decisioning::put(&mut client, kind, key, document, check, now).await
    }

    async fn catalogue_document(
        &self,
        kind: waymark_core::decisioning::Kind,
        key: &str,
    ) -> Result<Option<waymark_store::Versions>, StoreError> {
        let client = self.client().await?;
        versioned::read(&client, versioned::Kind::Catalogue(kind), key).await
    }

    async fn catalogue_version(
        &self,
        kind: waymark_core::decisioning::Kind,
        key: &str,
        version: u32,
    ) -> Result<Option<serde_json::Value>, StoreError> {
        let client = self.client().await?;
        versioned::version(&client, versioned::Kind::Catalogue(kind), key, version).await
    }

    async fn catalogue_documents(
        &self,
        kind: waymark_core::decisioning::Kind,
    ) -> Result<Vec<(String, waymark_store::Versions)>, StoreError> {
        let client = self.client().await?;
        decisioning::documents(&client, kind).await
    }

    async fn catalogue(&self) -> Result<waymark_core::decisioning::Catalogue, StoreError> {
        let mut client = self.client().await?;
        decisioning::read_catalogue(&mut client).await
    }

    async fn catalogue_stamp(&self) -> Result<i64, StoreError> {
        let client = self.client().await?;
        decisioning::stamp(&client).await
    }

    async fn offer_counts(
        &self,
        since_hour: Millis,
    ) -> Result<Vec<waymark_store::decisioning::OfferCount>, StoreError> {
        let client = self.client().await?;
        decisioning::counts(&client, since_hour).await
    }

    async fn decision_inputs(
        &self,
        identities: &[Identity],
        names: &[String],
        bodies: waymark_engine::audience::BodyPart,
        now: Millis,
    ) -> Result<Option<waymark_store::decisioning::DecisionInputs>, StoreError> {
        let client = self.client().await?;
        decisioning::inputs(&client, identities, names, bodies, now).await
    }
}

#[async_trait]
impl AudienceStore for PostgresStore {
    async fn save_audience(
        &self,
        key: &str,
        document: &serde_json::Value,
        save: &AudienceSave,
        now: Millis,
    ) -> Result<(AudienceRecord, bool), StoreError> {
        let mut client = self.client().await?;
        audiences::put(&mut client, key, document, save, now).await
    }

    async fn run_audience(&self, key: &str, now: Millis) -> Result<bool, StoreError> {
        let client = self.client().await?;
        if audiences::read(&client, key).await?.is_none() {
            return Ok(false);
        }
        audiences::start_backfill(&client, key, now).await?;
        Ok(true)
    }

    async fn change_list_members(
        &self,
        key: &str,
        profile_ids: Vec<String>,
        enter: bool,
        now: Millis,
    ) -> Result<u64, StoreError> {
        for attempt in 1..=MAX_ATTEMPTS {
            let mut client = self.client().await?;
            let tx = client.transaction().await.map_err(db_error)?;
            let run = runs::change_list_members(&tx, &self.cache, key, &profile_ids, enter, now);
            match run.await {
                Ok(n) => match tx.commit().await {
                    Ok(()) => return Ok(n),
                    Err(e) if retryable(&e) => {}
                    Err(e) => return Err(db_error(e)),
                },
                Err(Abort::Retry(_)) => {}
                Err(Abort::Fail(e)) => return Err(e),
            }
            tokio::time::sleep(std::time::Duration::from_millis(u64::from(attempt.min(10)))).await;
        }
        Err(StoreError::Unavailable(
            "list members kept conflicting".into(),
        ))
    }

    async fn audience_next_run(&self, key: &str) -> Result<Option<Millis>, StoreError> {
        let client = self.client().await?;
        audiences::next_run(&client, key).await
    }

    async fn audience(&self, key: &str) -> Result<Option<AudienceRecord>, StoreError> {
        let client = self.client().await?;
        audiences::read(&client, key).await
    }

    async fn audiences(&self) -> Result<Vec<AudienceRecord>, StoreError> {
        let client = self.client().await?;
        audiences::list(&client).await
    }

    async fn audience_status(&self, key: &str) -> Result<AudienceStatus, StoreError> {
        // One snapshot: read apart, a backfill committing between the size and its own row
        // would show an audience `current` with none of its members.
        let mut client = self.client().await?;
        let tx = snapshot(&mut client).await?;
        let status = audiences::status(&tx, key).await?;
        tx.commit().await.map_err(db_error)?;
        Ok(status)
    }

    async fn audience_size_history(
        &self,
        key: &str,
        since: Millis,
    ) -> Result<Vec<SizeAt>, StoreError> {
        let client = self.client().await?;
        audiences::size_history(&client, key, since).await
    }

    async fn scan_people(
        &self,
        after: &str,
        until: Option<&str>,
        limit: u32,
        reads: &ScanReads,
    ) -> Result<Vec<ScannedPerson>, StoreError> {
        let mut client = self.client().await?;
        audiences::scan_people(&mut client, after, until, limit, reads).await
    }

    async fn people_events(
        &self,
        ids: Vec<String>,
        reads: &ScanReads,
    ) -> Result<Vec<Vec<waymark_engine::audience::HistoryEvent>>, StoreError> {
        let client = self.client().await?;
        audiences::people_events(&client, &ids, reads).await
    }

    async fn profile_splits(&self, parts: u32) -> Result<Vec<String>, StoreError> {
        let client = self.client().await?;
        audiences::profile_splits(&client, parts).await
    }

    async fn profile_ids_of(
        &self,
        identities: &[Identity],
    ) -> Result<Vec<Option<String>>, StoreError> {
        let client = self.client().await?;
        audiences::profile_ids_of(&client, identities).await
    }

    async fn audience_member_profiles(
        &self,
        key: &str,
        after: &str,
        limit: u32,
    ) -> Result<Vec<(AudienceMember, ProfileState)>, StoreError> {
        let client = self.client().await?;
        audiences::member_profiles(&client, key, after, limit).await
    }

    async fn audience_members(
        &self,
        key: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<AudienceMember>, StoreError> {
        let client = self.client().await?;
        audiences::members(&client, key, after, limit).await
    }

    async fn profile_audiences(
        &self,
        profile_id: &str,
    ) -> Result<Vec<(String, Millis)>, StoreError> {
        let client = self.client().await?;
        audiences::profile_audiences(&client, profile_id).await
    }

    async fn profile_history(
        &self,
        profile_id: &str,
        names: &[String],
    ) -> Result<Vec<waymark_engine::audience::HistoryEvent>, StoreError> {
        let client = self.client().await?;
        audiences::profile_history(&client, profile_id, names).await
    }
}

#[async_trait]
impl JourneyStore for PostgresStore {
    async fn put_journey_draft(
        &self,
        key: &str,
        document: &serde_json::Value,
        now: Millis,
    ) -> Result<JourneyRecord, StoreError> {
        let client = self.client().await?;
        journeys::put_draft(&client, key, document, now).await
    }

    async fn publish_journey(
        &self,
        key: &str,
        now: Millis,
    ) -> Result<Option<(JourneyRecord, bool)>, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db_error)?;
        let out = journeys::publish(&tx, key, now).await?;
        tx.commit().await.map_err(db_error)?;
        Ok(out)
    }

    async fn change_journey_status(
        &self,
        key: &str,
        action: JourneyAction,
        now: Millis,
    ) -> Result<Option<Transition>, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db_error)?;
        let out = journeys::change_status(&tx, key, action, now).await?;
        tx.commit().await.map_err(db_error)?;
        Ok(out)
    }

    async fn journey(&self, key: &str) -> Result<Option<JourneyRecord>, StoreError> {
        let client = self.client().await?;
        journeys::read(&client, key, false).await
    }

    async fn journey_version(
        &self,
        key: &str,
        version: u32,
    ) -> Result<Option<serde_json::Value>, StoreError> {
        let client = self.client().await?;
        runs::version(&client, key, version).await
    }

    async fn journeys(&self) -> Result<Vec<JourneyRecord>, StoreError> {
        let client = self.client().await?;
        journeys::list(&client).await
    }
}

#[async_trait]
impl JourneyRunStore for PostgresStore {
    async fn fire_due_timers(&self, now: Millis, limit: u32) -> Result<usize, StoreError> {
        for attempt in 1..=MAX_ATTEMPTS {
            let mut client = self.client().await?;
            let tx = client.transaction().await.map_err(db_error)?;
            match runs::fire_due(&tx, &self.cache, now, limit).await {
                Ok(n) => match tx.commit().await {
                    Ok(()) => return Ok(n),
                    Err(e) if retryable(&e) => {}
                    Err(e) => return Err(db_error(e)),
                },
                Err(Abort::Retry(_)) => {}
                Err(Abort::Fail(e)) => return Err(e),
            }
            tokio::time::sleep(std::time::Duration::from_millis(u64::from(attempt.min(10)))).await;
        }
        Err(StoreError::Unavailable("timers kept conflicting".into()))
    }

    async fn profile_journeys(
        &self,
        identity: &Identity,
    ) -> Result<Option<Vec<(String, JourneyState)>>, StoreError> {
        let client = self.client().await?;
        match Shared::profile_id_of(&client, identity).await? {
            Some(id) => runs::profile_journeys(&client, &id).await.map(Some),
            None => Ok(None),
        }
    }

    async fn journey_stats(&self, journey: &str) -> Result<JourneyStats, StoreError> {
        let client = self.client().await?;
        runs::journey_stats(&client, journey).await
    }

    async fn journey_series(
        &self,
        journey: &str,
    ) -> Result<Vec<(Millis, String, String, i64)>, StoreError> {
        let client = self.client().await?;
        runs::journey_series(&client, journey).await
    }

    async fn journey_winners(
        &self,
        journey: &str,
    ) -> Result<Vec<waymark_store::WinnerRecord>, StoreError> {
        let client = self.client().await?;
        winners::decisions(&client, journey).await
    }

    async fn profile_outbox_page(
        &self,
        identity: &Identity,
        kind: Option<&str>,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Option<Vec<waymark_store::OutboxEntry>>, StoreError> {
        let client = self.client().await?;
        match Shared::profile_id_of(&client, identity).await? {
            Some(id) => runs::profile_outbox(&client, &id, kind, before, limit)
                .await
                .map(Some),
            None => Ok(None),
        }
    }
}

#[async_trait]
impl OutboxStore for PostgresStore {
    async fn enqueue_outbox(
        &self,
        rows: Vec<waymark_engine::run::OutboxRow>,
        now: Millis,
    ) -> Result<(), StoreError> {
        // New rows only: nothing to conflict with, so one attempt.
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db_error)?;
        match runs::enqueue(&tx, rows, now).await {
            Ok(()) => tx.commit().await.map_err(db_error),
            Err(Abort::Retry(why)) => Err(StoreError::Unavailable(why.into())),
            Err(Abort::Fail(e)) => Err(e),
        }
    }

    async fn claim_outbox(
        &self,
        now: Millis,
        limit: u32,
        lease_ms: Millis,
    ) -> Result<Vec<OutboxItem>, StoreError> {
        // An explicit transaction, not an autocommit statement: PostgreSQL finishes a
        // statement it has received even if the client has died, so a claim sent just
        // before a kill -9 could commit after the next process released the old leases,
        // holding those rows for a whole lease. A transaction whose COMMIT never arrives
        // rolls back when the connection drops.
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db_error)?;
        let items = match runs::claim(&tx, now, limit, lease_ms, &self.options.lease_owner).await {
            Ok(items) => items,
            Err(Abort::Retry(why)) => return Err(StoreError::Unavailable(why.into())),
            Err(Abort::Fail(e)) => return Err(e),
        };
        tx.commit().await.map_err(db_error)?;
        Ok(items)
    }

    async fn renew_outbox_leases(&self, seqs: &[i64], until: Millis) -> Result<(), StoreError> {
        let client = self.client().await?;
        client
            .execute(
                "UPDATE journey_outbox SET leased_until = GREATEST(leased_until, $2)
                 WHERE seq = ANY($1) AND status = 'pending' AND leased_by = $3",
                &[&seqs, &until, &self.options.lease_owner],
            )
            .await
            .map_err(db_error)?;
        Ok(())
    }

    async fn release_outbox_leases(&self) -> Result<u64, StoreError> {
        let client = self.client().await?;
        runs::release_leases(&client, &self.options.lease_owner).await
    }

    async fn record_message_event(
        &self,
        key: &str,
        event: waymark_store::MessageEvent,
    ) -> Result<Option<OutboxItem>, StoreError> {
        // The report and the counter it adds commit together.
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db_error)?;
        let item = runs::record_message_event(&tx, key, &event).await?;
        tx.commit().await.map_err(db_error)?;
        Ok(item)
    }

    async fn outbox_key(&self, seq: i64) -> Result<Option<String>, StoreError> {
        let client = self.client().await?;
        runs::outbox_key(&client, seq).await
    }

    async fn reserve_send_slot(
        &self,
        channel: &str,
        interval_ms: f64,
        burst: f64,
        now: Millis,
    ) -> Result<Option<Millis>, StoreError> {
        let client = self.client().await?;
        // One statement, so concurrent reservations queue on the row and each gets its own
        // slot: the arrival time moves on by one interval per reservation.
        let row = client
            .query_one(
                "INSERT INTO send_pace (channel, tat) VALUES ($1, $2::float8 + $3::float8)
                 ON CONFLICT (channel) DO UPDATE SET tat = GREATEST(send_pace.tat, $2::float8) + $3::float8
                 RETURNING tat - $3::float8",
                &[&channel, &(now as f64), &interval_ms],
            )
            .await
            .map_err(db_error)?;
        let arrival: f64 = row.get(0);
        Ok(Some(waymark_core::governance::gcra_slot(
            arrival,
            now,
            interval_ms,
            burst,
        )))
    }

    async fn give_back_send_slot(&self, channel: &str, interval_ms: f64) -> Result<(), StoreError> {
        let client = self.client().await?;
        client
            .execute(
                "UPDATE send_pace SET tat = tat - $2::float8 WHERE channel = $1",
                &[&channel, &interval_ms],
            )
            .await
            .map_err(db_error)?;
        Ok(())
    }

    /// One transaction per person: their outcomes in the order given, webhook results in
    /// one plan (as SQLite does with its whole batch). Different people's commit side by
    /// side: each locks only its own person, and PostgreSQL commits them in parallel, unlike
    /// SQLite's one writer; one transaction over everyone's would hold every person's lock
    /// until the slowest is written.
    async fn complete_outbox_many(
        &self,
        done: Arc<[(OutboxItem, Delivery)]>,
        now: Millis,
    ) -> Result<(), StoreError> {
        let mut by_person: Vec<Vec<&(OutboxItem, Delivery)>> = Vec::new();
        let mut slot: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
        for pair in done.iter() {
            let i = *slot.entry(pair.0.profile_id.as_str()).or_insert_with(|| {
                by_person.push(Vec::new());
                by_person.len() - 1
            });
            by_person[i].push(pair);
        }
        let results = futures::future::join_all(
            by_person
                .iter()
                .map(|group| self.complete_for_person(group, now)),
        )
        .await;
        results.into_iter().collect()
    }
}

impl PostgresStore {
    async fn complete_for_person(
        &self,
        group: &[&(OutboxItem, Delivery)],
        now: Millis,
    ) -> Result<(), StoreError> {
        for attempt in 1..=MAX_ATTEMPTS {
            let mut client = self.client().await?;
            let tx = client.transaction().await.map_err(db_error)?;
            match runs::complete(&tx, &self.cache, group, now).await {
                Ok(()) => match tx.commit().await {
                    Ok(()) => return Ok(()),
                    Err(e) if retryable(&e) => {}
                    Err(e) => return Err(db_error(e)),
                },
                Err(Abort::Retry(_)) => {}
                Err(Abort::Fail(e)) => return Err(e),
            }
            tokio::time::sleep(std::time::Duration::from_millis(u64::from(attempt.min(10)))).await;
        }
        Err(StoreError::Unavailable(
            "outbox completion kept conflicting".into(),
        ))
    }
}

#[async_trait]
impl Store for PostgresStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    fn partitions(&self) -> u32 {
        self.partitions
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let client = self.client().await?;
        client.simple_query("SELECT 1").await.map_err(db_error)?;
        if self.health.failing().is_some() {
            // A write that must commit: it fails where ingest would.
            match client
                .execute(
                    "UPDATE meta SET value = value WHERE key = 'partitions'",
                    &[],
                )
                .await
            {
                Ok(_) => self.health.committed(),
                Err(e) => self.health.failed(&db_error(e)),
            }
        }
        self.health.check()
    }

    async fn close(&self) {
        // Dropping the sender lets the committers finish what is queued, then exit.
        drop(self.queue.lock().ok().and_then(|mut q| q.take()));
        let committers = self
            .committers
            .lock()
            .map(|mut c| std::mem::take(&mut *c))
            .unwrap_or_default();
        for c in committers {
            let _ = c.await;
        }
        self.pool.close();
    }
}
