//! Journey definitions on PostgreSQL: drafts, immutable versions, lifecycle status.
//! Writes lock the journey's row (`FOR UPDATE`), so concurrent publishes number versions
//! without gaps or duplicates.

use deadpool_postgres::GenericClient;
use serde_json::Value;
use waymark_core::journey::lifecycle::{Action, Status, transition};
use waymark_core::time::Millis;
use waymark_store::{JourneyRecord, JourneyVersion, StoreError, Transition};

use crate::db_error;

fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("journey: {e}"))
}

fn parse(text: &str) -> Result<Value, StoreError> {
    serde_json::from_str(text).map_err(corrupt)
}

pub async fn read(
    client: &impl GenericClient,
    key: &str,
    lock: bool,
) -> Result<Option<JourneyRecord>, StoreError> {
    let sql = if lock {
        "SELECT status, draft::text, draft_updated_at, live_version, created_at, updated_at FROM journeys WHERE key = $1 FOR UPDATE"
    } else {
        "SELECT status, draft::text, draft_updated_at, live_version, created_at, updated_at FROM journeys WHERE key = $1"
    };
    let Some(row) = client.query_opt(sql, &[&key]).await.map_err(db_error)? else {
        return Ok(None);
    };
    let status: String = row.get(0);
    let versions = client
        .query(
            "SELECT version, published_at FROM journey_versions WHERE key = $1 ORDER BY version",
            &[&key],
        )
        .await
        .map_err(db_error)?
        .into_iter()
        .map(|r| JourneyVersion {
            version: r.get::<_, i32>(0) as u32,
            published_at: r.get(1),
        })
        .collect();
    Ok(Some(JourneyRecord {
        key: key.to_owned(),
        status: Status::parse(&status)
            .ok_or_else(|| corrupt(format!("unknown status {status:?}")))?,
        draft: parse(&row.get::<_, String>(1))?,
        draft_updated_at: row.get(2),
        live_version: row.get::<_, Option<i32>>(3).map(|v| v as u32),
        versions,
        created_at: row.get(4),
        updated_at: row.get(5),
        read: crate::reads::journey_read(client, key, false)
            .await
            .map_err(db_error)?
            .map(Box::new),
    }))
}

pub async fn list(client: &impl GenericClient) -> Result<Vec<JourneyRecord>, StoreError> {
    let keys: Vec<String> = client
        .query("SELECT key FROM journeys ORDER BY key", &[])
        .await
        .map_err(db_error)?
        .into_iter()
        .map(|r| r.get(0))
        .collect();
    let mut out = Vec::with_capacity(keys.len());
    for key in keys {
        out.extend(read(client, &key, false).await?);
    }
    Ok(out)
}

pub async fn put_draft(
    client: &impl GenericClient,
    key: &str,
    document: &Value,
    now: Millis,
) -> Result<JourneyRecord, StoreError> {
    client
        .execute(
            "INSERT INTO journeys (key, status, draft, draft_updated_at, live_version, created_at, updated_at)
             VALUES ($1, 'draft', $2::text::jsonb, $3, NULL, $3, $3)
             ON CONFLICT (key) DO UPDATE SET draft = excluded.draft, draft_updated_at = excluded.draft_updated_at, updated_at = excluded.updated_at",
            &[&key, &document.to_string(), &now],
        )
        .await
        .map_err(db_error)?;
    read(client, key, false)
        .await?
        .ok_or_else(|| corrupt("vanished after insert"))
}

pub async fn publish(
    client: &impl GenericClient,
    key: &str,
    now: Millis,
) -> Result<Option<(JourneyRecord, bool)>, StoreError> {
    let Some(record) = read(client, key, true).await? else {
        return Ok(None);
    };
    let newest = match record.live_version {
        Some(v) => crate::runs::version(client, key, v).await?,
        None => None,
    };
    let created = newest.as_ref() != Some(&record.draft);
    let live = if created {
        let next = record.live_version.unwrap_or(0) + 1;
        client
            .execute(
                "INSERT INTO journey_versions (key, version, document, published_at) VALUES ($1, $2, $3::text::jsonb, $4)",
                &[&key, &(next as i32), &record.draft.to_string(), &now],
            )
            .await
            .map_err(db_error)?;
        next
    } else {
        record.live_version.unwrap_or(1)
    };
    client
        .execute(
            "UPDATE journeys SET status = 'live', live_version = $2, updated_at = $3, entry_rate_limit = $4 WHERE key = $1",
            &[&key, &(live as i32), &now, &waymark_engine::run::entry_rate_limit(&record.draft).map(|l| l as i32)],
        )
        .await
        .map_err(db_error)?;
    crate::reads::after_publish(client, key, &record.draft, now).await?;
    Ok(read(client, key, false).await?.map(|r| (r, created)))
}

pub async fn change_status(
    client: &impl GenericClient,
    key: &str,
    action: Action,
    now: Millis,
) -> Result<Option<Transition>, StoreError> {
    let Some(record) = read(client, key, true).await? else {
        return Ok(None);
    };
    match transition(record.status, action) {
        Err(reason) => Ok(Some(Transition::Refused {
            status: record.status,
            reason,
        })),
        Ok(next) => {
            client
                .execute(
                    "UPDATE journeys SET status = $2, updated_at = $3 WHERE key = $1",
                    &[&key, &next.as_str(), &now],
                )
                .await
                .map_err(db_error)?;
            crate::runs::follow_status(client, key, record.status, next, now).await?;
            Ok(read(client, key, false).await?.map(Transition::Done))
        }
    }
}
