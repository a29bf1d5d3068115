//! The channels as a library: each sender driven through `Channels::deliver` against a
//! loopback stand-in for its provider, without a server or a store.

mod support;

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use serde_json::{Value, json};
use waymark_engine::{Effect, WebhookCall};
use waymark_runtime::channels::Channels;
use waymark_runtime::channels::direct_mail::{DirectMailConfig, Extractor};
use waymark_runtime::channels::push::{PushConfig, Pusher};
use waymark_runtime::channels::sms::{SmsConfig, SmsSender};
use waymark_runtime::channels::webhook::{self, WebhookConfig, WebhookSender};
use waymark_runtime::delivery::{Bounce, Retry};
use waymark_store::Delivery;

use support::{Provider, claimed, message, sms};

fn call(url: &str) -> Effect {
    Effect::Webhook(WebhookCall {
        key: "welcome:p1:1:crm:3".into(),
        instance: 1,
        node: "crm".into(),
        method: "POST".into(),
        url: url.into(),
        headers: [("x-plan".to_owned(), "pro".to_owned())].into(),
        body: Some(json!({"user": "p1", "plan": "pro"})),
        timeout_ms: 2_000,
        retries: 2,
        follow_redirects: false,
    })
}

fn webhooks(config: WebhookConfig) -> Channels {
    let client = webhook::client(&config, false).expect("client");
    Channels::default().with_webhooks(WebhookSender::new(&config, client).expect("sender"))
}

const WINDOW: Retry = Retry::Window(60_000);

#[tokio::test]
async fn a_webhook_call_carries_its_key_headers_and_a_signature_over_the_exact_body() {
    let provider = Provider::start(Arc::new(|_| (200, json!({"id": "crm-1"})))).await;
    let secret = format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(b"test signing key, 32 bytes long!")
    );
    let channels = webhooks(WebhookConfig {
        signing_secret: Some(secret.clone()),
        ..WebhookConfig::default()
    });
    let item = claimed(call(&format!("{}/hooks/signup", provider.url)));
    let attempt = channels.deliver(&item, WINDOW).await;
    assert_eq!(
        attempt.delivery,
        Delivery::Delivered(json!({"status": 200, "body": {"id": "crm-1"}}))
    );
    let got = provider.requests();
    assert_eq!(got.len(), 1);
    let request = &got[0];
    assert_eq!(request.path, "/hooks/signup");
    let header = |name: &str| request.headers[name].to_str().expect("text").to_owned();
    assert_eq!(header("idempotency-key"), item.key);
    assert_eq!(header("webhook-id"), item.key);
    assert_eq!(header("x-plan"), "pro");
    let body: Value = serde_json::from_slice(&request.body).expect("json body");
    assert_eq!(body, json!({"user": "p1", "plan": "pro"}));
    let key = waymark_core::links::webhook_secret(&secret).expect("secret");
    let timestamp: i64 = header("webhook-timestamp").parse().expect("timestamp");
    let expected =
        waymark_core::links::webhook_signature(&key, &item.key, timestamp, &request.body);
    assert_eq!(header("webhook-signature"), expected);
}

#[tokio::test]
async fn a_busy_provider_is_retried_and_a_refusal_fails_at_once() {
    let provider = Provider::start(Arc::new(|r| match r.path.as_str() {
        "/busy" => (503, json!({})),
        _ => (404, json!({})),
    }))
    .await;
    let channels = webhooks(WebhookConfig::default());
    let busy = channels
        .deliver(&claimed(call(&format!("{}/busy", provider.url))), WINDOW)
        .await;
    assert!(
        matches!(&busy.delivery, Delivery::Retry { error, .. } if error.contains("503")),
        "{busy:?}"
    );
    let gone = channels
        .deliver(&claimed(call(&format!("{}/gone", provider.url))), WINDOW)
        .await;
    assert!(
        matches!(&gone.delivery, Delivery::Failed(e) if e.contains("404")),
        "{gone:?}"
    );
    // Out of retries (the node allows 2), a busy provider fails.
    let mut last = claimed(call(&format!("{}/busy", provider.url)));
    last.attempts = 2;
    let spent = channels.deliver(&last, WINDOW).await;
    assert!(matches!(spent.delivery, Delivery::Failed(_)), "{spent:?}");
}

#[tokio::test]
async fn a_denied_network_is_never_called() {
    let provider = Provider::start(Arc::new(|_| (200, json!({})))).await;
    let channels = webhooks(WebhookConfig {
        denied_networks: vec!["127.0.0.0/8".into()],
        ..WebhookConfig::default()
    });
    let attempt = channels
        .deliver(&claimed(call(&format!("{}/x", provider.url))), WINDOW)
        .await;
    assert!(
        matches!(&attempt.delivery, Delivery::Failed(e) if e.starts_with("not called")),
        "{attempt:?}"
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(provider.requests().is_empty());
}

fn twilio_config(url: &str) -> SmsConfig {
    serde_json::from_value(json!({
        "base_url": url, "account_sid": "ACtest", "auth_token": "secret", "from": "+15550000000"
    }))
    .expect("config")
}

#[tokio::test]
async fn sms_reach_a_twilio_compatible_api_and_invalid_numbers_bounce_hard() {
    let provider = Provider::start(Arc::new(|r| {
        let form: Vec<(String, String)> =
            url::form_urlencoded::parse(&r.body).into_owned().collect();
        let to = form.iter().find(|(k, _)| k == "To").map(|(_, v)| v.clone());
        match to.as_deref() {
            Some("+15550100") => (201, json!({"sid": "SM1", "status": "queued"})),
            _ => (
                400,
                json!({"code": 21211, "message": "Invalid 'To' Phone Number"}),
            ),
        }
    }))
    .await;
    let config = twilio_config(&provider.url);
    // The client the server shares between webhooks and SMS.
    let client = webhook::client(&WebhookConfig::default(), false).expect("client");
    let sender = SmsSender::new(&config, client).expect("sender");
    let channels = Channels::default().with("sms", Arc::new(sender));

    let sent = channels
        .deliver(&claimed(sms("+15550100", "Welcome!")), WINDOW)
        .await;
    assert_eq!(
        sent.delivery,
        Delivery::Delivered(json!({"provider_id": "SM1", "status": "queued"}))
    );
    assert!(sent.bounce.is_none());
    let request = &provider.requests()[0];
    assert_eq!(request.path, "/2010-04-01/Accounts/ACtest/Messages.json");
    let form: Vec<(String, String)> = url::form_urlencoded::parse(&request.body)
        .into_owned()
        .collect();
    assert!(
        form.contains(&("Body".into(), "Welcome!".into())),
        "{form:?}"
    );
    assert!(
        form.contains(&("From".into(), "+15550000000".into())),
        "{form:?}"
    );
    let auth = request.headers["authorization"].to_str().expect("text");
    let basic = base64::engine::general_purpose::STANDARD.encode("ACtest:secret");
    assert_eq!(auth, format!("Basic {basic}"));

    let refused = channels
        .deliver(&claimed(sms("+15550199", "Welcome!")), WINDOW)
        .await;
    assert!(
        matches!(&refused.delivery, Delivery::Failed(e) if e.contains("21211")),
        "{refused:?}"
    );
    assert!(
        matches!(refused.bounce, Some(Bounce::Hard { .. })),
        "{:?}",
        refused.bounce
    );
}

#[tokio::test]
async fn a_channel_without_a_sender_says_how_to_configure_it() {
    let attempt = Channels::default()
        .deliver(&claimed(sms("+15550100", "Hi")), WINDOW)
        .await;
    assert_eq!(
        attempt.delivery,
        Delivery::Failed("sms is not configured ([sms] in the configuration)".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_mail_rows_are_appended_to_the_runs_file_in_the_configured_columns() {
    let folder = tempfile::tempdir().expect("tempdir");
    let config = DirectMailConfig {
        folder: folder.path().to_owned(),
        every: "1h".into(),
        columns: Some(vec!["name".into(), "city".into()]),
    };
    let extractor = Extractor::new(&config).expect("extractor");
    let channels = Channels::default().with("direct_mail", Arc::new(extractor));
    for (n, (name, city)) in [("Ann", "Lyon"), ("Bo, Jr.", "Oslo")]
        .into_iter()
        .enumerate()
    {
        let content = json!({"channel": "direct_mail", "fields": {},
            "data": {"name": name, "city": city, "ignored": 1}});
        let key = format!("postcard:p{n}:1:send:2");
        let attempt = channels
            .deliver(
                &claimed(message(&key, "direct_mail", None, content)),
                WINDOW,
            )
            .await;
        assert!(
            matches!(&attempt.delivery, Delivery::Delivered(v) if v["row"] == n + 1),
            "{attempt:?}"
        );
    }
    let files: Vec<_> = std::fs::read_dir(folder.path())
        .expect("folder")
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let text = std::fs::read_to_string(&files[0]).expect("file");
    assert_eq!(
        text,
        "message_id,journey,name,city\n\
         postcard:p0:1:send:2,welcome,Ann,Lyon\n\
         postcard:p1:1:send:2,welcome,\"Bo, Jr.\",Oslo\n"
    );
}

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
