//! Webhooks: keys, headers and signatures, retries, denied networks.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use serde_json::{Value, json};
use waymark_engine::{Effect, WebhookCall};
use waymark_runtime::channels::Channels;
use waymark_runtime::channels::webhook::{self, WebhookConfig, WebhookSender};
use waymark_store::Delivery;

use crate::support::{Provider, WINDOW, claimed};

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
