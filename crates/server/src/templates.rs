//! The template API (admin token): message templates with versions, and previews that
//! render one for a given person and event.

use std::collections::BTreeMap;

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;
use waymark_core::content::{CompiledContent, ContentDoc, Rendered, compile, partials_used};
use waymark_core::journey::valid_key;
use waymark_core::time::format_iso8601;
use waymark_core::{FieldError, Identity};
use waymark_store::{TemplateRecord, wall_clock_ms};

use crate::AppState;
use crate::error::{ApiError, ErrorBody};
use crate::versions::{VersionQuery, VersionView, one_or_version};

#[derive(Debug, Serialize, ToSchema)]
pub struct TemplateView {
    pub key: String,
    /// email, sms, push, in_app or partial.
    pub channel: String,
    /// The newest version: the one messages use.
    pub version: u32,
    #[schema(value_type = Object)]
    pub document: Value,
    pub versions: Vec<VersionView>,
    pub created_at: String,
    pub updated_at: String,
    /// Set by PUT: whether this put created a new version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created: Option<bool>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TemplateList {
    pub templates: Vec<TemplateView>,
}

impl From<TemplateRecord> for TemplateView {
    fn from(r: TemplateRecord) -> Self {
        Self {
            key: r.key,
            channel: r.channel,
            version: r.version,
            document: r.document,
            versions: VersionView::list(r.versions),
            created_at: format_iso8601(r.created_at),
            updated_at: format_iso8601(r.updated_at),
            created: None,
        }
    }
}

/// Largest template document or preview request accepted.
const MAX_BODY_BYTES: usize = 512 * 1024;

/// Reads a JSON request body into `T`; a bad one is a 400 naming the line and column, or
/// the field serde could not accept.
pub(crate) async fn json_body<T: serde::de::DeserializeOwned>(
    body: axum::body::Body,
) -> Result<T, ApiError> {
    let bytes = crate::error::read_limited(body, MAX_BODY_BYTES, || {
        ApiError::bad_request(
            "document_too_large",
            format!("the body may be at most {} KB", MAX_BODY_BYTES / 1024),
        )
    })
    .await?;
    let de = &mut serde_json::Deserializer::from_slice(&bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let mut err = ApiError::bad_request("invalid_document", e.inner().to_string());
        err.body.field = (path != ".").then_some(path);
        err
    })
}

fn no_template(key: &str) -> ApiError {
    ApiError::not_found(format!("no template has the key {key:?}"))
}

/// The stored templates `roots` name and, following `{{> key}}`, every partial they include:
/// the newest version of each, by key. Keys with no stored template are left out (the
/// caller reports them: compilation as an unknown partial, publishing as an unknown template).
pub(crate) async fn with_partials(
    state: &AppState,
    roots: impl IntoIterator<Item = String>,
) -> Result<BTreeMap<String, (u32, ContentDoc)>, ApiError> {
    let mut found = BTreeMap::new();
    let mut wanted: Vec<String> = roots.into_iter().collect();
    let mut seen: std::collections::BTreeSet<String> = wanted.iter().cloned().collect();
    while let Some(key) = wanted.pop() {
        let Some(record) = state.store.template(&key).await? else {
            continue;
        };
        let document: ContentDoc = serde_json::from_value(record.document).map_err(|e| {
            ApiError::unavailable(format!("stored template {key:?} is unreadable: {e}"))
        })?;
        for (_, source) in document.fields() {
            for partial in partials_used(source) {
                if seen.insert(partial.clone()) {
                    wanted.push(partial);
                }
            }
        }
        found.insert(key, (record.version, document));
    }
    Ok(found)
}

/// Why the template cannot send, if it names a sending configuration this server does not
/// have (checked when email is configured): when it is stored, and again when a journey
/// that uses it, or carries it inline, is published.
pub(crate) fn unknown_sender(state: &AppState, doc: &ContentDoc) -> Option<String> {
    let (sender, known) = (doc.sender.as_ref()?, state.email_senders.as_ref()?);
    if known.contains(sender) {
        return None;
    }
    let names: Vec<&str> = known.iter().map(String::as_str).collect();
    Some(format!(
        "no sending configuration {sender:?} in [email.senders] (configured: {})",
        if names.is_empty() {
            "none".to_owned()
        } else {
            names.join(", ")
        }
    ))
}

/// Compiles a template with the stored partials it includes (and only those). `replacing`
/// is the key `doc` is about to be stored under: the partials see it in place of the stored
/// version, so a partial that would close a loop of includes is refused before it is stored.
async fn compiled(
    state: &AppState,
    doc: &ContentDoc,
    replacing: Option<&str>,
) -> Result<CompiledContent, ApiError> {
    let roots = doc.fields().into_iter().flat_map(|(_, s)| partials_used(s));
    let mut partials: BTreeMap<String, String> = with_partials(state, roots)
        .await?
        .into_iter()
        .filter(|(_, (_, d))| d.channel == "partial")
        .filter_map(|(k, (_, d))| Some((k, d.body?)))
        .collect();
    if let Some(key) = replacing {
        partials.remove(key);
        if doc.channel == "partial"
            && let Some(body) = &doc.body
        {
            partials.insert(key.to_owned(), body.clone());
            // What the new version includes, and what those include, is followed too.
            let more = with_partials(state, partials_used(body)).await?;
            for (k, (_, d)) in more {
                if k != key
                    && d.channel == "partial"
                    && let Some(b) = d.body
                {
                    partials.entry(k).or_insert(b);
                }
            }
        }
    }
    compile(doc, &partials)
        .map_err(|problems| ApiError::unprocessable("invalid_template", problems))
}

/// Creates the template or adds a version, if the document changed. It must compile, with
/// every partial it includes already stored; otherwise every problem is listed.
#[utoipa::path(put, path = "/v1/templates/{key}", tag = "templates",
    params(("key" = String, Path, description = "a-z, 0-9, - and _; at most 64")),
    request_body(content = Object, description = "`{channel, subject?, preheader?, html?, text?, title?, body?, data?}`: email needs subject and html or text; sms text; push and in_app title or body; partial body"),
    responses((status = 200, body = TemplateView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 422, description = "The template does not compile; `errors` lists every problem by field", body = ErrorBody)),
    security(("admin_token" = [])))]
pub async fn put_template(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(key): Path<String>,
    body: axum::body::Body,
) -> Result<axum::Json<TemplateView>, ApiError> {
    state.keys.require_admin(&headers)?;
    if !valid_key(&key) {
        return Err(ApiError::field(
            "invalid_key",
            "key",
            format!("template key {key:?} must be 1 to 64 of a-z, 0-9, - and _"),
        ));
    }
    // Checked through the serde shape first, so unknown fields are named.
    let doc: ContentDoc = json_body(body).await?;
    compiled(&state, &doc, Some(&key)).await?;
    if let Some(why) = unknown_sender(&state, &doc) {
        return Err(ApiError::field("unknown_sender", "sender", why));
    }
    let document = serde_json::to_value(&doc)
        .map_err(|e| ApiError::bad_request("invalid_document", e.to_string()))?;
    let (record, created) = state
        .store
        .put_template(&key, &document, wall_clock_ms())
        .await?;
    if created {
        tracing::info!(template = %key, version = record.version, "template version stored");
    }
    let mut view = TemplateView::from(record);
    view.created = Some(created);
    Ok(axum::Json(view))
}

/// One template (its newest version and version list), or with `?version=N` that version.
#[utoipa::path(get, path = "/v1/templates/{key}", tag = "templates",
    params(("key" = String, Path), VersionQuery),
    responses((status = 200, body = TemplateView), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("admin_token" = [])))]
pub async fn get_template(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(key): Path<String>,
    Query(q): Query<VersionQuery>,
) -> Result<axum::response::Response, ApiError> {
    state.keys.require_admin(&headers)?;
    one_or_version(
        "template",
        &key,
        q.version,
        state.store.template_version(&key, q.version.unwrap_or(0)),
        async { Ok(state.store.template(&key).await?.map(TemplateView::from)) },
    )
    .await
}

/// Every template, by key.
#[utoipa::path(get, path = "/v1/templates", tag = "templates",
    responses((status = 200, body = TemplateList), (status = 401, body = ErrorBody)),
    security(("admin_token" = [])))]
pub async fn list_templates(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<axum::Json<TemplateList>, ApiError> {
    state.keys.require_admin(&headers)?;
    let templates = state
        .store
        .templates()
        .await?
        .into_iter()
        .map(TemplateView::from)
        .collect();
    Ok(axum::Json(TemplateList { templates }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PreviewRequest {
    /// A stored person to render for, by identity (`{"namespace": "user_id", "value": "42"}`).
    #[serde(default)]
    pub profile: Option<PreviewIdentity>,
    /// Or (also) traits to render with; they override the stored person's.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub traits: Option<Map<String, Value>>,
    /// The event, Segment-shaped (`{"event": "Order Completed", "properties": {...}}`).
    #[serde(default)]
    #[schema(value_type = Object)]
    pub event: Option<Value>,
    /// The journey context (`entry`, webhook responses by node id).
    #[serde(default)]
    #[schema(value_type = Object)]
    pub journey: Option<Value>,
    /// A version to render instead of the newest.
    #[serde(default)]
    pub version: Option<u32>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PreviewIdentity {
    pub namespace: String,
    pub value: String,
}

/// Renders the template for a person and an event, exactly as a send would; nothing is sent.
#[utoipa::path(post, path = "/v1/templates/{key}/preview", tag = "templates",
    params(("key" = String, Path)),
    request_body = PreviewRequest,
    responses((status = 200, description = "`{channel, fields: {subject, html, ...}, data?}`"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 422, description = "Rendering failed (a helper failed); `message` says where", body = ErrorBody)),
    security(("admin_token" = [])))]
pub async fn preview_template(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(key): Path<String>,
    body: axum::body::Body,
) -> Result<axum::Json<Rendered>, ApiError> {
    state.keys.require_admin(&headers)?;
    let req: PreviewRequest = json_body(body).await?;
    render(&state, &key, &req).await.map(axum::Json)
}

/// Renders template `key` (the newest version, or `req.version`) for the person, traits,
/// event and journey context `req` gives, exactly as a send would.
pub async fn render(
    state: &AppState,
    key: &str,
    req: &PreviewRequest,
) -> Result<Rendered, ApiError> {
    let document =
        match req.version {
            Some(v) => state.store.template_version(key, v).await?.ok_or_else(|| {
                ApiError::not_found(format!("template {key:?} has no version {v}"))
            })?,
            None => {
                state
                    .store
                    .template(key)
                    .await?
                    .ok_or_else(|| no_template(key))?
                    .document
            }
        };
    let doc: ContentDoc = serde_json::from_value(document)
        .map_err(|e| ApiError::bad_request("invalid_document", e.to_string()))?;
    let template = compiled(state, &doc, None).await?;
    let mut profile = match &req.profile {
        Some(p) => {
            let id = Identity::parse(&p.namespace, &p.value)
                .map_err(|m| ApiError::field("invalid_identity", "profile.namespace", m))?;
            let stored = state.store.profile(&id).await?.ok_or_else(|| {
                ApiError::not_found(format!(
                    "no profile has the identity {}:{}",
                    p.namespace, p.value
                ))
            })?;
            stored.context_json(&stored.traits)
        }
        None => serde_json::json!({"traits": {}}),
    };
    if let (Some(traits), Some(target)) = (&req.traits, profile["traits"].as_object_mut()) {
        for (k, v) in traits {
            target.insert(k.clone(), v.clone());
        }
    }
    let data = serde_json::json!({
        "profile": profile,
        "event": req.event.clone().unwrap_or(Value::Null),
        "journey": req.journey.clone().unwrap_or(Value::Null),
    });
    template.render(&data).map_err(|reason| {
        ApiError::unprocessable(
            "render_failed",
            vec![FieldError::new("render_failed", "", reason)],
        )
    })
}
