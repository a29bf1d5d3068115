//! Read and dismissed marks of in-app messages on SQLite.

use rusqlite::{Connection, OptionalExtension, Transaction, params};
use waymark_core::time::Millis;
use waymark_store::StoreError;

use crate::unavailable;

pub fn mark_inbox(
    tx: &Transaction<'_>,
    key: &str,
    profile_id: &str,
    read: bool,
    dismissed: bool,
    now: Millis,
) -> Result<waymark_store::InboxMark, StoreError> {
    let (read_at, dismissed_at) = (read.then_some(now), dismissed.then_some(now));
    tx.prepare_cached(
        "INSERT INTO inbox_marks (key, profile_id, read_at, dismissed_at) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (key) DO UPDATE SET read_at = coalesce(read_at, ?3),
             dismissed_at = coalesce(dismissed_at, ?4)",
    )
    .and_then(|mut s| s.execute(params![key, profile_id, read_at, dismissed_at]))
    .map_err(unavailable)?;
    let marks = inbox_marks(tx, &[key.to_owned()])?;
    Ok(marks.get(key).copied().unwrap_or_default())
}

pub fn inbox_marks(
    conn: &Connection,
    keys: &[String],
) -> Result<std::collections::HashMap<String, waymark_store::InboxMark>, StoreError> {
    let mut stmt = conn
        .prepare_cached("SELECT read_at, dismissed_at FROM inbox_marks WHERE key = ?1")
        .map_err(unavailable)?;
    let mut out = std::collections::HashMap::new();
    for key in keys {
        if let Some(mark) = stmt
            .query_row([key], |r| {
                Ok(waymark_store::InboxMark {
                    read_at: r.get(0)?,
                    dismissed_at: r.get(1)?,
                })
            })
            .optional()
            .map_err(unavailable)?
        {
            out.insert(key.clone(), mark);
        }
    }
    Ok(out)
}
