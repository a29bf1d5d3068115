//! Offer decisioning over HTTP: the catalogue (offers, placements, collections, decision
//! policies) as versioned documents (admin token), and `POST /v1/decide`, which pages and
//! apps call with the write key (and, for a signed-in person, their user hash) to learn
//! what to show on each placement. Decisions are made from memory: the compiled catalogue
//! and everyone's counts are kept here and refreshed in the background (the catalogue
//! when any document changes, within half a second even if another process saved it;
//! counts every second); only the person is read per request.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, RwLock};

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use waymark_core::decisioning::{CapEvent, Document, Kind, audiences_read, check};
use waymark_core::time::{Millis, format_iso8601};
use waymark_core::{FieldError, Identity};
use waymark_engine::decisioning::{Ask, CompiledCatalogue, Decided, OfferCounts, Visitor};
use waymark_store::decisioning::OfferCount;
use waymark_store::{Store, StoreError, Versions, wall_clock_ms};

use crate::AppState;
use crate::error::{ApiError, ErrorBody};
use crate::versions::{VersionView, key_mismatch, read_document};

/// The largest catalogue document accepted.
const MAX_DOCUMENT_BYTES: usize = 256 * 1024;
/// The largest decide request.
const MAX_DECIDE_BYTES: usize = 64 * 1024;
/// The most placements one decide request may ask for.
const MAX_ASKS: usize = 20;
/// How often the catalogue's stamp is checked for saves by other processes.
const CATALOGUE_CHECK_MS: i64 = 500;
/// How often everyone's counts are read again.
const COUNTS_REFRESH_MS: i64 = 1_000;
const HOUR: Millis = 3_600_000;

/// What decisions are made from, kept in memory.
#[derive(Default)]
pub struct Decisioning {
    catalogue: RwLock<Option<(i64, Arc<CompiledCatalogue>)>>,
    counts: RwLock<Counts>,
    refreshing: AtomicBool,
    catalogue_checked_at: AtomicI64,
    counts_read_at: AtomicI64,
}

impl std::fmt::Debug for Decisioning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decisioning").finish_non_exhaustive()
    }
}

/// Displays and clicks, by offer and placement per hour (as stored, the last two hours
/// only: older rows no longer change) and in total. Memory stays bounded by the catalogue
/// and its longest total-cap window, not by how long the server runs.
#[derive(Default)]
struct Counts {
    rows: BTreeMap<(Millis, String, String), (u64, u64)>,
    /// All hours, per (placement, offer): what the learned ranker reads.
    pairs: HashMap<(String, String), (u64, u64)>,
    /// All hours, per offer: what total caps without a window read.
    offer_totals: HashMap<String, (u64, u64)>,
    /// Per offer, per hour, all placements, as far back as the longest total-cap window:
    /// what total caps with a window read.
    offers: HashMap<String, BTreeMap<Millis, (u64, u64)>>,
    /// The newest hour read: rows from the hour before it are read again each time (a
    /// row only changes while its hour is current).
    newest_hour: Option<Millis>,
}

impl Counts {
    /// Merges rows read again; keeps hours per offer `keep_ms` back from the newest.
    fn merge(&mut self, rows: Vec<OfferCount>, keep_ms: i64) {
        for row in rows {
            let new = (row.displays.max(0) as u64, row.clicks.max(0) as u64);
            let old = self
                .rows
                .insert((row.hour, row.offer.clone(), row.placement.clone()), new)
                .unwrap_or((0, 0));
            let (dd, dc) = (new.0.saturating_sub(old.0), new.1.saturating_sub(old.1));
            let pair = self
                .pairs
                .entry((row.placement.clone(), row.offer.clone()))
                .or_default();
            pair.0 += dd;
            pair.1 += dc;
            let total = self.offer_totals.entry(row.offer.clone()).or_default();
            total.0 += dd;
            total.1 += dc;
            let hour = self
                .offers
                .entry(row.offer)
                .or_default()
                .entry(row.hour)
                .or_default();
            hour.0 += dd;
            hour.1 += dc;
            self.newest_hour = Some(self.newest_hour.map_or(row.hour, |h| h.max(row.hour)));
        }
        if let Some(newest) = self.newest_hour {
            let settled = newest - HOUR;
            self.rows.retain(|(hour, _, _), _| *hour >= settled);
            let oldest_kept = settled.saturating_sub(keep_ms);
            for hours in self.offers.values_mut() {
                *hours = hours.split_off(&oldest_kept);
            }
            self.offers.retain(|_, hours| !hours.is_empty());
        }
    }
}

impl OfferCounts for Counts {
    fn total(&self, offer: &str, on: CapEvent, since: Option<Millis>) -> u64 {
        let pick = |(d, c): &(u64, u64)| match on {
            CapEvent::Display => *d,
            CapEvent::Click => *c,
        };
        let Some(since) = since else {
            return self.offer_totals.get(offer).map_or(0, pick);
        };
        let Some(hours) = self.offers.get(offer) else {
            return 0;
        };
        // By the hour, rounded out: the hour `since` falls in counts whole.
        let from = waymark_engine::stats::hour_of(since);
        hours.range(from..).map(|(_, v)| pick(v)).sum()
    }

    fn learned(&self, placement: &str, offer: &str) -> (u64, u64) {
        self.pairs
            .get(&(placement.to_owned(), offer.to_owned()))
            .copied()
            .unwrap_or((0, 0))
    }
}

impl Decisioning {
    /// The compiled catalogue, loading it first if this process has none yet; a refresh
    /// is started in the background when due.
    pub(crate) async fn current(
        self: &Arc<Self>,
        store: &Arc<dyn Store>,
    ) -> Result<Arc<CompiledCatalogue>, ApiError> {
        let now = wall_clock_ms();
        let loaded = self.loaded();
        let due = now - self.catalogue_checked_at.load(Ordering::Relaxed) >= CATALOGUE_CHECK_MS
            || now - self.counts_read_at.load(Ordering::Relaxed) >= COUNTS_REFRESH_MS;
        match loaded {
            Some(catalogue) => {
                if due && !self.refreshing.swap(true, Ordering::AcqRel) {
                    let (me, store) = (self.clone(), store.clone());
                    tokio::spawn(async move {
                        if let Err(e) = me.refresh(&store, false).await {
                            tracing::warn!(error = %e, "decisioning refresh failed");
                        }
                        me.refreshing.store(false, Ordering::Release);
                    });
                }
                Ok(catalogue)
            }
            None => {
                self.refresh(store, true).await?;
                self.loaded()
                    .ok_or_else(|| ApiError::unavailable("the decisioning catalogue is loading"))
            }
        }
    }

    fn loaded(&self) -> Option<Arc<CompiledCatalogue>> {
        self.catalogue
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|(_, c)| c.clone())
    }

    /// Reads the catalogue again if it changed (`force`: whatever its stamp), and the
    /// counts when due.
    pub async fn refresh(&self, store: &Arc<dyn Store>, force: bool) -> Result<(), StoreError> {
        let now = wall_clock_ms();
        let stamp = store.catalogue_stamp().await?;
        self.catalogue_checked_at.store(now, Ordering::Relaxed);
        let known = self
            .catalogue
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|(s, _)| *s);
        if force || known != Some(stamp) {
            let catalogue = store.catalogue().await?;
            let compiled =
                tokio::task::spawn_blocking(move || CompiledCatalogue::compile(catalogue))
                    .await
                    .map_err(|e| StoreError::Unavailable(e.to_string()))?;
            for (what, why) in &compiled.problems {
                tracing::error!(%what, %why, "catalogue document left out");
            }
            *self.catalogue.write().unwrap_or_else(|e| e.into_inner()) =
                Some((stamp, Arc::new(compiled)));
        }
        if force || now - self.counts_read_at.load(Ordering::Relaxed) >= COUNTS_REFRESH_MS {
            let since = self
                .counts
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .newest_hour
                .map_or(Millis::MIN, |h| h - HOUR);
            let rows = store.offer_counts(since).await?;
            let keep_ms = self.loaded().map_or(0, |c| c.longest_total_window());
            self.counts
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .merge(rows, keep_ms);
            self.counts_read_at.store(now, Ordering::Relaxed);
        }
        Ok(())
    }
}

/// A catalogue document with its versions.
#[derive(Debug, Serialize, ToSchema)]
pub struct CatalogueView {
    pub key: String,
    pub version: u32,
    #[schema(value_type = Object)]
    pub document: Value,
    pub versions: Vec<VersionView>,
    pub created_at: String,
    pub updated_at: String,
    /// Whether this request stored a new version (PUT only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created: Option<bool>,
}

impl CatalogueView {
    fn of(key: String, v: Versions, created: Option<bool>) -> Self {
        CatalogueView {
            key,
            version: v.version,
            document: v.document,
            versions: VersionView::list(v.versions),
            created_at: format_iso8601(v.created_at),
            updated_at: format_iso8601(v.updated_at),
            created,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CatalogueList {
    pub items: Vec<CatalogueView>,
}

/// Where each kind of catalogue document lives: `/v1/<this>` and `/v1/<this>/{key}`.
pub fn resource(kind: Kind) -> &'static str {
    match kind {
        Kind::Offer => "offers",
        Kind::Placement => "placements",
        Kind::Collection => "collections",
        Kind::Policy => "decision-policies",
    }
}

/// The catalogue's routes, a list and a document route per kind.
pub(crate) fn routes(mut router: axum::Router<AppState>) -> axum::Router<AppState> {
    use axum::routing::get;
    for kind in Kind::ALL {
        let one = get(
            move |state: State<AppState>,
                  headers: HeaderMap,
                  key: Path<String>,
                  query: Query<VersionQuery>| {
                get_document(kind, state, headers, key, query)
            },
        )
        .put(
            move |state: State<AppState>, headers: HeaderMap, key: Path<String>, body: Body| {
                put_document(kind, state, headers, key, body)
            },
        );
        router = router
            .route(
                &format!("/v1/{}", resource(kind)),
                get(move |state: State<AppState>, headers: HeaderMap| {
                    list_documents(kind, state, headers)
                }),
            )
            .route(&format!("/v1/{}/{{key}}", resource(kind)), one);
    }
    router
}

/// Creates the document or adds a version, if it changed: offers (`/v1/offers/{key}`),
/// placements, collections and decision policies (`/v1/decision-policies/{key}`). It is
/// checked against the whole catalogue as it stands when saved (every problem listed with
/// its field), so the catalogue is never left inconsistent; decisions use it at once.
#[utoipa::path(put, path = "/v1/{resource}/{key}", tag = "decisioning",
    params(("resource" = String, Path, description = "`offers`, `placements`, `collections` or `decision-policies`"),
        ("key" = String, Path, description = "Must match `key` in the document")),
    request_body(content = Object, description = "The document as JSON, or YAML (Content-Type: application/yaml)"),
    responses((status = 200, body = CatalogueView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 422, description = "What is wrong, every problem with its field", body = ErrorBody)),
    security(("admin_token" = [])))]
pub async fn put_document(
    kind: Kind,
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(key): Path<String>,
    body: Body,
) -> Result<axum::Json<CatalogueView>, ApiError> {
    state.keys.require_admin(&headers)?;
    let value: Value = read_document(&headers, body, kind.name(), MAX_DOCUMENT_BYTES).await?;
    let doc = typed(kind, value)?;
    let mut problems = Vec::new();
    if let Some(mismatch) = key_mismatch(doc.key(), &key) {
        problems.push(mismatch);
    }
    for audience in audiences_read(&doc) {
        if state.store.audience(&audience).await?.is_none() {
            let field = match kind {
                Kind::Policy => "ranking.formula",
                _ => "eligibility",
            };
            problems.push(FieldError::new(
                "unknown_audience",
                field,
                format!("in_audience({audience:?}): there is no audience {audience:?}"),
            ));
        }
    }
    if !problems.is_empty() {
        return Err(ApiError::unprocessable("invalid_document", problems));
    }
    let document = doc.to_value();
    let retention = state.event_retention_ms;
    let checked = doc.clone();
    let saved = state
        .store
        .put_catalogue(
            kind,
            &key,
            &document,
            Box::new(move |catalogue| check(catalogue, &checked, retention)),
            wall_clock_ms(),
        )
        .await?;
    let (versions, created) =
        saved.map_err(|problems| ApiError::unprocessable("invalid_document", problems))?;
    if created {
        tracing::info!(kind = kind.name(), %key, version = versions.version, "catalogue document stored");
        // This process decides with it from the next request on.
        state.decisioning.refresh(&state.store, true).await?;
    }
    Ok(axum::Json(CatalogueView::of(key, versions, Some(created))))
}

/// The typed document, or a 400 naming the field that does not read.
fn typed(kind: Kind, value: Value) -> Result<Document, ApiError> {
    fn read<T: serde::de::DeserializeOwned>(value: Value) -> Result<T, ApiError> {
        serde_path_to_error::deserialize(value).map_err(|e| {
            let field = e.path().to_string();
            let mut err = ApiError::bad_request("invalid_document", e.inner().to_string());
            err.body.field = (field != ".").then_some(field);
            err
        })
    }
    Ok(match kind {
        Kind::Offer => Document::Offer(read(value)?),
        Kind::Placement => Document::Placement(read(value)?),
        Kind::Collection => Document::Collection(read(value)?),
        Kind::Policy => Document::Policy(read(value)?),
    })
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct VersionQuery {
    /// A version number: that version's document instead.
    pub version: Option<u32>,
}

/// One catalogue document: its newest version and the list of versions (or, with
/// `?version=N`, that version's document).
#[utoipa::path(get, path = "/v1/{resource}/{key}", tag = "decisioning",
    params(("resource" = String, Path), ("key" = String, Path), VersionQuery),
    responses((status = 200, body = CatalogueView), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("admin_token" = [])))]
pub async fn get_document(
    kind: Kind,
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(key): Path<String>,
    Query(query): Query<VersionQuery>,
) -> Result<axum::response::Response, ApiError> {
    state.keys.require_admin(&headers)?;
    let store = &state.store;
    crate::versions::one_or_version(
        kind.name(),
        &key,
        query.version,
        async {
            store
                .catalogue_version(kind, &key, query.version.unwrap_or(0))
                .await
        },
        async {
            Ok(store
                .catalogue_document(kind, &key)
                .await?
                .map(|v| CatalogueView::of(key.clone(), v, None)))
        },
    )
    .await
}

/// Every document of one kind (newest versions), by key.
#[utoipa::path(get, path = "/v1/{resource}", tag = "decisioning",
    params(("resource" = String, Path)),
    responses((status = 200, body = CatalogueList), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("admin_token" = [])))]
pub async fn list_documents(
    kind: Kind,
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<axum::Json<CatalogueList>, ApiError> {
    state.keys.require_admin(&headers)?;
    let items = state
        .store
        .catalogue_documents(kind)
        .await?
        .into_iter()
        .map(|(key, v)| CatalogueView::of(key, v, None))
        .collect();
    Ok(axum::Json(CatalogueList { items }))
}

/// A decide request.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DecideRequest {
    /// The signed-in person (needs their user hash in `X-Waymark-User-Hash` with a write
    /// key).
    #[serde(default)]
    pub user_id: Option<String>,
    /// The visitor's anonymous id.
    #[serde(default)]
    pub anonymous_id: Option<String>,
    /// The placements to fill, each by key or surface URI.
    pub placements: Vec<DecideAsk>,
    /// What eligibility rules, formulas and content read as `context` (page, device,
    /// cart...).
    #[serde(default)]
    #[schema(value_type = Object)]
    pub context: Option<Value>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DecideAsk {
    /// A placement key, or its surface URI (`web://shop.example/home#hero`).
    pub placement: String,
    /// At most this many items (else the decision policy's number).
    #[serde(default)]
    pub items: Option<u32>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DecideResponse {
    pub placements: Vec<PlacementView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PlacementView {
    pub placement: String,
    pub surface: String,
    /// `html`, `text`, `json` or `image`.
    pub content_type: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// Send it back with feedback (`Offer Displayed` / `Offer Clicked` events, properties
    /// `proposition`, `offer` and `placement`).
    pub proposition: String,
    /// `priority`, `formula`, `learned`, `exploration` or `control`.
    pub ranking: String,
    #[schema(value_type = Vec<Object>)]
    pub items: Vec<waymark_engine::decisioning::Item>,
    /// With `?explain=true` (admin token): every candidate offer, why it was or was not
    /// chosen.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<Object>)]
    pub explain: Vec<waymark_engine::decisioning::OfferExplain>,
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct DecideQuery {
    /// Say, for every candidate offer, why it was or was not chosen (admin token only).
    #[serde(default)]
    pub explain: bool,
}

/// Who a decide request is about, once its proof is checked.
struct Asker {
    identities: Vec<Identity>,
    /// An admin token: any person.
    admin: bool,
    /// The `userId` the request proved with its user hash.
    proven_user: Option<String>,
    /// Stable per visitor when nobody is found: the anonymous id.
    anonymous: String,
}

impl Asker {
    /// Whether the request may be decided as this person.
    fn may_read(&self, profile: &waymark_core::ProfileState) -> bool {
        self.admin
            || !profile.has_user_id()
            || self.proven_user.as_ref().is_some_and(|user| {
                profile
                    .identities
                    .get(waymark_core::Namespace::USER_ID)
                    .is_some_and(|ids| ids.contains(user))
            })
    }
}

fn asker(
    state: &AppState,
    headers: &HeaderMap,
    request: &DecideRequest,
    admin: bool,
) -> Result<Asker, ApiError> {
    let parse = |namespace: &str, value: &str, field: &str| {
        Identity::parse(namespace, value).map_err(|m| ApiError::field("invalid_identity", field, m))
    };
    let user = request
        .user_id
        .as_deref()
        .map(|v| parse(waymark_core::Namespace::USER_ID, v, "userId"))
        .transpose()?;
    let anonymous = request
        .anonymous_id
        .as_deref()
        .map(|v| parse(waymark_core::Namespace::ANONYMOUS_ID, v, "anonymousId"))
        .transpose()?;
    if user.is_none() && anonymous.is_none() {
        return Err(ApiError::field(
            "missing_field",
            "userId",
            "a decision is for a userId or an anonymousId",
        ));
    }
    let mut proven_user = None;
    if let Some(user) = &user
        && !admin
    {
        let secret = state.identity_secret.as_deref().ok_or_else(|| {
            ApiError::forbidden("identity verification is not configured on this server")
        })?;
        let hash = headers
            .get(crate::inbox::USER_HASH_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if !waymark_core::links::verify_user_hash(
            secret,
            user.namespace.as_str(),
            &user.value,
            hash,
        ) {
            let mut e = ApiError::forbidden(format!(
                "{} must be the user hash of user_id:{} (HMAC-SHA256 of it under the identity secret, hex)",
                crate::inbox::USER_HASH_HEADER,
                user.value
            ));
            e.body.code = "invalid_user_hash".into();
            return Err(e);
        }
        proven_user = Some(user.value.clone());
    }
    Ok(Asker {
        anonymous: anonymous
            .as_ref()
            .or(user.as_ref())
            .map(|i| i.value.clone())
            .unwrap_or_default(),
        identities: user.into_iter().chain(anonymous).collect(),
        admin,
        proven_user,
    })
}

/// Chooses what to show on each placement asked for, for one person or visitor, from the
/// catalogue in memory: eligibility, caps and ranking per the placement's decision policy,
/// content rendered for them. With a write key (what pages and apps hold) a `userId` needs
/// its user hash; an `anonymousId` of someone who signed in is decided as an unknown
/// visitor unless the request proves who they are. Unknown visitors get what is eligible
/// for nobody in particular, and fallbacks.
#[utoipa::path(post, path = "/v1/decide", tag = "decisioning",
    params(DecideQuery),
    request_body(content = DecideRequest),
    responses((status = 200, body = DecideResponse), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, description = "A userId without its user hash, or explain without an admin token", body = ErrorBody)),
    security(("write_key" = []), ("admin_token" = [])))]
pub async fn decide(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<DecideQuery>,
    body: Body,
) -> Result<axum::Json<DecideResponse>, ApiError> {
    let admin = state.keys.require_admin(&headers).is_ok();
    if !admin {
        state.keys.require_write(&headers)?;
        if query.explain {
            return Err(ApiError::forbidden("explain needs an admin token"));
        }
    }
    let bytes = crate::error::read_limited(body, MAX_DECIDE_BYTES, || {
        ApiError::bad_request(
            "request_too_large",
            format!(
                "a decide request may be at most {} KB",
                MAX_DECIDE_BYTES / 1024
            ),
        )
    })
    .await?;
    let request: DecideRequest = {
        let mut de = serde_json::Deserializer::from_slice(&bytes);
        serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let field = e.path().to_string();
            let mut err = ApiError::bad_request("invalid_request", e.inner().to_string());
            err.body.field = (field != ".").then_some(field);
            err
        })?
    };
    if request.placements.is_empty() || request.placements.len() > MAX_ASKS {
        return Err(ApiError::field(
            "invalid_value",
            "placements",
            format!("ask for 1 to {MAX_ASKS} placements"),
        ));
    }
    let context = request
        .context
        .clone()
        .unwrap_or(Value::Object(Default::default()));
    if !context.is_object() {
        return Err(ApiError::field(
            "invalid_type",
            "context",
            "context is an object",
        ));
    }
    let mut asks = Vec::with_capacity(request.placements.len());
    for (i, ask) in request.placements.iter().enumerate() {
        if ask
            .items
            .is_some_and(|n| n == 0 || n > waymark_core::decisioning::MAX_ITEMS)
        {
            return Err(ApiError::field(
                "invalid_value",
                &format!("placements[{i}].items"),
                format!("items is 1 to {}", waymark_core::decisioning::MAX_ITEMS),
            ));
        }
        asks.push(Ask {
            placement: ask.placement.clone(),
            items: ask.items,
        });
    }
    let asker = asker(&state, &headers, &request, admin)?;
    let catalogue = state.decisioning.current(&state.store).await?;
    let names: Vec<String> = catalogue.event_names().iter().cloned().collect();
    let now = wall_clock_ms();
    let inputs = state
        .store
        .decision_inputs(&asker.identities, &names, catalogue.bodies(), now)
        .await?
        // Someone who signed in is decided as themselves only when the request proves it is
        // them: a user hash proves its own userId, not the owner of an anonymous id sent
        // beside it.
        .filter(|i| asker.may_read(&i.profile));
    let nobody = waymark_engine::decisioning::nobody();
    let (profile, events, audiences, placed) = match &inputs {
        Some(i) => (
            &i.profile,
            i.events.as_slice(),
            i.audiences.as_slice(),
            i.placed.as_slice(),
        ),
        None => (&nobody, &[][..], &[][..], &[][..]),
    };
    let member_of = |key: &str| audiences.iter().any(|a| a == key);
    let id = if profile.id.is_empty() {
        asker.anonymous.as_str()
    } else {
        profile.id.as_str()
    };
    let visitor = Visitor {
        profile,
        events,
        member_of: &member_of,
        id,
        placed,
    };
    let request_id = uuid::Uuid::now_v7().simple().to_string();
    let seed = seed_of(&request_id);
    let decided = {
        let counts = state
            .decisioning
            .counts
            .read()
            .unwrap_or_else(|e| e.into_inner());
        catalogue.decide(
            &visitor,
            &context,
            &asks,
            now,
            seed,
            &*counts,
            query.explain,
        )
    };
    let decided = decided.map_err(|(i, unknown)| {
        ApiError::field(
            "unknown_placement",
            &format!("placements[{i}].placement"),
            format!("there is no placement {:?} (by key or surface)", unknown.0),
        )
    })?;
    let placements = decided
        .into_iter()
        .enumerate()
        .map(|(i, d)| view(d, format!("{request_id}.{i}")))
        .collect();
    Ok(axum::Json(DecideResponse { placements }))
}

/// A seed from the request's id: its last 64 bits, random in a v7 UUID but for two.
fn seed_of(id: &str) -> u64 {
    u64::from_str_radix(id.get(id.len().saturating_sub(16)..).unwrap_or("0"), 16).unwrap_or(0)
}

fn view(d: Decided, proposition: String) -> PlacementView {
    for (offer, why) in &d.errors {
        metrics::counter!("waymark_decision_errors_total", "offer" => offer.clone()).increment(1);
        tracing::debug!(%offer, %why, "offer left out of a decision");
    }
    metrics::counter!("waymark_decisions_total", "placement" => d.placement.clone(), "ranking" => d.ranking)
        .increment(1);
    PlacementView {
        placement: d.placement,
        surface: d.surface,
        content_type: d.content_type.to_owned(),
        policy: d.policy,
        proposition,
        ranking: d.ranking.to_owned(),
        items: d.items,
        explain: d.explain,
    }
}

/// The browser client: a few lines of plain JavaScript that ask for placements, put the
/// content in place, and report displays and clicks.
pub async fn client_script() -> impl IntoResponse {
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        include_str!("decide.js"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(hour: i64, offer: &str, displays: i64, clicks: i64) -> OfferCount {
        OfferCount {
            offer: offer.into(),
            placement: "hero".into(),
            hour: hour * HOUR,
            displays,
            clicks,
        }
    }

    #[test]
    fn counts_keep_totals_and_only_the_hours_caps_read() {
        let mut counts = Counts::default();
        // 48 hours of 10 displays and 1 click an hour; total caps look back 24 hours.
        counts.merge((0..48).map(|h| row(h, "a", 10, 1)).collect(), 24 * HOUR);
        assert_eq!(counts.learned("hero", "a"), (480, 48));
        assert_eq!(counts.total("a", CapEvent::Display, None), 480);
        assert_eq!(counts.total("a", CapEvent::Click, None), 48);
        // The last day, by the hour (rounded out to whole hours).
        assert_eq!(
            counts.total("a", CapEvent::Display, Some(47 * HOUR - 1)),
            20
        );
        assert_eq!(counts.total("a", CapEvent::Display, Some(24 * HOUR)), 240);
        // Only the two newest hours are kept as rows; hours per offer a day back.
        assert_eq!(counts.rows.len(), 2);
        assert_eq!(counts.offers["a"].len(), 26);
        // The current hour read again, grown: added once, not twice.
        counts.merge(vec![row(47, "a", 15, 3)], 24 * HOUR);
        assert_eq!(counts.learned("hero", "a"), (485, 50));
        assert_eq!(counts.total("a", CapEvent::Display, Some(47 * HOUR)), 15);
        // Without windowed total caps, no hours are kept beyond the settled one.
        counts.merge(vec![row(48, "a", 1, 0)], 0);
        assert_eq!(counts.offers["a"].len(), 2);
        assert_eq!(counts.total("a", CapEvent::Display, None), 486);
    }
}
