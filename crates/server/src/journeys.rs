//! The journey API (admin token): drafts, publishing, lifecycle.

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;
use waymark_core::FieldError;
use waymark_core::journey::{Journey, validate};
use waymark_core::time::format_iso8601;
use waymark_store::{JourneyAction, JourneyRecord, Transition, wall_clock_ms};

use crate::AppState;
use crate::error::{ApiError, ErrorBody};
use crate::versions::{VersionQuery, VersionView, key_mismatch, one_or_version, read_document};

/// Largest journey document accepted.
const MAX_DOCUMENT_BYTES: usize = 1024 * 1024;

#[derive(Debug, Serialize, ToSchema)]
pub struct JourneyView {
    pub key: String,
    /// draft, live, paused, closed or stopped.
    pub status: String,
    /// The newest published version: the one new entries use.
    pub live_version: Option<u32>,
    pub versions: Vec<VersionView>,
    /// The current draft document.
    #[schema(value_type = Object)]
    pub draft: Value,
    pub draft_updated_at: String,
    pub created_at: String,
    pub updated_at: String,
    /// Set by publish: the version now live and whether publishing created it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub published: Option<Published>,
    /// For a journey that reads an audience (`entry.on: read`): its reads.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read: Option<ReadView>,
}

/// A journey's reads of its audience.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReadView {
    /// `reading` (a read in progress), `scheduled` (one to come) or `done`.
    pub state: &'static str,
    /// When the next read starts (or the one in progress started).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub due_at: Option<String>,
    /// Members the read in progress has gone through, and of them those left out as
    /// members of an `except` audience.
    pub members_read: u64,
    pub excluded: u64,
    /// When the last complete read finished, how many members it went through and how
    /// many of them it left out.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_finished_at: Option<String>,
    pub last_read: u64,
    pub last_excluded: u64,
}

impl From<waymark_store::pipeline::JourneyRead> for ReadView {
    fn from(r: waymark_store::pipeline::JourneyRead) -> Self {
        Self {
            state: match (r.started_at, r.due_at) {
                (Some(_), _) => "reading",
                (None, Some(_)) => "scheduled",
                (None, None) => "done",
            },
            due_at: r.due_at.map(format_iso8601),
            members_read: r.read,
            excluded: r.excluded,
            last_finished_at: r.last_finished_at.map(format_iso8601),
            last_read: r.last_read,
            last_excluded: r.last_excluded,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Published {
    pub version: u32,
    pub created: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct JourneyList {
    pub journeys: Vec<JourneyView>,
}

impl From<JourneyRecord> for JourneyView {
    fn from(r: JourneyRecord) -> Self {
        Self {
            key: r.key,
            status: r.status.as_str().to_owned(),
            live_version: r.live_version,
            versions: VersionView::list(r.versions),
            draft: r.draft,
            draft_updated_at: format_iso8601(r.draft_updated_at),
            created_at: format_iso8601(r.created_at),
            updated_at: format_iso8601(r.updated_at),
            published: None,
            read: r.read.map(|r| ReadView::from(*r)),
        }
    }
}

fn no_journey(key: &str) -> ApiError {
    ApiError::not_found(format!("no journey has the key {key:?}"))
}

/// Creates the journey or replaces its draft. The document (JSON, or YAML with a YAML
/// content type) is validated first; an invalid one is refused with every problem listed.
#[utoipa::path(put, path = "/v1/journeys/{key}", tag = "journeys",
    params(("key" = String, Path, description = "The journey's key; must match `key` in the document")),
    request_body(content = Object, description = "A journey document (see docs/journey.schema.json), as JSON or YAML (Content-Type: application/yaml)"),
    responses((status = 200, body = JourneyView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 422, description = "The document is well-formed but cannot run; `errors` lists every problem", body = ErrorBody)),
    security(("admin_token" = [])))]
pub async fn put_journey(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(key): Path<String>,
    body: Body,
) -> Result<axum::Json<JourneyView>, ApiError> {
    state.keys.require_admin(&headers)?;
    let journey: Journey = read_document(&headers, body, "a journey", MAX_DOCUMENT_BYTES).await?;
    let mut problems = validate(&journey);
    if let Some(mismatch) = key_mismatch(&journey.key, &key) {
        problems.insert(0, mismatch);
    }
    problems.extend(unknown_audiences(&state, &journey).await?);
    if journey.campaign.is_some() {
        problems.push(FieldError::new(
            "invalid_value",
            "campaign",
            "campaign is set by the campaigns API (PUT /v1/campaigns/{key})",
        ));
    }
    let record = store_draft(&state, &key, &journey, problems, "invalid_journey").await?;
    Ok(axum::Json(record.into()))
}

/// Stores a journey document as the draft of `key`, unless there are `problems` (refused as
/// `code`) or the key is the other API's: campaigns and journeys share keys, and a
/// campaign's journey (one with `campaign` set) changes only through the campaigns API.
pub async fn store_draft(
    state: &AppState,
    key: &str,
    journey: &Journey,
    problems: Vec<FieldError>,
    code: &str,
) -> Result<JourneyRecord, ApiError> {
    let campaign = journey.campaign.is_some();
    if let Some(existing) = state.store.journey(key).await?
        && existing.draft.get("campaign").is_some() != campaign
    {
        return Err(if campaign {
            ApiError::conflict(
                "not_a_campaign",
                format!("journey {key:?} is not a campaign's; campaigns and journeys share keys"),
            )
        } else {
            ApiError::conflict(
                "campaign_journey",
                format!("journey {key:?} runs a campaign: change it with PUT /v1/campaigns/{key}"),
            )
        });
    }
    if !problems.is_empty() {
        return Err(ApiError::unprocessable(code, problems));
    }
    let document = serde_json::to_value(journey)
        .map_err(|e| ApiError::bad_request("invalid_document", e.to_string()))?;
    Ok(state
        .store
        .put_journey_draft(key, &document, wall_clock_ms())
        .await?)
}

/// The audiences a journey's entry names that do not exist, with their paths.
pub async fn unknown_audiences(
    state: &AppState,
    journey: &Journey,
) -> Result<Vec<FieldError>, ApiError> {
    let named = journey
        .entry
        .audience
        .iter()
        .map(|a| ("entry.audience".to_owned(), a));
    let except =
        (journey.entry.except.iter().enumerate()).map(|(i, a)| (format!("entry.except[{i}]"), a));
    let mut problems = Vec::new();
    for (field, audience) in named.chain(except) {
        if state.store.audience(audience).await?.is_none() {
            problems.push(FieldError::new(
                "unknown_audience",
                field,
                format!("there is no audience {audience:?}"),
            ));
        }
    }
    Ok(problems)
}

/// Publishes the journey's draft with its templates pinned; returns the journey and
/// whether publishing made a new version.
pub async fn publish(
    state: &AppState,
    key: &str,
    now: waymark_core::time::Millis,
) -> Result<(JourneyRecord, bool), ApiError> {
    let draft = state
        .store
        .journey(key)
        .await?
        .ok_or_else(|| no_journey(key))?
        .draft;
    if let Some(pinned) = pin_templates(state, &draft).await? {
        state.store.put_journey_draft(key, &pinned, now).await?;
    }
    let (record, created) = state
        .store
        .publish_journey(key, now)
        .await?
        .ok_or_else(|| no_journey(key))?;
    let version = record.live_version.unwrap_or(1);
    tracing::info!(journey = %key, version, created, "journey published");
    Ok((record, created))
}

/// Publish, pause, resume, close or stop a journey.
#[utoipa::path(post, path = "/v1/journeys/{key}/{action}", tag = "journeys",
    params(("key" = String, Path), ("action" = String, Path, description = "publish | pause | resume | close | stop")),
    responses((status = 200, body = JourneyView), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "The lifecycle does not allow this action now", body = ErrorBody)),
    security(("admin_token" = [])))]
pub async fn journey_action(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((key, action)): Path<(String, String)>,
) -> Result<axum::Json<JourneyView>, ApiError> {
    state.keys.require_admin(&headers)?;
    let now = wall_clock_ms();
    if action == "publish" {
        if let Some(existing) = state.store.journey(&key).await?
            && existing.draft.get("campaign").is_some()
        {
            return Err(ApiError::conflict(
                "campaign_journey",
                format!(
                    "journey {key:?} runs a campaign: launch it with POST /v1/campaigns/{key}/launch"
                ),
            ));
        }
        let (record, created) = publish(&state, &key, now).await?;
        let version = record.live_version.unwrap_or(1);
        let mut view = JourneyView::from(record);
        view.published = Some(Published { version, created });
        return Ok(axum::Json(view));
    }
    let Some(action) = JourneyAction::parse(&action) else {
        return Err(ApiError::not_found(format!(
            "unknown journey action {action:?}; use publish, pause, resume, close or stop"
        )));
    };
    match state
        .store
        .change_journey_status(&key, action, now)
        .await?
        .ok_or_else(|| no_journey(&key))?
    {
        Transition::Done(record) => Ok(axum::Json(record.into())),
        Transition::Refused { reason, .. } => Err(ApiError::conflict("invalid_transition", reason)),
    }
}

/// Puts into the draft the newest version of every template its message nodes name (and the
/// partials those include), so the published version sends exactly that content. Returns
/// the new draft if it changed. A template that does not exist is refused, except for the
/// `log` channel (a dry run, which records the name alone).
async fn pin_templates(state: &AppState, draft: &Value) -> Result<Option<Value>, ApiError> {
    use waymark_core::journey::{NodeKind, PinnedTemplate};
    let mut journey: Journey = serde_json::from_value(draft.clone())
        .map_err(|e| ApiError::bad_request("invalid_document", e.to_string()))?;
    let mut pinned: std::collections::BTreeMap<String, PinnedTemplate> = journey
        .templates
        .iter()
        .filter(|(_, t)| t.version.is_none())
        .map(|(k, t)| (k.clone(), t.clone()))
        .collect();
    let named: Vec<(usize, &str, &str)> = journey
        .nodes
        .iter()
        .enumerate()
        .filter_map(|(i, node)| match &node.kind {
            NodeKind::Message {
                channel, template, ..
            } => Some((i, channel.as_str(), template.as_str())),
            _ => None,
        })
        .collect();
    let stored =
        crate::templates::with_partials(state, named.iter().map(|(_, _, t)| (*t).to_owned()))
            .await?;
    let mut problems = Vec::new();
    for &(i, channel, key) in &named {
        // A missing partial is left to validation; a missing template is refused here,
        // except on `log` or when the document carries it inline.
        if channel != "log" && !stored.contains_key(key) && !pinned.contains_key(key) {
            problems.push(FieldError::new(
                "unknown_template",
                format!("nodes[{i}].template"),
                format!("no template has the key {key:?}; PUT /v1/templates/{key} first"),
            ));
        }
    }
    for (key, (version, document)) in stored {
        pinned.insert(
            key,
            PinnedTemplate {
                version: Some(version),
                document,
            },
        );
    }
    problems.extend(placement_problems(state, &journey, &pinned).await?);
    for (key, template) in &pinned {
        if let Some(why) = crate::templates::unknown_sender(state, &template.document) {
            problems.push(FieldError::new(
                "unknown_sender",
                format!("templates.{key}.document.sender"),
                why,
            ));
        }
    }
    if pinned == journey.templates && problems.is_empty() {
        return Ok(None);
    }
    journey.templates = pinned;
    problems.extend(validate(&journey));
    if !problems.is_empty() {
        return Err(ApiError::unprocessable("invalid_journey", problems));
    }
    serde_json::to_value(&journey)
        .map(Some)
        .map_err(|e| ApiError::bad_request("invalid_document", e.to_string()))
}

/// Each `code_based` node's surface must be a placement of the decisioning catalogue, and
/// its template must hold what that placement shows (`html`, `text`, `image`, or `data` for
/// JSON): otherwise the content could never be shown.
async fn placement_problems(
    state: &AppState,
    journey: &Journey,
    pinned: &std::collections::BTreeMap<String, waymark_core::journey::PinnedTemplate>,
) -> Result<Vec<FieldError>, ApiError> {
    use waymark_core::journey::NodeKind;
    let placed: Vec<(usize, &str, &str)> = journey
        .nodes
        .iter()
        .enumerate()
        .filter_map(|(i, node)| match &node.kind {
            NodeKind::Message {
                channel,
                template,
                surface: Some(surface),
                ..
            } if channel == "code_based" => Some((i, surface.as_str(), template.as_str())),
            _ => None,
        })
        .collect();
    if placed.is_empty() {
        return Ok(Vec::new());
    }
    let catalogue = state.decisioning.current(&state.store).await?;
    let mut problems = Vec::new();
    for (i, surface, template) in placed {
        let Some(placement) = catalogue.catalogue.placement_by(surface) else {
            problems.push(FieldError::new(
                "unknown_placement",
                format!("nodes[{i}].surface"),
                format!("there is no placement {surface:?} (by key or surface); PUT /v1/placements/<key> first"),
            ));
            continue;
        };
        // (A template of another channel is refused by validation.)
        let Some(doc) = pinned
            .get(template)
            .map(|t| &t.document)
            .filter(|d| d.channel == "code_based")
        else {
            continue;
        };
        if !placement.content.in_template(doc) {
            let field = placement.content.template_field();
            problems.push(FieldError::new(
                "invalid_value",
                format!("nodes[{i}].template"),
                format!(
                    "placement {:?} shows {} content: template {template:?} has no {field}",
                    placement.key,
                    placement.content.name()
                ),
            ));
        }
    }
    Ok(problems)
}

/// One journey: status, versions and draft; or, with `?version=N`, that version's document.
#[utoipa::path(get, path = "/v1/journeys/{key}", tag = "journeys",
    params(("key" = String, Path), VersionQuery),
    responses((status = 200, body = JourneyView), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("admin_token" = [])))]
pub async fn get_journey(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(key): Path<String>,
    Query(q): Query<VersionQuery>,
) -> Result<axum::response::Response, ApiError> {
    state.keys.require_admin(&headers)?;
    one_or_version(
        "journey",
        &key,
        q.version,
        state.store.journey_version(&key, q.version.unwrap_or(0)),
        async { Ok(state.store.journey(&key).await?.map(JourneyView::from)) },
    )
    .await
}

/// Every journey, by key.
#[utoipa::path(get, path = "/v1/journeys", tag = "journeys",
    responses((status = 200, body = JourneyList), (status = 401, body = ErrorBody)),
    security(("admin_token" = [])))]
pub async fn list_journeys(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<axum::Json<JourneyList>, ApiError> {
    state.keys.require_admin(&headers)?;
    let journeys = state
        .store
        .journeys()
        .await?
        .into_iter()
        .map(JourneyView::from)
        .collect();
    Ok(axum::Json(JourneyList { journeys }))
}

/// Per node: entered, waiting, passed, errored, exited; and instances by status.
#[utoipa::path(get, path = "/v1/journeys/{key}/stats", tag = "journeys",
    params(("key" = String, Path)),
    responses((status = 200, description = "Counters kept by every transaction: all instances ever, by status; per node entered, waiting, passed, errored, exited; entries refused by the rate limit"),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("admin_token" = [])))]
pub async fn journey_stats(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(key): Path<String>,
) -> Result<axum::Json<waymark_engine::stats::JourneyStats>, ApiError> {
    state.keys.require_admin(&headers)?;
    state
        .store
        .journey(&key)
        .await?
        .ok_or_else(|| no_journey(&key))?;
    Ok(axum::Json(state.store.journey_stats(&key).await?))
}
