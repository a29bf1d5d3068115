//! Message templates on SQLite: every changed document is a new immutable version.

use rusqlite::{Connection, Transaction};
use serde_json::Value;
use waymark_core::time::Millis;
use waymark_store::{StoreError, TemplateRecord};

use crate::versioned::{self, Kind};

pub fn read(conn: &Connection, key: &str) -> Result<Option<TemplateRecord>, StoreError> {
    Ok(versioned::read(conn, Kind::Template, key)?.map(|v| v.into_template(key)))
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
    Ok((versions.into_template(key), created))
}
