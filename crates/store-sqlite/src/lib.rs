//! The embedded default store: one SQLite file in the data directory.
//!
//! Writes go through one writer thread that drains every request waiting in its queue and
//! commits them in a single transaction (group commit): under load many HTTP requests share
//! one fsync, and each is answered only after that commit. Reads use a small pool of
//! read-only connections, which WAL lets run beside the writer.

mod audiences;
mod checkpointer;
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
mod writer;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use async_trait::async_trait;
use r2d2_sqlite::SqliteConnectionManager;
use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::{mpsc, oneshot};
use waymark_core::time::Millis;
use waymark_core::{Event, Identity, ProfileState};
use waymark_store::{
    AudienceMember, AudienceRecord, AudienceSave, AudienceStatus, AudienceStore, Delivery, Erasure,
    EventPage, InboxMark, InboxStore, IngestReceipt, JourneyAction, JourneyRecord, JourneyRunStore,
    JourneyState, JourneyStats, JourneyStore, OutboxItem, OutboxStore, PageRequest, ProfileStore,
    ScanReads, ScannedPerson, SizeAt, Store, StoreError, StoreOptions, StoredEvent, Suppression,
    SuppressionStore, TemplateRecord, TemplateStore, Transition, decode_cursor,
};

use writer::Command;

pub const DATABASE_FILE: &str = "waymark.db";

pub struct SqliteStore {
    path: PathBuf,
    partitions: u32,
    commands: Mutex<Option<mpsc::Sender<Command>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    /// Stops the checkpoint thread (dropping the sender), and its handle.
    checkpointer: Mutex<Option<(std::sync::mpsc::Sender<()>, JoinHandle<()>)>>,
    /// When the WAL is rewound (see `checkpointer`).
    rewind: Arc<checkpointer::Rewind>,
    readers: r2d2::Pool<SqliteConnectionManager>,
    cache: std::sync::Arc<waymark_engine::run::Runtime>,
    /// Outbox rows claimed and not yet recorded, with when each claim runs out. In memory:
    /// one process owns a SQLite store, so its claims end with it (the state a restart
    /// starts from), and claiming is a read on a reader connection, off the writer thread
    /// and without rewriting each claimed row. See `claim_outbox` for why a claim holds the
    /// lock while it reads.
    leases: std::sync::Arc<Mutex<HashMap<i64, Millis>>>,
    /// Notified after each commit of the writer, the only writer.
    activity: Arc<tokio::sync::Notify>,
    health: Arc<waymark_store::CommitHealth>,
}

/// The lease map stays consistent across a panic (each change is one insert or removal).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

/// `page_size` takes effect only when the database is created (a store made before keeps
/// its 4 KiB pages). Every commit writes each page it changed to the WAL, one write call
/// per page: with 8 KiB pages the journey benchmark's writer spent ~7% less time per
/// journey (fewer frames and calls for the same rows); 16 KiB pages gained nothing more
/// and wrote 8% more bytes.
///
/// The writer runs more distinct statements than rusqlite's default cache of 16 holds
/// (ingest, journeys, outbox, audiences): past it, statements were prepared again on every
/// use (the parser showed in profiles), so the cache holds them all.
fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.execute_batch(
        "PRAGMA page_size = 8192;
         PRAGMA journal_mode = WAL;
         PRAGMA synchronous = FULL;
         PRAGMA foreign_keys = OFF;
         PRAGMA temp_store = MEMORY;
         PRAGMA cache_size = -32768;",
    )
}

/// How long a connection waits for a lock another holds.
pub(crate) const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Readers map the database file instead of copying each page they read into their own
/// cache (a batch evaluation reads the whole file: page copies from the OS cache were 6% of
/// it). The map is address space, not memory; pages written since the last checkpoint are
/// still read from the WAL.
const READER_PRAGMAS: &str =
    "PRAGMA cache_size = -16384; PRAGMA query_only = ON; PRAGMA mmap_size = 68719476736;";

/// Prepared statements kept per connection.
const STATEMENT_CACHE: usize = 256;

impl SqliteStore {
    /// Opens (creating if needed) the store in `data_dir`, running pending migrations.
    pub fn open(data_dir: &Path, options: StoreOptions) -> Result<Self, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|e| {
            unavailable(format!(
                "cannot create data directory {}: {e}",
                data_dir.display()
            ))
        })?;
        let path = data_dir.join(DATABASE_FILE);
        let mut conn = Connection::open(&path)
            .map_err(|e| unavailable(format!("cannot open {}: {e}", path.display())))?;
        configure(&conn).map_err(unavailable)?;
        // Checkpoints run on their own thread (see `checkpointer`), not in the writer's commits.
        conn.execute_batch("PRAGMA wal_autocheckpoint = 0;")
            .map_err(unavailable)?;
        schema::migrate(&mut conn).map_err(unavailable)?;
        let partitions = schema::partitions(&conn, options.partitions).map_err(unavailable)?;

        let manager = SqliteConnectionManager::file(&path)
            .with_flags(
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY
                    | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )
            .with_init(|c| {
                c.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
                c.busy_timeout(std::time::Duration::from_secs(10))?;
                c.execute_batch(READER_PRAGMAS)
            });
        let readers = r2d2::Pool::builder()
            .max_size(8)
            .min_idle(Some(1))
            .build(manager)
            .map_err(unavailable)?;

        let (tx, rx) = mpsc::channel(4096);
        let cache = std::sync::Arc::new(waymark_engine::run::Runtime::new(
            options.governance.clone(),
        ));
        let activity = Arc::new(tokio::sync::Notify::new());
        let health = Arc::new(waymark_store::CommitHealth::default());
        let rewind = Arc::new(checkpointer::Rewind::default());
        let config = writer::Config {
            rewind: rewind.clone(),
            health: health.clone(),
            activity: activity.clone(),
            cache: cache.clone(),
            partitions,
            options,
        };
        let handle = std::thread::Builder::new()
            .name("waymark-sqlite-writer".into())
            .spawn(move || writer::run(conn, rx, config))
            .map_err(unavailable)?;
        let (stop, stopped) = std::sync::mpsc::channel();
        let checkpoint_path = path.clone();
        let wanted = rewind.clone();
        let checkpointer = std::thread::Builder::new()
            .name("waymark-sqlite-checkpoint".into())
            .spawn(move || checkpointer::run(&checkpoint_path, stopped, wanted))
            .map_err(unavailable)?;
        Ok(Self {
            path,
            partitions,
            commands: Mutex::new(Some(tx)),
            writer: Mutex::new(Some(handle)),
            checkpointer: Mutex::new(Some((stop, checkpointer))),
            rewind,
            readers,
            cache,
            leases: Default::default(),
            activity,
            health,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Sets the WAL size past which it is rewound (256 MB unless set).
    pub fn set_wal_limit(&self, bytes: u64) {
        self.rewind
            .limit_bytes
            .store(bytes, std::sync::atomic::Ordering::Relaxed);
    }

    /// The writer's queue, unless the store is closed.
    fn sender(&self) -> Result<mpsc::Sender<Command>, StoreError> {
        self.commands
            .lock()
            .map_err(|_| StoreError::Closed)?
            .clone()
            .ok_or(StoreError::Closed)
    }

    async fn send<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> Command,
    ) -> Result<T, StoreError> {
        let sender = self.sender()?;
        let (reply, answer) = oneshot::channel();
        sender
            .send(make(reply))
            .await
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    /// Runs `f` in the writer's transaction; answers once that transaction has committed.
    async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let sender = self.sender()?;
        let (reply, answer) = oneshot::channel();
        let exec: writer::Exec = Box::new(move |tx| {
            let value = f(tx)?;
            Ok(Box::new(move || drop(reply.send(value))) as Box<dyn FnOnce() + Send>)
        });
        sender
            .send(Command::Exec(exec))
            .await
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| {
            StoreError::Unavailable("the write was not committed; see the server log".into())
        })
    }

    /// A short read on the calling thread when a reader connection is free at once (else
    /// as [`Self::read`]): for reads of a few tens of microseconds on a request's hot path
    /// (a decision's person), handing them to the blocking pool costs more in thread
    /// wake-ups than the read itself.
    async fn read_now<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        match self.readers.try_get() {
            Some(conn) => f(&conn),
            None => self.read(f).await,
        }
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let pool = self.readers.clone();
        tokio::task::spawn_blocking(move || {
            let conn = pool.get().map_err(unavailable)?;
            f(&conn)
        })
        .await
        .map_err(unavailable)?
    }
}

pub(crate) fn profile_id_of(
    conn: &Connection,
    identity: &Identity,
) -> rusqlite::Result<Option<String>> {
    conn.prepare_cached("SELECT profile_id FROM identities WHERE namespace = ?1 AND value = ?2")?
        .query_row(params![identity.namespace.as_str(), identity.value], |r| {
            r.get(0)
        })
        .optional()
}

pub(crate) fn decode_profile(json: &str) -> Result<ProfileState, StoreError> {
    serde_json::from_str(json).map_err(|e| StoreError::Corrupt(format!("profile state: {e}")))
}

#[async_trait]
impl ProfileStore for SqliteStore {
    async fn ingest(&self, events: Vec<Event>) -> Result<IngestReceipt, StoreError> {
        if events.is_empty() {
            return Ok(IngestReceipt::default());
        }
        // Serialise on the caller's thread: the writer thread is the bottleneck, so it only
        // does what must be serial.
        let bodies = events
            .iter()
            .map(|e| serde_json::to_string(e).unwrap_or_default())
            .collect();
        self.send(|reply| Command::Ingest {
            events,
            bodies,
            reply,
        })
        .await
    }

    async fn profile(&self, identity: &Identity) -> Result<Option<ProfileState>, StoreError> {
        let identity = identity.clone();
        self.read(move |conn| {
            let state: Option<String> = conn
                .prepare_cached(
                    "SELECT p.state FROM identities i JOIN profiles p ON p.id = i.profile_id
                     WHERE i.namespace = ?1 AND i.value = ?2",
                )
                .and_then(|mut s| {
                    s.query_row(params![identity.namespace.as_str(), identity.value], |r| {
                        r.get(0)
                    })
                    .optional()
                })
                .map_err(unavailable)?;
            state.as_deref().map(decode_profile).transpose()
        })
        .await
    }

    async fn events(
        &self,
        identity: &Identity,
        page: PageRequest,
    ) -> Result<Option<EventPage>, StoreError> {
        let identity = identity.clone();
        self.read(move |conn| {
            let Some(profile_id) = profile_id_of(conn, &identity).map_err(unavailable)? else {
                return Ok(None);
            };
            let (before_ts, before_seq) = page
                .before
                .as_deref()
                .and_then(decode_cursor)
                .unwrap_or((Millis::MAX, i64::MAX));
            let limit = page.limit.max(1);
            let mut stmt = conn
                .prepare_cached(
                    "SELECT timestamp, seq, body FROM events
                     WHERE profile_id = ?1 AND (timestamp, seq) < (?2, ?3)
                     ORDER BY timestamp DESC, seq DESC LIMIT ?4",
                )
                .map_err(unavailable)?;
            let rows = stmt
                .query_map(
                    params![profile_id, before_ts, before_seq, i64::from(limit) + 1],
                    |r| {
                        Ok((
                            r.get::<_, i64>(0)?,
                            r.get::<_, i64>(1)?,
                            r.get::<_, String>(2)?,
                        ))
                    },
                )
                .map_err(unavailable)?;
            let mut events = Vec::new();
            for row in rows {
                let (timestamp, seq, body) = row.map_err(unavailable)?;
                let body = serde_json::from_str(&body)
                    .map_err(|e| StoreError::Corrupt(format!("event {seq}: {e}")))?;
                events.push(StoredEvent {
                    timestamp,
                    seq,
                    body,
                });
            }
            Ok(Some(EventPage::from_rows(events, limit)))
        })
        .await
    }

    async fn erase(&self, identity: &Identity) -> Result<Option<Erasure>, StoreError> {
        let identity = identity.clone();
        self.send(|reply| Command::Erase { identity, reply }).await
    }

    async fn forget_identity(&self, identity: &Identity, now: Millis) -> Result<bool, StoreError> {
        let identity = identity.clone();
        self.write(move |tx| {
            let Some(id) = profile_id_of(tx, &identity).map_err(unavailable)? else {
                return Ok(false);
            };
            let (namespace, value) = (identity.namespace.as_str(), identity.value.as_str());
            tx.execute(
                "DELETE FROM identities WHERE namespace = ?1 AND value = ?2",
                params![namespace, value],
            )
            .map_err(unavailable)?;
            if let Some(mut profile) = runs::load_profile(tx, &id)? {
                profile.forget_identity(namespace, value);
                runs::save_profile(tx, &profile, now)?;
            }
            Ok(true)
        })
        .await
    }

    async fn prune_expired(&self, now: Millis) -> Result<u64, StoreError> {
        let mut total = 0;
        loop {
            let deleted = self.send(|reply| Command::Prune { now, reply }).await?;
            total += deleted;
            if deleted < writer::PRUNE_CHUNK {
                return Ok(total);
            }
        }
    }
}

#[async_trait]
impl JourneyStore for SqliteStore {
    async fn put_journey_draft(
        &self,
        key: &str,
        document: &serde_json::Value,
        now: Millis,
    ) -> Result<JourneyRecord, StoreError> {
        let (key, document) = (key.to_owned(), document.clone());
        self.write(move |tx| journeys::put_draft(tx, &key, &document, now))
            .await
    }

    async fn publish_journey(
        &self,
        key: &str,
        now: Millis,
    ) -> Result<Option<(JourneyRecord, bool)>, StoreError> {
        let key = key.to_owned();
        self.write(move |tx| journeys::publish(tx, &key, now)).await
    }

    async fn change_journey_status(
        &self,
        key: &str,
        action: JourneyAction,
        now: Millis,
    ) -> Result<Option<Transition>, StoreError> {
        let key = key.to_owned();
        self.write(move |tx| journeys::change_status(tx, &key, action, now))
            .await
    }

    async fn journey(&self, key: &str) -> Result<Option<JourneyRecord>, StoreError> {
        let key = key.to_owned();
        self.read(move |conn| journeys::read(conn, &key)).await
    }

    async fn journey_version(
        &self,
        key: &str,
        version: u32,
    ) -> Result<Option<serde_json::Value>, StoreError> {
        let key = key.to_owned();
        self.read(move |conn| runs::version(conn, &key, version))
            .await
    }

    async fn journeys(&self) -> Result<Vec<JourneyRecord>, StoreError> {
        self.read(journeys::list).await
    }
}

#[async_trait]
impl TemplateStore for SqliteStore {
    async fn put_template(
        &self,
        key: &str,
        document: &serde_json::Value,
        now: Millis,
    ) -> Result<(TemplateRecord, bool), StoreError> {
        let (key, document) = (key.to_owned(), document.clone());
        self.write(move |tx| templates::put(tx, &key, &document, now))
            .await
    }

    async fn template(&self, key: &str) -> Result<Option<TemplateRecord>, StoreError> {
        let key = key.to_owned();
        self.read(move |conn| templates::read(conn, &key)).await
    }

    async fn template_version(
        &self,
        key: &str,
        version: u32,
    ) -> Result<Option<serde_json::Value>, StoreError> {
        let key = key.to_owned();
        self.read(move |conn| templates::version(conn, &key, version))
            .await
    }

    async fn templates(&self) -> Result<Vec<TemplateRecord>, StoreError> {
        self.read(templates::list).await
    }
}

#[async_trait]
impl waymark_store::decisioning::DecisioningStore for SqliteStore {
    async fn put_catalogue(
        &self,
        kind: waymark_core::decisioning::Kind,
        key: &str,
        document: &serde_json::Value,
        check: waymark_store::decisioning::CatalogueCheck,
        now: Millis,
    ) -> Result<Result<(waymark_store::Versions, bool), Vec<waymark_core::FieldError>>, StoreError>
    {
        let (key, document) = (key.to_owned(), document.clone());
        self.write(move |tx| decisioning::put(tx, kind, &key, &document, check, now))
            .await
    }

    async fn catalogue_document(
        &self,
        kind: waymark_core::decisioning::Kind,
        key: &str,
    ) -> Result<Option<waymark_store::Versions>, StoreError> {
        let key = key.to_owned();
        self.read(move |conn| versioned::read(conn, versioned::Kind::Catalogue(kind), &key))
            .await
    }

    async fn catalogue_version(
        &self,
        kind: waymark_core::decisioning::Kind,
        key: &str,
        version: u32,
    ) -> Result<Option<serde_json::Value>, StoreError> {
        let key = key.to_owned();
        self.read(move |conn| {
            versioned::version(conn, versioned::Kind::Catalogue(kind), &key, version)
        })
        .await
    }

    async fn catalogue_documents(
        &self,
        kind: waymark_core::decisioning::Kind,
    ) -> Result<Vec<(String, waymark_store::Versions)>, StoreError> {
        self.read(move |conn| decisioning::documents(conn, kind))
            .await
    }

    async fn catalogue(&self) -> Result<waymark_core::decisioning::Catalogue, StoreError> {
        self.read(|conn| {
            let snapshot = conn.unchecked_transaction().map_err(unavailable)?;
            let catalogue = decisioning::catalogue(&snapshot)?;
            snapshot.finish().map_err(unavailable)?;
            Ok(catalogue)
        })
        .await
    }

    async fn catalogue_stamp(&self) -> Result<i64, StoreError> {
        self.read(decisioning::stamp).await
    }

    async fn offer_counts(
        &self,
        since_hour: Millis,
    ) -> Result<Vec<waymark_store::decisioning::OfferCount>, StoreError> {
        self.read(move |conn| decisioning::counts(conn, since_hour))
            .await
    }

    async fn decision_inputs(
        &self,
        identities: &[Identity],
        names: &[String],
        bodies: waymark_engine::audience::BodyPart,
        now: Millis,
    ) -> Result<Option<waymark_store::decisioning::DecisionInputs>, StoreError> {
        let (identities, names) = (identities.to_vec(), names.to_vec());
        self.read_now(move |conn| decisioning::inputs(conn, &identities, &names, bodies, now))
            .await
    }
}

#[async_trait]
impl AudienceStore for SqliteStore {
    async fn save_audience(
        &self,
        key: &str,
        document: &serde_json::Value,
        save: &AudienceSave,
        now: Millis,
    ) -> Result<(AudienceRecord, bool), StoreError> {
        let (key, document, save) = (key.to_owned(), document.clone(), *save);
        self.write(move |tx| audiences::put(tx, &key, &document, &save, now))
            .await
    }

    async fn audience(&self, key: &str) -> Result<Option<AudienceRecord>, StoreError> {
        let key = key.to_owned();
        self.read(move |conn| audiences::read(conn, &key)).await
    }

    async fn audiences(&self) -> Result<Vec<AudienceRecord>, StoreError> {
        self.read(audiences::list).await
    }

    async fn audience_status(&self, key: &str) -> Result<AudienceStatus, StoreError> {
        let key = key.to_owned();
        self.read(move |conn| audiences::status(conn, &key)).await
    }

    async fn run_audience(&self, key: &str, now: Millis) -> Result<bool, StoreError> {
        let key = key.to_owned();
        self.write(move |tx| {
            if audiences::read(tx, &key)?.is_none() {
                return Ok(false);
            }
            audiences::start_backfill(tx, &key, now)?;
            Ok(true)
        })
        .await
    }

    async fn change_list_members(
        &self,
        key: &str,
        profile_ids: Vec<String>,
        enter: bool,
        now: Millis,
    ) -> Result<u64, StoreError> {
        let (cache, key) = (self.cache.clone(), key.to_owned());
        self.write(move |tx| runs::change_list_members(tx, &cache, &key, &profile_ids, enter, now))
            .await
    }

    async fn audience_next_run(&self, key: &str) -> Result<Option<Millis>, StoreError> {
        let key = key.to_owned();
        self.read(move |conn| audiences::next_run(conn, &key)).await
    }

    async fn audience_size_history(
        &self,
        key: &str,
        since: Millis,
    ) -> Result<Vec<SizeAt>, StoreError> {
        let key = key.to_owned();
        self.read(move |conn| audiences::size_history(conn, &key, since))
            .await
    }

    async fn scan_people(
        &self,
        after: &str,
        until: Option<&str>,
        limit: u32,
        reads: &ScanReads,
    ) -> Result<Vec<ScannedPerson>, StoreError> {
        let (after, until, reads) = (after.to_owned(), until.map(str::to_owned), reads.clone());
        self.read(move |conn| audiences::scan_people(conn, &after, until.as_deref(), limit, &reads))
            .await
    }

    async fn people_events(
        &self,
        ids: Vec<String>,
        reads: &ScanReads,
    ) -> Result<Vec<Vec<waymark_engine::audience::HistoryEvent>>, StoreError> {
        let reads = reads.clone();
        self.read(move |conn| audiences::people_events(conn, &ids, &reads))
            .await
    }

    async fn profile_splits(&self, parts: u32) -> Result<Vec<String>, StoreError> {
        self.read(move |conn| audiences::profile_splits(conn, parts))
            .await
    }

    async fn profile_ids_of(
        &self,
        identities: &[Identity],
    ) -> Result<Vec<Option<String>>, StoreError> {
        let identities = identities.to_vec();
        self.read(move |conn| audiences::profile_ids_of(conn, &identities))
            .await
    }

    async fn audience_member_profiles(
        &self,
        key: &str,
        after: &str,
        limit: u32,
    ) -> Result<Vec<(AudienceMember, ProfileState)>, StoreError> {
        let (key, after) = (key.to_owned(), after.to_owned());
        self.read(move |conn| audiences::member_profiles(conn, &key, &after, limit))
            .await
    }

    async fn audience_members(
        &self,
        key: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<AudienceMember>, StoreError> {
        let (key, after) = (key.to_owned(), after.map(str::to_owned));
        self.read(move |conn| audiences::members(conn, &key, after.as_deref(), limit))
            .await
    }

    async fn profile_audiences(
        &self,
        profile_id: &str,
    ) -> Result<Vec<(String, Millis)>, StoreError> {
        let id = profile_id.to_owned();
        self.read(move |conn| audiences::profile_audiences(conn, &id))
            .await
    }

    async fn profile_history(
        &self,
        profile_id: &str,
        names: &[String],
    ) -> Result<Vec<waymark_engine::audience::HistoryEvent>, StoreError> {
        let (id, names) = (profile_id.to_owned(), names.to_vec());
        self.read(move |conn| audiences::profile_history(conn, &id, &names))
            .await
    }
}

#[async_trait]
impl InboxStore for SqliteStore {
    async fn mark_inbox(
        &self,
        key: &str,
        profile_id: &str,
        read: bool,
        dismissed: bool,
        now: Millis,
    ) -> Result<InboxMark, StoreError> {
        let (key, profile_id) = (key.to_owned(), profile_id.to_owned());
        self.write(move |tx| inbox::mark_inbox(tx, &key, &profile_id, read, dismissed, now))
            .await
    }

    async fn inbox_marks(
        &self,
        keys: &[String],
    ) -> Result<std::collections::HashMap<String, InboxMark>, StoreError> {
        let keys = keys.to_vec();
        self.read(move |conn| inbox::inbox_marks(conn, &keys)).await
    }
}

#[async_trait]
impl SuppressionStore for SqliteStore {
    async fn suppress(
        &self,
        channel: &str,
        address: &str,
        reason: &str,
        detail: &str,
        now: Millis,
    ) -> Result<(), StoreError> {
        let (c, a, r, d) = (
            channel.to_owned(),
            address.to_owned(),
            reason.to_owned(),
            detail.to_owned(),
        );
        self.write(move |tx| suppressions::suppress(tx, &c, &a, &r, &d, now))
            .await
    }

    async fn soft_bounce(
        &self,
        channel: &str,
        address: &str,
        detail: &str,
        limit: u32,
        now: Millis,
    ) -> Result<Suppression, StoreError> {
        let (c, a, d) = (channel.to_owned(), address.to_owned(), detail.to_owned());
        self.write(move |tx| suppressions::soft_bounce(tx, &c, &a, &d, limit, now))
            .await
    }

    async fn unsuppress(&self, channel: &str, address: &str) -> Result<bool, StoreError> {
        let (c, a) = (channel.to_owned(), address.to_owned());
        self.write(move |tx| suppressions::unsuppress(tx, &c, &a))
            .await
    }

    async fn suppression(
        &self,
        channel: &str,
        address: &str,
    ) -> Result<Option<Suppression>, StoreError> {
        let (c, a) = (channel.to_owned(), address.to_owned());
        self.read(move |conn| suppressions::read(conn, &c, &a))
            .await
    }

    async fn suppressions(
        &self,
        channel: Option<&str>,
        after: Option<(&str, &str)>,
        limit: u32,
    ) -> Result<Vec<Suppression>, StoreError> {
        let channel = channel.map(str::to_owned);
        let after = after.map(|(c, a)| (c.to_owned(), a.to_owned()));
        self.read(move |conn| {
            let after = after.as_ref().map(|(c, a)| (c.as_str(), a.as_str()));
            suppressions::list(conn, channel.as_deref(), after, limit)
        })
        .await
    }
}

#[async_trait]
impl JourneyRunStore for SqliteStore {
    async fn fire_due_timers(&self, now: Millis, limit: u32) -> Result<usize, StoreError> {
        let cache = self.cache.clone();
        self.write(move |tx| runs::fire_due(tx, &cache, now, limit))
            .await
    }

    async fn profile_journeys(
        &self,
        identity: &Identity,
    ) -> Result<Option<Vec<(String, JourneyState)>>, StoreError> {
        let identity = identity.clone();
        self.read(
            move |conn| match profile_id_of(conn, &identity).map_err(unavailable)? {
                Some(id) => runs::profile_journeys(conn, &id).map(Some),
                None => Ok(None),
            },
        )
        .await
    }

    async fn journey_stats(&self, journey: &str) -> Result<JourneyStats, StoreError> {
        let journey = journey.to_owned();
        self.read(move |conn| runs::journey_stats(conn, &journey))
            .await
    }

    async fn journey_series(
        &self,
        journey: &str,
    ) -> Result<Vec<(Millis, String, String, i64)>, StoreError> {
        let journey = journey.to_owned();
        self.read(move |conn| runs::journey_series(conn, &journey))
            .await
    }

    async fn journey_winners(
        &self,
        journey: &str,
    ) -> Result<Vec<waymark_store::WinnerRecord>, StoreError> {
        let journey = journey.to_owned();
        self.read(move |conn| winners::decisions(conn, &journey))
            .await
    }

    async fn profile_outbox_page(
        &self,
        identity: &Identity,
        kind: Option<&str>,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Option<Vec<waymark_store::OutboxEntry>>, StoreError> {
        let identity = identity.clone();
        let kind = kind.map(str::to_owned);
        self.read(
            move |conn| match profile_id_of(conn, &identity).map_err(unavailable)? {
                Some(id) => {
                    runs::profile_outbox(conn, &id, kind.as_deref(), before, limit).map(Some)
                }
                None => Ok(None),
            },
        )
        .await
    }
}

#[async_trait]
impl OutboxStore for SqliteStore {
    async fn enqueue_outbox(
        &self,
        rows: Vec<waymark_engine::run::OutboxRow>,
        now: Millis,
    ) -> Result<(), StoreError> {
        self.write(move |tx| runs::enqueue(tx, rows, now)).await
    }

    /// The claim holds the lease lock from before its read begins until its claims are
    /// recorded, and a lease is dropped (under the lock) only after the row's outcome was
    /// committed. So a claim either sees the lease, or reads a snapshot taken after the
    /// outcome's commit: a row is never claimed twice.
    async fn claim_outbox(
        &self,
        now: Millis,
        limit: u32,
        lease_ms: Millis,
    ) -> Result<Vec<OutboxItem>, StoreError> {
        let (pool, leases) = (self.readers.clone(), self.leases.clone());
        tokio::task::spawn_blocking(move || {
            let mut leases = lock(&leases);
            leases.retain(|_, until| *until > now);
            let conn = pool.get().map_err(unavailable)?;
            let items = runs::claim_unleased(&conn, now, limit, &leases)?;
            for item in &items {
                leases.insert(item.seq, now + lease_ms);
            }
            Ok(items)
        })
        .await
        .map_err(|e| StoreError::Unavailable(format!("claim task: {e}")))?
    }

    fn outbox_activity(&self) -> Option<Arc<tokio::sync::Notify>> {
        Some(self.activity.clone())
    }

    async fn renew_outbox_leases(&self, seqs: &[i64], until: Millis) -> Result<(), StoreError> {
        let mut leases = lock(&self.leases);
        for seq in seqs {
            // A lease already dropped belongs to a row whose outcome committed.
            if let Some(lease) = leases.get_mut(seq) {
                *lease = until.max(*lease);
            }
        }
        Ok(())
    }

    async fn release_outbox_leases(&self) -> Result<u64, StoreError> {
        let released = {
            let mut leases = lock(&self.leases);
            let n = leases.len() as u64;
            leases.clear();
            n
        };
        // Rows leased in the database by a version that kept leases there.
        Ok(released + self.write(runs::release_leases).await?)
    }

    async fn record_message_event(
        &self,
        key: &str,
        event: waymark_store::MessageEvent,
    ) -> Result<Option<OutboxItem>, StoreError> {
        let key = key.to_owned();
        self.write(move |tx| runs::record_message_event(tx, &key, &event))
            .await
    }

    async fn outbox_key(&self, seq: i64) -> Result<Option<String>, StoreError> {
        self.read(move |conn| runs::outbox_key(conn, seq)).await
    }

    async fn complete_outbox_many(
        &self,
        done: Arc<[(OutboxItem, Delivery)]>,
        now: Millis,
    ) -> Result<(), StoreError> {
        let cache = self.cache.clone();
        let recorded = done.clone();
        self.write(move |tx| runs::complete_many(tx, &cache, &recorded, now))
            .await?;
        // Committed: the rows may be claimed again (those due again) from now on.
        let leases = self.leases.clone();
        tokio::task::spawn_blocking(move || {
            let mut leases = lock(&leases);
            for (item, _) in done.iter() {
                leases.remove(&item.seq);
            }
        })
        .await
        .map_err(|e| StoreError::Unavailable(format!("lease task: {e}")))
    }
}

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    fn partitions(&self) -> u32 {
        self.partitions
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.read(|conn| {
            conn.query_row("SELECT 1", [], |_| Ok(()))
                .map_err(unavailable)
        })
        .await?;
        if self.health.failing().is_some() {
            // Rewriting a row writes its page to the WAL: it fails where any write would.
            self.write(|tx| {
                tx.execute("UPDATE meta SET value = value WHERE key = 'partitions'", [])
                    .map(|_| ())
                    .map_err(unavailable)
            })
            .await?;
        }
        self.health.check()
    }

    async fn close(&self) {
        // Dropping the sender lets the writer finish what is queued, commit, and exit.
        let sender = self.commands.lock().ok().and_then(|mut s| s.take());
        drop(sender);
        let handle = self.writer.lock().ok().and_then(|mut h| h.take());
        if let Some(handle) = handle {
            let _ = tokio::task::spawn_blocking(move || handle.join()).await;
        }
        let checkpointer = self.checkpointer.lock().ok().and_then(|mut c| c.take());
        if let Some((stop, handle)) = checkpointer {
            drop(stop);
            let _ = tokio::task::spawn_blocking(move || handle.join()).await;
        }
    }
}
