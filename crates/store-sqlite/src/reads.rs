//! Journeys that read an audience on SQLite: the row of each one's reads (the next, and
//! the one in progress with its cursor). What a read does is `waymark_store::pipeline`'s.

use rusqlite::{Connection, OptionalExtension, Transaction, params};
use serde_json::Value;
use waymark_core::journey::Journey;
use waymark_core::time::Millis;
use waymark_store::StoreError;
use waymark_store::pipeline::JourneyRead;

use crate::unavailable;

const READ_COLUMNS: &str = "journey_key, due_at, started_at, after_profile, members_read, excluded, last_finished_at, last_read, last_excluded";

fn read_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<JourneyRead> {
    Ok(JourneyRead {
        journey: r.get(0)?,
        due_at: r.get(1)?,
        started_at: r.get(2)?,
        after: r.get(3)?,
        read: r.get::<_, i64>(4)?.max(0) as u64,
        excluded: r.get::<_, i64>(5)?.max(0) as u64,
        last_finished_at: r.get(6)?,
        last_read: r.get::<_, i64>(7)?.max(0) as u64,
        last_excluded: r.get::<_, i64>(8)?.max(0) as u64,
    })
}

/// A journey's audience reads, if it has any.
pub fn journey_read(conn: &Connection, key: &str) -> Result<Option<JourneyRead>, StoreError> {
    conn.prepare_cached(&format!(
        "SELECT {READ_COLUMNS} FROM journey_reads WHERE journey_key = ?1"
    ))
    .and_then(|mut s| s.query_row([key], read_row).optional())
    .map_err(unavailable)
}

/// The read due first among live journeys'.
pub fn due_journey_read(conn: &Connection, now: Millis) -> Result<Option<JourneyRead>, StoreError> {
    conn.prepare_cached(&format!(
        "SELECT {READ_COLUMNS} FROM journey_reads r
         WHERE due_at <= ?1 AND EXISTS (SELECT 1 FROM journeys j WHERE j.key = r.journey_key AND j.status = 'live')
         ORDER BY due_at LIMIT 1"
    ))
    .and_then(|mut s| s.query_row([now], read_row).optional())
    .map_err(unavailable)
}

pub fn save_journey_read(tx: &Transaction<'_>, read: &JourneyRead) -> Result<(), StoreError> {
    tx.prepare_cached(&format!(
        "INSERT INTO journey_reads ({READ_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
         ON CONFLICT (journey_key) DO UPDATE SET due_at = excluded.due_at,
             started_at = excluded.started_at, after_profile = excluded.after_profile,
             members_read = excluded.members_read, excluded = excluded.excluded,
             last_finished_at = excluded.last_finished_at, last_read = excluded.last_read,
             last_excluded = excluded.last_excluded"
    ))
    .and_then(|mut s| {
        s.execute(params![
            read.journey,
            read.due_at,
            read.started_at,
            read.after,
            read.read as i64,
            read.excluded as i64,
            read.last_finished_at,
            read.last_read as i64,
            read.last_excluded as i64
        ])
    })
    .map_err(unavailable)?;
    Ok(())
}

/// Publishing decides the journey's reads (`JourneyRead::after_publish`).
pub fn after_publish(
    tx: &Transaction<'_>,
    key: &str,
    draft: &Value,
    now: Millis,
) -> Result<(), StoreError> {
    let reads = match serde_json::from_value::<Journey>(draft.clone()) {
        Ok(journey) => JourneyRead::after_publish(journey_read(tx, key)?, &journey, now),
        Err(_) => None,
    };
    match reads {
        Some(read) => save_journey_read(tx, &read),
        None => tx
            .execute("DELETE FROM journey_reads WHERE journey_key = ?1", [key])
            .map(|_| ())
            .map_err(unavailable),
    }
}
