//! The audience API (admin token): audience documents with versions, their size and state,
//! paged members, a person's audiences, and why a person is in or out.

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use waymark_core::audience::{AudienceDoc, Catalog, validate};
use waymark_core::time::format_iso8601;
use waymark_engine::audience::{CompiledAudience, Person};
use waymark_store::{AudienceRecord, AudienceStatus, wall_clock_ms};

use crate::AppState;
use crate::error::{ApiError, ErrorBody};
use crate::versions::{VersionView, key_mismatch, read_document};

/// Largest audience document accepted.
const MAX_DOCUMENT_BYTES: usize = 64 * 1024;

#[derive(Debug, Serialize, ToSchema)]
pub struct AudienceView {
    pub key: String,
    /// The newest version: the one membership follows.
    pub version: u32,
    #[schema(value_type = Object)]
    pub document: Value,
    pub versions: Vec<VersionView>,
    pub created_at: String,
    pub updated_at: String,
    /// `building` while people are still being decided for the newest version (the
    /// backfill), then `current`.
    pub state: &'static str,
    pub size: u64,
    /// People still to decide for the newest version.
    pub pending: u64,
    /// The backfill of the newest version, while it runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backfill: Option<BackfillView>,
    /// When someone last entered or left.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_change: Option<String>,
    /// Set by PUT: whether this put created a new version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created: Option<bool>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BackfillView {
    pub started_at: String,
    /// People decided so far.
    pub decided: u64,
    /// People decided per second since it started.
    pub per_second: f64,
}

impl AudienceView {
    fn new(r: AudienceRecord, status: AudienceStatus) -> Self {
        let now = wall_clock_ms();
        Self {
            key: r.key,
            version: r.version,
            document: r.document,
            versions: VersionView::list(r.versions),
            created_at: format_iso8601(r.created_at),
            updated_at: format_iso8601(r.updated_at),
            state: if status.pending > 0 || status.backfill.is_some() {
                "building"
            } else {
                "current"
            },
            size: status.members,
            pending: status.pending,
            backfill: status.backfill.map(|b| BackfillView {
                started_at: format_iso8601(b.started_at),
                decided: b.decided,
                per_second: (b.decided as f64 * 1000.0 / (now - b.started_at).max(1) as f64)
                    .round(),
            }),
            last_change: status.last_change.map(format_iso8601),
            created: None,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AudienceList {
    pub audiences: Vec<AudienceView>,
}

fn no_audience(key: &str) -> ApiError {
    ApiError::not_found(format!("no audience has the key {key:?}"))
}

/// Every other audience's key and the audiences its rule reads, for reference checks.
async fn catalog_without(state: &AppState, key: &str) -> Result<Catalog, ApiError> {
    let mut catalog = Catalog::new();
    for record in state.store.audiences().await? {
        if record.key == key {
            continue;
        }
        let reads = serde_json::from_value::<AudienceDoc>(record.document)
            .ok()
            .and_then(|doc| waymark_core::audience::Rule::parse(&doc.rule).ok())
            .map(|rule| rule.audiences)
            .unwrap_or_default();
        catalog.insert(record.key, reads);
    }
    Ok(catalog)
}

/// Creates the audience or adds a version, if the document changed. The rule is checked
/// first (every problem with its line and column); then everyone is decided again from
/// their stored events, in the background (`state: building` until done).
#[utoipa::path(put, path = "/v1/audiences/{key}", tag = "audiences",
    params(("key" = String, Path, description = "The audience's key; must match `key` in the document")),
    request_body(content = Object, description = "`{key, name?, description?, rule}` as JSON, or YAML (Content-Type: application/yaml)"),
    responses((status = 200, body = AudienceView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 422, description = "The rule cannot be decided; `errors` lists every problem with its line and column", body = ErrorBody)),
    security(("admin_token" = [])))]
pub async fn put_audience(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(key): Path<String>,
    body: Body,
) -> Result<axum::Json<AudienceView>, ApiError> {
    state.keys.require_admin(&headers)?;
    let doc: AudienceDoc = read_document(&headers, body, "an audience", MAX_DOCUMENT_BYTES).await?;
    let others = catalog_without(&state, &key).await?;
    let mut problems = match validate(&doc, &others, state.event_retention_ms) {
        Ok(_) => Vec::new(),
        Err(problems) => problems,
    };
    if let Some(mismatch) = key_mismatch(&doc.key, &key) {
        problems.insert(0, mismatch);
    }
    if !problems.is_empty() {
        return Err(ApiError::unprocessable("invalid_audience", problems));
    }
    let document = serde_json::to_value(&doc)
        .map_err(|e| ApiError::bad_request("invalid_document", e.to_string()))?;
    let (record, created) = state
        .store
        .put_audience(&key, &document, wall_clock_ms())
        .await?;
    if created {
        tracing::info!(audience = %key, version = record.version, "audience version stored; deciding everyone again");
    }
    let status = state.store.audience_status(&key).await?;
    let mut view = AudienceView::new(record, status);
    view.created = Some(created);
    Ok(axum::Json(view))
}

/// One audience: its newest version, size, state and last change.
#[utoipa::path(get, path = "/v1/audiences/{key}", tag = "audiences",
    params(("key" = String, Path)),
    responses((status = 200, body = AudienceView), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("admin_token" = [])))]
pub async fn get_audience(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(key): Path<String>,
) -> Result<axum::Json<AudienceView>, ApiError> {
    state.keys.require_admin(&headers)?;
    let record = state
        .store
        .audience(&key)
        .await?
        .ok_or_else(|| no_audience(&key))?;
    let status = state.store.audience_status(&key).await?;
    Ok(axum::Json(AudienceView::new(record, status)))
}

/// Every audience, by key.
#[utoipa::path(get, path = "/v1/audiences", tag = "audiences",
    responses((status = 200, body = AudienceList), (status = 401, body = ErrorBody)),
    security(("admin_token" = [])))]
pub async fn list_audiences(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<axum::Json<AudienceList>, ApiError> {
    state.keys.require_admin(&headers)?;
    let mut audiences = Vec::new();
    for record in state.store.audiences().await? {
        let status = state.store.audience_status(&record.key).await?;
        audiences.push(AudienceView::new(record, status));
    }
    Ok(axum::Json(AudienceList { audiences }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct SizesQuery {
    /// The last this many hours (default 168, at most 8784).
    pub hours: Option<u32>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SizePoint {
    /// The hour's start.
    pub hour: String,
    /// Size at the end of the hour.
    pub members: u64,
    pub entered: u64,
    pub exited: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SizeHistory {
    /// Hours in which someone entered or left, oldest first; the size holds between them.
    pub hours: Vec<SizePoint>,
}

/// An audience's size over time, by the hour.
#[utoipa::path(get, path = "/v1/audiences/{key}/sizes", tag = "audiences",
    params(("key" = String, Path), SizesQuery),
    responses((status = 200, body = SizeHistory), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("admin_token" = [])))]
pub async fn audience_sizes(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(key): Path<String>,
    Query(query): Query<SizesQuery>,
) -> Result<axum::Json<SizeHistory>, ApiError> {
    state.keys.require_admin(&headers)?;
    state
        .store
        .audience(&key)
        .await?
        .ok_or_else(|| no_audience(&key))?;
    let hours = query.hours.unwrap_or(168).clamp(1, 8784);
    let since = wall_clock_ms() - i64::from(hours) * 3_600_000;
    let points = state.store.audience_size_history(&key, since).await?;
    Ok(axum::Json(SizeHistory {
        hours: points
            .into_iter()
            .map(|p| SizePoint {
                hour: format_iso8601(p.hour),
                members: p.members,
                entered: p.entered,
                exited: p.exited,
            })
            .collect(),
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct MembersQuery {
    /// At most this many (default 100, at most 1000).
    pub limit: Option<u32>,
    /// The `next` of the previous page.
    pub after: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Member {
    pub profile_id: String,
    pub since: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MembersPage {
    pub members: Vec<Member>,
    /// Pass as `after` for the next page; absent on the last.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// Members in profile id order, paged by key (never by offset, so a page costs the same
/// at the millionth member as at the first).
#[utoipa::path(get, path = "/v1/audiences/{key}/members", tag = "audiences",
    params(("key" = String, Path), MembersQuery),
    responses((status = 200, body = MembersPage), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("admin_token" = [])))]
pub async fn audience_members(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(key): Path<String>,
    Query(q): Query<MembersQuery>,
) -> Result<axum::Json<MembersPage>, ApiError> {
    state.keys.require_admin(&headers)?;
    if state.store.audience(&key).await?.is_none() {
        return Err(no_audience(&key));
    }
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let mut members = state
        .store
        .audience_members(&key, q.after.as_deref(), limit + 1)
        .await?;
    let next = if members.len() > limit as usize {
        members.truncate(limit as usize);
        members.last().map(|m| m.profile_id.clone())
    } else {
        None
    };
    Ok(axum::Json(MembersPage {
        members: members
            .into_iter()
            .map(|m| Member {
                profile_id: m.profile_id,
                since: format_iso8601(m.since),
            })
            .collect(),
        next,
    }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ProfileAudience {
    pub audience: String,
    pub since: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ProfileAudiences {
    pub audiences: Vec<ProfileAudience>,
}

/// The audiences a person is a member of, with since when.
#[utoipa::path(get, path = "/v1/profiles/{namespace}/{value}/audiences", tag = "audiences",
    params(("namespace" = String, Path), ("value" = String, Path)),
    responses((status = 200, body = ProfileAudiences), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("admin_token" = [])))]
pub async fn profile_audiences(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((namespace, value)): Path<(String, String)>,
) -> Result<axum::Json<ProfileAudiences>, ApiError> {
    state.keys.require_admin(&headers)?;
    let profile = crate::profiles::find(&state, &namespace, &value).await?;
    let audiences = state
        .store
        .profile_audiences(&profile.id)
        .await?
        .into_iter()
        .map(|(audience, since)| ProfileAudience {
            audience,
            since: format_iso8601(since),
        })
        .collect();
    Ok(axum::Json(ProfileAudiences { audiences }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CallView {
    /// The behaviour call as written in the rule.
    pub call: String,
    #[schema(value_type = Object)]
    pub value: Value,
    /// Kept events that matched its name, window and condition.
    pub matched: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oldest: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub newest: Option<String>,
    /// The events it counted, newest first (at most 20): when, and their message ids.
    #[schema(value_type = Vec<Object>)]
    pub events: Vec<Value>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Explanation {
    pub audience: String,
    pub version: u32,
    pub rule: String,
    /// What the rule decides for this person now.
    pub member: bool,
    /// Whether the stored membership says so too (false while a change is being decided).
    pub stored_member: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub member_since: Option<String>,
    /// Why the rule could not be decided (the person then is not a member).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Each behaviour call's value for this person.
    pub values: Vec<CallView>,
    /// Each audience the rule reads, and whether the person is in it.
    #[schema(value_type = Object)]
    pub audiences: serde_json::Map<String, Value>,
    /// When time alone will next change the answer, if it can.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_change: Option<String>,
}

/// Why a person is in or out: the rule decided now over their profile and kept events,
/// each behaviour call's value, the audiences it reads, and when time will next change it.
#[utoipa::path(get, path = "/v1/profiles/{namespace}/{value}/audiences/{key}/explain", tag = "audiences",
    params(("namespace" = String, Path), ("value" = String, Path), ("key" = String, Path)),
    responses((status = 200, body = Explanation), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("admin_token" = [])))]
pub async fn explain(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((namespace, value, key)): Path<(String, String, String)>,
) -> Result<axum::Json<Explanation>, ApiError> {
    state.keys.require_admin(&headers)?;
    let profile = crate::profiles::find(&state, &namespace, &value).await?;
    let record = state
        .store
        .audience(&key)
        .await?
        .ok_or_else(|| no_audience(&key))?;
    let doc: AudienceDoc = serde_json::from_value(record.document).map_err(|e| {
        ApiError::unavailable(format!("stored audience {key:?} is unreadable: {e}"))
    })?;
    let audience = CompiledAudience::compile(&doc, record.version)
        .map_err(|p| ApiError::unprocessable("invalid_audience", p))?;
    let names: Vec<String> = audience.event_names.iter().cloned().collect();
    let events = state.store.profile_history(&profile.id, &names).await?;
    let stored = state.store.profile_audiences(&profile.id).await?;
    let member_of = |k: &str| stored.iter().any(|(a, _)| a == k);
    let person = Person {
        profile: &profile,
        events: &events,
        member_of: &member_of,
    };
    let now = wall_clock_ms();
    let evaluation = audience.evaluate(&person, now);
    let mut counted = audience.matching_events(&person, now, 20).into_iter();
    let since = stored.iter().find(|(a, _)| *a == key).map(|(_, s)| *s);
    Ok(axum::Json(Explanation {
        audience: key,
        version: record.version,
        rule: doc.rule,
        member: evaluation.member,
        stored_member: since.is_some(),
        member_since: since.map(format_iso8601),
        error: evaluation.error,
        values: evaluation
            .values
            .into_iter()
            .map(|v| CallView {
                call: v.call,
                value: v.value,
                matched: v.matched,
                oldest: v.oldest.map(format_iso8601),
                newest: v.newest.map(format_iso8601),
                events: counted
                    .next()
                    .unwrap_or_default()
                    .into_iter()
                    .map(|e| {
                        serde_json::json!({"at": format_iso8601(e.at), "messageId": e.body["messageId"]})
                    })
                    .collect(),
            })
            .collect(),
        audiences: evaluation
            .audiences
            .into_iter()
            .map(|(k, m)| (k, Value::Bool(m)))
            .collect(),
        next_change: evaluation.next_change.map(format_iso8601),
    }))
}
