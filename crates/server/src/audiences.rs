//! The audience API (admin token): audience documents with versions, their size and state,
//! paged members, a person's audiences, and why a person is in or out.

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use waymark_core::audience::{AudienceDoc, Catalog, Refresh, validate};
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
    /// When a scheduled snapshot runs next.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_run: Option<String>,
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
            next_run: None,
            created: None,
        }
    }

    /// The view of a stored audience, read from the store.
    async fn read(state: &AppState, record: AudienceRecord) -> Result<Self, ApiError> {
        let status = state.store.audience_status(&record.key).await?;
        let next_run = state.store.audience_next_run(&record.key).await?;
        let mut view = AudienceView::new(record, status);
        view.next_run = next_run.map(format_iso8601);
        Ok(view)
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AudienceList {
    pub audiences: Vec<AudienceView>,
}

fn no_audience(key: &str) -> ApiError {
    ApiError::not_found(format!("no audience has the key {key:?}"))
}

/// The stored audience, or 404.
async fn stored_audience(state: &AppState, key: &str) -> Result<AudienceRecord, ApiError> {
    state
        .store
        .audience(key)
        .await?
        .ok_or_else(|| no_audience(key))
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

/// The audience document in the body, checked as a save checks it (every problem at once).
async fn read_valid_document(
    state: &AppState,
    headers: &HeaderMap,
    key: &str,
    body: Body,
) -> Result<AudienceDoc, ApiError> {
    let doc: AudienceDoc = read_document(headers, body, "an audience", MAX_DOCUMENT_BYTES).await?;
    let others = catalog_without(state, key).await?;
    let mut problems = match validate(&doc, &others, state.event_retention_ms) {
        Ok(_) => Vec::new(),
        Err(problems) => problems,
    };
    if let Some(mismatch) = key_mismatch(&doc.key, key) {
        problems.insert(0, mismatch);
    }
    if !problems.is_empty() {
        return Err(ApiError::unprocessable("invalid_audience", problems));
    }
    Ok(doc)
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct PreviewQuery {
    /// Members to list (default 20, at most 1000).
    pub sample: Option<u32>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AudiencePreview {
    /// How many people would be members now.
    pub size: u64,
    /// People decided (everyone stored).
    pub decided: u64,
    /// People for whom the rule failed (they would not be members), and one of the errors.
    pub errors: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_error: Option<String>,
    /// The first members in profile id order.
    pub sample: Vec<String>,
    pub seconds: f64,
    /// People decided per second.
    pub per_second: f64,
}

/// Decides a rule for everyone stored, without saving it: the size it would have now and
/// a sample of its members. Memberships of the audiences it reads are the stored ones.
#[utoipa::path(post, path = "/v1/audiences/{key}/preview", tag = "audiences",
    params(("key" = String, Path, description = "The audience's key; must match `key` in the document"), PreviewQuery),
    request_body(content = Object, description = "The audience document, as for PUT"),
    responses((status = 200, body = AudiencePreview), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 422, description = "The rule cannot be decided", body = ErrorBody)),
    security(("admin_token" = [])))]
pub async fn preview_audience(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(key): Path<String>,
    Query(query): Query<PreviewQuery>,
    body: Body,
) -> Result<axum::Json<AudiencePreview>, ApiError> {
    state.keys.require_admin(&headers)?;
    let doc = read_valid_document(&state, &headers, &key, body).await?;
    let audience = CompiledAudience::compile(&doc, 0)
        .map_err(|problems| ApiError::unprocessable("invalid_audience", problems))?;
    let sample = query.sample.unwrap_or(20).min(1000) as usize;
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get() as u32);
    let outcome = waymark_store::batch::evaluate_everyone(
        state.store.as_ref(),
        &audience,
        wall_clock_ms(),
        sample,
        cores,
    )
    .await?;
    Ok(axum::Json(AudiencePreview {
        size: outcome.members,
        decided: outcome.decided,
        errors: outcome.errors,
        first_error: outcome.first_error,
        sample: outcome.sample,
        per_second: (outcome.decided as f64 / outcome.seconds.max(1e-9)).round(),
        seconds: outcome.seconds,
    }))
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
    let doc = read_valid_document(&state, &headers, &key, body).await?;
    let document = serde_json::to_value(&doc)
        .map_err(|e| ApiError::bad_request("invalid_document", e.to_string()))?;
    let (record, created) = state
        .store
        .put_audience(&key, &document, wall_clock_ms())
        .await?;
    if created {
        tracing::info!(audience = %key, version = record.version, "audience version stored; deciding everyone again");
    }
    let mut view = AudienceView::read(&state, record).await?;
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
    let record = stored_audience(&state, &key).await?;
    Ok(axum::Json(AudienceView::read(&state, record).await?))
}

/// A stored audience and how its membership is kept.
async fn stored_with_refresh(
    state: &AppState,
    key: &str,
) -> Result<(AudienceRecord, Refresh), ApiError> {
    let record = stored_audience(state, key).await?;
    let refresh = AudienceDoc::deserialize(&record.document)
        .map(|d| d.refresh)
        .unwrap_or_default();
    Ok((record, refresh))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RunStarted {
    /// The audience, its backfill started (`state: building` until everyone is decided).
    pub audience: AudienceView,
}

/// Decides the audience for everyone again now: a snapshot's run on demand (any rule
/// audience may be run; an uploaded list may not).
#[utoipa::path(post, path = "/v1/audiences/{key}/run", tag = "audiences",
    params(("key" = String, Path)),
    responses((status = 202, body = RunStarted), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "An uploaded list has no rule to run", body = ErrorBody)),
    security(("admin_token" = [])))]
pub async fn run_audience(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(key): Path<String>,
) -> Result<(axum::http::StatusCode, axum::Json<RunStarted>), ApiError> {
    state.keys.require_admin(&headers)?;
    let (record, refresh) = stored_with_refresh(&state, &key).await?;
    if refresh == Refresh::Upload {
        return Err(ApiError::conflict(
            "uploaded_list",
            format!("{key} has its members from uploads; it has no rule to run"),
        ));
    }
    if !state.store.run_audience(&key, wall_clock_ms()).await? {
        return Err(no_audience(&key));
    }
    tracing::info!(audience = %key, "audience run started on demand");
    let audience = AudienceView::read(&state, record).await?;
    Ok((
        axum::http::StatusCode::ACCEPTED,
        axum::Json(RunStarted { audience }),
    ))
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
        audiences.push(AudienceView::read(&state, record).await?);
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
    stored_audience(&state, &key).await?;
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
    stored_audience(&state, &key).await?;
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
    /// Each behaviour call's value for this person, then each calendar reading's.
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
    let record = stored_audience(&state, &key).await?;
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

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ExportQuery {
    /// `csv` (default) or `jsonl`.
    pub format: Option<String>,
    /// Trait names to add as columns, comma-separated (at most 100).
    pub traits: Option<String>,
    /// Identity namespaces to add as columns (every value, space-separated), comma-separated.
    pub identities: Option<String>,
}

/// Members exported per page read from the store.
const EXPORT_PAGE: u32 = 1_000;
/// Columns a request may ask for, and the longest name.
const MAX_EXPORT_COLUMNS: usize = 100;
const MAX_COLUMN_NAME: usize = 200;

fn export_columns(list: Option<&str>, field: &str) -> Result<Vec<String>, ApiError> {
    let names: Vec<String> = list
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(str::to_owned)
        .collect();
    if names.len() > MAX_EXPORT_COLUMNS || names.iter().any(|n| n.len() > MAX_COLUMN_NAME) {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!(
                "{field}: at most {MAX_EXPORT_COLUMNS} names of at most {MAX_COLUMN_NAME} bytes"
            ),
        ));
    }
    Ok(names)
}

/// A trait as one cell: text as itself, anything else as JSON, absent as empty.
fn trait_cell(value: Option<&Value>) -> String {
    match value {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// Every member with the traits and identities asked for, as CSV (a header row first) or
/// JSON lines, streamed page by page in profile id order (memory stays that of one page,
/// whatever the audience's size).
#[utoipa::path(get, path = "/v1/audiences/{key}/export", tag = "audiences",
    params(("key" = String, Path), ExportQuery),
    responses((status = 200, description = "text/csv or application/x-ndjson"), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("admin_token" = [])))]
pub async fn export_members(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(key): Path<String>,
    Query(query): Query<ExportQuery>,
) -> Result<axum::response::Response, ApiError> {
    state.keys.require_admin(&headers)?;
    stored_audience(&state, &key).await?;
    let csv = match query.format.as_deref().unwrap_or("csv") {
        "csv" => true,
        "jsonl" => false,
        other => {
            return Err(ApiError::bad_request(
                "invalid_query",
                format!("format: {other:?} is not csv or jsonl"),
            ));
        }
    };
    let traits = export_columns(query.traits.as_deref(), "traits")?;
    let identities = export_columns(query.identities.as_deref(), "identities")?;
    // Header cells name what they hold: `identity:email`, `trait:plan`.
    let header = if csv {
        let mut cells = vec!["profile_id".to_owned(), "since".to_owned()];
        cells.extend(identities.iter().map(|n| format!("identity:{n}")));
        cells.extend(traits.iter().map(|n| format!("trait:{n}")));
        csv_line(&cells)
    } else {
        Vec::new()
    };
    let row = move |member: &waymark_store::AudienceMember,
                    profile: &waymark_core::ProfileState|
          -> Vec<u8> {
        let ids = |ns: &String| {
            profile
                .identities
                .get(ns)
                .map(|v| v.join(" "))
                .unwrap_or_default()
        };
        if csv {
            let mut cells = vec![member.profile_id.clone(), format_iso8601(member.since)];
            cells.extend(identities.iter().map(ids));
            cells.extend(traits.iter().map(|t| trait_cell(profile.traits.get(t))));
            csv_line(&cells)
        } else {
            let picked = |names: &[String], value: &dyn Fn(&String) -> Value| {
                names
                    .iter()
                    .map(|n| (n.clone(), value(n)))
                    .collect::<serde_json::Map<_, _>>()
            };
            let line = serde_json::json!({
                "profile_id": member.profile_id,
                "since": format_iso8601(member.since),
                "identities": picked(&identities, &|ns| {
                    Value::from(profile.identities.get(ns).cloned().unwrap_or_default())
                }),
                "traits": picked(&traits, &|t| profile.traits.get(t).cloned().unwrap_or(Value::Null)),
            });
            let mut bytes = line.to_string().into_bytes();
            bytes.push(b'\n');
            bytes
        }
    };
    let store = state.store.clone();
    // (the last id written, done): each step reads one page.
    let pages = futures::stream::try_unfold((String::new(), false), move |(after, done)| {
        let (store, key, row) = (store.clone(), key.clone(), row.clone());
        async move {
            if done {
                return Ok::<_, waymark_store::StoreError>(None);
            }
            let page = store
                .audience_member_profiles(&key, &after, EXPORT_PAGE)
                .await?;
            let done = page.len() < EXPORT_PAGE as usize;
            let after = page.last().map_or(after, |(m, _)| m.profile_id.clone());
            let bytes: Vec<u8> = page.iter().flat_map(|(m, p)| row(m, p)).collect();
            Ok(Some((bytes, (after, done))))
        }
    });
    let body = futures::StreamExt::chain(
        futures::stream::iter([Ok::<_, waymark_store::StoreError>(header)]),
        pages,
    );
    let content_type = if csv {
        "text/csv; charset=utf-8"
    } else {
        "application/x-ndjson"
    };
    Ok(axum::response::IntoResponse::into_response((
        [(axum::http::header::CONTENT_TYPE, content_type)],
        Body::from_stream(body),
    )))
}

/// One CSV record (quoted as RFC 4180 requires), with its line end.
fn csv_line(cells: &[String]) -> Vec<u8> {
    let mut writer = csv::Writer::from_writer(Vec::new());
    // Writing to memory cannot fail.
    let _ = writer.write_record(cells);
    writer.into_inner().unwrap_or_default()
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct UploadQuery {
    /// `add` (default): these people join; `remove`: they leave; `replace`: the list
    /// becomes exactly these people.
    pub mode: Option<String>,
}

#[derive(Debug, Default, Serialize, ToSchema)]
pub struct UploadOutcome {
    /// Rows read (the header not counted).
    pub rows: u64,
    /// Rows whose identity belongs to a stored person.
    pub matched: u64,
    /// Rows whose identity nobody has (nobody is created), and the first of their row
    /// numbers (the header is row 1).
    pub unmatched: u64,
    pub unmatched_rows: Vec<u64>,
    pub entered: u64,
    pub exited: u64,
}

/// Largest list upload: about a million rows of typical identities.
const MAX_UPLOAD_BYTES: usize = 64 * 1024 * 1024;
/// People written per transaction.
const UPLOAD_CHUNK: usize = 1_000;

/// Sets the members of an uploaded list (`refresh: upload`) from CSV: a header row of
/// identity namespaces (`user_id`, `email`, `phone`, `anonymous_id`, ...), then a row per
/// person; each row is matched by its first non-empty column. Entries and exits are
/// recorded as events and start journeys, as for any audience.
#[utoipa::path(post, path = "/v1/audiences/{key}/members", tag = "audiences",
    params(("key" = String, Path), UploadQuery),
    request_body(content = String, content_type = "text/csv"),
    responses((status = 200, body = UploadOutcome), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, description = "The audience is not an uploaded list", body = ErrorBody)),
    security(("admin_token" = [])))]
pub async fn upload_members(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(key): Path<String>,
    Query(query): Query<UploadQuery>,
    body: Body,
) -> Result<axum::Json<UploadOutcome>, ApiError> {
    state.keys.require_admin(&headers)?;
    let (_, refresh) = stored_with_refresh(&state, &key).await?;
    if refresh != Refresh::Upload {
        return Err(ApiError::conflict(
            "not_an_uploaded_list",
            format!("{key} is decided by its rule; only a refresh: upload audience takes uploads"),
        ));
    }
    let (enter, replace) = match query.mode.as_deref().unwrap_or("add") {
        "add" => (true, false),
        "remove" => (false, false),
        "replace" => (true, true),
        other => {
            return Err(ApiError::bad_request(
                "invalid_query",
                format!("mode: {other:?} is not add, remove or replace"),
            ));
        }
    };
    let bytes = axum::body::to_bytes(body, MAX_UPLOAD_BYTES)
        .await
        .map_err(|_| {
            ApiError::bad_request(
                "body_too_large",
                format!("an upload is at most {} MB", MAX_UPLOAD_BYTES / 1024 / 1024),
            )
        })?;
    let mut reader = csv::ReaderBuilder::new()
        .flexible(false)
        .from_reader(bytes.as_ref());
    let namespaces: Vec<String> = reader
        .headers()
        .map_err(|e| ApiError::field("invalid_csv", "header", e.to_string()))?
        .iter()
        .map(|h| h.trim().to_owned())
        .collect();
    for (i, name) in namespaces.iter().enumerate() {
        if waymark_core::identity::Namespace::parse(name).is_err() {
            return Err(ApiError::field(
                "invalid_csv",
                &format!("header[{i}]"),
                format!("{name:?} is not an identity namespace"),
            ));
        }
    }
    // Every row is read before anything changes: a malformed file changes nothing.
    let mut identities: Vec<Option<waymark_core::Identity>> = Vec::new();
    for (n, row) in reader.records().enumerate() {
        let row = row.map_err(|e| {
            ApiError::field("invalid_csv", &format!("row {}", n + 2), e.to_string())
        })?;
        identities.push(
            namespaces
                .iter()
                .zip(row.iter())
                .find(|(_, value)| !value.trim().is_empty())
                .and_then(|(ns, value)| waymark_core::Identity::parse(ns, value.trim()).ok()),
        );
    }
    drop(reader);
    let mut out = UploadOutcome::default();
    let mut listed: std::collections::BTreeSet<String> = Default::default();
    let now = wall_clock_ms();
    // Rows resolved and applied a thousand at a time: one lookup, one transaction.
    for (c, rows) in identities.chunks(UPLOAD_CHUNK).enumerate() {
        let asked: Vec<waymark_core::Identity> = rows.iter().flatten().cloned().collect();
        let mut found = state.store.profile_ids_of(&asked).await?.into_iter();
        let mut chunk: Vec<String> = Vec::with_capacity(rows.len());
        for (n, identity) in rows.iter().enumerate() {
            let row_number = (c * UPLOAD_CHUNK + n) as u64 + 2;
            out.rows += 1;
            let profile_id = match identity {
                Some(_) => found.next().flatten(),
                None => None,
            };
            match profile_id {
                Some(id) => {
                    out.matched += 1;
                    if replace {
                        listed.insert(id.clone());
                    }
                    chunk.push(id);
                }
                None => {
                    out.unmatched += 1;
                    if out.unmatched_rows.len() < 10 {
                        out.unmatched_rows.push(row_number);
                    }
                }
            }
        }
        if !chunk.is_empty() {
            let changed = state
                .store
                .change_list_members(&key, chunk, enter, now)
                .await?;
            *if enter {
                &mut out.entered
            } else {
                &mut out.exited
            } += changed;
        }
    }
    if replace {
        // Everyone on the list who was not in this upload leaves it.
        let mut after: Option<String> = None;
        loop {
            let page = state
                .store
                .audience_members(&key, after.as_deref(), UPLOAD_CHUNK as u32)
                .await?;
            let Some(last) = page.last() else { break };
            after = Some(last.profile_id.clone());
            let gone: Vec<String> = page
                .iter()
                .filter(|m| !listed.contains(&m.profile_id))
                .map(|m| m.profile_id.clone())
                .collect();
            let full = page.len() == UPLOAD_CHUNK;
            if !gone.is_empty() {
                out.exited += state
                    .store
                    .change_list_members(&key, gone, false, now)
                    .await?;
            }
            if !full {
                break;
            }
        }
    }
    tracing::info!(audience = %key, rows = out.rows, entered = out.entered, exited = out.exited, "list uploaded");
    Ok(axum::Json(out))
}
