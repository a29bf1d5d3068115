//! Email through `Channels::deliver` to a real SMTP server (aiosmtpd on loopback): the
//! message as it arrives, bounces by the server's answer, STARTTLS with a private CA.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use waymark_runtime::channels::Channels;
use waymark_runtime::channels::email::{EmailConfig, Mailer};
use waymark_runtime::delivery::{Bounce, Retry};
use waymark_store::Delivery;
use waymark_test_support::smtp::smtp_sink;
use waymark_test_support::tls::tls_smtp_sink;

use crate::support::{claimed, message};

const LINK_SECRET: &[u8] = b"a link secret of at least 32 bytes";

fn config(smtp_url: String) -> EmailConfig {
    serde_json::from_value(json!({
        "smtp_url": smtp_url, "from": "Acme <hello@acme.example>",
        "public_url": "https://waymark.example.com", "pool_size": 2
    }))
    .expect("config")
}

fn mailer(config: &EmailConfig) -> Channels {
    let mailer = Mailer::new(config, LINK_SECRET).expect("mailer");
    Channels::default().with("email", Arc::new(mailer))
}

fn email(to: &str) -> waymark_engine::Effect {
    let content = json!({"channel": "email", "fields": {
        "subject": "Welcome, Ann", "text": "Hello Ann",
        "html": "<p>Hello <a href=\"https://shop.example/start?x=1\">Ann</a></p>"}});
    message("welcome:p1:1:mail:2", "email", Some(to), content)
}

fn header<'m>(received: &'m Value, name: &str) -> &'m str {
    received["headers"][name]
        .as_str()
        .unwrap_or_else(|| panic!("no {name}: {received}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_email_arrives_with_both_parts_its_key_as_message_id_and_signed_links() {
    let smtp = smtp_sink();
    let channels = mailer(&config(format!("smtp://127.0.0.1:{}", smtp.port)));
    let item = claimed(email("ann@example.com"));
    let attempt = channels.deliver(&item, Retry::Window(60_000)).await;
    assert!(
        matches!(&attempt.delivery, Delivery::Delivered(v) if v["smtp_code"] == "250"),
        "{attempt:?}"
    );
    let got = smtp.wait_for(1, Duration::from_secs(10)).await;
    let received = &got[0];
    assert_eq!(received["rcpt_tos"], json!(["ann@example.com"]));
    assert_eq!(received["mail_from"], "hello@acme.example");
    assert_eq!(header(received, "Subject"), "Welcome, Ann");
    assert_eq!(header(received, "From"), "Acme <hello@acme.example>");
    // The Message-ID names the outbox row, so a repeat after a crash is the same message and
    // provider reports find their way back.
    let id = header(received, "Message-ID");
    assert_eq!(
        id,
        waymark_core::delivery::email_message_id(&item.key, item.seq, "acme.example")
    );
    assert_eq!(
        waymark_core::delivery::parse_email_message_id(id).map(|(seq, _)| seq),
        Some(item.seq)
    );
    // RFC 8058 one-click unsubscribe, signed for this address.
    let unsubscribe = header(received, "List-Unsubscribe");
    assert!(
        unsubscribe.starts_with(
            "<https://waymark.example.com/v1/unsubscribe?c=email&i=email%3Aann%40example.com&s="
        ),
        "{unsubscribe}"
    );
    assert_eq!(
        header(received, "List-Unsubscribe-Post"),
        "List-Unsubscribe=One-Click"
    );
    assert_eq!(received["content_type"], "multipart/alternative");
    let parts = received["parts"].as_array().expect("parts");
    assert_eq!(parts[0]["type"], "text/plain");
    assert_eq!(
        parts[0]["body"].as_str().map(str::trim_end),
        Some("Hello Ann")
    );
    let html = parts[1]["body"].as_str().expect("html");
    // The link goes through a redirect signed for this message, journey, address and
    // target; a pixel records opens.
    let href = html
        .split("href=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("a link")
        .replace("&amp;", "&");
    let click = url::Url::parse(&href).expect("url");
    assert_eq!(
        (click.host_str(), click.path()),
        (Some("waymark.example.com"), "/v1/email/click")
    );
    let query: std::collections::HashMap<_, _> = click.query_pairs().into_owned().collect();
    assert_eq!(query["u"], "https://shop.example/start?x=1");
    let payload = waymark_core::links::click_payload(
        &item.key,
        "welcome",
        "email:ann@example.com",
        &query["u"],
    );
    assert_eq!(query["s"], waymark_core::links::sign(LINK_SECRET, &payload));
    assert!(
        html.contains("https://waymark.example.com/v1/email/open?"),
        "{html}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_recipient_bounces_hard_and_a_full_mailbox_softly_once_retries_are_spent() {
    let smtp = smtp_sink();
    let channels = mailer(&config(format!("smtp://127.0.0.1:{}", smtp.port)));
    let refused = channels
        .deliver(&claimed(email("bounce@example.com")), Retry::Window(60_000))
        .await;
    assert!(
        matches!(&refused.delivery, Delivery::Failed(e) if e.starts_with("hard bounce") && e.contains("550")),
        "{refused:?}"
    );
    assert!(
        matches!(refused.bounce, Some(Bounce::Hard { .. })),
        "{refused:?}"
    );

    let full = channels
        .deliver(&claimed(email("full@example.com")), Retry::Window(60_000))
        .await;
    assert!(
        matches!(&full.delivery, Delivery::Retry { error, .. } if error.contains("452")),
        "{full:?}"
    );
    assert!(full.bounce.is_none(), "a retry is not a bounce yet");
    // No retry window left: the temporary refusal fails, and counts against the address.
    let spent = channels
        .deliver(&claimed(email("full@example.com")), Retry::Window(0))
        .await;
    assert!(matches!(spent.delivery, Delivery::Failed(_)), "{spent:?}");
    assert!(matches!(spent.bounce, Some(Bounce::Soft(_))), "{spent:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_upgrades_with_starttls_trusting_the_configured_ca_and_logs_in() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (smtp, ca) = tls_smtp_sink(dir.path(), false);
    let mut settings = config(format!(
        "smtp://bot:s3cret@127.0.0.1:{}?tls=required",
        smtp.port
    ));
    settings.ca_file = Some(ca.clone());
    let attempt = mailer(&settings)
        .deliver(&claimed(email("ann@example.com")), Retry::Window(60_000))
        .await;
    assert!(
        matches!(attempt.delivery, Delivery::Delivered(_)),
        "{attempt:?}"
    );
    let got = smtp.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(
        (&got[0]["tls"], &got[0]["login"]),
        (&json!(true), &json!("bot"))
    );

    // Without the CA the certificate is not trusted, and nothing is sent in the clear.
    settings.ca_file = None;
    let untrusted = mailer(&settings)
        .deliver(&claimed(email("ann@example.com")), Retry::Window(60_000))
        .await;
    assert!(
        matches!(&untrusted.delivery, Delivery::Retry { error, .. } if error.contains("certificate")),
        "{untrusted:?}"
    );
    assert!(
        untrusted.bounce.is_none(),
        "a TLS failure says nothing about the address"
    );
    assert_eq!(smtp.messages.lock().expect("lock").len(), 1);
}
