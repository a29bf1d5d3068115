//! The storage boundary: traits that every backend implements, and [`conformance`], the one
//! test suite every backend must pass.
//!
//! Architecture invariant: nothing above this crate knows which backend it runs on, and no
//! SQL exists outside the `store-*` crates. Backends run the identity and profile rules of
//! `waymark_core::ingest`, so they cannot disagree about what an event means.

use async_trait::async_trait;
use serde::Serialize;
use serde_json::Value;
use waymark_core::time::Millis;
use waymark_core::{Event, Identity, ProfileState};

pub mod batch;
pub mod conformance;
pub mod decisioning;
pub mod json_part;
pub mod pipeline;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend cannot be reached or refused the operation; the caller may retry.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// Stored data could not be read back: a bug or a corrupted store.
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("store is shutting down")]
    Closed,
    /// The request may not be stored as it is (a profile limit, a missing user hash);
    /// nothing of it was. Retrying it unchanged gets the same answer.
    #[error("refused: {0}")]
    Refused(waymark_core::ingest::Refusal),
}

/// Settings a store is opened with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreOptions {
    /// Partitions a new store is created with; an existing store keeps its own.
    pub partitions: u32,
    /// Most events kept per profile; older ones are dropped as new ones arrive.
    pub max_events_per_profile: u64,
    /// Events older than this (by event time) are removed by [`ProfileStore::prune_expired`],
    /// and so are identity merge records.
    pub max_event_age_ms: Option<Millis>,
    /// Finished outbox rows (sent or given up) older than this, by when they finished, are
    /// removed by [`ProfileStore::prune_expired`] with their provider reports and inbox
    /// marks; never sooner than the longest frequency cap window, which reads them.
    pub max_message_age_ms: Option<Millis>,
    /// Delivery rules every message is decided by, in the transaction that records it.
    pub governance: waymark_core::governance::Policy,
    /// Who this process's outbox leases belong to, stable across its restarts (the server
    /// keeps it in its data folder, locked while it runs): at start a store takes back only
    /// the leases of this owner's earlier run, so restarting one of several processes on a
    /// shared database cannot re-deliver what the others are delivering.
    pub lease_owner: String,
}

impl StoreOptions {
    /// Finished messages that finished before this may be pruned: `max_message_age_ms`
    /// ago, or the longest frequency cap window ago if that is longer.
    pub fn message_cutoff(&self, now: Millis) -> Option<Millis> {
        let age = self.max_message_age_ms?;
        Some(now - age.max(self.governance.lookback_ms()))
    }
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            partitions: waymark_core::partition::DEFAULT_PARTITIONS,
            max_events_per_profile: 1000,
            max_event_age_ms: Some(365 * 24 * 3600 * 1000),
            max_message_age_ms: Some(365 * 24 * 3600 * 1000),
            governance: Default::default(),
            lease_owner: format!("process-{}-{}", std::process::id(), wall_clock_ms()),
        }
    }
}

/// Whether the store's commits are failing (a full disk, a database that refuses writes):
/// set by a backend when a commit fails. Reads and pings can go on working while commits
/// fail, so readiness asks this too. A store counts as failing until a commit succeeds
/// after the last failure and [`CommitHealth::SETTLE`] has passed since it: on a nearly
/// full disk small commits (a probe) can succeed while real ones still fail.
#[derive(Debug, Default)]
pub struct CommitHealth(std::sync::Mutex<HealthState>);

#[derive(Debug, Default)]
struct HealthState {
    failure: Option<(std::time::Instant, String)>,
    success_since_failure: bool,
}

impl CommitHealth {
    pub const SETTLE: std::time::Duration = std::time::Duration::from_secs(10);

    fn state(&self) -> std::sync::MutexGuard<'_, HealthState> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn failed(&self, why: &StoreError) {
        // A refusal is the store's answer to one request, not a failure to commit.
        if matches!(why, StoreError::Refused(_)) {
            return;
        }
        let mut state = self.state();
        state.failure = Some((std::time::Instant::now(), why.to_string()));
        state.success_since_failure = false;
    }

    pub fn committed(&self) {
        let mut state = self.state();
        if state.failure.is_some() && !state.success_since_failure {
            state.success_since_failure = true;
        }
    }

    /// `Err` with why while commits are failing: what a ping answers then.
    pub fn check(&self) -> Result<(), StoreError> {
        match self.failing() {
            Some(why) => Err(StoreError::Unavailable(format!(
                "commits are failing: {why}"
            ))),
            None => Ok(()),
        }
    }

    /// Why commits are failing, if they are.
    pub fn failing(&self) -> Option<String> {
        let mut state = self.state();
        let (at, why) = state.failure.as_ref()?;
        if state.success_since_failure && at.elapsed() >= Self::SETTLE {
            state.failure = None;
            return None;
        }
        Some(why.clone())
    }
}

/// What happened to each event of an ingest call.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct IngestReceipt {
    pub accepted: usize,
    pub duplicates: usize,
}

impl FromIterator<waymark_core::ingest::Outcome> for IngestReceipt {
    fn from_iter<I: IntoIterator<Item = waymark_core::ingest::Outcome>>(outcomes: I) -> Self {
        let mut receipt = Self::default();
        for outcome in outcomes {
            match outcome {
                waymark_core::ingest::Outcome::Accepted { .. } => receipt.accepted += 1,
                waymark_core::ingest::Outcome::Duplicate => receipt.duplicates += 1,
            }
        }
        receipt
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoredEvent {
    pub timestamp: Millis,
    pub seq: i64,
    /// The event in Segment's JSON shape ([`Event::to_json`]).
    pub body: Value,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PageRequest {
    /// Opaque cursor from a previous page's `next`.
    pub before: Option<String>,
    pub limit: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EventPage {
    pub events: Vec<StoredEvent>,
    /// Cursor for the next (older) page, if there is one.
    pub next: Option<String>,
}

/// The wall clock, in the store's unit. Lives here, not in `core`, because reading the
/// clock is an effect; `core` takes time as an argument.
pub fn wall_clock_ms() -> Millis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as Millis)
        .unwrap_or_default()
}

impl EventPage {
    /// Builds a page from up to `limit + 1` rows read newest first: the extra row, if
    /// present, only proves there is a next page.
    pub fn from_rows(mut events: Vec<StoredEvent>, limit: u32) -> Self {
        let next = if events.len() > limit as usize {
            events.truncate(limit as usize);
            events.last().map(encode_cursor)
        } else {
            None
        };
        Self { events, next }
    }
}

/// Page cursors are `time.seq` of the last row served; opaque to clients.
pub fn cursor(at: Millis, seq: i64) -> String {
    format!("{at}.{seq}")
}

pub fn encode_cursor(e: &StoredEvent) -> String {
    cursor(e.timestamp, e.seq)
}

pub fn decode_cursor(cursor: &str) -> Option<(Millis, i64)> {
    let (t, s) = cursor.split_once('.')?;
    Some((t.parse().ok()?, s.parse().ok()?))
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Erasure {
    pub profile_id: String,
    pub events_deleted: u64,
    pub identities_deleted: u64,
}

#[async_trait]
pub trait ProfileStore: Send + Sync {
    /// Applies a batch of events atomically: identity resolution, profile updates and event
    /// history. Returns only once the batch is durable on disk.
    async fn ingest(&self, events: Vec<Event>) -> Result<IngestReceipt, StoreError>;

    async fn profile(&self, identity: &Identity) -> Result<Option<ProfileState>, StoreError>;

    /// The profile's events, newest first. `None` if no profile has this identity.
    async fn events(
        &self,
        identity: &Identity,
        page: PageRequest,
    ) -> Result<Option<EventPage>, StoreError>;

    /// Deletes the profile with this identity, all its identities and all its events.
    async fn erase(&self, identity: &Identity) -> Result<Option<Erasure>, StoreError>;

    /// Removes what is past its retention: events and merge records older than
    /// `max_event_age_ms`, finished outbox rows older than [`StoreOptions::message_cutoff`],
    /// placed content past its `expires`; returns how many rows.
    async fn prune_expired(&self, now: Millis) -> Result<u64, StoreError>;

    /// Detaches one identity from its profile (a push token the provider says is no longer
    /// valid). Whether it was attached.
    async fn forget_identity(&self, identity: &Identity, now: Millis) -> Result<bool, StoreError>;
}

/// A winner node's decision as kept.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WinnerRecord {
    pub node: String,
    pub decision: waymark_engine::winner::Decision,
    pub decided_at: Millis,
}

/// A journey as stored: its editable draft, its immutable published versions, its status.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JourneyRecord {
    pub key: String,
    pub status: JourneyStatus,
    /// The document last put (as JSON), published or not.
    pub draft: Value,
    pub draft_updated_at: Millis,
    /// The newest published version, which new entries use.
    pub live_version: Option<u32>,
    pub versions: Vec<JourneyVersion>,
    pub created_at: Millis,
    pub updated_at: Millis,
    /// For a journey that reads an audience: its next read and the one in progress.
    pub read: Option<Box<pipeline::JourneyRead>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JourneyVersion {
    pub version: u32,
    pub published_at: Millis,
}

pub use waymark_core::journey::lifecycle::{Action as JourneyAction, Status as JourneyStatus};

/// What a status change came to.
#[derive(Debug, Clone, PartialEq)]
pub enum Transition {
    Done(JourneyRecord),
    /// The lifecycle does not allow it from the current status; nothing changed.
    Refused {
        status: JourneyStatus,
        reason: String,
    },
}

#[async_trait]
pub trait JourneyStore: Send + Sync {
    /// Creates the journey (as a draft) or replaces its draft document.
    async fn put_journey_draft(
        &self,
        key: &str,
        document: &Value,
        now: Millis,
    ) -> Result<JourneyRecord, StoreError>;

    /// Makes the draft the live version. A new immutable version is created only if the
    /// draft differs from the newest version, so publishing twice is harmless. Returns the
    /// record and whether a version was created; `None` if there is no such journey.
    async fn publish_journey(
        &self,
        key: &str,
        now: Millis,
    ) -> Result<Option<(JourneyRecord, bool)>, StoreError>;

    /// Pause, resume, close or stop, as `lifecycle::transition` allows.
    async fn change_journey_status(
        &self,
        key: &str,
        action: JourneyAction,
        now: Millis,
    ) -> Result<Option<Transition>, StoreError>;

    async fn journey(&self, key: &str) -> Result<Option<JourneyRecord>, StoreError>;

    /// One published version's document.
    async fn journey_version(&self, key: &str, version: u32) -> Result<Option<Value>, StoreError>;

    /// Every journey, by key.
    async fn journeys(&self) -> Result<Vec<JourneyRecord>, StoreError>;
}

/// A message template (`waymark_core::content::ContentDoc`) with its versions: every change
/// put is a new immutable version; the newest is the one used.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TemplateRecord {
    pub key: String,
    pub channel: String,
    pub version: u32,
    pub document: Value,
    pub versions: Vec<JourneyVersion>,
    pub created_at: Millis,
    pub updated_at: Millis,
}

#[async_trait]
pub trait TemplateStore: Send + Sync {
    /// Stores the document as a new version if it differs from the newest one. Returns the
    /// record and whether a version was created.
    async fn put_template(
        &self,
        key: &str,
        document: &Value,
        now: Millis,
    ) -> Result<(TemplateRecord, bool), StoreError>;

    async fn template(&self, key: &str) -> Result<Option<TemplateRecord>, StoreError>;

    /// One version's document.
    async fn template_version(&self, key: &str, version: u32) -> Result<Option<Value>, StoreError>;

    /// Every template (newest versions), by key.
    async fn templates(&self) -> Result<Vec<TemplateRecord>, StoreError>;
}

/// A document kept as immutable versions (templates, audiences), as a backend reads it:
/// the newest version and the list of all of them.
#[derive(Debug, Clone, PartialEq)]
pub struct Versions {
    pub version: u32,
    pub document: Value,
    pub versions: Vec<JourneyVersion>,
    pub created_at: Millis,
    pub updated_at: Millis,
}

impl Versions {
    pub fn into_template(self, key: &str) -> TemplateRecord {
        TemplateRecord {
            key: key.to_owned(),
            channel: self.document["channel"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            version: self.version,
            document: self.document,
            versions: self.versions,
            created_at: self.created_at,
            updated_at: self.updated_at,
        }
    }

    pub fn into_audience(self, key: &str) -> AudienceRecord {
        AudienceRecord {
            key: key.to_owned(),
            version: self.version,
            document: self.document,
            versions: self.versions,
            created_at: self.created_at,
            updated_at: self.updated_at,
        }
    }
}

/// An audience (`waymark_core::audience::AudienceDoc`) with its versions: every changed
/// document is a new version, live at once.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AudienceRecord {
    pub key: String,
    pub version: u32,
    pub document: Value,
    pub versions: Vec<JourneyVersion>,
    pub created_at: Millis,
    pub updated_at: Millis,
}

/// How an audience stands.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct AudienceStatus {
    pub members: u64,
    /// When someone last entered or left.
    pub last_change: Option<Millis>,
    /// People whose audiences are still to be decided since the newest version was saved
    /// (a backfill in progress); 0 once the audience is current.
    pub pending: u64,
    /// The backfill of the newest version, while it runs.
    pub backfill: Option<BackfillProgress>,
}

/// What saving a new audience version starts, by its document: the backfill of its rule
/// (not for an uploaded list) and its next scheduled run (a scheduled snapshot).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AudienceSave {
    pub backfill: bool,
    pub next_run: Option<Millis>,
}

impl AudienceSave {
    pub fn of(document: &Value, now: Millis) -> Self {
        use serde::Deserialize;
        use waymark_core::audience::{AudienceDoc, Refresh};
        match AudienceDoc::deserialize(document) {
            Ok(doc) => AudienceSave {
                backfill: doc.refresh != Refresh::Upload,
                next_run: doc
                    .schedule
                    .filter(|_| doc.refresh == Refresh::Snapshot)
                    .and_then(|s| waymark_core::schedule::next_run(&s, now).ok()),
            },
            // Checked before it is stored; a document that does not parse decides nothing.
            Err(_) => AudienceSave {
                backfill: false,
                next_run: None,
            },
        }
    }
}

/// How far a backfill has come.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct BackfillProgress {
    pub started_at: Millis,
    /// People decided so far.
    pub decided: u64,
}

/// An audience's size at the end of an hour in which it changed, and the entries and
/// exits of that hour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SizeAt {
    /// The hour's start.
    pub hour: Millis,
    pub members: u64,
    pub entered: u64,
    pub exited: u64,
}

/// What a batch evaluation reads of each person besides the profile.
#[derive(Debug, Clone, Default)]
pub struct ScanReads {
    /// Kept track events of these names, and calls of these kinds (see
    /// `waymark_core::event::stored_names`).
    pub track_names: Vec<String>,
    pub kinds: Vec<&'static str>,
    /// How much of event bodies (nothing: null, names and times only).
    pub bodies: waymark_engine::audience::BodyPart,
    /// Their audience memberships.
    pub memberships: bool,
    /// How much of their profile.
    pub profile: ProfilePart,
    /// With `ProfilePart::Traits`, the traits kept (`None`: all of them).
    pub trait_keys: Option<Vec<String>>,
}

impl ScanReads {
    /// A scanned person's profile from its id and what was read of it (see
    /// `ProfilePart::code`).
    pub fn decode_profile(
        &self,
        id: String,
        state: Option<&str>,
    ) -> Result<ProfileState, StoreError> {
        self.profile.decode(id, state, self.trait_keys.as_deref())
    }
}

/// How much of a profile a batch evaluation decodes: what the rule reads, no more (the
/// whole profile's JSON costs as much to decode as twenty events).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ProfilePart {
    /// The id alone: the rule does not read `profile`.
    #[default]
    Id,
    /// The id and traits: the rule reads `profile.traits...` only.
    Traits,
    Whole,
}

impl ProfilePart {
    /// What a store reads of the stored profile: 0 nothing, 1 the traits (as
    /// `{"traits": ...}` extracted by the database, or the whole state, whose other fields
    /// `decode` then skips), 2 all of it.
    pub fn code(self) -> i64 {
        match self {
            ProfilePart::Id => 0,
            ProfilePart::Traits => 1,
            ProfilePart::Whole => 2,
        }
    }

    /// A scanned person's profile from its id and what was read of it (see `code`); of
    /// the traits, only `trait_keys` when given.
    pub fn decode(
        self,
        id: String,
        state: Option<&str>,
        trait_keys: Option<&[String]>,
    ) -> Result<ProfileState, StoreError> {
        let corrupt = |e: serde_json::Error| StoreError::Corrupt(format!("profile state: {e}"));
        match (self, state) {
            (ProfilePart::Whole, Some(state)) => serde_json::from_str(state).map_err(corrupt),
            (ProfilePart::Traits, Some(state)) => {
                let mut profile = ProfileState::new(id, 0, 0);
                profile.traits =
                    json_part::object_under(state, "traits", trait_keys).map_err(corrupt)?;
                Ok(profile)
            }
            _ => Ok(ProfileState::new(id, 0, 0)),
        }
    }
}

/// How a backend's query is told how much of event bodies to read: 0 nothing, 1
/// `{"properties": ...}` alone (extracted by the database), 2 all.
pub fn body_code(bodies: waymark_engine::audience::BodyPart) -> i64 {
    use waymark_engine::audience::BodyPart;
    match bodies {
        BodyPart::Nothing => 0,
        BodyPart::Properties => 1,
        BodyPart::Whole => 2,
    }
}

/// One person as a batch evaluation reads them.
#[derive(Debug)]
pub struct ScannedPerson {
    pub profile: ProfileState,
    pub events: Vec<waymark_engine::audience::HistoryEvent>,
    /// Audiences they are a member of, with since when.
    pub members: std::collections::BTreeMap<String, Millis>,
}

/// A member of an audience, since when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AudienceMember {
    pub profile_id: String,
    pub since: Millis,
}

/// Audience documents and membership. Membership itself is written only by journey and
/// audience runs (`pipeline`), in the transaction of what changed it.
#[async_trait]
pub trait AudienceStore: Send + Sync {
    /// Stores the document as a new version if it differs from the newest one, and then
    /// starts its backfill: every person decided for it again (stored events count from
    /// day one, and after an edit nobody stays a member who no longer matches).
    async fn put_audience(
        &self,
        key: &str,
        document: &Value,
        now: Millis,
    ) -> Result<(AudienceRecord, bool), StoreError> {
        let save = AudienceSave::of(document, now);
        self.save_audience(key, document, &save, now).await
    }

    /// Stores the document as a new version if it differs from the newest one; for a new
    /// version, starts its backfill when `save` says so and sets its next scheduled run.
    async fn save_audience(
        &self,
        key: &str,
        document: &Value,
        save: &AudienceSave,
        now: Millis,
    ) -> Result<(AudienceRecord, bool), StoreError>;

    /// Decides a rule audience for everyone again now (a backfill); false if there is no
    /// such audience.
    async fn run_audience(&self, key: &str, now: Millis) -> Result<bool, StoreError>;

    /// Adds these people to an uploaded list (or, `enter: false`, takes them off), in one
    /// transaction with what it causes; returns how many entered or left.
    async fn change_list_members(
        &self,
        key: &str,
        profile_ids: Vec<String>,
        enter: bool,
        now: Millis,
    ) -> Result<u64, StoreError>;

    /// When a scheduled audience runs next.
    async fn audience_next_run(&self, key: &str) -> Result<Option<Millis>, StoreError>;

    async fn audience(&self, key: &str) -> Result<Option<AudienceRecord>, StoreError>;

    /// Every audience (newest versions), by key.
    async fn audiences(&self) -> Result<Vec<AudienceRecord>, StoreError>;

    async fn audience_status(&self, key: &str) -> Result<AudienceStatus, StoreError>;

    /// Size by the hour since `since`, oldest first (hours without change are left out).
    async fn audience_size_history(
        &self,
        key: &str,
        since: Millis,
    ) -> Result<Vec<SizeAt>, StoreError>;

    /// People for batch evaluation, read without locks: ids after `after` and up to
    /// `until` (when given), in id order, at most `limit`, each with what `reads` asks for.
    async fn scan_people(
        &self,
        after: &str,
        until: Option<&str>,
        limit: u32,
        reads: &ScanReads,
    ) -> Result<Vec<ScannedPerson>, StoreError>;

    /// The kept events `reads` asks for of these people (ids in ascending order), read
    /// without locks in one snapshot: each one's events, in the order of `ids`.
    async fn people_events(
        &self,
        ids: Vec<String>,
        reads: &ScanReads,
    ) -> Result<Vec<Vec<waymark_engine::audience::HistoryEvent>>, StoreError>;

    /// Profile ids that cut everyone into `parts` ranges of about the same size, in id
    /// order (fewer when there are fewer people).
    async fn profile_splits(&self, parts: u32) -> Result<Vec<String>, StoreError>;

    /// The profile id of each identity, in order (none for an identity nobody has).
    async fn profile_ids_of(
        &self,
        identities: &[Identity],
    ) -> Result<Vec<Option<String>>, StoreError>;

    /// Members with their profiles, in profile id order, after `after`, at most `limit`.
    async fn audience_member_profiles(
        &self,
        key: &str,
        after: &str,
        limit: u32,
    ) -> Result<Vec<(AudienceMember, ProfileState)>, StoreError>;

    /// Members in profile id order, after `after` when given, at most `limit`.
    async fn audience_members(
        &self,
        key: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<AudienceMember>, StoreError>;

    /// The audiences a profile is a member of, with since when.
    async fn profile_audiences(
        &self,
        profile_id: &str,
    ) -> Result<Vec<(String, Millis)>, StoreError>;

    /// A profile's kept events of these names (display names: `Order Completed`,
    /// `Identify`, `Page Viewed`...), oldest first.
    async fn profile_history(
        &self,
        profile_id: &str,
        names: &[String],
    ) -> Result<Vec<waymark_engine::audience::HistoryEvent>, StoreError>;
}

/// One address on the suppression list (or on its way there: soft bounces are counted
/// until `soft_bounce_limit`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Suppression {
    pub channel: String,
    /// Normalised (`governance::suppression_address`).
    pub address: String,
    /// Whether messages to it are suppressed now.
    pub suppressed: bool,
    /// `hard_bounce`, `soft_bounces`, `complaint`, `invalid_address`, `carrier_opt_out`,
    /// `manual` (see `governance::REASONS`); empty while only soft bounces are counted.
    pub reason: String,
    /// What the provider said, or the note given through the API.
    pub detail: String,
    pub soft_bounces: u32,
    pub created_at: Millis,
    pub updated_at: Millis,
}

/// The suppression list: addresses that get no message on a channel, transactional or not.
/// Journeys read it when they decide a message (in the same transaction); the dispatcher
/// and the API write it.
#[async_trait]
pub trait SuppressionStore: Send + Sync {
    /// Puts the address on the list (or updates why). `address` is normalised already.
    async fn suppress(
        &self,
        channel: &str,
        address: &str,
        reason: &str,
        detail: &str,
        now: Millis,
    ) -> Result<(), StoreError>;

    /// Counts a soft bounce (a message that failed after its retries); at `limit` the
    /// address is suppressed with reason `soft_bounces`. Returns the entry.
    async fn soft_bounce(
        &self,
        channel: &str,
        address: &str,
        detail: &str,
        limit: u32,
        now: Millis,
    ) -> Result<Suppression, StoreError>;

    /// Takes the address off the list (and forgets its soft bounces). Whether it was there.
    async fn unsuppress(&self, channel: &str, address: &str) -> Result<bool, StoreError>;

    async fn suppression(
        &self,
        channel: &str,
        address: &str,
    ) -> Result<Option<Suppression>, StoreError>;

    /// Entries in (channel, address) order, after `after` when given, at most `limit`.
    async fn suppressions(
        &self,
        channel: Option<&str>,
        after: Option<(&str, &str)>,
        limit: u32,
    ) -> Result<Vec<Suppression>, StoreError>;
}

/// What a person did with an inbox message.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct InboxMark {
    pub read_at: Option<Millis>,
    pub dismissed_at: Option<Millis>,
}

/// Read and dismissed marks of `in_app` messages (the messages themselves are outbox rows).
#[async_trait]
pub trait InboxStore: Send + Sync {
    /// Marks a message read and/or dismissed; the first time of each is kept. The caller
    /// has checked that the message is the person's.
    async fn mark_inbox(
        &self,
        key: &str,
        profile_id: &str,
        read: bool,
        dismissed: bool,
        now: Millis,
    ) -> Result<InboxMark, StoreError>;

    /// The marks of these messages (those with none are left out).
    async fn inbox_marks(
        &self,
        keys: &[String],
    ) -> Result<std::collections::HashMap<String, InboxMark>, StoreError>;
}

pub use waymark_engine::JourneyState;
pub use waymark_engine::run::OutboxRow;
pub use waymark_engine::stats::JourneyStats;

/// Journeys running: instance state, timers and the outbox, changed only together with the
/// input that caused them (ingest runs live journeys in the same transaction as the events).
#[async_trait]
pub trait JourneyRunStore: Send + Sync {
    /// Fires up to `limit` timers due at or before `now`, in due order, in one transaction
    /// with the states, timers and outbox rows they produce. Returns how many fired.
    async fn fire_due_timers(&self, now: Millis, limit: u32) -> Result<usize, StoreError>;

    /// The person's state in every journey they have entered, by journey key.
    async fn profile_journeys(
        &self,
        identity: &Identity,
    ) -> Result<Option<Vec<(String, JourneyState)>>, StoreError>;

    /// Per-node counts of one journey, kept as counters by every transaction that changes
    /// its states (reading them scans nothing).
    async fn journey_stats(&self, journey: &str) -> Result<JourneyStats, StoreError>;

    /// The decisions of the journey's winner nodes.
    async fn journey_winners(&self, journey: &str) -> Result<Vec<WinnerRecord>, StoreError>;

    /// The journey's node counters per hour (`waymark_engine::stats::SERIES`), as (start
    /// of the hour, node, counter, value), in hour order.
    async fn journey_series(
        &self,
        journey: &str,
    ) -> Result<Vec<(Millis, String, String, i64)>, StoreError>;

    /// Effects recorded for the person (messages, webhooks, ...), with what became of each
    /// delivery: the newest [`MAX_PROFILE_OUTBOX`], oldest first, so a person with a long
    /// history cannot make every read of it (the inbox reads it per request) unbounded.
    async fn profile_outbox(
        &self,
        identity: &Identity,
    ) -> Result<Option<Vec<OutboxEntry>>, StoreError> {
        self.profile_outbox_page(identity, None, None, MAX_PROFILE_OUTBOX)
            .await
    }

    /// One page of the person's effects: the newest `limit` (at most
    /// [`MAX_PROFILE_OUTBOX`]) of `kind` (all kinds if `None`) recorded before the row
    /// `before` (an [`OutboxEntry::seq`]), oldest first.
    async fn profile_outbox_page(
        &self,
        identity: &Identity,
        kind: Option<&str>,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Option<Vec<OutboxEntry>>, StoreError>;
}

/// Most outbox rows [`JourneyRunStore::profile_outbox`] returns for one person.
pub const MAX_PROFILE_OUTBOX: u32 = 1_000;

/// An outbox row with its delivery record.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OutboxEntry {
    #[serde(flatten)]
    pub row: OutboxRow,
    /// Delivery attempts made.
    pub attempts: u32,
    /// Why the last attempt failed (kept after a later success).
    pub last_error: Option<String>,
    /// What the delivery gave back (a webhook's response, the provider's message id).
    pub result: Option<Value>,
    pub created_at: Millis,
    /// When the next attempt is due (while pending).
    pub next_attempt_at: Millis,
    /// When it was sent or given up by the dispatcher, or recorded for rows done when
    /// recorded (`log` and in-app messages, messages consent or governance stopped).
    pub finished_at: Option<Millis>,
    /// What the provider reported after it took the message, oldest first.
    pub events: Vec<MessageEvent>,
    /// Its place in the outbox (the order rows were recorded in), for paging.
    #[serde(skip)]
    pub seq: i64,
}

/// Something a provider reported about a message it had taken: `delivered`, `undelivered`,
/// `bounced` (asynchronously, or by the SMTP server's reply), `complained`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MessageEvent {
    pub status: String,
    pub detail: String,
    pub at: Millis,
}

/// An outbox row handed to the dispatcher.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OutboxItem {
    pub seq: i64,
    pub key: String,
    pub profile_id: String,
    pub journey: String,
    pub effect: waymark_engine::Effect,
    /// Attempts made before this one.
    pub attempts: u32,
    /// When the effect was recorded (retry windows count from here).
    pub created_at: Millis,
}

impl OutboxItem {
    /// A message's channel and its address as the suppression list keys it, if it has one
    /// the list can hold.
    pub fn suppressible_address(&self) -> Option<(&str, String)> {
        let message = self.message()?;
        let to = message.to.as_deref()?;
        let address = waymark_core::governance::suppression_address(&message.channel, to).ok()?;
        Some((&message.channel, address))
    }

    /// The message, if the row is one.
    pub fn message(&self) -> Option<&waymark_engine::Message> {
        self.effect.message()
    }
}

/// What became of one delivery attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum Delivery {
    /// Done; for a webhook, the response (JSON, or `null`) goes to the journey.
    Delivered(Value),
    /// Try again at this time.
    Retry { at: Millis, error: String },
    /// Not attempted (its channel is throttled): due again at this time, attempts unchanged.
    Deferred { at: Millis },
    /// Given up; for a webhook the journey takes its error path.
    Failed(String),
}

/// The outbox seen from the dispatcher: claim due rows under a lease (a crashed dispatcher's
/// claims come due again when the lease ends), then record what happened to each.
#[async_trait]
pub trait OutboxStore: Send + Sync {
    /// Queues effects no journey step made (campaign proofs), in one transaction.
    async fn enqueue_outbox(
        &self,
        rows: Vec<waymark_engine::run::OutboxRow>,
        now: Millis,
    ) -> Result<(), StoreError>;

    async fn claim_outbox(
        &self,
        now: Millis,
        limit: u32,
        lease_ms: Millis,
    ) -> Result<Vec<OutboxItem>, StoreError>;

    /// Moves the leases of rows this process claimed and still holds (their outcome not
    /// yet committed) on to `until`, so a row waiting for a slot, a slow provider or a store
    /// that cannot commit right now is never claimed again while its first delivery is
    /// still on its way. Rows already completed, or leased by another owner, are left alone.
    async fn renew_outbox_leases(&self, seqs: &[i64], until: Millis) -> Result<(), StoreError>;

    /// Notified after writes that may have added due outbox rows, for a dispatcher to look
    /// at once instead of polling often; `None` if the backend cannot tell (another
    /// process may write), and the dispatcher polls.
    fn outbox_activity(&self) -> Option<std::sync::Arc<tokio::sync::Notify>> {
        None
    }

    /// Ends the leases of this store's `lease_owner` (its own earlier run, which died):
    /// called at start, so what it had claimed is delivered again now rather than when the
    /// lease would end. Leases of other owners are left to run out.
    async fn release_outbox_leases(&self) -> Result<u64, StoreError>;

    /// Records the outcome; a final webhook outcome moves the journey on in the same
    /// transaction, an `update_profile` is applied to the profile, a `jump` enters the
    /// target journey. Recording an outcome for a row already completed changes nothing.
    async fn complete_outbox(
        &self,
        item: &OutboxItem,
        delivery: Delivery,
        now: Millis,
    ) -> Result<(), StoreError> {
        self.complete_outbox_many(std::sync::Arc::new([(item.clone(), delivery)]), now)
            .await
    }

    /// Records many outcomes as `complete_outbox` would one by one; a backend may commit
    /// them in one transaction. On error, some may not be recorded (their leases run out
    /// and they are delivered again).
    ///
    /// The batch is shared so a caller can try it again after an error without copying it.
    async fn complete_outbox_many(
        &self,
        done: std::sync::Arc<[(OutboxItem, Delivery)]>,
        now: Millis,
    ) -> Result<(), StoreError>;

    /// Records what a provider reported about the message with this key, once per status
    /// (providers repeat callbacks). Returns the message's row, or `None` when no message
    /// has this key.
    async fn record_message_event(
        &self,
        key: &str,
        event: MessageEvent,
    ) -> Result<Option<OutboxItem>, StoreError>;

    /// The key of the outbox row with this sequence number (an email's Message-ID names it).
    async fn outbox_key(&self, seq: i64) -> Result<Option<String>, StoreError>;

    /// Reserves the next send slot of a throttled channel shared by every process on this
    /// store (GCRA: slots `interval_ms` apart, bursts of `burst`): the time the send may
    /// go. `None` when the store serves one process only, which then paces on its own.
    async fn reserve_send_slot(
        &self,
        _channel: &str,
        _interval_ms: f64,
        _burst: f64,
        _now: Millis,
    ) -> Result<Option<Millis>, StoreError> {
        Ok(None)
    }

    /// Gives back a slot `reserve_send_slot` gave (the send was deferred instead).
    async fn give_back_send_slot(
        &self,
        _channel: &str,
        _interval_ms: f64,
    ) -> Result<(), StoreError> {
        Ok(())
    }
}

#[async_trait]
pub trait Store:
    ProfileStore
    + JourneyStore
    + JourneyRunStore
    + OutboxStore
    + TemplateStore
    + SuppressionStore
    + InboxStore
    + AudienceStore
    + decisioning::DecisioningStore
    + 'static
{
    fn backend(&self) -> &'static str;
    fn partitions(&self) -> u32;
    /// Cheap round trip to the backend, for health checks. While commits are failing it
    /// also tries a small write, and fails with why if that cannot commit either.
    async fn ping(&self) -> Result<(), StoreError>;
    /// Finishes in-flight writes and releases the backend. Later calls fail with `Closed`.
    async fn close(&self);
}
