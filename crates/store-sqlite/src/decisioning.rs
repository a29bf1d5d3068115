//! The decisioning catalogue, offer counts and a decision's reads in SQL.

use rusqlite::{Connection, OptionalExtension, Transaction, params};
use serde_json::Value;
use waymark_core::decisioning::Kind as Doc;
use waymark_core::time::Millis;
use waymark_core::{FieldError, Identity};
use waymark_engine::audience::BodyPart;
use waymark_engine::decisioning::Placed;
use waymark_store::decisioning::{
    CatalogueCheck, DecisionInputs, MAX_PLACED, OfferCount, assemble,
};
use waymark_store::{StoreError, Versions};

use crate::versioned::{self, Kind, catalogue_table};
use crate::{decode_profile, profile_id_of, unavailable};

fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("catalogue: {e}"))
}

/// The newest document of every key of every kind.
pub fn catalogue(conn: &Connection) -> Result<waymark_core::decisioning::Catalogue, StoreError> {
    let mut rows = Vec::new();
    for kind in Doc::ALL {
        let sql = format!(
            "SELECT d.document FROM {t} d
             WHERE d.version = (SELECT max(version) FROM {t} n WHERE n.key = d.key)
             ORDER BY d.key",
            t = catalogue_table(kind)
        );
        let docs: Vec<String> = conn
            .prepare_cached(&sql)
            .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
            .map_err(unavailable)?;
        for doc in docs {
            rows.push((kind, serde_json::from_str(&doc).map_err(corrupt)?));
        }
    }
    Ok(assemble(rows))
}

/// Checks the catalogue the document would join, then stores it (in the writer's
/// transaction: nothing else writes meanwhile).
pub fn put(
    tx: &Transaction<'_>,
    kind: Doc,
    key: &str,
    document: &Value,
    check: CatalogueCheck,
    now: Millis,
) -> Result<Result<(Versions, bool), Vec<FieldError>>, StoreError> {
    if let Err(problems) = check(&catalogue(tx)?) {
        return Ok(Err(problems));
    }
    versioned::put(tx, Kind::Catalogue(kind), key, document, now).map(Ok)
}

pub fn documents(conn: &Connection, kind: Doc) -> Result<Vec<(String, Versions)>, StoreError> {
    let mut out = Vec::new();
    for key in versioned::keys(conn, Kind::Catalogue(kind))? {
        if let Some(v) = versioned::read(conn, Kind::Catalogue(kind), &key)? {
            out.push((key, v));
        }
    }
    Ok(out)
}

/// Rows across the catalogue's tables: only ever grows, by one per new version.
pub fn stamp(conn: &Connection) -> Result<i64, StoreError> {
    let sql = Doc::ALL
        .iter()
        .map(|k| format!("(SELECT count(*) FROM {})", catalogue_table(*k)))
        .collect::<Vec<_>>()
        .join(" + ");
    conn.prepare_cached(&format!("SELECT {sql}"))
        .and_then(|mut s| s.query_row([], |r| r.get(0)))
        .map_err(unavailable)
}

/// In the ingest's transaction: counts for offers and placements that exist.
pub fn add_counts(tx: &Transaction<'_>, counts: &[OfferCount]) -> Result<(), StoreError> {
    let mut add = tx
        .prepare_cached(
            "INSERT INTO offer_counts (offer, placement, hour, displays, clicks)
             SELECT ?1, ?2, ?3, ?4, ?5
             WHERE EXISTS (SELECT 1 FROM offers WHERE key = ?1)
               AND EXISTS (SELECT 1 FROM placements WHERE key = ?2)
             ON CONFLICT (offer, placement, hour) DO UPDATE
             SET displays = displays + excluded.displays, clicks = clicks + excluded.clicks",
        )
        .map_err(unavailable)?;
    for c in counts {
        add.execute(params![c.offer, c.placement, c.hour, c.displays, c.clicks])
            .map_err(unavailable)?;
    }
    Ok(())
}

pub fn counts(conn: &Connection, since_hour: Millis) -> Result<Vec<OfferCount>, StoreError> {
    conn.prepare_cached(
        "SELECT offer, placement, hour, displays, clicks FROM offer_counts WHERE hour >= ?1
         ORDER BY hour, offer, placement",
    )
    .and_then(|mut s| {
        s.query_map([since_hour], |r| {
            Ok(OfferCount {
                offer: r.get(0)?,
                placement: r.get(1)?,
                hour: r.get(2)?,
                displays: r.get(3)?,
                clicks: r.get(4)?,
            })
        })?
        .collect()
    })
    .map_err(unavailable)
}

/// The person's profile, audiences and events of `names`, in one read transaction.
/// The content journeys placed for the person, not expired at `now`, as decisions read it.
fn placed_content(
    conn: &Connection,
    profile_id: &str,
    now: Millis,
) -> Result<Vec<Placed>, StoreError> {
    type Row = (
        String,
        String,
        u32,
        String,
        i64,
        Millis,
        Option<Millis>,
        String,
    );
    let rows: Vec<Row> = conn
        .prepare_cached(
            "SELECT key, journey_key, instance, surface, priority, placed_at, expires_at, content
               FROM placed_content WHERE profile_id = ?1 AND (expires_at IS NULL OR expires_at > ?2)
              ORDER BY priority DESC, placed_at DESC LIMIT ?3",
        )
        .and_then(|mut s| {
            s.query_map(params![profile_id, now, MAX_PLACED], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                    r.get(7)?,
                ))
            })?
            .collect()
        })
        .map_err(unavailable)?;
    rows.into_iter()
        .map(
            |(key, journey, instance, surface, priority, placed_at, expires_at, content)| {
                Ok(Placed {
                    content: serde_json::from_str(&content)
                        .map_err(|e| StoreError::Corrupt(format!("placed content {key}: {e}")))?,
                    key,
                    journey,
                    instance,
                    surface,
                    priority,
                    placed_at,
                    expires_at,
                })
            },
        )
        .collect()
}

pub fn inputs(
    conn: &Connection,
    identities: &[Identity],
    names: &[String],
    bodies: BodyPart,
    now: Millis,
) -> Result<Option<DecisionInputs>, StoreError> {
    let snapshot = conn.unchecked_transaction().map_err(unavailable)?;
    let mut profile_id = None;
    for identity in identities {
        profile_id = profile_id_of(&snapshot, identity).map_err(unavailable)?;
        if profile_id.is_some() {
            break;
        }
    }
    let Some(profile_id) = profile_id else {
        return Ok(None);
    };
    let state: Option<String> = snapshot
        .prepare_cached("SELECT state FROM profiles WHERE id = ?1")
        .and_then(|mut s| s.query_row([&profile_id], |r| r.get(0)).optional())
        .map_err(unavailable)?;
    let Some(state) = state else {
        return Ok(None);
    };
    let profile = decode_profile(&state)?;
    let audiences = crate::audiences::profile_audiences(&snapshot, &profile_id)?
        .into_iter()
        .map(|(key, _)| key)
        .collect();
    let events = if names.is_empty() {
        Vec::new()
    } else {
        let (track, kinds) = waymark_core::event::stored_names(names);
        let mut events =
            crate::audiences::history(&snapshot, &[&profile_id], &track, &kinds, bodies)?
                .pop()
                .unwrap_or_default();
        events.sort_by_key(|e| e.at);
        events
    };
    let placed = placed_content(&snapshot, &profile_id, now)?;
    snapshot.finish().map_err(unavailable)?;
    Ok(Some(DecisionInputs {
        profile,
        audiences,
        events,
        placed,
    }))
}
