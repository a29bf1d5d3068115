//! Waymark's HTTP API.
//!
//! Architecture invariant: this is the only crate that knows HTTP. Handlers parse and
//! authenticate, call the store through its traits, and map results to responses; the rules
//! themselves live in `waymark-core`, the persistence behind `waymark-store`.

pub mod audiences;
pub mod auth;
pub mod campaigns;
pub mod decisioning;
pub mod error;
pub mod inbox;
pub mod ingest;
pub mod journeys;
pub mod links;
pub mod listen;
pub mod ops;
pub mod profiles;
pub mod reports;
pub mod suppressions;
pub mod templates;
pub mod versions;

use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};
use waymark_store::Store;

pub use auth::Keys;

#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub keys: Arc<Keys>,
    /// The secret signed links (unsubscribe) are checked with; without one, none are valid.
    pub link_secret: Option<Arc<Vec<u8>>>,
    /// The secret identity proofs (user hashes) are checked with; without one, per-person
    /// reads through the write key (the inbox) are refused.
    pub identity_secret: Option<Arc<Vec<u8>>>,
    /// Inbound SMS (keywords): the provider's auth token and the URL it calls.
    pub sms_inbound: Option<Arc<links::SmsInbound>>,
    /// SMS status callbacks: the provider's auth token and the callback URL.
    pub sms_status: Option<Arc<reports::SmsStatus>>,
    /// The email sending configurations' names (`[email.senders]`), when email is set up:
    /// a template naming another is refused.
    pub email_senders: Option<Arc<std::collections::BTreeSet<String>>>,
    /// How long events are kept (`retention.max_event_age_days`): an audience window longer
    /// than it could never be filled, so it is refused.
    pub event_retention_ms: Option<i64>,
    /// The decisioning catalogue and counts decisions are made from, in memory.
    pub decisioning: Arc<decisioning::Decisioning>,
    /// Origins whose pages may call the API from a browser (CORS); none by default.
    pub cors_origins: Vec<String>,
}

impl AppState {
    pub fn new(store: Arc<dyn Store>, keys: Keys) -> Self {
        Self {
            store,
            keys: Arc::new(keys),
            link_secret: None,
            identity_secret: None,
            sms_inbound: None,
            sms_status: None,
            email_senders: None,
            event_retention_ms: None,
            decisioning: Arc::default(),
            cors_origins: Vec::new(),
        }
    }

    /// Lets pages on these origins (`https://shop.example`, or `*` for any) call the API
    /// from a browser: ingest, decide and the inbox, with the write key.
    pub fn with_cors_origins(mut self, origins: Vec<String>) -> Self {
        self.cors_origins = origins;
        self
    }

    pub fn with_sms_inbound(mut self, inbound: links::SmsInbound) -> Self {
        self.sms_inbound = Some(Arc::new(inbound));
        self
    }

    pub fn with_sms_status(mut self, status: reports::SmsStatus) -> Self {
        self.sms_status = Some(Arc::new(status));
        self
    }

    pub fn with_email_senders(mut self, names: std::collections::BTreeSet<String>) -> Self {
        self.email_senders = Some(Arc::new(names));
        self
    }

    pub fn with_event_retention(mut self, ms: Option<i64>) -> Self {
        self.event_retention_ms = ms;
        self
    }

    pub fn with_identity_secret(mut self, secret: Vec<u8>) -> Self {
        self.identity_secret = Some(Arc::new(secret));
        self
    }

    pub fn with_link_secret(mut self, secret: Vec<u8>) -> Self {
        self.link_secret = Some(Arc::new(secret));
        self
    }
}

/// The whole API as one router, so tests can drive it without a socket.
pub fn app(state: AppState) -> Router {
    ops::install_metrics_recorder();
    let cors = cors(&state.cors_origins);
    let router = decisioning::routes(Router::new())
        .route("/v1/identify", post(ingest::identify))
        .route("/v1/track", post(ingest::track))
        .route("/v1/page", post(ingest::page))
        .route("/v1/screen", post(ingest::screen))
        .route("/v1/group", post(ingest::group))
        .route("/v1/alias", post(ingest::alias))
        .route("/v1/batch", post(ingest::batch))
        .route(
            "/v1/profiles/{namespace}/{value}",
            get(profiles::get_profile).delete(profiles::delete_profile),
        )
        .route(
            "/v1/profiles/{namespace}/{value}/events",
            get(profiles::get_events),
        )
        .route(
            "/v1/profiles/{namespace}/{value}/journeys",
            get(profiles::get_journeys),
        )
        .route(
            "/v1/profiles/{namespace}/{value}/messages",
            get(profiles::get_messages),
        )
        .route("/v1/journeys", get(journeys::list_journeys))
        .route("/v1/journeys/{key}/stats", get(journeys::journey_stats))
        .route(
            "/v1/journeys/{key}",
            get(journeys::get_journey).put(journeys::put_journey),
        )
        .route(
            "/v1/journeys/{key}/{action}",
            post(journeys::journey_action),
        )
        .route("/v1/campaigns", get(campaigns::list_campaigns))
        .route(
            "/v1/campaigns/{key}/report",
            get(campaigns::campaign_report),
        )
        .route(
            "/v1/campaigns/{key}/preview",
            post(campaigns::preview_campaign),
        )
        .route("/v1/campaigns/{key}/proof", post(campaigns::proof_campaign))
        .route(
            "/v1/campaigns/{key}",
            get(campaigns::get_campaign).put(campaigns::put_campaign),
        )
        .route(
            "/v1/campaigns/{key}/{action}",
            post(campaigns::campaign_action),
        )
        .route("/v1/inbox/{namespace}/{value}", get(inbox::get_inbox))
        .route(
            "/v1/inbox/{namespace}/{value}/{id}/{action}",
            post(inbox::mark),
        )
        .route("/v1/suppressions", get(suppressions::list))
        .route(
            "/v1/suppressions/{channel}/{address}",
            get(suppressions::get_one)
                .put(suppressions::put)
                .delete(suppressions::delete),
        )
        .route("/v1/audiences", get(audiences::list_audiences))
        .route(
            "/v1/audiences/{key}",
            get(audiences::get_audience).put(audiences::put_audience),
        )
        .route("/v1/audiences/{key}/run", post(audiences::run_audience))
        .route("/v1/audiences/{key}/export", get(audiences::export_members))
        .route(
            "/v1/audiences/{key}/preview",
            post(audiences::preview_audience),
        )
        .route("/v1/audiences/{key}/sizes", get(audiences::audience_sizes))
        .route(
            "/v1/audiences/{key}/members",
            get(audiences::audience_members).post(audiences::upload_members),
        )
        .route(
            "/v1/profiles/{namespace}/{value}/audiences",
            get(audiences::profile_audiences),
        )
        .route(
            "/v1/profiles/{namespace}/{value}/audiences/{key}/explain",
            get(audiences::explain),
        )
        .route("/v1/templates", get(templates::list_templates))
        .route(
            "/v1/templates/{key}",
            get(templates::get_template).put(templates::put_template),
        )
        .route(
            "/v1/templates/{key}/preview",
            post(templates::preview_template),
        )
        .route(
            "/v1/unsubscribe",
            get(links::unsubscribe_page).post(links::unsubscribe),
        )
        .route("/v1/email/open", get(links::email_open))
        .route("/v1/email/click", get(links::email_click))
        .route("/v1/sms/inbound", post(links::sms_inbound))
        .route("/v1/sms/status", post(reports::sms_status))
        .route("/v1/messages/reports", post(reports::post_report))
        .route("/v1/decide", post(decisioning::decide))
        .route("/v1/decide.js", get(decisioning::client_script))
        .route("/healthz", get(ops::healthz))
        .route("/metrics", get(ops::metrics))
        .route("/openapi.json", get(ops::openapi))
        .fallback(ops::not_found)
        .method_not_allowed_fallback(ops::method_not_allowed)
        .layer(axum::middleware::from_fn(ops::observe))
        .with_state(state);
    match cors {
        Some(cors) => router.layer(cors),
        None => router,
    }
}

/// What browsers on the configured origins may do: call with the write key (and a user
/// hash) or an admin token, and read the answers.
fn cors(origins: &[String]) -> Option<tower_http::cors::CorsLayer> {
    use axum::http::{HeaderName, HeaderValue, Method, header};
    use tower_http::cors::{AllowOrigin, CorsLayer};
    if origins.is_empty() {
        return None;
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(
            origins
                .iter()
                .filter_map(|o| HeaderValue::from_str(o.trim_end_matches('/')).ok()),
        )
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([Method::GET, Method::POST])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                header::CONTENT_ENCODING,
                HeaderName::from_static(inbox::USER_HASH_HEADER),
            ])
            .max_age(std::time::Duration::from_secs(600)),
    )
}
