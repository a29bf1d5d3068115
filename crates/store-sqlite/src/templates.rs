//! Message templates on SQLite: every changed document is a new immutable version.

use rusqlite::{Connection, Transaction};
use serde_json::Value;
use waymark_core::time::Millis;
use waymark_store::{StoreError, TemplateRecord};

use crate::versioned::{self, Kind, Versions};

fn record(key: &str, v: Versions) -> TemplateRecord {
    TemplateRecord {
        key: key.to_owned(),
        channel: v.document["channel"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        version: v.version,
        document: v.document,
        versions: v.versions,
        created_at: v.created_at,
        updated_at: v.updated_at,
    }
}

pub fn read(conn: &Connection, key: &str) -> Result<Option<TemplateRecord>, StoreError> {
    Ok(versioned::read(conn, Kind::Template, key)?.map(|v| record(key, v)))
}

pub fn list(conn: &Connection) -> Result<Vec<TemplateRecord>, StoreError> {
    let mut out = Vec::new();
    for key in versioned::keys(conn, Kind::Template)? {
        out.extend(read(conn, &key)?);
    }
    Ok(out)
}

pub fn version(conn: &Connection, key: &str, version: u32) -> Result<Option<Value>, StoreError> {
    versioned::version(conn, Kind::Template, key, version)
}

pub fn put(
    tx: &Transaction<'_>,
    key: &str,
    document: &Value,
    now: Millis,
) -> Result<(TemplateRecord, bool), StoreError> {
    let (versions, created) = versioned::put(tx, Kind::Template, key, document, now)?;
    Ok((record(key, versions), created))
}
