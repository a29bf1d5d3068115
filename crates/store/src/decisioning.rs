//! The decisioning catalogue and what decisions read, behind the storage boundary: each
//! catalogue document is kept as versions (as audiences are), saved only after a check
//! against the whole catalogue as it stands in the saving transaction (so two saves racing
//! cannot leave it inconsistent), and displays and clicks are counted per offer, placement
//! and hour from the feedback events, in the ingest transaction that stores them.

use std::collections::BTreeMap;

use async_trait::async_trait;
use serde_json::Value;
use waymark_core::decisioning::{Catalogue, Kind, feedback_of};
use waymark_core::time::Millis;
use waymark_core::{Event, FieldError, Identity, ProfileState};
use waymark_engine::audience::{BodyPart, HistoryEvent};
use waymark_engine::decisioning::Placed;

use crate::{StoreError, Versions};

/// What a save checks the catalogue it would join against (`waymark_core::decisioning::check`).
pub type CatalogueCheck = Box<dyn FnOnce(&Catalogue) -> Result<(), Vec<FieldError>> + Send>;

/// Displays and clicks of an offer on a placement in one hour (counted when ingested).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfferCount {
    pub offer: String,
    pub placement: String,
    pub hour: Millis,
    pub displays: i64,
    pub clicks: i64,
}

/// What one decision reads of a person.
#[derive(Debug, Clone, PartialEq)]
pub struct DecisionInputs {
    pub profile: ProfileState,
    /// The audiences they are a member of.
    pub audiences: Vec<String>,
    /// Their kept events of the names asked for, oldest first.
    pub events: Vec<HistoryEvent>,
    /// Content journeys placed for them and not expired at the read, the first
    /// [`MAX_PLACED`] by priority (highest first), then newest.
    pub placed: Vec<Placed>,
}

/// The most placed content one decision reads of a person.
pub const MAX_PLACED: i64 = 64;

/// The catalogue from its stored documents (newest versions); a document that no longer
/// reads is left out, so one damaged row cannot stop every decision.
pub fn assemble(rows: Vec<(Kind, Value)>) -> Catalogue {
    let mut catalogue = Catalogue::default();
    for (kind, value) in rows {
        if let Err(e) = catalogue.insert_stored(kind, value) {
            tracing::error!(kind = kind.name(), error = %e.message, "a stored catalogue document does not read");
        }
    }
    catalogue
}

/// The feedback among newly stored events, counted at `now`'s hour per offer and
/// placement, in key order (so every transaction updates count rows in the same order).
pub fn feedback_counts(events: &[(&Event, &ProfileState)], now: Millis) -> Vec<OfferCount> {
    let hour = waymark_engine::stats::hour_of(now);
    let mut counts: BTreeMap<(String, String), (i64, i64)> = BTreeMap::new();
    for (event, _) in events {
        let Some(name) = event.name.as_deref() else {
            continue;
        };
        if let Some(f) = feedback_of(name, &event.properties) {
            let c = counts.entry((f.offer, f.placement)).or_default();
            if f.click {
                c.1 += 1;
            } else {
                c.0 += 1;
            }
        }
    }
    counts
        .into_iter()
        .map(|((offer, placement), (displays, clicks))| OfferCount {
            offer,
            placement,
            hour,
            displays,
            clicks,
        })
        .collect()
}

#[async_trait]
pub trait DecisioningStore: Send + Sync {
    /// Stores the document as the next version of its kind and key if it differs from the
    /// newest one, once `check` accepts the catalogue as it stands in the same
    /// transaction; its problems otherwise, with nothing stored.
    async fn put_catalogue(
        &self,
        kind: Kind,
        key: &str,
        document: &Value,
        check: CatalogueCheck,
        now: Millis,
    ) -> Result<Result<(Versions, bool), Vec<FieldError>>, StoreError>;

    async fn catalogue_document(
        &self,
        kind: Kind,
        key: &str,
    ) -> Result<Option<Versions>, StoreError>;

    /// One version's document.
    async fn catalogue_version(
        &self,
        kind: Kind,
        key: &str,
        version: u32,
    ) -> Result<Option<Value>, StoreError>;

    /// Every document of a kind (newest versions, with their versions), by key.
    async fn catalogue_documents(&self, kind: Kind) -> Result<Vec<(String, Versions)>, StoreError>;

    /// The whole catalogue, newest versions, read in one snapshot.
    async fn catalogue(&self) -> Result<Catalogue, StoreError>;

    /// Changes whenever any catalogue document gets a new version (what a server polls to
    /// pick up another process's saves).
    async fn catalogue_stamp(&self) -> Result<i64, StoreError>;

    /// Offer counts from `since_hour` on.
    async fn offer_counts(&self, since_hour: Millis) -> Result<Vec<OfferCount>, StoreError>;

    /// What a decision reads of the person holding the first identity that has one: their
    /// profile, audiences, kept events of `names` (bodies as far as `bodies`) and the
    /// content journeys placed for them that has not expired at `now`; `None`
    /// when nobody holds any of them. Not necessarily one snapshot: a decision tolerates a
    /// membership or an event changing between the reads.
    async fn decision_inputs(
        &self,
        identities: &[Identity],
        names: &[String],
        bodies: BodyPart,
        now: Millis,
    ) -> Result<Option<DecisionInputs>, StoreError>;
}
