//! Every error the API returns: a status and a JSON body `{code, type, message, field?}`.
//! `code` is stable and machine-readable; `type` groups codes (`invalid_request`, `auth`,
//! `not_found`, `internal`); `message` says what to fix; `field` locates it in the request.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;
use waymark_core::FieldError;
use waymark_store::StoreError;

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// Stable error code, e.g. `missing_field`, `invalid_json`, `unauthorized`.
    pub code: String,
    /// Error class: `invalid_request`, `auth`, `not_found` or `internal`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub message: String,
    /// Path of the offending field in the request, e.g. `batch[3].userId`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Every problem, when there is more than one to report (journey validation).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errors: Option<Vec<FieldProblem>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct FieldProblem {
    pub field: String,
    pub code: String,
    pub message: String,
    /// Where inside the field's text (a template), 1-based, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<usize>,
}

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub body: ErrorBody,
}

impl ApiError {
    fn new(status: StatusCode, kind: &'static str, code: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            body: ErrorBody {
                code: code.to_owned(),
                kind,
                message: message.into(),
                field: None,
                errors: None,
            },
        }
    }

    pub fn bad_request(code: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", code, message)
    }

    pub fn field(code: &str, field: &str, message: impl Into<String>) -> Self {
        let mut e = Self::bad_request(code, message);
        e.body.field = Some(field.to_owned());
        e
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "auth", "unauthorized", message)
    }

    /// A signed link that does not verify (forged, altered, or signed by another server).
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "auth", "invalid_signature", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", "not_found", message)
    }

    /// The request is well-formed but describes something that cannot work (422), with
    /// every problem listed.
    pub fn unprocessable(code: &str, problems: Vec<FieldError>) -> Self {
        let summary = match problems.as_slice() {
            [one] => format!("{}: {}", one.field, one.message),
            many => format!("{} problems; see errors", many.len()),
        };
        let mut e = Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
            code,
            summary,
        );
        e.body.errors = Some(
            problems
                .into_iter()
                .map(|p| FieldProblem {
                    field: p.field,
                    code: p.code.to_owned(),
                    message: p.message,
                    line: p.line,
                    column: p.column,
                })
                .collect(),
        );
        e
    }

    /// The body did not arrive in time (`listen::Limits::body_timeout`), or the client
    /// went away while sending it.
    pub fn body_not_received(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::REQUEST_TIMEOUT,
            "invalid_request",
            "body_timeout",
            message,
        )
    }

    pub fn conflict(code: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "invalid_request", code, message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "internal",
            "store_unavailable",
            message,
        )
    }
}

impl From<FieldError> for ApiError {
    fn from(e: FieldError) -> Self {
        let mut out = Self::bad_request(e.code, e.message);
        if !e.field.is_empty() {
            out.body.field = Some(e.field);
        }
        out
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        if let StoreError::Refused(refusal) = e {
            let forbidden = refusal.is_unverified();
            let mut out = Self::from(refusal.error);
            if forbidden {
                out.status = StatusCode::FORBIDDEN;
                out.body.kind = "auth";
            }
            return out;
        }
        tracing::error!(error = %e, "store error");
        match e {
            StoreError::Refused(_) => unreachable!("answered above"),
            StoreError::Corrupt(_) => Self::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "store_corrupt",
                "stored data could not be read; see the server log",
            ),
            StoreError::Unavailable(_) | StoreError::Closed => Self::unavailable(
                "the store did not commit this request; nothing was saved, retry it",
            ),
        }
    }
}

/// Seconds a client is asked to wait before retrying a 503 or 429.
pub const RETRY_AFTER_SECS: &str = "5";

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.body)).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE
            || self.status == StatusCode::TOO_MANY_REQUESTS
        {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static(RETRY_AFTER_SECS),
            );
        }
        response
    }
}

/// Reads a request body of at most `limit` bytes: past it, `too_large`; a body that does
/// not arrive in time (or breaks off) is a `408`, not a size problem.
pub(crate) async fn read_limited(
    body: axum::body::Body,
    limit: usize,
    too_large: impl FnOnce() -> ApiError,
) -> Result<bytes::Bytes, ApiError> {
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
        while let Some(err) = source {
            if err.is::<http_body_util::LengthLimitError>() {
                return too_large();
            }
            source = err.source();
        }
        ApiError::body_not_received(format!("the request body was not received: {e}"))
    })
}
