//! What every versioned resource (journeys, templates, audiences) shows of its versions,
//! and how their documents are read from a request.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use crate::error::ApiError;

#[derive(Debug, Serialize, ToSchema)]
pub struct VersionView {
    pub version: u32,
    pub published_at: String,
}

impl VersionView {
    pub(crate) fn list(versions: Vec<waymark_store::JourneyVersion>) -> Vec<VersionView> {
        versions
            .into_iter()
            .map(|v| VersionView {
                version: v.version,
                published_at: waymark_core::time::format_iso8601(v.published_at),
            })
            .collect()
    }
}

/// Reads a document body (JSON, or YAML with a YAML content type) of at most `max` bytes
/// into `T`; a bad one is a 400 with the path, line and column of the first problem.
pub(crate) async fn read_document<T: serde::de::DeserializeOwned>(
    headers: &axum::http::HeaderMap,
    body: axum::body::Body,
    what: &str,
    max: usize,
) -> Result<T, ApiError> {
    let bytes = crate::error::read_limited(body, max, || {
        ApiError::bad_request(
            "document_too_large",
            format!("{what} document may be at most {} KB", max / 1024),
        )
    })
    .await?;
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| ApiError::bad_request("invalid_document", "the document is not UTF-8"))?;
    let yaml = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.contains("yaml"));
    let format = if yaml {
        waymark_core::journey::Format::Yaml
    } else {
        waymark_core::journey::Format::Json
    };
    waymark_core::journey::parse_document(text, format).map_err(|e| {
        let mut err = ApiError::bad_request("invalid_document", e.message);
        err.body.field = (!e.field.is_empty()).then_some(e.field);
        err
    })
}

/// The problem when a document's key is not the one in the URL.
pub(crate) fn key_mismatch(document: &str, url: &str) -> Option<waymark_core::FieldError> {
    (document != url).then(|| {
        waymark_core::FieldError::new(
            "invalid_value",
            "key",
            format!("the document's key {document:?} differs from the URL's {url:?}"),
        )
    })
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
