//! Winner nodes' decisions on SQLite: one row per (journey, node), written once. When and
//! how a winner is decided is `waymark_store::pipeline`'s and `waymark_engine::winner`'s.

use rusqlite::{Connection, OptionalExtension, Transaction, params};
use waymark_core::time::Millis;
use waymark_engine::winner::Decision;
use waymark_store::{StoreError, WinnerRecord};

use crate::unavailable;

/// The path a winner node decided, if it did.
pub fn decision(
    conn: &Connection,
    journey: &str,
    node: &str,
) -> Result<Option<String>, StoreError> {
    conn.prepare_cached("SELECT chosen FROM journey_winners WHERE journey_key = ?1 AND node = ?2")
        .and_then(|mut s| s.query_row(params![journey, node], |r| r.get(0)).optional())
        .map_err(unavailable)
}

/// Keeps a decision unless the node has one; returns whether it was kept.
pub fn save(
    tx: &Transaction<'_>,
    journey: &str,
    node: &str,
    decision: &Decision,
    now: Millis,
) -> Result<bool, StoreError> {
    let document =
        serde_json::to_string(decision).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let n = tx
        .prepare_cached(
            "INSERT INTO journey_winners (journey_key, node, chosen, decision, decided_at)
             VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT DO NOTHING",
        )
        .and_then(|mut s| s.execute(params![journey, node, decision.chosen, document, now]))
        .map_err(unavailable)?;
    Ok(n == 1)
}

/// Every decision of a journey's winner nodes.
pub fn decisions(conn: &Connection, journey: &str) -> Result<Vec<WinnerRecord>, StoreError> {
    let rows: Vec<(String, String, Millis)> = conn
        .prepare_cached(
            "SELECT node, decision, decided_at FROM journey_winners WHERE journey_key = ?1 ORDER BY node",
        )
        .and_then(|mut s| {
            s.query_map([journey], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect::<Result<_, _>>()
        })
        .map_err(unavailable)?;
    rows.into_iter()
        .map(|(node, decision, decided_at)| {
            Ok(WinnerRecord {
                node,
                decision: serde_json::from_str(&decision)
                    .map_err(|e| StoreError::Corrupt(format!("winner decision: {e}")))?,
                decided_at,
            })
        })
        .collect()
}
