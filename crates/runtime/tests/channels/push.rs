//! Push to FCM HTTP v1 and APNs stand-ins, per device, with dead tokens detached.

use std::sync::Arc;

use serde_json::{Value, json};
use waymark_engine::Effect;
use waymark_runtime::channels::Channels;
use waymark_runtime::channels::push::{PushConfig, Pusher};
use waymark_runtime::channels::webhook::{self, WebhookConfig};
use waymark_store::Delivery;

use waymark_test_support::push::{apns_signing_key, push_providers, verified_apns_token};

use crate::support::{Provider, WINDOW, claimed, message};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_goes_to_fcm_per_device_and_a_dead_token_fails_alone() {
    let provider = Provider::start(Arc::new(|r| {
        let body: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
        match body["message"]["token"].as_str() {
            Some("live-token") => (200, json!({"name": "projects/bench/messages/42"})),
            _ => (
                404,
                json!({"error": {"status": "NOT_FOUND", "details": [{"errorCode": "UNREGISTERED"}]}}),
            ),
        }
    }))
    .await;
    let config: PushConfig = serde_json::from_value(json!({
        "fcm_url": provider.url, "fcm_project_id": "bench", "fcm_access_token": "fcm-token"
    }))
    .expect("config");
    let dir = tempfile::tempdir().expect("tempdir");
    let store =
        waymark_store_sqlite::SqliteStore::open(dir.path(), Default::default()).expect("store");
    let client = webhook::client(&WebhookConfig::default(), false).expect("client");
    let pusher = Pusher::new(&config, client, Arc::new(store)).expect("pusher");
    let channels = Channels::default().with("push", Arc::new(pusher));
    let mut effect = message(
        "welcome:p1:1:push:2",
        "push",
        None,
        json!({"channel": "push", "fields": {"title": "Hi", "body": "Welcome"}, "data": {"n": 1}}),
    );
    if let Effect::Message(m) = &mut effect {
        m.devices = vec![
            ("fcm".into(), "live-token".into()),
            ("fcm".into(), "dead-token".into()),
        ];
    }
    let attempt = channels.deliver(&claimed(effect), WINDOW).await;
    let Delivery::Delivered(answer) = &attempt.delivery else {
        panic!("not delivered: {attempt:?}");
    };
    assert_eq!(
        answer["devices"],
        json!([{"platform": "fcm", "answer": {"provider_id": "projects/bench/messages/42"}}])
    );
    let failed = answer["failed"][0].as_str().expect("one failure");
    assert!(
        failed.contains("UNREGISTERED") && failed.contains("token removed"),
        "{failed}"
    );
    let requests = provider.requests();
    assert_eq!(requests.len(), 2);
    let live = &requests[0];
    assert_eq!(live.path, "/v1/projects/bench/messages:send");
    assert_eq!(live.headers["authorization"], "Bearer fcm-token");
    let body: Value = serde_json::from_slice(&live.body).expect("json");
    assert_eq!(
        body["message"]["notification"],
        json!({"title": "Hi", "body": "Welcome"})
    );
    // FCM data values are strings.
    assert_eq!(body["message"]["data"], json!({"n": "1"}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_goes_to_apns_over_http2_with_a_provider_token_signed_by_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (key_file, public_point) = apns_signing_key(dir.path(), "KEY123");
    let (providers, log) = push_providers(Vec::new()).await;
    let config: PushConfig = serde_json::from_value(json!({
        "apns_url": providers, "apns_topic": "com.example.app", "apns_key_file": key_file,
        "apns_key_id": "KEY123", "apns_team_id": "TEAM42"
    }))
    .expect("config");
    let store =
        waymark_store_sqlite::SqliteStore::open(&dir.path().join("data"), Default::default())
            .expect("store");
    let client = webhook::client(&WebhookConfig::default(), false).expect("client");
    let pusher = Pusher::new(&config, client, Arc::new(store)).expect("pusher");
    let channels = Channels::default().with("push", Arc::new(pusher));
    let mut effect = message(
        "ship:p1:1:push:2",
        "push",
        None,
        json!({"channel": "push", "fields": {"title": "Order o-7", "body": "On its way"},
            "data": {"url": "app://orders/o-7"}}),
    );
    if let Effect::Message(m) = &mut effect {
        m.devices = vec![
            ("apns".into(), "apns-ann-1".into()),
            ("apns".into(), "dead-apns-ann".into()),
        ];
    }
    let attempt = channels.deliver(&claimed(effect), WINDOW).await;
    let Delivery::Delivered(answer) = &attempt.delivery else {
        panic!("not delivered: {attempt:?}");
    };
    assert_eq!(answer["devices"][0]["platform"], "apns", "{answer}");
    let failed = answer["failed"][0].as_str().expect("one failure");
    assert!(
        failed.contains("410") && failed.contains("token removed"),
        "{failed}"
    );

    let log = log.lock().expect("lock").clone();
    assert_eq!(log.len(), 2, "{log:?}");
    let (platform, token, version, headers, body) = &log[0];
    assert_eq!((platform.as_str(), token.as_str()), ("apns", "apns-ann-1"));
    assert_eq!(version, "HTTP/2.0");
    assert_eq!(
        (&headers["apns-topic"], &headers["apns-push-type"]),
        (&json!("com.example.app"), &json!("alert"))
    );
    assert_eq!(
        body["aps"]["alert"],
        json!({"title": "Order o-7", "body": "On its way"})
    );
    assert_eq!(body["url"], "app://orders/o-7", "data beside aps");
    let (header, claims) = verified_apns_token(&headers["authorization"], &public_point);
    assert_eq!(
        (&header["alg"], &header["kid"], &claims["iss"]),
        (&json!("ES256"), &json!("KEY123"), &json!("TEAM42"))
    );
}
