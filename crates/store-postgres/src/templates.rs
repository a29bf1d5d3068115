//! Message templates on PostgreSQL: every changed document is a new immutable version.
//! A put holds a transaction-scoped advisory lock on the key, so concurrent puts number
//! versions without gaps or duplicates.

use deadpool_postgres::GenericClient;
use serde_json::Value;
use waymark_core::time::Millis;
use waymark_store::{JourneyVersion, StoreError, TemplateRecord};

use crate::db_error;

fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("template: {e}"))
}

pub async fn read(
    client: &impl GenericClient,
    key: &str,
) -> Result<Option<TemplateRecord>, StoreError> {
    let rows = client
        .query(
            "SELECT version, channel, document::text, created_at FROM templates WHERE key = $1 ORDER BY version",
            &[&key],
        )
        .await
        .map_err(db_error)?;
    let (Some(first), Some(newest)) = (rows.first(), rows.last()) else {
        return Ok(None);
    };
    Ok(Some(TemplateRecord {
        key: key.to_owned(),
        channel: newest.get(1),
        version: newest.get::<_, i32>(0) as u32,
        document: serde_json::from_str(&newest.get::<_, String>(2)).map_err(corrupt)?,
        versions: rows
            .iter()
            .map(|r| JourneyVersion {
                version: r.get::<_, i32>(0) as u32,
                published_at: r.get(3),
            })
            .collect(),
        created_at: first.get(3),
        updated_at: newest.get(3),
    }))
}

pub async fn list(client: &impl GenericClient) -> Result<Vec<TemplateRecord>, StoreError> {
    let keys = client
        .query("SELECT DISTINCT key FROM templates ORDER BY key", &[])
        .await
        .map_err(db_error)?;
    let mut out = Vec::with_capacity(keys.len());
    for row in keys {
        out.extend(read(client, row.get(0)).await?);
    }
    Ok(out)
}

pub async fn version(
    client: &impl GenericClient,
    key: &str,
    version: u32,
) -> Result<Option<Value>, StoreError> {
    let row = client
        .query_opt(
            "SELECT document::text FROM templates WHERE key = $1 AND version = $2",
            &[&key, &(version as i32)],
        )
        .await
        .map_err(db_error)?;
    row.map(|r| serde_json::from_str(&r.get::<_, String>(0)).map_err(corrupt))
        .transpose()
}

pub async fn put(
    client: &mut deadpool_postgres::Client,
    key: &str,
    document: &Value,
    now: Millis,
) -> Result<(TemplateRecord, bool), StoreError> {
    let tx = client.transaction().await.map_err(db_error)?;
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended('template:' || $1, 0))",
        &[&key],
    )
    .await
    .map_err(db_error)?;
    let newest = read(&tx, key).await?;
    let created = newest.as_ref().map(|r| &r.document) != Some(document);
    if created {
        let next = newest.map_or(1, |r| r.version + 1) as i32;
        let channel = document["channel"].as_str().unwrap_or_default();
        tx.execute(
            "INSERT INTO templates (key, version, channel, document, created_at) VALUES ($1, $2, $3, $4::text::jsonb, $5)",
            &[&key, &next, &channel, &document.to_string(), &now],
        )
        .await
        .map_err(db_error)?;
    }
    let record = read(&tx, key)
        .await?
        .ok_or_else(|| corrupt("vanished after insert"))?;
    tx.commit().await.map_err(db_error)?;
    Ok((record, created))
}
