//! Journey definitions on SQLite: drafts, immutable versions, lifecycle status.

use rusqlite::{Connection, OptionalExtension, Transaction, params};
use serde_json::Value;
use waymark_core::journey::lifecycle::{Action, Status, transition};
use waymark_core::time::Millis;
use waymark_store::{JourneyRecord, JourneyVersion, StoreError, Transition};

use crate::unavailable;

fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("journey: {e}"))
}

pub fn read(conn: &Connection, key: &str) -> Result<Option<JourneyRecord>, StoreError> {
    let row = conn
        .prepare_cached("SELECT status, draft, draft_updated_at, live_version, created_at, updated_at FROM journeys WHERE key = ?1")
        .and_then(|mut s| {
            s.query_row([key], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, i64>(2)?, r.get::<_, Option<i64>>(3)?, r.get::<_, i64>(4)?, r.get::<_, i64>(5)?))
            })
            .optional()
        })
        .map_err(unavailable)?;
    let Some((status, draft, draft_updated_at, live_version, created_at, updated_at)) = row else {
        return Ok(None);
    };
    let mut stmt = conn
        .prepare_cached(
            "SELECT version, published_at FROM journey_versions WHERE key = ?1 ORDER BY version",
        )
        .map_err(unavailable)?;
    let versions = stmt
        .query_map([key], |r| {
            Ok(JourneyVersion {
                version: r.get::<_, i64>(0)? as u32,
                published_at: r.get(1)?,
            })
        })
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(unavailable)?;
    Ok(Some(JourneyRecord {
        key: key.to_owned(),
        status: Status::parse(&status)
            .ok_or_else(|| corrupt(format!("unknown status {status:?}")))?,
        draft: serde_json::from_str(&draft).map_err(corrupt)?,
        draft_updated_at,
        live_version: live_version.map(|v| v as u32),
        versions,
        created_at,
        updated_at,
        read: crate::reads::journey_read(conn, key)?.map(Box::new),
    }))
}

pub fn list(conn: &Connection) -> Result<Vec<JourneyRecord>, StoreError> {
    let keys: Vec<String> = conn
        .prepare_cached("SELECT key FROM journeys ORDER BY key")
        .and_then(|mut s| s.query_map([], |r| r.get(0)).and_then(Iterator::collect))
        .map_err(unavailable)?;
    let mut out = Vec::with_capacity(keys.len());
    for key in keys {
        out.extend(read(conn, &key)?);
    }
    Ok(out)
}

pub fn put_draft(
    tx: &Transaction<'_>,
    key: &str,
    document: &Value,
    now: Millis,
) -> Result<JourneyRecord, StoreError> {
    let text = document.to_string();
    tx.execute(
        "INSERT INTO journeys (key, status, draft, draft_updated_at, live_version, created_at, updated_at)
         VALUES (?1, 'draft', ?2, ?3, NULL, ?3, ?3)
         ON CONFLICT (key) DO UPDATE SET draft = excluded.draft, draft_updated_at = excluded.draft_updated_at, updated_at = excluded.updated_at",
        params![key, text, now],
    )
    .map_err(unavailable)?;
    read(tx, key)?.ok_or_else(|| corrupt("vanished after insert"))
}

pub fn publish(
    tx: &Transaction<'_>,
    key: &str,
    now: Millis,
) -> Result<Option<(JourneyRecord, bool)>, StoreError> {
    let Some(record) = read(tx, key)? else {
        return Ok(None);
    };
    let newest = match record.live_version {
        Some(v) => crate::runs::version(tx, key, v)?,
        None => None,
    };
    let created = newest.as_ref() != Some(&record.draft);
    let live = if created {
        let next = record.live_version.unwrap_or(0) + 1;
        tx.execute(
            "INSERT INTO journey_versions (key, version, document, published_at) VALUES (?1, ?2, ?3, ?4)",
            params![key, i64::from(next), record.draft.to_string(), now],
        )
        .map_err(unavailable)?;
        next
    } else {
        record.live_version.unwrap_or(1)
    };
    tx.execute(
        "UPDATE journeys SET status = 'live', live_version = ?2, updated_at = ?3, entry_rate_limit = ?4 WHERE key = ?1",
        params![key, i64::from(live), now, waymark_engine::run::entry_rate_limit(&record.draft).map(i64::from)],
    )
    .map_err(unavailable)?;
    crate::reads::after_publish(tx, key, &record.draft, now)?;
    Ok(read(tx, key)?.map(|r| (r, created)))
}

pub fn change_status(
    tx: &Transaction<'_>,
    key: &str,
    action: Action,
    now: Millis,
) -> Result<Option<Transition>, StoreError> {
    let Some(record) = read(tx, key)? else {
        return Ok(None);
    };
    match transition(record.status, action) {
        Err(reason) => Ok(Some(Transition::Refused {
            status: record.status,
            reason,
        })),
        Ok(next) => {
            tx.execute(
                "UPDATE journeys SET status = ?2, updated_at = ?3 WHERE key = ?1",
                params![key, next.as_str(), now],
            )
            .map_err(unavailable)?;
            crate::runs::follow_status(tx, key, record.status, next, now)?;
            Ok(read(tx, key)?.map(Transition::Done))
        }
    }
}
