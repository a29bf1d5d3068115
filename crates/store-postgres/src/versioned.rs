//! Documents kept as immutable versions (templates, audiences, the decisioning catalogue)
//! on PostgreSQL: a changed
//! document is a new version, and the newest is the one used. A put holds a
//! transaction-scoped advisory lock on the key, so concurrent puts number versions without
//! gaps or duplicates.

use deadpool_postgres::GenericClient;
use serde_json::Value;
use waymark_core::time::Millis;
use waymark_store::{JourneyVersion, StoreError, Versions};

use crate::db_error;

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

    /// The advisory lock's namespace (kept as it was for templates).
    fn lock(self) -> &'static str {
        match self {
            Kind::Template => "template:",
            Kind::Audience => "audience:",
            Kind::Catalogue(_) => "catalogue:",
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

pub async fn read(
    client: &impl GenericClient,
    kind: Kind,
    key: &str,
) -> Result<Option<Versions>, StoreError> {
    let sql = format!(
        "SELECT version, document::text, created_at FROM {} WHERE key = $1 ORDER BY version",
        kind.table()
    );
    let rows = client.query(&sql, &[&key]).await.map_err(db_error)?;
    let (Some(first), Some(newest)) = (rows.first(), rows.last()) else {
        return Ok(None);
    };
    Ok(Some(Versions {
        version: newest.get::<_, i32>(0) as u32,
        document: serde_json::from_str(&newest.get::<_, String>(1)).map_err(|e| kind.corrupt(e))?,
        versions: rows
            .iter()
            .map(|r| JourneyVersion {
                version: r.get::<_, i32>(0) as u32,
                published_at: r.get(2),
            })
            .collect(),
        created_at: first.get(2),
        updated_at: newest.get(2),
    }))
}

/// Every key, in order.
pub async fn keys(client: &impl GenericClient, kind: Kind) -> Result<Vec<String>, StoreError> {
    let sql = format!("SELECT DISTINCT key FROM {} ORDER BY key", kind.table());
    let rows = client.query(&sql, &[]).await.map_err(db_error)?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

pub async fn version(
    client: &impl GenericClient,
    kind: Kind,
    key: &str,
    version: u32,
) -> Result<Option<Value>, StoreError> {
    let sql = format!(
        "SELECT document::text FROM {} WHERE key = $1 AND version = $2",
        kind.table()
    );
    let row = client
        .query_opt(&sql, &[&key, &(version as i32)])
        .await
        .map_err(db_error)?;
    row.map(|r| serde_json::from_str(&r.get::<_, String>(0)).map_err(|e| kind.corrupt(e)))
        .transpose()
}

/// The newest version of every key.
pub async fn newest(
    client: &impl GenericClient,
    kind: Kind,
) -> Result<Vec<(String, u32)>, tokio_postgres::Error> {
    let sql = format!(
        "SELECT key, max(version) FROM {} GROUP BY key ORDER BY key",
        kind.table()
    );
    let rows = client.query(&sql, &[]).await?;
    Ok(rows
        .iter()
        .map(|r| (r.get(0), r.get::<_, i32>(1) as u32))
        .collect())
}

/// In the caller's transaction: stores the document as the next version if it differs from
/// the newest; returns the versions and whether one was created.
pub async fn put(
    tx: &impl GenericClient,
    kind: Kind,
    key: &str,
    document: &Value,
    now: Millis,
) -> Result<(Versions, bool), StoreError> {
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended($2 || $1, 0))",
        &[&key, &kind.lock()],
    )
    .await
    .map_err(db_error)?;
    let newest = read(tx, kind, key).await?;
    let created = newest.as_ref().map(|r| &r.document) != Some(document);
    if created {
        let next = newest.map_or(1, |r| r.version + 1) as i32;
        let body = document.to_string();
        match kind {
            Kind::Template => {
                let channel = document["channel"].as_str().unwrap_or_default();
                tx.execute(
                    "INSERT INTO templates (key, version, channel, document, created_at) VALUES ($1, $2, $3, $4::text::jsonb, $5)",
                    &[&key, &next, &channel, &body, &now],
                )
                .await
            }
            Kind::Audience | Kind::Catalogue(_) => {
                tx.execute(
                    &format!(
                        "INSERT INTO {} (key, version, document, created_at) VALUES ($1, $2, $3::text::jsonb, $4)",
                        kind.table()
                    ),
                    &[&key, &next, &body, &now],
                )
                .await
            }
        }
        .map_err(db_error)?;
    }
    let versions = read(tx, kind, key)
        .await?
        .ok_or_else(|| kind.corrupt("vanished after insert"))?;
    Ok((versions, created))
}
