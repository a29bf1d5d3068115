//! SMS to a Twilio-compatible API, and a channel left unconfigured.

use std::sync::Arc;

use base64::Engine;
use serde_json::json;
use waymark_runtime::channels::Channels;
use waymark_runtime::channels::sms::{SmsConfig, SmsSender};
use waymark_runtime::channels::webhook::{self, WebhookConfig};
use waymark_runtime::delivery::Bounce;
use waymark_store::Delivery;

use crate::support::{Provider, WINDOW, claimed, sms};

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
