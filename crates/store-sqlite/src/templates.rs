//! Message templates on SQLite: every changed document is a new immutable version.

use rusqlite::{Connection, Transaction, params};
use serde_json::Value;
use waymark_core::time::Millis;
use waymark_store::{JourneyVersion, StoreError, TemplateRecord};

use crate::unavailable;

fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("template: {e}"))
}

pub fn read(conn: &Connection, key: &str) -> Result<Option<TemplateRecord>, StoreError> {
    let rows: Vec<(i64, String, String, i64)> = conn
        .prepare_cached(
            "SELECT version, channel, document, created_at FROM templates WHERE key = ?1 ORDER BY version",
        )
        .and_then(|mut s| {
            s.query_map([key], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
                .collect()
        })
        .map_err(unavailable)?;
    let (Some(first), Some(newest)) = (rows.first(), rows.last()) else {
        return Ok(None);
    };
    Ok(Some(TemplateRecord {
        key: key.to_owned(),
        channel: newest.1.clone(),
        version: newest.0 as u32,
        document: serde_json::from_str(&newest.2).map_err(corrupt)?,
        versions: rows
            .iter()
            .map(|r| JourneyVersion {
                version: r.0 as u32,
                published_at: r.3,
            })
            .collect(),
        created_at: first.3,
        updated_at: newest.3,
    }))
}

pub fn list(conn: &Connection) -> Result<Vec<TemplateRecord>, StoreError> {
    let keys: Vec<String> = conn
        .prepare_cached("SELECT DISTINCT key FROM templates ORDER BY key")
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
        .map_err(unavailable)?;
    let mut out = Vec::with_capacity(keys.len());
    for key in keys {
        out.extend(read(conn, &key)?);
    }
    Ok(out)
}

pub fn version(conn: &Connection, key: &str, version: u32) -> Result<Option<Value>, StoreError> {
    let doc: Option<String> = conn
        .prepare_cached("SELECT document FROM templates WHERE key = ?1 AND version = ?2")
        .and_then(|mut s| {
            let mut rows = s.query(params![key, i64::from(version)])?;
            rows.next()?.map(|r| r.get(0)).transpose()
        })
        .map_err(unavailable)?;
    doc.map(|d| serde_json::from_str(&d).map_err(corrupt))
        .transpose()
}

pub fn put(
    tx: &Transaction<'_>,
    key: &str,
    document: &Value,
    now: Millis,
) -> Result<(TemplateRecord, bool), StoreError> {
    let newest = read(tx, key)?;
    let created = newest.as_ref().map(|r| &r.document) != Some(document);
    if created {
        let next = newest.map_or(1, |r| r.version + 1);
        let channel = document["channel"].as_str().unwrap_or_default();
        tx.execute(
            "INSERT INTO templates (key, version, channel, document, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![key, i64::from(next), channel, document.to_string(), now],
        )
        .map_err(unavailable)?;
    }
    let record = read(tx, key)?.ok_or_else(|| corrupt("vanished after insert"))?;
    Ok((record, created))
}
