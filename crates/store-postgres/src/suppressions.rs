//! The suppression list on PostgreSQL. Each write is one statement (an upsert), so
//! concurrent bounces for the same address count correctly without explicit locks.

use deadpool_postgres::GenericClient;
use tokio_postgres::Row;
use waymark_core::time::Millis;
use waymark_store::{StoreError, Suppression};

use crate::db_error;

const COLUMNS: &str =
    "channel, address, suppressed, reason, detail, soft_bounces, created_at, updated_at";

fn suppression(r: &Row) -> Suppression {
    Suppression {
        channel: r.get(0),
        address: r.get(1),
        suppressed: r.get(2),
        reason: r.get(3),
        detail: r.get(4),
        soft_bounces: r.get::<_, i32>(5) as u32,
        created_at: r.get(6),
        updated_at: r.get(7),
    }
}

pub async fn suppress(
    client: &impl GenericClient,
    channel: &str,
    address: &str,
    reason: &str,
    detail: &str,
    now: Millis,
) -> Result<(), StoreError> {
    client
        .execute(
            "INSERT INTO suppressions (channel, address, suppressed, reason, detail, soft_bounces, created_at, updated_at)
             VALUES ($1, $2, true, $3, $4, 0, $5, $5)
             ON CONFLICT (channel, address) DO UPDATE SET suppressed = true, reason = $3, detail = $4, updated_at = $5",
            &[&channel, &address, &reason, &detail, &now],
        )
        .await
        .map_err(db_error)?;
    Ok(())
}

pub async fn soft_bounce(
    client: &impl GenericClient,
    channel: &str,
    address: &str,
    detail: &str,
    limit: u32,
    now: Millis,
) -> Result<Suppression, StoreError> {
    let limit = i32::try_from(limit).unwrap_or(i32::MAX);
    let row = client
        .query_one(
            &format!(
                "INSERT INTO suppressions AS s (channel, address, suppressed, reason, detail, soft_bounces, created_at, updated_at)
                 VALUES ($1, $2, $5 <= 1, CASE WHEN $5 <= 1 THEN 'soft_bounces' ELSE '' END, $3, 1, $4, $4)
                 ON CONFLICT (channel, address) DO UPDATE SET
                     soft_bounces = s.soft_bounces + 1,
                     detail = $3,
                     updated_at = $4,
                     reason = CASE WHEN NOT s.suppressed AND s.soft_bounces + 1 >= $5 THEN 'soft_bounces' ELSE s.reason END,
                     suppressed = s.suppressed OR s.soft_bounces + 1 >= $5
                 RETURNING {COLUMNS}"
            ),
            &[&channel, &address, &detail, &now, &limit],
        )
        .await
        .map_err(db_error)?;
    Ok(suppression(&row))
}

pub async fn unsuppress(
    client: &impl GenericClient,
    channel: &str,
    address: &str,
) -> Result<bool, StoreError> {
    let n = client
        .execute(
            "DELETE FROM suppressions WHERE channel = $1 AND address = $2",
            &[&channel, &address],
        )
        .await
        .map_err(db_error)?;
    Ok(n > 0)
}

pub async fn read(
    client: &impl GenericClient,
    channel: &str,
    address: &str,
) -> Result<Option<Suppression>, StoreError> {
    let row = client
        .query_opt(
            &format!("SELECT {COLUMNS} FROM suppressions WHERE channel = $1 AND address = $2"),
            &[&channel, &address],
        )
        .await
        .map_err(db_error)?;
    Ok(row.as_ref().map(suppression))
}

pub async fn list(
    client: &impl GenericClient,
    channel: Option<&str>,
    after: Option<(&str, &str)>,
    limit: u32,
) -> Result<Vec<Suppression>, StoreError> {
    let (after_channel, after_address) = after.unwrap_or(("", ""));
    let rows = client
        .query(
            &format!(
                "SELECT {COLUMNS} FROM suppressions
                 WHERE ($1::text IS NULL OR channel = $1) AND (channel, address) > ($2, $3)
                 ORDER BY channel, address LIMIT $4"
            ),
            &[&channel, &after_channel, &after_address, &i64::from(limit)],
        )
        .await
        .map_err(db_error)?;
    Ok(rows.iter().map(suppression).collect())
}
