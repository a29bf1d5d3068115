//! The suppression list on SQLite.

use rusqlite::{Connection, OptionalExtension, Transaction, params};
use waymark_core::time::Millis;
use waymark_store::{StoreError, Suppression};

use crate::unavailable;

const COLUMNS: &str =
    "channel, address, suppressed, reason, detail, soft_bounces, created_at, updated_at";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Suppression> {
    Ok(Suppression {
        channel: r.get(0)?,
        address: r.get(1)?,
        suppressed: r.get(2)?,
        reason: r.get(3)?,
        detail: r.get(4)?,
        soft_bounces: r.get::<_, i64>(5)? as u32,
        created_at: r.get(6)?,
        updated_at: r.get(7)?,
    })
}

pub fn suppress(
    tx: &Transaction<'_>,
    channel: &str,
    address: &str,
    reason: &str,
    detail: &str,
    now: Millis,
) -> Result<(), StoreError> {
    tx.prepare_cached(
        "INSERT INTO suppressions (address, channel, suppressed, reason, detail, soft_bounces, created_at, updated_at)
         VALUES (?1, ?2, 1, ?3, ?4, 0, ?5, ?5)
         ON CONFLICT (address, channel) DO UPDATE SET suppressed = 1, reason = ?3, detail = ?4, updated_at = ?5",
    )
    .and_then(|mut s| s.execute(params![address, channel, reason, detail, now]))
    .map_err(unavailable)?;
    Ok(())
}

pub fn soft_bounce(
    tx: &Transaction<'_>,
    channel: &str,
    address: &str,
    detail: &str,
    limit: u32,
    now: Millis,
) -> Result<Suppression, StoreError> {
    // Once at the limit the address is suppressed; an address already suppressed for
    // another reason keeps that reason.
    tx.prepare_cached(
        "INSERT INTO suppressions (address, channel, suppressed, reason, detail, soft_bounces, created_at, updated_at)
         VALUES (?1, ?2, ?5 <= 1, CASE WHEN ?5 <= 1 THEN 'soft_bounces' ELSE '' END, ?3, 1, ?4, ?4)
         ON CONFLICT (address, channel) DO UPDATE SET
             soft_bounces = soft_bounces + 1,
             detail = ?3,
             updated_at = ?4,
             reason = CASE WHEN suppressed = 0 AND soft_bounces + 1 >= ?5 THEN 'soft_bounces' ELSE reason END,
             suppressed = suppressed OR soft_bounces + 1 >= ?5",
    )
    .and_then(|mut s| s.execute(params![address, channel, detail, now, i64::from(limit)]))
    .map_err(unavailable)?;
    read(tx, channel, address)?
        .ok_or_else(|| StoreError::Corrupt("suppression row vanished".into()))
}

pub fn unsuppress(tx: &Transaction<'_>, channel: &str, address: &str) -> Result<bool, StoreError> {
    let n = tx
        .execute(
            "DELETE FROM suppressions WHERE address = ?1 AND channel = ?2",
            params![address, channel],
        )
        .map_err(unavailable)?;
    Ok(n > 0)
}

pub fn read(
    conn: &Connection,
    channel: &str,
    address: &str,
) -> Result<Option<Suppression>, StoreError> {
    conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM suppressions WHERE address = ?1 AND channel = ?2"
    ))
    .and_then(|mut s| s.query_row(params![address, channel], row).optional())
    .map_err(unavailable)
}

pub fn list(
    conn: &Connection,
    channel: Option<&str>,
    after: Option<(&str, &str)>,
    limit: u32,
) -> Result<Vec<Suppression>, StoreError> {
    let (after_channel, after_address) = after.unwrap_or(("", ""));
    conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM suppressions
         WHERE (?1 IS NULL OR channel = ?1) AND (channel, address) > (?2, ?3)
         ORDER BY channel, address LIMIT ?4"
    ))
    .and_then(|mut s| {
        s.query_map(
            params![channel, after_channel, after_address, i64::from(limit)],
            row,
        )?
        .collect()
    })
    .map_err(unavailable)
}

/// The suppressed addresses among `addresses`, for a plan.
pub fn listed(
    conn: &Connection,
    addresses: &[(&'static str, String)],
    out: &mut std::collections::HashMap<(String, String), String>,
) -> Result<(), StoreError> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT reason FROM suppressions WHERE address = ?1 AND channel = ?2 AND suppressed = 1",
        )
        .map_err(unavailable)?;
    for (channel, address) in addresses {
        let key = ((*channel).to_owned(), address.clone());
        if out.contains_key(&key) {
            continue;
        }
        if let Some(reason) = stmt
            .query_row(params![address, channel], |r| r.get::<_, String>(0))
            .optional()
            .map_err(unavailable)?
        {
            out.insert(key, reason);
        }
    }
    Ok(())
}
