//! The profile API (admin token): read a profile, page its events, erase it.

use std::collections::BTreeMap;

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::{IntoParams, ToSchema};
use waymark_core::time::format_iso8601;
use waymark_core::{Identity, ProfileState};
use waymark_store::PageRequest;

use crate::AppState;
use crate::error::{ApiError, ErrorBody};

#[derive(Debug, Serialize, ToSchema)]
pub struct IdentityView {
    pub namespace: String,
    pub value: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Computed {
    pub first_seen: String,
    pub last_seen: String,
    pub event_count: u64,
    /// Lifetime count per event name (`Order Completed`, `Page Viewed`, ...).
    pub event_counts: BTreeMap<String, u64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ProfileView {
    pub id: String,
    pub partition: u32,
    pub identities: Vec<IdentityView>,
    #[schema(value_type = Object)]
    pub traits: Map<String, Value>,
    pub computed: Computed,
    /// Profiles merged into this one by identity resolution.
    pub merged_from: Vec<String>,
    pub created_at: String,
}

impl From<ProfileState> for ProfileView {
    fn from(p: ProfileState) -> Self {
        let identities = p
            .identities
            .iter()
            .flat_map(|(ns, values)| {
                values.iter().map(move |v| IdentityView {
                    namespace: ns.clone(),
                    value: v.clone(),
                })
            })
            .collect();
        Self {
            identities,
            computed: Computed {
                first_seen: format_iso8601(p.first_seen),
                last_seen: format_iso8601(p.last_seen),
                event_count: p.event_count,
                event_counts: p.event_counts,
            },
            id: p.id,
            partition: p.partition,
            traits: p.traits,
            merged_from: p.merged_from,
            created_at: format_iso8601(p.created_at),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EventsView {
    /// Events newest first, in Segment's JSON shape.
    #[schema(value_type = Vec<Object>)]
    pub events: Vec<Value>,
    /// Pass as `before` to get the next (older) page; absent on the last page.
    pub next: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErasureView {
    pub erased: bool,
    pub profile_id: String,
    pub events_deleted: u64,
    pub identities_deleted: u64,
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct EventsQuery {
    /// Page size, 1 to 1000 (default 50).
    pub limit: Option<String>,
    /// Cursor from the previous page's `next`.
    pub before: Option<String>,
}

fn identity(namespace: &str, value: &str) -> Result<Identity, ApiError> {
    Identity::parse(namespace, value)
        .map_err(|m| ApiError::field("invalid_identity", "namespace", m))
}

fn no_profile(namespace: &str, value: &str) -> ApiError {
    ApiError::not_found(format!("no profile has the identity {namespace}:{value}"))
}

/// A profile: identities, traits and computed fields.
#[utoipa::path(get, path = "/v1/profiles/{namespace}/{value}", tag = "profiles",
    params(("namespace" = String, Path, description = "user_id, anonymous_id, email, phone or a custom namespace"),
           ("value" = String, Path, description = "The identity's value")),
    responses((status = 200, body = ProfileView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("admin_token" = [])))]
pub async fn get_profile(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((namespace, value)): Path<(String, String)>,
) -> Result<axum::Json<ProfileView>, ApiError> {
    state.keys.require_admin(&headers)?;
    let id = identity(&namespace, &value)?;
    let profile = state
        .store
        .profile(&id)
        .await?
        .ok_or_else(|| no_profile(&namespace, &value))?;
    Ok(axum::Json(profile.into()))
}

/// The profile's events, newest first, paged with `before` cursors.
#[utoipa::path(get, path = "/v1/profiles/{namespace}/{value}/events", tag = "profiles",
    params(("namespace" = String, Path), ("value" = String, Path), EventsQuery),
    responses((status = 200, body = EventsView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("admin_token" = [])))]
pub async fn get_events(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((namespace, value)): Path<(String, String)>,
    Query(query): Query<EventsQuery>,
) -> Result<axum::Json<EventsView>, ApiError> {
    state.keys.require_admin(&headers)?;
    let id = identity(&namespace, &value)?;
    let limit = match query.limit.as_deref() {
        None => 50,
        Some(text) => match text.parse::<u32>() {
            Ok(n) if (1..=1000).contains(&n) => n,
            _ => {
                return Err(ApiError::field(
                    "invalid_value",
                    "limit",
                    format!("limit must be an integer from 1 to 1000, not {text:?}"),
                ));
            }
        },
    };
    if let Some(before) = &query.before
        && waymark_store::decode_cursor(before).is_none()
    {
        return Err(ApiError::field(
            "invalid_value",
            "before",
            "before must be a cursor returned as `next` by a previous page",
        ));
    }
    let page = state
        .store
        .events(
            &id,
            PageRequest {
                before: query.before,
                limit,
            },
        )
        .await?
        .ok_or_else(|| no_profile(&namespace, &value))?;
    Ok(axum::Json(EventsView {
        events: page.events.into_iter().map(|e| e.body).collect(),
        next: page.next,
    }))
}

/// Erases the profile: the profile, all its identities and all its events are deleted.
#[utoipa::path(delete, path = "/v1/profiles/{namespace}/{value}", tag = "profiles",
    params(("namespace" = String, Path), ("value" = String, Path)),
    responses((status = 200, body = ErasureView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("admin_token" = [])))]
pub async fn delete_profile(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((namespace, value)): Path<(String, String)>,
) -> Result<axum::Json<ErasureView>, ApiError> {
    state.keys.require_admin(&headers)?;
    let id = identity(&namespace, &value)?;
    let erasure = state
        .store
        .erase(&id)
        .await?
        .ok_or_else(|| no_profile(&namespace, &value))?;
    tracing::info!(profile_id = %erasure.profile_id, events = erasure.events_deleted, "profile erased");
    Ok(axum::Json(ErasureView {
        erased: true,
        profile_id: erasure.profile_id,
        events_deleted: erasure.events_deleted,
        identities_deleted: erasure.identities_deleted,
    }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ProfileJourneysView {
    /// The person's instances in each journey they entered, with every step taken.
    #[schema(value_type = Vec<Object>)]
    pub journeys: Vec<Value>,
    /// Effects recorded for the person (messages, webhook calls, ...), oldest first.
    #[schema(value_type = Vec<Object>)]
    pub effects: Vec<Value>,
}

/// Why is this person here? Every journey instance of the profile, its version, current
/// node, waits and the history of steps with times and branch decisions.
#[utoipa::path(get, path = "/v1/profiles/{namespace}/{value}/journeys", tag = "profiles",
    params(("namespace" = String, Path), ("value" = String, Path)),
    responses((status = 200, body = ProfileJourneysView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("admin_token" = [])))]
pub async fn get_journeys(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((namespace, value)): Path<(String, String)>,
) -> Result<axum::Json<ProfileJourneysView>, ApiError> {
    state.keys.require_admin(&headers)?;
    let id = identity(&namespace, &value)?;
    let journeys = state
        .store
        .profile_journeys(&id)
        .await?
        .ok_or_else(|| no_profile(&namespace, &value))?;
    let effects = state.store.profile_outbox(&id).await?.unwrap_or_default();
    let iso = |v: Option<&Value>| v.and_then(Value::as_i64).map(format_iso8601);
    let journeys = journeys
        .into_iter()
        .map(|(key, st)| {
            let mut instances = serde_json::to_value(&st.instances).unwrap_or(Value::Null);
            // Times as ISO 8601 for people; the engine keeps milliseconds.
            for instance in instances.as_array_mut().into_iter().flatten() {
                for field in ["entered_at", "deadline", "ended_at"] {
                    let text = iso(instance.get(field));
                    if let Some(t) = text {
                        instance[field] = Value::String(t);
                    }
                }
                for step in instance["steps"].as_array_mut().into_iter().flatten() {
                    if let Some(t) = iso(step.get("at")) {
                        step["at"] = Value::String(t);
                    }
                }
            }
            serde_json::json!({"journey": key, "instances": instances})
        })
        .collect();
    let effects = effects
        .into_iter()
        .map(|o| serde_json::json!({"key": o.key, "journey": o.journey, "kind": o.kind, "status": o.status, "effect": o.effect}))
        .collect();
    Ok(axum::Json(ProfileJourneysView { journeys, effects }))
}
