//! The profile API (admin token): read a profile, page its events, erase it.

use std::collections::{BTreeMap, HashMap};

use waymark_engine::{Effect, EffectKey, StepKind};

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
pub struct PageQuery {
    /// Page size, 1 to 1000 (default 50).
    pub limit: Option<String>,
    /// Cursor from the previous page's `next`.
    pub before: Option<String>,
}

impl PageQuery {
    fn limit(&self) -> Result<u32, ApiError> {
        match self.limit.as_deref() {
            None => Ok(50),
            Some(text) => match text.parse::<u32>() {
                Ok(n) if (1..=1000).contains(&n) => Ok(n),
                _ => Err(ApiError::field(
                    "invalid_value",
                    "limit",
                    format!("limit must be an integer from 1 to 1000, not {text:?}"),
                )),
            },
        }
    }

    /// The cursor, as `(time, seq)`.
    fn before(&self) -> Result<Option<(i64, i64)>, ApiError> {
        match &self.before {
            None => Ok(None),
            Some(text) => waymark_store::decode_cursor(text).map(Some).ok_or_else(|| {
                ApiError::field(
                    "invalid_value",
                    "before",
                    "before must be a cursor returned as `next` by a previous page",
                )
            }),
        }
    }
}

fn identity(namespace: &str, value: &str) -> Result<Identity, ApiError> {
    Identity::parse(namespace, value)
        .map_err(|m| ApiError::field("invalid_identity", "namespace", m))
}

fn no_profile(namespace: &str, value: &str) -> ApiError {
    ApiError::not_found(format!("no profile has the identity {namespace}:{value}"))
}

/// The profile an identity in a path names, or 400 (a malformed identity) or 404.
pub(crate) async fn find(
    state: &AppState,
    namespace: &str,
    value: &str,
) -> Result<waymark_core::ProfileState, ApiError> {
    let id = identity(namespace, value)?;
    state
        .store
        .profile(&id)
        .await?
        .ok_or_else(|| no_profile(namespace, value))
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
    params(("namespace" = String, Path), ("value" = String, Path), PageQuery),
    responses((status = 200, body = EventsView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("admin_token" = [])))]
pub async fn get_events(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((namespace, value)): Path<(String, String)>,
    Query(query): Query<PageQuery>,
) -> Result<axum::Json<EventsView>, ApiError> {
    state.keys.require_admin(&headers)?;
    let id = identity(&namespace, &value)?;
    let limit = query.limit()?;
    query.before()?;
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

/// The person's journey states and outbox entries; 404 if no profile has the identity.
async fn journeys_and_outbox(
    state: &AppState,
    namespace: &str,
    value: &str,
) -> Result<
    (
        Vec<(String, waymark_store::JourneyState)>,
        Vec<waymark_store::OutboxEntry>,
    ),
    ApiError,
> {
    let id = identity(namespace, value)?;
    let journeys = state
        .store
        .profile_journeys(&id)
        .await?
        .ok_or_else(|| no_profile(namespace, value))?;
    let outbox = state.store.profile_outbox(&id).await?.unwrap_or_default();
    Ok((journeys, outbox))
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
    let (journeys, effects) = journeys_and_outbox(&state, &namespace, &value).await?;
    let iso = |v: Option<&Value>| v.and_then(Value::as_i64).map(format_iso8601);
    // Messages held for later have gone out once their outbox row is done.
    // Keyed by the step that planned each (an effect key's profile may be merged away).
    let sent: HashMap<(&str, u32, &str, usize), i64> = effects
        .iter()
        .filter(|o| o.row.effect.message().is_some() && o.row.status == "done")
        .filter_map(|o| {
            let k = EffectKey::parse(&o.row.key)?;
            Some((
                (k.journey, k.instance, k.node, k.step),
                o.finished_at.unwrap_or(o.created_at),
            ))
        })
        .collect();
    let journeys = journeys
        .into_iter()
        .map(|(key, mut st)| {
            for instance in &mut st.instances {
                for (index, step) in instance.steps.iter_mut().enumerate() {
                    if step.what != StepKind::Held {
                        continue;
                    }
                    let planned = (key.as_str(), instance.number, step.node.as_str(), index);
                    if let Some(at) = sent.get(&planned) {
                        step.what = StepKind::Sent;
                        if let Some(Value::Object(detail)) = &mut step.detail {
                            let until = detail.remove("until").unwrap_or(Value::Null);
                            detail.insert("held_until".into(), until);
                            detail.insert("sent_at".into(), Value::String(format_iso8601(*at)));
                        }
                    }
                }
            }
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
        .map(|o| {
            serde_json::json!({"key": o.row.key, "journey": o.row.journey, "kind": o.row.effect.kind(),
                "status": o.row.status, "effect": o.row.effect, "attempts": o.attempts,
                "last_error": o.last_error, "result": o.result,
                "created_at": format_iso8601(o.created_at)})
        })
        .collect();
    Ok(axum::Json(ProfileJourneysView { journeys, effects }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MessagesView {
    /// The newest `limit` messages decided for the person (before the cursor), oldest
    /// first within the page.
    pub messages: Vec<MessageView>,
    /// Cursor for the page of older messages, if there may be one.
    pub next: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MessageView {
    /// The message's id, to report on it (`POST /v1/messages/reports`); absent for messages
    /// that were never queued (suppressed, not sent).
    pub id: Option<String>,
    pub journey: String,
    pub node: String,
    pub channel: String,
    pub template: Option<String>,
    /// Where it went (email address, phone number), if it was addressed.
    pub to: Option<String>,
    /// `recorded` (log channel), `queued`, `held` (quiet hours or throttling), `retrying`, `sent`, `failed` (with `reason`),
    /// `suppressed` (with `reason`: unsubscribed, suppression list, frequency cap, quiet hours), or `not_sent` (no address, or
    /// the template failed to render); then what the provider reported last: `delivered`, `undelivered`, `bounced` (also
    /// when the SMTP server refused it for good), `complained`.
    pub status: String,
    pub reason: Option<String>,
    pub attempts: u32,
    /// The provider's answer (message id, SMTP reply).
    #[schema(value_type = Object)]
    pub provider: Option<Value>,
    pub decided_at: String,
    /// The rendered content.
    #[schema(value_type = Object)]
    pub content: Option<Value>,
    /// What happened to it, oldest first: `queued`, `held` (with until when) if it was not
    /// due at once, then `sent` or `failed` when the dispatcher finished with it, then each
    /// provider report.
    pub history: Vec<StatusChange>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct StatusChange {
    pub status: String,
    pub at: String,
    /// Why (a failure's reason, the provider's words).
    pub detail: Option<String>,
}

impl StatusChange {
    fn new(status: &str, at: i64, detail: Option<String>) -> Self {
        Self {
            status: status.to_owned(),
            at: format_iso8601(at),
            detail: detail.filter(|d| !d.is_empty()),
        }
    }
}

/// The person's messages and what became of each: sent, failed (bounced), retrying,
/// suppressed (and why), or not sent (and why).
#[utoipa::path(get, path = "/v1/profiles/{namespace}/{value}/messages", tag = "profiles",
    params(("namespace" = String, Path), ("value" = String, Path), PageQuery),
    responses((status = 200, body = MessagesView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("admin_token" = [])))]
pub async fn get_messages(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((namespace, value)): Path<(String, String)>,
    Query(query): Query<PageQuery>,
) -> Result<axum::Json<MessagesView>, ApiError> {
    state.keys.require_admin(&headers)?;
    let (limit, before) = (query.limit()?, query.before()?);
    let id = identity(&namespace, &value)?;
    let journeys = state
        .store
        .profile_journeys(&id)
        .await?
        .ok_or_else(|| no_profile(&namespace, &value))?;
    let outbox = state
        .store
        .profile_outbox_page(&id, Some("message"), before.map(|(_, seq)| seq), limit)
        .await?
        .unwrap_or_default();
    // The page covers the time from its oldest queued message (if it is full: older ones
    // are on the next page) up to the cursor; decided-but-unsent messages in that span
    // come with it.
    let oldest = (outbox.len() == limit as usize)
        .then(|| outbox.first().map(|o| (o.created_at, o.seq)))
        .flatten();
    let next = oldest.map(|(at, seq)| waymark_store::cursor(at, seq));
    let in_page = |at: i64| {
        before.is_none_or(|(until, _)| at < until) && oldest.is_none_or(|(from, _)| at >= from)
    };
    let now = waymark_store::wall_clock_ms();
    let mut messages: Vec<(i64, MessageView)> = outbox
        .into_iter()
        .filter_map(|o| {
            let Effect::Message(e) = &o.row.effect else {
                return None;
            };
            let channel = e.channel.clone();
            let status = match (o.row.status.as_str(), channel.as_str()) {
                ("done", "log") => "recorded",
                ("done", _) => "sent",
                ("failed", _) => "failed",
                ("pending", _) if o.attempts > 0 && o.next_attempt_at > now => "retrying",
                // Not yet tried and not yet due: quiet hours (its step says until when) or a
                // throttled channel hold it.
                ("pending", _) if o.next_attempt_at > now => "held",
                _ => "queued",
            };
            let mut history = vec![StatusChange::new("queued", o.created_at, None)];
            // Not due when decided (quiet hours, a throttled channel): until when shows as
            // long as no retry has moved the due time on.
            let first_try = match o.row.status.as_str() {
                "pending" => o.attempts == 0,
                _ => o.attempts == 1,
            };
            if first_try && o.next_attempt_at > o.created_at {
                let until = format!("until {}", format_iso8601(o.next_attempt_at));
                history.push(StatusChange::new("held", o.created_at, Some(until)));
            }
            match status {
                "sent" | "recorded" => history.push(StatusChange::new(
                    status,
                    o.finished_at.unwrap_or(o.created_at),
                    None,
                )),
                "failed" => history.push(StatusChange::new(
                    status,
                    o.finished_at.unwrap_or(o.created_at),
                    o.last_error.clone(),
                )),
                _ => {}
            }
            history.extend(
                o.events
                    .iter()
                    .map(|e| StatusChange::new(&e.status, e.at, Some(e.detail.clone()))),
            );
            let status = o.events.last().map_or(status, |e| e.status.as_str());
            let view = MessageView {
                id: Some(o.row.key.clone()),
                journey: o.row.journey.clone(),
                node: e.node.clone(),
                channel,
                template: Some(e.template.clone()),
                to: e.to.clone(),
                status: status.to_owned(),
                reason: match o.events.last() {
                    // Why it did not arrive, or what the complaint said; a delivery needs none.
                    Some(report) => Some(report.detail.clone())
                        .filter(|d| !d.is_empty() && report.status != "delivered"),
                    None => o
                        .last_error
                        .clone()
                        .filter(|_| status != "sent" && status != "recorded"),
                },
                attempts: o.attempts,
                provider: o.result.clone().filter(|r| !r.is_null()),
                decided_at: format_iso8601(o.created_at),
                content: e
                    .content
                    .as_ref()
                    .and_then(|c| serde_json::to_value(c).ok()),
                history,
            };
            Some((o.created_at, view))
        })
        .collect();
    // Messages decided but not sent are steps of their instance, not outbox rows.
    for (journey, state) in journeys {
        for instance in &state.instances {
            for step in &instance.steps {
                let detail = step.detail.clone().unwrap_or(Value::Null);
                let status = match step.what {
                    StepKind::Suppressed => "suppressed",
                    StepKind::Error
                        if detail.get("channel").is_some() || detail.get("template").is_some() =>
                    {
                        "not_sent"
                    }
                    _ => continue,
                };
                if !in_page(step.at) {
                    continue;
                }
                messages.push((
                    step.at,
                    MessageView {
                        id: None,
                        journey: journey.clone(),
                        node: step.node.clone(),
                        channel: detail["channel"].as_str().unwrap_or_default().to_owned(),
                        template: detail["template"].as_str().map(str::to_owned),
                        to: None,
                        status: status.to_owned(),
                        reason: detail["reason"].as_str().map(str::to_owned),
                        attempts: 0,
                        provider: None,
                        decided_at: format_iso8601(step.at),
                        content: None,
                        history: vec![StatusChange::new(
                            status,
                            step.at,
                            detail["reason"].as_str().map(str::to_owned),
                        )],
                    },
                ));
            }
        }
    }
    messages.sort_by_key(|(at, _)| *at);
    Ok(axum::Json(MessagesView {
        messages: messages.into_iter().map(|(_, m)| m).collect(),
        next,
    }))
}
