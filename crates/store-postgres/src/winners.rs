//! Winner nodes' decisions on PostgreSQL: one row per (journey, node), written once (a
//! second transaction deciding at the same moment keeps nothing and reads the first's).
//! When and how a winner is decided is `waymark_store::pipeline`'s and
//! `waymark_engine::winner`'s.

use deadpool_postgres::GenericClient;
use waymark_core::time::Millis;
use waymark_engine::winner::Decision;
use waymark_store::{StoreError, WinnerRecord};

use crate::db_error;

/// The path a winner node decided, if it did.
pub async fn decision(
    client: &impl GenericClient,
    journey: &str,
    node: &str,
) -> Result<Option<String>, StoreError> {
    let row = client
        .query_opt(
            "SELECT chosen FROM journey_winners WHERE journey_key = $1 AND node = $2",
            &[&journey, &node],
        )
        .await
        .map_err(db_error)?;
    Ok(row.map(|r| r.get(0)))
}

/// Keeps a decision unless the node has one; returns whether it was kept.
pub async fn save(
    client: &impl GenericClient,
    journey: &str,
    node: &str,
    decision: &Decision,
    now: Millis,
) -> Result<bool, StoreError> {
    let document =
        serde_json::to_string(decision).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let n = client
        .execute(
            "INSERT INTO journey_winners (journey_key, node, chosen, decision, decided_at)
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
            &[&journey, &node, &decision.chosen, &document, &now],
        )
        .await
        .map_err(db_error)?;
    Ok(n == 1)
}

/// Every decision of a journey's winner nodes.
pub async fn decisions(
    client: &impl GenericClient,
    journey: &str,
) -> Result<Vec<WinnerRecord>, StoreError> {
    let rows = client
        .query(
            "SELECT node, decision, decided_at FROM journey_winners WHERE journey_key = $1 ORDER BY node",
            &[&journey],
        )
        .await
        .map_err(db_error)?;
    rows.iter()
        .map(|r| {
            Ok(WinnerRecord {
                node: r.get(0),
                decision: serde_json::from_str(r.get::<_, &str>(1))
                    .map_err(|e| StoreError::Corrupt(format!("winner decision: {e}")))?,
                decided_at: r.get(2),
            })
        })
        .collect()
}
