//! Documents kept as immutable versions (templates, audiences, the decisioning catalogue)
//! on SQLite: a changed document
//! is a new version, and the newest is the one used.

use rusqlite::{Connection, Transaction, params};
use serde_json::Value;
use waymark_core::time::Millis;
use waymark_store::{JourneyVersion, StoreError, Versions};

use crate::unavailable;

/// Which kind of versioned document, and so which table.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    /// `templates`, which also keeps each version's channel.
    Template,
    Audience,
    /// The decisioning catalogue, a table per kind of document.
    Catalogue(waymark_core::decisioning::Kind),
}

impl Kind {
    fn table(self) -> &'static str {
        match self {
            Kind::Template => "templates",
            Kind::Audience => "audiences",
            Kind::Catalogue(kind) => catalogue_table(kind),
        }
    }

    fn corrupt(self, e: impl std::fmt::Display) -> StoreError {
        StoreError::Corrupt(format!("{}: {e}", self.table()))
    }
}

/// The table of a kind of catalogue document.
pub fn catalogue_table(kind: waymark_core::decisioning::Kind) -> &'static str {
    use waymark_core::decisioning::Kind as Doc;
    match kind {
        Doc::Offer => "offers",
        Doc::Placement => "placements",
        Doc::Collection => "collections",
        Doc::Policy => "decision_policies",
    }
}

pub fn read(conn: &Connection, kind: Kind, key: &str) -> Result<Option<Versions>, StoreError> {
    let sql = format!(
        "SELECT version, document, created_at FROM {} WHERE key = ?1 ORDER BY version",
        kind.table()
    );
    let rows: Vec<(i64, String, i64)> = conn
        .prepare_cached(&sql)
        .and_then(|mut s| {
            s.query_map([key], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect()
        })
        .map_err(unavailable)?;
    let (Some(first), Some(newest)) = (rows.first(), rows.last()) else {
        return Ok(None);
    };
    Ok(Some(Versions {
        version: newest.0 as u32,
        document: serde_json::from_str(&newest.1).map_err(|e| kind.corrupt(e))?,
        versions: rows
            .iter()
            .map(|r| JourneyVersion {
                version: r.0 as u32,
                published_at: r.2,
            })
            .collect(),
        created_at: first.2,
        updated_at: newest.2,
    }))
}

/// Every key, in order.
pub fn keys(conn: &Connection, kind: Kind) -> Result<Vec<String>, StoreError> {
    let sql = format!("SELECT DISTINCT key FROM {} ORDER BY key", kind.table());
    conn.prepare_cached(&sql)
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
        .map_err(unavailable)
}

pub fn version(
    conn: &Connection,
    kind: Kind,
    key: &str,
    version: u32,
) -> Result<Option<Value>, StoreError> {
    let sql = format!(
        "SELECT document FROM {} WHERE key = ?1 AND version = ?2",
        kind.table()
    );
    let doc: Option<String> = conn
        .prepare_cached(&sql)
        .and_then(|mut s| {
            let mut rows = s.query(params![key, i64::from(version)])?;
            rows.next()?.map(|r| r.get(0)).transpose()
        })
        .map_err(unavailable)?;
    doc.map(|d| serde_json::from_str(&d).map_err(|e| kind.corrupt(e)))
        .transpose()
}

/// The newest version of every key.
pub fn newest(conn: &Connection, kind: Kind) -> Result<Vec<(String, u32)>, StoreError> {
    let sql = format!(
        "SELECT key, max(version) FROM {} GROUP BY key ORDER BY key",
        kind.table()
    );
    conn.prepare_cached(&sql)
        .and_then(|mut s| {
            s.query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u32)))?
                .collect()
        })
        .map_err(unavailable)
}

/// Stores the document as the next version if it differs from the newest; returns the
/// versions and whether one was created.
pub fn put(
    tx: &Transaction<'_>,
    kind: Kind,
    key: &str,
    document: &Value,
    now: Millis,
) -> Result<(Versions, bool), StoreError> {
    let newest = read(tx, kind, key)?;
    let created = newest.as_ref().map(|r| &r.document) != Some(document);
    if created {
        let next = i64::from(newest.map_or(1, |r| r.version + 1));
        let body = document.to_string();
        match kind {
            Kind::Template => tx.execute(
                "INSERT INTO templates (key, version, channel, document, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![key, next, document["channel"].as_str().unwrap_or_default(), body, now],
            ),
            Kind::Audience | Kind::Catalogue(_) => tx.execute(
                &format!(
                    "INSERT INTO {} (key, version, document, created_at) VALUES (?1, ?2, ?3, ?4)",
                    kind.table()
                ),
                params![key, next, body, now],
            ),
        }
        .map_err(unavailable)?;
    }
    let versions = read(tx, kind, key)?.ok_or_else(|| kind.corrupt("vanished after insert"))?;
    Ok((versions, created))
}
