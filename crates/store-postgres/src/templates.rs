//! Message templates on PostgreSQL: every changed document is a new immutable version.

use deadpool_postgres::GenericClient;
use serde_json::Value;
use waymark_core::time::Millis;
use waymark_store::{StoreError, TemplateRecord};

use crate::db_error;
use crate::versioned::{self, Kind};

pub async fn read(
    client: &impl GenericClient,
    key: &str,
) -> Result<Option<TemplateRecord>, StoreError> {
    Ok(versioned::read(client, Kind::Template, key)
        .await?
        .map(|v| v.into_template(key)))
}

pub async fn list(client: &impl GenericClient) -> Result<Vec<TemplateRecord>, StoreError> {
    let mut out = Vec::new();
    for key in versioned::keys(client, Kind::Template).await? {
        out.extend(read(client, &key).await?);
    }
    Ok(out)
}

pub async fn version(
    client: &impl GenericClient,
    key: &str,
    version: u32,
) -> Result<Option<Value>, StoreError> {
    versioned::version(client, Kind::Template, key, version).await
}

pub async fn put(
    client: &mut deadpool_postgres::Client,
    key: &str,
    document: &Value,
    now: Millis,
) -> Result<(TemplateRecord, bool), StoreError> {
    let tx = client.transaction().await.map_err(db_error)?;
    let (versions, created) = versioned::put(&tx, Kind::Template, key, document, now).await?;
    tx.commit().await.map_err(db_error)?;
    Ok((versions.into_template(key), created))
}
