//! Read and dismissed marks of in-app messages on PostgreSQL.

use deadpool_postgres::GenericClient;
use waymark_core::time::Millis;
use waymark_store::StoreError;

use crate::db_error;

pub async fn mark_inbox(
    client: &impl GenericClient,
    key: &str,
    profile_id: &str,
    read: bool,
    dismissed: bool,
    now: Millis,
) -> Result<waymark_store::InboxMark, StoreError> {
    let (read_at, dismissed_at) = (read.then_some(now), dismissed.then_some(now));
    let row = client
        .query_one(
            "INSERT INTO inbox_marks AS m (key, profile_id, read_at, dismissed_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (key) DO UPDATE SET read_at = coalesce(m.read_at, $3),
                 dismissed_at = coalesce(m.dismissed_at, $4)
             RETURNING read_at, dismissed_at",
            &[&key, &profile_id, &read_at, &dismissed_at],
        )
        .await
        .map_err(db_error)?;
    Ok(waymark_store::InboxMark {
        read_at: row.get(0),
        dismissed_at: row.get(1),
    })
}

pub async fn inbox_marks(
    client: &impl GenericClient,
    keys: &[String],
) -> Result<std::collections::HashMap<String, waymark_store::InboxMark>, StoreError> {
    let rows = client
        .query(
            "SELECT key, read_at, dismissed_at FROM inbox_marks WHERE key = ANY($1)",
            &[&keys],
        )
        .await
        .map_err(db_error)?;
    Ok(rows
        .iter()
        .map(|r| {
            (
                r.get(0),
                waymark_store::InboxMark {
                    read_at: r.get(1),
                    dismissed_at: r.get(2),
                },
            )
        })
        .collect())
}
