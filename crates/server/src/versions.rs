//! What every versioned resource (journeys, templates) shows of its versions.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use crate::error::ApiError;

#[derive(Debug, Serialize, ToSchema)]
pub struct VersionView {
    pub version: u32,
    pub published_at: String,
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct VersionQuery {
    /// A published version number: return that version's document instead.
    pub version: Option<u32>,
}

/// A versioned resource (journey, template): with `?version=N` that version's document,
/// else the record. Only the future that is needed is awaited.
pub(crate) async fn one_or_version<V: Serialize>(
    what: &str,
    key: &str,
    version: Option<u32>,
    document: impl Future<Output = Result<Option<Value>, waymark_store::StoreError>>,
    record: impl Future<Output = Result<Option<V>, waymark_store::StoreError>>,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    if let Some(version) = version {
        let doc = document.await?.ok_or_else(|| {
            ApiError::not_found(format!("{what} {key:?} has no version {version}"))
        })?;
        return Ok(axum::Json(doc).into_response());
    }
    let view = record
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no {what} has the key {key:?}")))?;
    Ok(axum::Json(view).into_response())
}
