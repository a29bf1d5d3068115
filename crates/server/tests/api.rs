//! The HTTP API end to end through the router (no socket), on SQLite, and on PostgreSQL
//! with the `backend-tests` feature.

use std::io::Write;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use base64::Engine;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;
use waymark_server::{AppState, Keys, app};
use waymark_store::StoreOptions;

const WRITE_KEY: &str = "wk_test";
const CLIENT_KEY: &str = "wkc_test";
const ADMIN: &str = "adm_test";

pub struct Api {
    router: Router,
    _guard: Option<tempfile::TempDir>,
}

fn keys() -> Keys {
    Keys {
        write_keys: vec![WRITE_KEY.into()],
        client_write_keys: vec![CLIENT_KEY.into()],
        admin_tokens: vec![ADMIN.into()],
    }
}

async fn sqlite() -> Api {
    let dir = tempfile::tempdir().expect("tempdir");
    let store =
        waymark_store_sqlite::SqliteStore::open(dir.path(), StoreOptions::default()).expect("open");
    Api {
        router: app(
            AppState::new(Arc::new(store), keys()).with_identity_secret(IDENTITY_SECRET.to_vec())
        ),
        _guard: Some(dir),
    }
}

#[cfg(feature = "backend-tests")]
async fn postgres() -> Api {
    use std::str::FromStr;
    let url = std::env::var("WAYMARK_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let base = tokio_postgres::Config::from_str(&url).expect("url");
    let (client, conn) = base.connect(tokio_postgres::NoTls).await.expect("connect");
    tokio::spawn(conn);
    let schema = format!("wm_api_{}", uuid::Uuid::now_v7().simple());
    client
        .batch_execute(&format!("CREATE SCHEMA {schema}"))
        .await
        .expect("schema");
    let mut config = base.clone();
    config.options(format!("-c search_path={schema}"));
    let store =
        waymark_store_postgres::PostgresStore::open_with_config(config, StoreOptions::default())
            .await
            .expect("open");
    Api {
        router: app(
            AppState::new(Arc::new(store), keys()).with_identity_secret(IDENTITY_SECRET.to_vec())
        ),
        _guard: None,
    }
}

pub enum Auth<'a> {
    None,
    Write(&'a str),
    /// The write key and the user hash of `namespace:value` (the inbox).
    WriteAs(&'a str, &'a str),
    Admin(&'a str),
}

const IDENTITY_SECRET: &[u8] = b"identity-secret-for-tests-0123456789abcdef";

fn user_hash(identity: &str) -> String {
    let (namespace, value) = identity.split_once(':').expect("namespace:value");
    waymark_core::links::user_hash(IDENTITY_SECRET, namespace, value)
}

pub struct Reply {
    status: StatusCode,
    body: Value,
    text: String,
}

impl Reply {
    /// The `field` of each error listed, in order.
    fn error_fields(&self) -> Vec<&str> {
        self.body["errors"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e["field"].as_str())
            .collect()
    }
}

impl Api {
    async fn call(
        &self,
        method: &str,
        path: &str,
        auth: Auth<'_>,
        body: Vec<u8>,
        encoding: Option<&str>,
    ) -> Reply {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("content-type", "application/json");
        match auth {
            Auth::None => {}
            Auth::Write(key) => {
                let basic = base64::engine::general_purpose::STANDARD.encode(format!("{key}:"));
                req = req.header("authorization", format!("Basic {basic}"));
            }
            Auth::WriteAs(key, identity) => {
                let basic = base64::engine::general_purpose::STANDARD.encode(format!("{key}:"));
                req = req
                    .header("authorization", format!("Basic {basic}"))
                    .header("x-waymark-user-hash", user_hash(identity));
            }
            Auth::Admin(token) => req = req.header("authorization", format!("Bearer {token}")),
        }
        if let Some(enc) = encoding {
            req = req.header("content-encoding", enc);
        }
        let resp = self
            .router
            .clone()
            .oneshot(req.body(Body::from(body)).expect("request"))
            .await
            .expect("response");
        let status = resp.status();
        let bytes = resp.into_body().collect().await.expect("body").to_bytes();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Reply { status, body, text }
    }

    async fn post(&self, path: &str, body: Value) -> Reply {
        self.call(
            "POST",
            path,
            Auth::Write(WRITE_KEY),
            serde_json::to_vec(&body).expect("json"),
            None,
        )
        .await
    }

    async fn get(&self, path: &str) -> Reply {
        self.call("GET", path, Auth::Admin(ADMIN), Vec::new(), None)
            .await
    }
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(bytes).expect("gzip");
    enc.finish().expect("gzip")
}

#[path = "api/audiences.rs"]
mod audiences;
#[path = "api/campaigns.rs"]
mod campaigns;
#[path = "api/decisioning.rs"]
mod decisioning;
use audiences::{
    audience_preview_export_and_sizes, audiences_through_the_api,
    uploaded_lists_and_runs_through_the_api,
};
use campaigns::campaigns_through_the_api;
use decisioning::{
    decisioning_through_the_api, journeys_place_content_ahead_of_offers,
    the_browser_client_is_served,
};

macro_rules! api_tests {
    ($backend:ident: $($case:ident),* $(,)?) => {
        mod $backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(&super::$backend().await).await;
                }
            )*
        }
    };
}

macro_rules! all_api_tests {
    ($backend:ident) => {
        api_tests!($backend:
            ingest_requires_a_write_key,
            write_key_cannot_read_or_erase_profiles,
            invalid_batch_is_rejected_whole_with_its_location,
            malformed_bodies_get_clear_errors,
            size_limits_apply_before_and_after_gzip,
            gzip_bodies_are_accepted,
            replayed_batch_changes_nothing,
            identity_merge_and_erasure_through_the_api,
            events_are_paged_newest_first,
            clock_skew_is_corrected,
            operations_endpoints,
            journeys_lifecycle_through_the_api,
            templates_version_validate_and_preview,
            template_mistakes_are_refused_when_stored,
            suppression_list_through_the_api,
            inbox_shows_in_app_messages_until_dismissed_or_expired,
            client_keys_change_a_signed_in_persons_addresses_only_with_their_user_hash,
            profile_limits_are_refused_naming_the_field_and_fail_alone,
            a_persons_messages_are_paged,
            audiences_through_the_api,
            audience_preview_export_and_sizes,
            uploaded_lists_and_runs_through_the_api,
            campaigns_through_the_api,
            decisioning_through_the_api,
            journeys_place_content_ahead_of_offers,
            the_browser_client_is_served,
        );
    };
}

all_api_tests!(sqlite);
#[cfg(feature = "backend-tests")]
all_api_tests!(postgres);

async fn ingest_requires_a_write_key(api: &Api) {
    let body = br#"{"userId": "u", "event": "E"}"#.to_vec();
    for auth in [
        Auth::None,
        Auth::Write("wrong"),
        Auth::Admin(ADMIN),
        Auth::Write(""),
    ] {
        let r = api
            .call("POST", "/v1/track", auth, body.clone(), None)
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text);
        assert_eq!(r.body["code"], "unauthorized");
    }
    let r = api
        .call("POST", "/v1/track", Auth::Write(WRITE_KEY), body, None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(
        r.body,
        json!({"success": true, "accepted": 1, "duplicates": 0})
    );
    // Segment also accepts the key in the body.
    let r = api.call("POST", "/v1/batch", Auth::None, serde_json::to_vec(&json!({"writeKey": WRITE_KEY, "batch": [{"type": "track", "userId": "u", "event": "E"}]})).expect("json"), None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = api
        .call(
            "POST",
            "/v1/batch",
            Auth::None,
            serde_json::to_vec(&json!({"writeKey": "nope", "batch": []})).expect("json"),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

async fn write_key_cannot_read_or_erase_profiles(api: &Api) {
    assert_eq!(
        api.post("/v1/identify", json!({"userId": "secret"}))
            .await
            .status,
        StatusCode::OK
    );
    for (method, path) in [
        ("GET", "/v1/profiles/user_id/secret"),
        ("GET", "/v1/profiles/user_id/secret/events"),
        ("DELETE", "/v1/profiles/user_id/secret"),
        ("GET", "/metrics"),
    ] {
        for auth in [Auth::None, Auth::Write(WRITE_KEY), Auth::Admin("wrong")] {
            let r = api.call(method, path, auth, Vec::new(), None).await;
            assert_eq!(
                r.status,
                StatusCode::UNAUTHORIZED,
                "{method} {path}: {}",
                r.text
            );
        }
    }
    assert_eq!(
        api.get("/v1/profiles/user_id/secret").await.status,
        StatusCode::OK
    );
}

async fn invalid_batch_is_rejected_whole_with_its_location(api: &Api) {
    let r = api
        .post("/v1/batch", json!({"batch": [
            {"type": "identify", "userId": "whole-1", "traits": {"a": 1}},
            {"type": "track", "userId": "whole-2", "event": "Fine"},
            {"type": "track", "userId": "whole-3", "event": "Bad", "properties": "not an object"},
        ]}))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.body["code"], "invalid_type");
    assert_eq!(r.body["field"], "batch[2].properties");
    assert_eq!(r.body["type"], "invalid_request");
    assert!(
        r.body["message"]
            .as_str()
            .is_some_and(|m| m.contains("properties"))
    );
    for user in ["whole-1", "whole-2"] {
        assert_eq!(
            api.get(&format!("/v1/profiles/user_id/{user}"))
                .await
                .status,
            StatusCode::NOT_FOUND,
            "{user} must not be stored"
        );
    }
}

async fn malformed_bodies_get_clear_errors(api: &Api) {
    let cases: Vec<(&str, Vec<u8>, &str, Option<&str>)> = vec![
        ("/v1/batch", b"{\"batch\": [".to_vec(), "invalid_json", None),
        ("/v1/track", b"[1,2]".to_vec(), "invalid_type", None),
        ("/v1/track", br#"{"event": "E"}"#.to_vec(), "missing_field", Some("userId")),
        ("/v1/track", br#"{"userId": "u"}"#.to_vec(), "missing_field", Some("event")),
        ("/v1/identify", br#"{"userId": ["u"]}"#.to_vec(), "invalid_type", Some("userId")),
        ("/v1/identify", br#"{"userId": "u", "traits": {"email": 5}}"#.to_vec(), "invalid_type", Some("traits.email")),
        ("/v1/page", br#"{"userId": "u", "timestamp": "soon"}"#.to_vec(), "invalid_value", Some("timestamp")),
        ("/v1/alias", br#"{"userId": "u"}"#.to_vec(), "missing_field", Some("previousId")),
        ("/v1/group", br#"{"userId": "u"}"#.to_vec(), "missing_field", Some("groupId")),
        ("/v1/screen", br#"{"type": "page", "userId": "u"}"#.to_vec(), "invalid_value", Some("type")),
        ("/v1/batch", br#"{"batch": [{"type": "track", "userId": "u", "event": "E", "context": {"externalIds": [{"type": "Bad-NS", "id": "1"}]}}]}"#.to_vec(), "invalid_value", Some("batch[0].context.externalIds[0]")),
    ];
    for (path, body, code, field) in cases {
        let r = api
            .call("POST", path, Auth::Write(WRITE_KEY), body, None)
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{path}: {}", r.text);
        assert_eq!(r.body["code"], code, "{path}: {}", r.text);
        assert_eq!(r.body["field"].as_str(), field, "{path}: {}", r.text);
    }
    let r = api.get("/v1/profiles/Not-A-Namespace/x").await;
    assert_eq!(
        (r.status, r.body["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_identity"))
    );
    let r = api
        .call(
            "POST",
            "/v1/batch",
            Auth::Write(WRITE_KEY),
            b"{}".to_vec(),
            Some("br"),
        )
        .await;
    assert_eq!(
        (r.status, r.body["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("unsupported_encoding"))
    );
    let r = api
        .call(
            "POST",
            "/v1/batch",
            Auth::Write(WRITE_KEY),
            b"not gzip".to_vec(),
            Some("gzip"),
        )
        .await;
    assert_eq!(
        (r.status, r.body["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_gzip"))
    );
    let r = api
        .call("GET", "/v1/track", Auth::Write(WRITE_KEY), Vec::new(), None)
        .await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.body["code"], "method_not_allowed");
}

async fn size_limits_apply_before_and_after_gzip(api: &Api) {
    let big = "x".repeat(33 * 1024);
    let r = api
        .post(
            "/v1/track",
            json!({"userId": "u", "event": "E", "properties": {"blob": big}}),
        )
        .await;
    assert_eq!(
        (r.status, r.body["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("event_too_large")),
        "{}",
        r.text
    );
    let item = json!({"type": "track", "userId": "u", "event": "E", "properties": {"blob": "y".repeat(20 * 1024)}});
    let batch = json!({"batch": vec![item; 30]});
    let r = api.post("/v1/batch", batch.clone()).await;
    assert_eq!(
        (r.status, r.body["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("batch_too_large")),
        "{}",
        r.text
    );
    // 600 KB that gzips to a few KB: the limit applies to the inflated body too.
    let compressed = gzip(&serde_json::to_vec(&batch).expect("json"));
    assert!(compressed.len() < 100 * 1024);
    let r = api
        .call(
            "POST",
            "/v1/batch",
            Auth::Write(WRITE_KEY),
            compressed,
            Some("gzip"),
        )
        .await;
    assert_eq!(
        (r.status, r.body["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("batch_too_large")),
        "{}",
        r.text
    );
    assert_eq!(
        api.get("/v1/profiles/user_id/u").await.status,
        StatusCode::NOT_FOUND
    );
}

async fn gzip_bodies_are_accepted(api: &Api) {
    let body = serde_json::to_vec(
        &json!({"batch": [{"type": "track", "userId": "gz", "event": "Zipped"}]}),
    )
    .expect("json");
    let r = api
        .call(
            "POST",
            "/v1/batch",
            Auth::Write(WRITE_KEY),
            gzip(&body),
            Some("gzip"),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let p = api.get("/v1/profiles/user_id/gz").await;
    assert_eq!(p.body["computed"]["event_counts"]["Zipped"], 1);
}

async fn replayed_batch_changes_nothing(api: &Api) {
    let batch = json!({"batch": [
        {"type": "identify", "messageId": "rp-1", "userId": "rp", "traits": {"n": 1}},
        {"type": "track", "messageId": "rp-2", "userId": "rp", "event": "E"},
    ]});
    assert_eq!(
        api.post("/v1/batch", batch.clone()).await.body["accepted"],
        2
    );
    let before = api.get("/v1/profiles/user_id/rp").await.body;
    let again = api.post("/v1/batch", batch).await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(
        (
            again.body["accepted"].as_u64(),
            again.body["duplicates"].as_u64()
        ),
        (Some(0), Some(2))
    );
    assert_eq!(api.get("/v1/profiles/user_id/rp").await.body, before);
    assert_eq!(
        api.get("/v1/profiles/user_id/rp/events").await.body["events"]
            .as_array()
            .map(Vec::len),
        Some(2)
    );
}

async fn identity_merge_and_erasure_through_the_api(api: &Api) {
    api.post(
        "/v1/page",
        json!({"anonymousId": "visitor-9", "name": "Pricing"}),
    )
    .await;
    api.post(
        "/v1/identify",
        json!({"anonymousId": "visitor-9", "traits": {"utm_source": "ad"}}),
    )
    .await;
    let anon = api.get("/v1/profiles/anonymous_id/visitor-9").await;
    assert_eq!(anon.status, StatusCode::OK);
    api.post("/v1/identify", json!({"userId": "ada", "anonymousId": "visitor-9", "traits": {"email": "ADA@example.com", "name": "Ada"}})).await;
    let p = api.get("/v1/profiles/email/ada@example.com").await;
    assert_eq!(p.status, StatusCode::OK, "{}", p.text);
    assert_eq!(
        p.body["id"], anon.body["id"],
        "anonymous profile became the known one"
    );
    assert_eq!(p.body["traits"]["utm_source"], "ad");
    assert_eq!(p.body["traits"]["name"], "Ada");
    assert_eq!(p.body["computed"]["event_count"], 3);
    let ids: Vec<String> = p.body["identities"]
        .as_array()
        .expect("identities")
        .iter()
        .map(|i| {
            format!(
                "{}:{}",
                i["namespace"].as_str().unwrap_or(""),
                i["value"].as_str().unwrap_or("")
            )
        })
        .collect();
    assert_eq!(
        ids,
        [
            "anonymous_id:visitor-9",
            "email:ada@example.com",
            "user_id:ada"
        ]
    );
    // A second anonymous visitor folded in later by alias.
    api.post(
        "/v1/track",
        json!({"anonymousId": "phone-app", "event": "App Opened"}),
    )
    .await;
    api.post(
        "/v1/alias",
        json!({"userId": "ada", "previousId": "phone-app"}),
    )
    .await;
    let p = api.get("/v1/profiles/user_id/ada").await;
    assert_eq!(p.body["computed"]["event_count"], 5);
    assert_eq!(p.body["merged_from"].as_array().map(Vec::len), Some(1));

    let erased = api
        .call(
            "DELETE",
            "/v1/profiles/user_id/ada",
            Auth::Admin(ADMIN),
            Vec::new(),
            None,
        )
        .await;
    assert_eq!(erased.status, StatusCode::OK, "{}", erased.text);
    assert_eq!(erased.body["events_deleted"], 5);
    assert_eq!(erased.body["identities_deleted"], 4);
    for path in [
        "/v1/profiles/user_id/ada",
        "/v1/profiles/email/ada@example.com",
        "/v1/profiles/anonymous_id/phone-app",
        "/v1/profiles/user_id/ada/events",
    ] {
        let r = api.get(path).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(r.body["code"], "not_found");
    }
    let again = api
        .call(
            "DELETE",
            "/v1/profiles/user_id/ada",
            Auth::Admin(ADMIN),
            Vec::new(),
            None,
        )
        .await;
    assert_eq!(again.status, StatusCode::NOT_FOUND);
}

async fn events_are_paged_newest_first(api: &Api) {
    let batch: Vec<Value> = (0..7).map(|i| json!({"type": "track", "userId": "pager", "event": format!("E{i}"), "timestamp": format!("2026-05-01T00:00:0{i}Z")})).collect();
    api.post("/v1/batch", json!({"batch": batch})).await;
    let mut names = Vec::new();
    let mut path = "/v1/profiles/user_id/pager/events?limit=3".to_string();
    loop {
        let r = api.get(&path).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        names.extend(
            r.body["events"]
                .as_array()
                .expect("events")
                .iter()
                .map(|e| e["event"].as_str().unwrap_or("").to_owned()),
        );
        match r.body["next"].as_str() {
            Some(next) => path = format!("/v1/profiles/user_id/pager/events?limit=3&before={next}"),
            None => break,
        }
    }
    assert_eq!(names, ["E6", "E5", "E4", "E3", "E2", "E1", "E0"]);
    for bad in ["limit=0", "limit=1001", "limit=ten", "before=garbage"] {
        let r = api
            .get(&format!("/v1/profiles/user_id/pager/events?{bad}"))
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}");
        assert!(r.body["field"].is_string(), "{bad}: {}", r.text);
    }
}

async fn clock_skew_is_corrected(api: &Api) {
    // The client's clock runs 10 minutes fast; the event happened 1 minute before sending.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64;
    let iso = |ms: i64| waymark_core::time::format_iso8601(ms);
    let skew = 10 * 60 * 1000;
    let r = api.post("/v1/batch", json!({"sentAt": iso(now + skew), "batch": [
        {"type": "track", "userId": "skewed", "event": "E", "timestamp": iso(now + skew - 60_000)}]})).await;
    assert_eq!(r.status, StatusCode::OK);
    let events = api.get("/v1/profiles/user_id/skewed/events").await.body;
    let ts =
        waymark_core::time::parse_iso8601(events["events"][0]["timestamp"].as_str().expect("ts"))
            .expect("iso");
    let expected = now - 60_000;
    assert!(
        (ts - expected).abs() < 5_000,
        "corrected timestamp {ts} should be near {expected}"
    );
}

async fn operations_endpoints(api: &Api) {
    let h = api
        .call("GET", "/healthz", Auth::None, Vec::new(), None)
        .await;
    assert_eq!(h.status, StatusCode::OK);
    assert_eq!(h.body["status"], "ok");
    api.post("/v1/track", json!({"userId": "m", "event": "Counted"}))
        .await;
    let m = api.get("/metrics").await;
    assert_eq!(m.status, StatusCode::OK);
    assert!(m.text.contains("waymark_ingest_events_total"), "{}", m.text);
    assert!(
        m.text
            .contains("waymark_http_request_duration_seconds_bucket"),
        "{}",
        m.text
    );
    assert!(m.text.contains("waymark_store_commit_events"), "{}", m.text);
    let doc = api
        .call("GET", "/openapi.json", Auth::None, Vec::new(), None)
        .await
        .body;
    for (path, method) in [
        ("/v1/identify", "post"),
        ("/v1/track", "post"),
        ("/v1/page", "post"),
        ("/v1/screen", "post"),
        ("/v1/group", "post"),
        ("/v1/alias", "post"),
        ("/v1/batch", "post"),
        ("/v1/profiles/{namespace}/{value}", "get"),
        ("/v1/profiles/{namespace}/{value}", "delete"),
        ("/v1/profiles/{namespace}/{value}/events", "get"),
        ("/healthz", "get"),
        ("/metrics", "get"),
        ("/openapi.json", "get"),
        ("/v1/profiles/{namespace}/{value}/journeys", "get"),
        ("/v1/journeys", "get"),
        ("/v1/journeys/{key}", "get"),
        ("/v1/journeys/{key}", "put"),
        ("/v1/journeys/{key}/{action}", "post"),
        ("/v1/journeys/{key}/stats", "get"),
    ] {
        assert!(
            doc["paths"][path][method].is_object(),
            "{method} {path} missing from OpenAPI"
        );
    }
    assert!(doc["components"]["securitySchemes"]["write_key"].is_object());
}

const WELCOME: &str = include_str!("../../../examples/journeys/welcome.yaml");

impl Api {
    async fn put_yaml(&self, path: &str, yaml: &str) -> Reply {
        let req = Request::builder()
            .method("PUT")
            .uri(path)
            .header("content-type", "application/yaml")
            .header("authorization", format!("Bearer {ADMIN}"))
            .body(Body::from(yaml.to_owned()))
            .expect("request");
        let resp = self.router.clone().oneshot(req).await.expect("response");
        let status = resp.status();
        let bytes = resp.into_body().collect().await.expect("body").to_bytes();
        Reply {
            status,
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            text: String::from_utf8_lossy(&bytes).into_owned(),
        }
    }

    async fn admin_post(&self, path: &str) -> Reply {
        self.call("POST", path, Auth::Admin(ADMIN), Vec::new(), None)
            .await
    }
}

async fn journeys_lifecycle_through_the_api(api: &Api) {
    let r = api.put_yaml("/v1/journeys/welcome", WELCOME).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(
        (r.body["status"].as_str(), r.body["live_version"].is_null()),
        (Some("draft"), true)
    );

    let broken = WELCOME.replace("next: tell-crm", "next: tell-crn").replace(
        "has(event.properties.plan)",
        "has(event.properties.plan) &&",
    );
    let r = api.put_yaml("/v1/journeys/welcome", &broken).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    assert_eq!(r.body["code"], "invalid_journey");
    let fields = r.error_fields();
    assert!(
        fields.contains(&"entry.when") && fields.contains(&"nodes[1].branches[0].next"),
        "{fields:?}"
    );
    let r = api.put_yaml("/v1/journeys/other-key", WELCOME).await;
    assert_eq!(
        (r.status, r.body["errors"][0]["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("key"))
    );
    let r = api
        .put_yaml("/v1/journeys/welcome", "key: welcome\nnodes: [\n")
        .await;
    assert_eq!(
        (r.status, r.body["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_document")),
        "{}",
        r.text
    );
    assert!(
        r.body["message"]
            .as_str()
            .is_some_and(|m| m.contains("line")),
        "{}",
        r.text
    );
    let json_doc = serde_json::to_vec(&json!({"key": "welcome", "entry": {"event": "Go"}, "nodes": [{"id": "a", "type": "end", "extra": 1}]})).expect("json");
    let r = api
        .call(
            "PUT",
            "/v1/journeys/welcome",
            Auth::Admin(ADMIN),
            json_doc,
            None,
        )
        .await;
    assert_eq!(
        r.status,
        StatusCode::BAD_REQUEST,
        "unknown fields are refused: {}",
        r.text
    );

    let r = api.admin_post("/v1/journeys/welcome/publish").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["published"], json!({"version": 1, "created": true}));
    assert_eq!(r.body["status"], "live");
    let r = api.admin_post("/v1/journeys/welcome/publish").await;
    assert_eq!(
        r.body["published"],
        json!({"version": 1, "created": false}),
        "republishing is harmless"
    );

    let r = api
        .put_yaml(
            "/v1/journeys/welcome",
            &WELCOME.replace("template: welcome-email", "template: welcome-email-v2"),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        api.admin_post("/v1/journeys/welcome/publish").await.body["published"],
        json!({"version": 2, "created": true})
    );
    let v1 = api.get("/v1/journeys/welcome?version=1").await;
    assert_eq!(
        v1.body["nodes"][0]["template"], "welcome-email",
        "version 1 is immutable"
    );
    assert_eq!(
        api.get("/v1/journeys/welcome?version=9").await.status,
        StatusCode::NOT_FOUND
    );

    assert_eq!(
        api.admin_post("/v1/journeys/welcome/pause").await.body["status"],
        "paused"
    );
    let again = api.admin_post("/v1/journeys/welcome/pause").await;
    assert_eq!(
        (again.status, again.body["code"].as_str()),
        (StatusCode::CONFLICT, Some("invalid_transition"))
    );
    assert_eq!(
        api.admin_post("/v1/journeys/welcome/resume").await.body["status"],
        "live"
    );
    assert_eq!(
        api.admin_post("/v1/journeys/welcome/close").await.body["status"],
        "closed"
    );
    assert_eq!(
        api.admin_post("/v1/journeys/welcome/stop").await.body["status"],
        "stopped"
    );
    assert_eq!(
        api.admin_post("/v1/journeys/welcome/teleport").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        api.admin_post("/v1/journeys/ghost/publish").await.status,
        StatusCode::NOT_FOUND
    );

    let list = api.get("/v1/journeys").await;
    let journeys = list.body["journeys"].as_array().expect("list");
    assert_eq!(journeys.len(), 1);
    assert_eq!(
        (
            journeys[0]["key"].as_str(),
            journeys[0]["live_version"].as_u64()
        ),
        (Some("welcome"), Some(2))
    );
    for (method, path) in [
        ("GET", "/v1/journeys"),
        ("PUT", "/v1/journeys/welcome"),
        ("POST", "/v1/journeys/welcome/publish"),
    ] {
        let r = api
            .call(method, path, Auth::Write(WRITE_KEY), Vec::new(), None)
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{method} {path}");
    }
}

async fn templates_version_validate_and_preview(api: &Api) {
    let put = |key: &str, doc: Value| {
        let path = format!("/v1/templates/{key}");
        let body = serde_json::to_vec(&doc).expect("json");
        async move { api.call("PUT", &path, Auth::Admin(ADMIN), body, None).await }
    };
    let preview = |key: &str, req: Value| {
        let path = format!("/v1/templates/{key}/preview");
        let body = serde_json::to_vec(&req).expect("json");
        async move {
            api.call("POST", &path, Auth::Admin(ADMIN), body, None)
                .await
        }
    };
    let r = api
        .call(
            "PUT",
            "/v1/templates/x",
            Auth::Write(WRITE_KEY),
            b"{}".to_vec(),
            None,
        )
        .await;
    assert_eq!(
        r.status,
        StatusCode::UNAUTHORIZED,
        "templates need the admin token"
    );

    // A partial it includes must exist first.
    let receipt = json!({"channel": "email",
        "subject": "Your order {{journey.entry.properties.order_id}}, {{default profile.traits.first_name \"friend\"}}",
        "html": "<p>Hi {{profile.traits.first_name}}, total {{format_currency event.properties.total \"EUR\"}}</p>{{> footer}}",
        "text": "Total {{format_currency event.properties.total \"EUR\"}}"});
    let r = put("receipt", receipt.clone()).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    assert_eq!(r.body["errors"][0]["code"], "unknown_partial", "{}", r.text);
    let r = put(
        "footer",
        json!({"channel": "partial", "body": "<small>Sent to {{profile.traits.email}}</small>"}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = put("receipt", receipt.clone()).await;
    assert_eq!(
        (
            r.status,
            r.body["version"].as_u64(),
            r.body["created"].as_bool()
        ),
        (StatusCode::OK, Some(1), Some(true)),
        "{}",
        r.text
    );
    let r = put("receipt", receipt.clone()).await;
    assert_eq!(
        (r.body["version"].as_u64(), r.body["created"].as_bool()),
        (Some(1), Some(false)),
        "same document, same version"
    );

    // Bad documents: every problem by field; bad JSON and unknown fields are 400s that say where.
    let r = put(
        "broken",
        json!({"channel": "email", "html": "{{#each x}}", "title": "t"}),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    let fields = r.error_fields();
    assert_eq!(fields, ["title", "subject", "html"], "{}", r.text);
    let r = put(
        "broken",
        json!({"channel": "sms", "text": "x", "colour": "red"}),
    )
    .await;
    assert_eq!(
        (r.status, r.body["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_document")),
        "{}",
        r.text
    );
    assert!(
        r.body["message"]
            .as_str()
            .is_some_and(|m| m.contains("colour")),
        "{}",
        r.text
    );
    let r = api
        .call(
            "PUT",
            "/v1/templates/broken",
            Auth::Admin(ADMIN),
            b"{\"channel\": ".to_vec(),
            None,
        )
        .await;
    assert_eq!(
        (r.status, r.body["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_document")),
        "{}",
        r.text
    );
    assert!(
        r.body["message"]
            .as_str()
            .is_some_and(|m| m.contains("line")),
        "{}",
        r.text
    );
    let r = put("Bad.Key", json!({"channel": "sms", "text": "x"})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);

    // Preview for a stored person, with an event and journey context.
    let r = api.post("/v1/identify", json!({"userId": "ada", "traits": {"first_name": "Ada <3", "email": "ada@example.com"}})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = preview(
        "receipt",
        json!({
            "profile": {"namespace": "user_id", "value": "ada"},
            "event": {"event": "Order Completed", "properties": {"total": 1234.5}},
            "journey": {"entry": {"properties": {"order_id": "o-9"}}},
        }),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["fields"]["subject"], "Your order o-9, Ada <3");
    assert_eq!(
        r.body["fields"]["html"],
        "<p>Hi Ada &lt;3, total €1,234.50</p><small>Sent to ada@example.com</small>"
    );
    assert_eq!(r.body["fields"]["text"], "Total €1,234.50");
    // Traits alone (no stored person), and the fallback for a missing name.
    let r = preview(
        "receipt",
        json!({"traits": {}, "event": {"properties": {"total": 5}}}),
    )
    .await;
    assert_eq!(
        r.body["fields"]["subject"], "Your order , friend",
        "{}",
        r.text
    );
    // Older versions stay readable and renderable.
    let mut v2 = receipt.clone();
    v2["text"] = json!("Paid {{math event.properties.total \"/\" event.properties.parts}}");
    let r = put("receipt", v2).await;
    assert_eq!(r.body["version"], 2, "{}", r.text);
    let r = preview(
        "receipt",
        json!({"event": {"properties": {"total": 10, "parts": 0}}}),
    )
    .await;
    assert_eq!(
        (r.status, r.body["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("render_failed")),
        "{}",
        r.text
    );
    assert!(r.text.contains("division by zero"), "{}", r.text);
    let r = preview(
        "receipt",
        json!({"version": 1, "event": {"properties": {"total": 10}}}),
    )
    .await;
    assert_eq!(r.body["fields"]["text"], "Total €10.00", "{}", r.text);
    let r = api.get("/v1/templates/receipt?version=1").await;
    assert_eq!(r.body, receipt);
    let r = api.get("/v1/templates").await;
    let keys: Vec<&str> = r.body["templates"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|t| t["key"].as_str())
        .collect();
    assert_eq!(keys, ["footer", "receipt"]);
    let r = preview("nope", json!({})).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = preview(
        "receipt",
        json!({"profile": {"namespace": "user_id", "value": "nobody"}}),
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);

    // Publishing a journey pins the newest version of the templates its messages use; each
    // message records what it rendered.
    let journey = json!({"key": "receipts", "entry": {"event": "Order Completed"}, "nodes": [
        {"id": "send", "type": "message", "channel": "log", "template": "receipt", "next": "done"},
        {"id": "done", "type": "end"}]});
    let r = api
        .call(
            "PUT",
            "/v1/journeys/receipts",
            Auth::Admin(ADMIN),
            serde_json::to_vec(&journey).expect("json"),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = api
        .call(
            "POST",
            "/v1/journeys/receipts/publish",
            Auth::Admin(ADMIN),
            Vec::new(),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = api.get("/v1/journeys/receipts?version=1").await;
    assert_eq!(r.body["templates"]["receipt"]["version"], 2, "{}", r.text);
    assert_eq!(
        r.body["templates"]["footer"]["version"], 1,
        "partials are pinned too: {}",
        r.text
    );
    let r = api.post("/v1/track", json!({"userId": "ada", "event": "Order Completed", "properties": {"total": 10, "parts": 4}})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = api.get("/v1/profiles/user_id/ada/journeys").await;
    let sent = r.body["effects"]
        .as_array()
        .expect("effects")
        .iter()
        .find(|e| e["journey"] == "receipts")
        .cloned()
        .expect("message");
    assert_eq!(
        sent["effect"]["content"]["fields"]["text"], "Paid 2.5",
        "{sent}"
    );
    assert!(
        sent["effect"]["content"]["fields"]["html"]
            .as_str()
            .is_some_and(|h| h.contains("Ada &lt;3")),
        "{sent}"
    );
    // A render failure fails that message (recorded), not the journey.
    let r = api.post("/v1/track", json!({"userId": "bob", "event": "Order Completed", "properties": {"total": 10, "parts": 0}})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = api.get("/v1/profiles/user_id/bob/journeys").await;
    let instance = &r.body["journeys"][0]["instances"][0];
    assert_eq!(instance["status"], "completed", "{}", r.text);
    let error = instance["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .find(|s| s["what"] == "error")
        .cloned()
        .expect("error step");
    assert!(
        error["detail"]["reason"]
            .as_str()
            .is_some_and(|m| m.contains("division by zero")),
        "{error}"
    );
    // Publishing again after a template change makes a new version; with no change, none.
    let r = api
        .call(
            "POST",
            "/v1/journeys/receipts/publish",
            Auth::Admin(ADMIN),
            Vec::new(),
            None,
        )
        .await;
    assert_eq!(r.body["published"]["created"], false, "{}", r.text);
    let mut v3 = receipt.clone();
    v3["text"] = json!("Thanks!");
    put("receipt", v3).await;
    let r = api
        .call(
            "POST",
            "/v1/journeys/receipts/publish",
            Auth::Admin(ADMIN),
            Vec::new(),
            None,
        )
        .await;
    assert_eq!(
        (
            r.body["published"]["version"].as_u64(),
            r.body["published"]["created"].as_bool()
        ),
        (Some(2), Some(true)),
        "{}",
        r.text
    );
    // A partial cannot be sent.
    let bad = json!({"key": "receipts", "entry": {"event": "Order Completed"}, "nodes": [
        {"id": "send", "type": "message", "channel": "log", "template": "footer", "next": "done"},
        {"id": "done", "type": "end"}]});
    api.call(
        "PUT",
        "/v1/journeys/receipts",
        Auth::Admin(ADMIN),
        serde_json::to_vec(&bad).expect("json"),
        None,
    )
    .await;
    let r = api
        .call(
            "POST",
            "/v1/journeys/receipts/publish",
            Auth::Admin(ADMIN),
            Vec::new(),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    assert_eq!(
        r.body["errors"][0]["field"], "nodes[0].template",
        "{}",
        r.text
    );
}

async fn template_mistakes_are_refused_when_stored(api: &Api) {
    let put = |key: &str, doc: Value| {
        let path = format!("/v1/templates/{key}");
        let body = serde_json::to_vec(&doc).expect("json");
        async move { api.call("PUT", &path, Auth::Admin(ADMIN), body, None).await }
    };
    // Two partials that include each other: the second PUT closes the loop and is refused
    // (before, it was stored, and previewing an SMS that includes them overflowed the stack).
    let r = put("pb", json!({"channel": "partial", "body": "b"})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = put("pa", json!({"channel": "partial", "body": "a {{> pb}}"})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = put("pb", json!({"channel": "partial", "body": "b {{> pa}}"})).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    assert_eq!(r.body["errors"][0]["code"], "partial_cycle", "{}", r.text);
    let message = r.body["errors"][0]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("{{> pa}} -> {{> pb}}") || message.contains("{{> pb}} -> {{> pa}}"),
        "{message}"
    );
    let r = put(
        "self",
        json!({"channel": "partial", "body": "again {{> self}}"}),
    )
    .await;
    assert_eq!(r.body["errors"][0]["code"], "partial_cycle", "{}", r.text);
    // The loop was never stored: an SMS including pa previews.
    let r = put("sms", json!({"channel": "sms", "text": "{{> pa}}"})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = api
        .call(
            "POST",
            "/v1/templates/sms/preview",
            Auth::Admin(ADMIN),
            b"{}".to_vec(),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["fields"]["text"], "a b", "{}", r.text);

    // An unknown helper is refused where it stands, not at send.
    let r = put(
        "typo",
        json!({"channel": "sms", "text": "Total:\n  {{format_curency event.properties.total \"EUR\"}}"}),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    let problem = &r.body["errors"][0];
    assert_eq!(problem["field"], "text", "{}", r.text);
    assert_eq!(
        (problem["line"].as_u64(), problem["column"].as_u64()),
        (Some(2), Some(3)),
        "{}",
        r.text
    );
    assert!(
        problem["message"]
            .as_str()
            .unwrap_or_default()
            .contains("\"format_curency\""),
        "{}",
        r.text
    );
    // A syntax error says what is wrong in a person's words, with where.
    let r = put(
        "syntax",
        json!({"channel": "sms", "text": "Hi {{profile.traits.name"}),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    let problem = &r.body["errors"][0];
    let message = problem["message"].as_str().unwrap_or_default();
    assert!(
        problem["line"].as_u64() == Some(1) && problem["column"].is_u64(),
        "{}",
        r.text
    );
    assert!(
        !message.contains("trailing_tilde") && !message.contains("Unnamed"),
        "{message}"
    );
    assert!(message.contains("not closed"), "{message}");
}

async fn suppression_list_through_the_api(api: &Api) {
    let admin = |method: &'static str, path: &'static str, body: &'static str| {
        api.call(
            method,
            path,
            Auth::Admin(ADMIN),
            body.as_bytes().to_vec(),
            None,
        )
    };
    // Addresses are normalised; the reason defaults to manual.
    let r = admin("PUT", "/v1/suppressions/email/Ada%40Example.com", "").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(
        (&r.body["address"], &r.body["reason"], &r.body["suppressed"]),
        (&json!("ada@example.com"), &json!("manual"), &json!(true))
    );
    let r = admin(
        "PUT",
        "/v1/suppressions/sms/+1%20555%200100",
        r#"{"reason": "complaint", "detail": "feedback loop"}"#,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["address"], "+15550100");
    let r = api.get("/v1/suppressions/sms/+15550100").await;
    assert_eq!(
        (&r.body["reason"], &r.body["detail"]),
        (&json!("complaint"), &json!("feedback loop"))
    );
    // Pages in (channel, address) order.
    let r = api.get("/v1/suppressions?limit=1").await;
    assert_eq!(r.body["suppressions"][0]["channel"], "email", "{}", r.text);
    let next = r.body["next"].as_str().expect("next").to_owned();
    let r = api
        .get(&format!("/v1/suppressions?limit=1&after={next}"))
        .await;
    assert_eq!(r.body["suppressions"][0]["channel"], "sms", "{}", r.text);
    let r = api.get("/v1/suppressions?channel=sms").await;
    assert_eq!(r.body["suppressions"].as_array().map(Vec::len), Some(1));
    // Bad input says what and where.
    for (method, path, body, field) in [
        ("PUT", "/v1/suppressions/fax/123", "", "channel"),
        (
            "PUT",
            "/v1/suppressions/email/a%40b.c",
            r#"{"reason": "bored"}"#,
            "reason",
        ),
        (
            "PUT",
            "/v1/suppressions/email/a%40b.c",
            r#"{"why": 1}"#,
            "why",
        ),
        ("GET", "/v1/suppressions?limit=0", "", "limit"),
        ("GET", "/v1/suppressions?channel=fax", "", "channel"),
        ("GET", "/v1/suppressions?after=nocolon", "", "after"),
    ] {
        let r = admin(method, path, body).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{path}: {}", r.text);
        assert!(
            r.body["field"].as_str().is_some_and(|f| f.contains(field)),
            "{path}: {}",
            r.text
        );
    }
    // Admin only.
    let r = api
        .call(
            "GET",
            "/v1/suppressions",
            Auth::Write(WRITE_KEY),
            Vec::new(),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    // Removal.
    let r = admin("DELETE", "/v1/suppressions/email/ADA%40example.com", "").await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    let r = admin("DELETE", "/v1/suppressions/email/ada%40example.com", "").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = api.get("/v1/suppressions/email/ada%40example.com").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

async fn inbox_shows_in_app_messages_until_dismissed_or_expired(api: &Api) {
    let admin_put = |path: &'static str, body: Value| {
        api.call(
            "PUT",
            path,
            Auth::Admin(ADMIN),
            serde_json::to_vec(&body).expect("json"),
            None,
        )
    };
    let r = admin_put(
        "/v1/templates/offer",
        json!({"channel": "in_app", "title": "Hi {{profile.traits.name}}",
            "body": "{{journey.entry.properties.pct}}% off", "data": {"url": "https://shop.example.com/o"}}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    // An expiry on another channel is refused with its path.
    let r = admin_put(
        "/v1/journeys/bad",
        json!({"key": "bad", "entry": {"event": "X"}, "nodes": [
            {"id": "send", "type": "message", "channel": "log", "template": "offer", "expires": "1d", "next": "done"},
            {"id": "done", "type": "end"}]}),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    assert!(r.text.contains("nodes[0].expires"), "{}", r.text);
    for (key, expires) in [("offers", "7d"), ("flash", "1s")] {
        let r = api
            .call(
                "PUT",
                &format!("/v1/journeys/{key}"),
                Auth::Admin(ADMIN),
                serde_json::to_vec(&json!({"key": key, "entry": {"event": "Offer"}, "nodes": [
                    {"id": "send", "type": "message", "channel": "in_app", "template": "offer", "expires": expires, "next": "done"},
                    {"id": "done", "type": "end"}]}))
                .expect("json"),
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        let r = api.admin_post(&format!("/v1/journeys/{key}/publish")).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    }
    let r = api
        .post(
            "/v1/batch",
            json!({"batch": [
                {"type": "identify", "userId": "ann", "traits": {"name": "Ann"}},
                {"type": "track", "userId": "ann", "event": "Offer", "properties": {"pct": 20}},
            ]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    // The write key alone reads nobody's inbox: it ships in every page. The person's user
    // hash (from the customer's backend) must come with it, and be that person's.
    for auth in [
        Auth::Write(WRITE_KEY),
        Auth::WriteAs(WRITE_KEY, "user_id:bob"),
    ] {
        let r = api
            .call("GET", "/v1/inbox/user_id/ann", auth, Vec::new(), None)
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
        assert_eq!(r.body["code"], "invalid_user_hash", "{}", r.text);
    }
    let inbox = |path: &'static str| {
        let who = path.trim_start_matches("/v1/inbox/").replacen('/', ":", 1);
        async move {
            api.call(
                "GET",
                path,
                Auth::WriteAs(WRITE_KEY, &who),
                Vec::new(),
                None,
            )
            .await
        }
    };
    let r = inbox("/v1/inbox/user_id/ann").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["unread"], 2, "{}", r.text);
    let m = &r.body["messages"][0];
    assert_eq!(
        (&m["title"], &m["body"], &m["data"]["url"], &m["read"]),
        (
            &json!("Hi Ann"),
            &json!("20% off"),
            &json!("https://shop.example.com/o"),
            &json!(false)
        ),
        "{}",
        r.text
    );
    // Admin tokens are not write keys; unknown people have an empty inbox.
    let r = api.get("/v1/inbox/user_id/ann").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = inbox("/v1/inbox/user_id/nobody").await;
    assert_eq!(
        (r.status, &r.body["messages"]),
        (StatusCode::OK, &json!([]))
    );
    // The one-second message expires.
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    let r = inbox("/v1/inbox/user_id/ann").await;
    let ids: Vec<String> = r.body["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["id"].as_str().expect("id").to_owned())
        .collect();
    assert_eq!(
        (ids.len(), &r.body["messages"][0]["journey"]),
        (1, &json!("offers")),
        "{}",
        r.text
    );
    let id = ids[0].clone();
    let path = format!("/v1/inbox/user_id/ann/{id}/dismiss");
    let r = api
        .call("POST", &path, Auth::Write(WRITE_KEY), Vec::new(), None)
        .await;
    assert_eq!(
        r.status,
        StatusCode::FORBIDDEN,
        "dismissing takes the user hash too: {}",
        r.text
    );
    let mark = |action: &str| {
        let path = format!("/v1/inbox/user_id/ann/{id}/{action}");
        async move {
            api.call(
                "POST",
                &path,
                Auth::WriteAs(WRITE_KEY, "user_id:ann"),
                Vec::new(),
                None,
            )
            .await
        }
    };
    let r = mark("read").await;
    assert_eq!(
        (r.status, &r.body["read"]),
        (StatusCode::OK, &json!(true)),
        "{}",
        r.text
    );
    assert_eq!(inbox("/v1/inbox/user_id/ann").await.body["unread"], 0);
    assert_eq!(mark("open").await.status, StatusCode::BAD_REQUEST);
    let r = mark("dismiss").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(
        inbox("/v1/inbox/user_id/ann").await.body["messages"],
        json!([])
    );
    // Another person's id is not found in this inbox.
    let r = api
        .call(
            "POST",
            &format!("/v1/inbox/user_id/bob/{id}/read"),
            Auth::WriteAs(WRITE_KEY, "user_id:bob"),
            Vec::new(),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);
    // Reading and dismissing became events, once each.
    let r = api.get("/v1/profiles/user_id/ann/events").await;
    let names: Vec<&str> = r.body["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["event"].as_str())
        .filter(|n| n.starts_with("In-App"))
        .collect();
    assert_eq!(
        names,
        ["In-App Message Dismissed", "In-App Message Read"],
        "{}",
        r.text
    );
}

async fn client_keys_change_a_signed_in_persons_addresses_only_with_their_user_hash(api: &Api) {
    let r = api
        .post(
            "/v1/identify",
            json!({"userId": "victim", "traits": {"email": "victim@example.com"}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let send = |auth: Auth<'static>, path: &'static str, body: Value| {
        api.call(
            "POST",
            path,
            auth,
            serde_json::to_vec(&body).expect("json"),
            None,
        )
    };
    let emails = || async {
        let p = api.get("/v1/profiles/user_id/victim").await;
        let emails: Vec<Value> = p.body["identities"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|i| i["namespace"] == "email")
            .map(|i| i["value"].clone())
            .collect();
        Value::Array(emails)
    };

    // The public key alone cannot route the victim's email elsewhere, and the batch it
    // came in stores nothing.
    let r = send(
        Auth::Write(CLIENT_KEY),
        "/v1/batch",
        json!({"batch": [
            {"type": "track", "userId": "victim", "event": "Innocent", "messageId": "c1"},
            {"type": "identify", "userId": "victim", "traits": {"email": "thief@example.com"}},
        ]}),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    assert_eq!(r.body["code"], "user_hash_required");
    assert_eq!(r.body["field"], "batch[1].traits.email");
    assert_eq!(emails().await, json!(["victim@example.com"]));
    let events = api.get("/v1/profiles/user_id/victim/events").await;
    assert_eq!(
        events.body["events"].as_array().map(Vec::len),
        Some(1),
        "{}",
        events.text
    );
    let r = send(
        Auth::Write(CLIENT_KEY),
        "/v1/identify",
        json!({"userId": "victim", "context": {"device": {"token": "thief-device", "type": "ios"}}}),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    assert_eq!(r.body["field"], "context.device.token");
    // A hash for another person does not help.
    let r = send(
        Auth::WriteAs(CLIENT_KEY, "user_id:thief"),
        "/v1/identify",
        json!({"userId": "victim", "traits": {"email": "thief@example.com"}}),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);

    // The person's own page, holding their hash (in the header or the message), may.
    let r = send(
        Auth::WriteAs(CLIENT_KEY, "user_id:victim"),
        "/v1/identify",
        json!({"userId": "victim", "traits": {"email": "second@example.com"}}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = send(
        Auth::Write(CLIENT_KEY),
        "/v1/batch",
        json!({"batch": [{"type": "identify", "userId": "victim", "messageId": "with-hash",
            "traits": {"phone": "+15550100"},
            "context": {"userHash": user_hash("user_id:victim")}}]}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(
        emails().await,
        json!(["second@example.com", "victim@example.com"])
    );
    // The hash is a credential: it is not stored with the event.
    let events = api.get("/v1/profiles/user_id/victim/events").await;
    let stored = events.body["events"]
        .as_array()
        .and_then(|e| e.iter().find(|e| e["messageId"] == "with-hash"))
        .cloned()
        .expect("stored");
    assert!(stored["context"].get("userHash").is_none(), "{stored}");

    // Events and traits need no hash; a server key needs none for anything.
    let r = send(
        Auth::Write(CLIENT_KEY),
        "/v1/identify",
        json!({"userId": "victim", "anonymousId": "tablet", "traits": {"theme": "dark"}}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = api
        .post(
            "/v1/identify",
            json!({"userId": "victim", "traits": {"email": "third@example.com"}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
}

async fn profile_limits_are_refused_naming_the_field_and_fail_alone(api: &Api) {
    let names = waymark_core::profile::limits::EVENT_NAMES;
    for chunk in (0..names).collect::<Vec<_>>().chunks(500) {
        let batch: Vec<Value> = chunk
            .iter()
            .map(|i| json!({"type": "track", "userId": "busy", "event": format!("name {i}")}))
            .collect();
        let r = api.post("/v1/batch", json!({ "batch": batch })).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    }
    let r = api
        .post(
            "/v1/batch",
            json!({"batch": [
                {"type": "track", "userId": "busy", "event": "name 1"},
                {"type": "track", "userId": "busy", "event": "one too many"},
            ]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    assert_eq!(r.body["code"], "profile_limit");
    assert_eq!(r.body["field"], "batch[1].event");
    let r = api
        .post(
            "/v1/track",
            json!({"userId": "busy", "event": "one too many"}),
        )
        .await;
    assert_eq!(
        (r.status, r.body["field"].clone()),
        (StatusCode::BAD_REQUEST, json!("event"))
    );

    // Refused requests committed beside good ones fail alone.
    let requests = (0..40).map(|i| {
        let body = if i % 2 == 0 {
            json!({"userId": format!("fine-{i}"), "event": "Fine"})
        } else {
            json!({"userId": "busy", "event": format!("new name {i}")})
        };
        async move { (i, api.post("/v1/track", body).await) }
    });
    for (i, r) in futures::future::join_all(requests).await {
        let expected = if i % 2 == 0 {
            StatusCode::OK
        } else {
            StatusCode::BAD_REQUEST
        };
        assert_eq!(r.status, expected, "request {i}: {}", r.text);
    }
    let p = api.get("/v1/profiles/user_id/busy").await;
    let counted = p.body["computed"]["event_counts"]
        .as_object()
        .map(|c| c.len());
    assert_eq!(counted, Some(names));
}

async fn a_persons_messages_are_paged(api: &Api) {
    let journey = one_sms("pager", "Ping", "send", "transactional");
    let r = api.put_yaml("/v1/journeys/pager", &journey).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = api.admin_post("/v1/journeys/pager/publish").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    // One message that could not be sent (no phone yet: a step, not an outbox row), then
    // four queued ones.
    let ping =
        |i: u32| json!({"userId": "paged", "event": "Ping", "messageId": format!("ping-{i}")});
    assert_eq!(api.post("/v1/track", ping(0)).await.status, StatusCode::OK);
    let r = api
        .post(
            "/v1/identify",
            json!({"userId": "paged", "traits": {"phone": "+15550103000"}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    for i in 1..=4 {
        assert_eq!(api.post("/v1/track", ping(i)).await.status, StatusCode::OK);
    }

    let mut seen: Vec<Value> = Vec::new();
    let mut path = "/v1/profiles/user_id/paged/messages?limit=2".to_owned();
    let mut pages = 0;
    loop {
        let r = api.get(&path).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        let messages = r.body["messages"].as_array().cloned().unwrap_or_default();
        pages += 1;
        // Each page is oldest first and older than the page before it.
        let times: Vec<&str> = messages
            .iter()
            .filter_map(|m| m["decided_at"].as_str())
            .collect();
        assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
        if let (Some(last_of_older), Some(first_of_newer)) = (
            messages.last().and_then(|m| m["decided_at"].as_str()),
            seen.first().and_then(|m| m["decided_at"].as_str()),
        ) {
            assert!(last_of_older <= first_of_newer);
        }
        seen.splice(0..0, messages);
        match r.body["next"].as_str() {
            Some(next) => {
                path = format!("/v1/profiles/user_id/paged/messages?limit=2&before={next}")
            }
            None => break,
        }
        assert!(pages < 10, "paging must end");
    }
    let statuses: Vec<&str> = seen.iter().filter_map(|m| m["status"].as_str()).collect();
    assert_eq!(
        statuses,
        ["not_sent", "queued", "queued", "queued", "queued"],
        "{seen:?}"
    );
    let ids: std::collections::HashSet<_> = seen.iter().filter_map(|m| m["id"].as_str()).collect();
    assert_eq!(ids.len(), 4, "each queued message once");

    let r = api
        .get("/v1/profiles/user_id/paged/messages?before=not-a-cursor")
        .await;
    assert_eq!(
        (r.status, r.body["field"].clone()),
        (StatusCode::BAD_REQUEST, json!("before"))
    );
}

/// A message quiet hours hold reads `held` in the person's journey trace until it goes
/// out, then `sent` (with until when it was held).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_message_reads_held_until_it_is_sent() {
    use waymark_core::governance::{Policy, QuietAction, QuietHours};
    use waymark_store::{Delivery, OutboxStore};
    let dir = tempfile::tempdir().expect("tempdir");
    let options = StoreOptions {
        governance: Policy {
            caps: Vec::new(),
            quiet_hours: Some(QuietHours {
                start: "00:00".into(),
                end: "23:59".into(),
                action: QuietAction::Hold,
            }),
        },
        ..StoreOptions::default()
    };
    let store =
        Arc::new(waymark_store_sqlite::SqliteStore::open(dir.path(), options).expect("open"));
    let api = Api {
        router: app(AppState::new(store.clone(), keys())),
        _guard: Some(dir),
    };
    let journey = one_sms("promo", "Browse", "offer", "marketing");
    assert_eq!(
        api.put_yaml("/v1/journeys/promo", &journey).await.status,
        StatusCode::OK
    );
    assert_eq!(
        api.admin_post("/v1/journeys/promo/publish").await.status,
        StatusCode::OK
    );
    let r = api
        .post(
            "/v1/batch",
            json!({"batch": [
            {"type": "identify", "userId": "kim", "traits": {"phone": "+15550104000"}},
            {"type": "track", "userId": "kim", "event": "Browse"}]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let offer = || async {
        let r = api.get("/v1/profiles/user_id/kim/journeys").await;
        let steps = r.body["journeys"][0]["instances"][0]["steps"].clone();
        steps
            .as_array()
            .into_iter()
            .flatten()
            .filter(|s| s["node"] == "offer" && s["what"] != "entered")
            .cloned()
            .collect::<Vec<Value>>()
    };
    let held = offer().await;
    assert_eq!(held.len(), 1, "{held:?}");
    assert_eq!(held[0]["what"], "held", "{held:?}");

    // The quiet hours end; the dispatcher sends it.
    let later = waymark_store::wall_clock_ms() + 2 * 24 * 3_600_000;
    let claimed = store.claim_outbox(later, 10, 30_000).await.expect("claim");
    assert_eq!(claimed.len(), 1);
    store
        .complete_outbox(
            &claimed[0],
            Delivery::Delivered(json!({"sid": "SM1"})),
            later,
        )
        .await
        .expect("complete");
    let sent = offer().await;
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0]["what"], "sent", "{sent:?}");
    assert!(sent[0]["detail"]["held_until"].is_string(), "{sent:?}");
    assert!(sent[0]["detail"]["sent_at"].is_string(), "{sent:?}");
}

/// A journey `key`, entered on every `event`, that sends one SMS from node `node`.
fn one_sms(key: &str, event: &str, node: &str, category: &str) -> String {
    format!(
        "key: {key}\nentry: {{event: {event}}}\nproperties: {{reentry: always}}\n\
         templates:\n  hi: {{document: {{channel: sms, text: \"hi\"}}}}\nnodes:\n  \
         - {{id: {node}, type: message, channel: sms, template: hi, category: {category}, next: done}}\n  \
         - {{id: done, type: end}}\n"
    )
}
