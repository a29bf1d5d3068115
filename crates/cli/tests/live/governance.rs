//! Governance from the configuration file through the API: caps, quiet hours, soft bounces, and list unsubscribes.

use std::time::Duration;

use serde_json::json;

use crate::common::{ADMIN, Launch, Server, WRITE_KEY, client, get, send_batch};
use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn governance_from_the_configuration_caps_holds_and_suppresses_through_the_api() {
    let dir = tempfile::tempdir().expect("tempdir");
    let smtp = smtp_sink();
    // Quiet hours around now (UTC: these people have no time zone).
    let minute_of_day = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        / 60)
        % 1440;
    let hhmm = |m: u64| format!("{:02}:{:02}", (m % 1440) / 60, m % 60);
    let config = dir.path().join("waymark.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[email]
smtp_url = "smtp://127.0.0.1:{port}"
from = "hello@example.com"

[governance]
caps = [{{ channel = "in_app", max = 1, window = "1d" }}]
quiet_hours = {{ start = "{start}", end = "{end}", action = "hold" }}
soft_bounce_limit = 1
retry_window = "1s"
"#,
            port = smtp.port,
            start = hhmm(minute_of_day + 1440 - 60),
            end = hhmm(minute_of_day + 60),
        ),
    )
    .expect("config");
    let server = Server::start_with_env(
        Launch {
            data_dir: &dir.path().join("data"),
            store: None,
            configured_keys: true,
        },
        &[("WAYMARK_CONFIG", config.to_str().expect("path"))],
    );
    let c = client();
    put_template(
        &c,
        &server.base,
        "note",
        &json!({"channel": "in_app", "title": "Hi", "body": "{{journey.entry.event}}"}),
    )
    .await;
    put_template(
        &c,
        &server.base,
        "mail",
        &json!({"channel": "email", "subject": "Receipt", "text": "Thanks"}),
    )
    .await;
    for (key, event, channel, template, category) in [
        ("promo", "Browse", "in_app", "note", "marketing"),
        ("notice", "Paid", "in_app", "note", "transactional"),
        ("receipt", "Paid", "email", "mail", "transactional"),
    ] {
        put_and_publish(
            &c,
            &server.base,
            &json!({"key": key, "entry": {"event": event}, "properties": {"reentry": "always"}, "nodes": [
                {"id": "send", "type": "message", "channel": channel, "template": template, "category": category, "next": "done"},
                {"id": "done", "type": "end"}]}),
        )
        .await;
    }
    send_batch(
        &c,
        &server.base,
        WRITE_KEY,
        &json!([
            {"type": "identify", "userId": "kim", "traits": {"email": "full@example.com"}},
            {"type": "track", "userId": "kim", "event": "Browse"},
            {"type": "track", "userId": "kim", "event": "Browse"},
            {"type": "track", "userId": "kim", "event": "Paid"},
        ]),
    )
    .await
    .expect("ingest");
    let messages = || async {
        let (_, record) = get(&c, &server.base, ADMIN, "/v1/profiles/user_id/kim/messages").await;
        record["messages"].as_array().cloned().unwrap_or_default()
    };
    // The email is retried within its 1 s window, then fails as a soft bounce.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let all = loop {
        let all = messages().await;
        if all
            .iter()
            .any(|m| m["channel"] == "email" && m["status"] == "failed")
        {
            break all;
        }
        assert!(std::time::Instant::now() < deadline, "{all:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let of = |journey: &str| -> Vec<(String, String)> {
        all.iter()
            .filter(|m| m["journey"] == journey)
            .map(|m| {
                (
                    m["status"].as_str().unwrap_or_default().to_owned(),
                    m["reason"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    };
    // Marketing: the first is held by quiet hours, the second is over the cap (the held one
    // counts); transactional passes both.
    let promo = of("promo");
    assert_eq!(promo.len(), 2, "{all:?}");
    assert!(promo.iter().any(|(s, _)| s == "held"), "{promo:?}");
    let held = all
        .iter()
        .find(|m| m["journey"] == "promo" && m["status"] == "held")
        .expect("held");
    let history: Vec<(&str, &str)> = held["history"]
        .as_array()
        .expect("history")
        .iter()
        .map(|h| {
            (
                h["status"].as_str().unwrap_or_default(),
                h["detail"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert!(
        matches!(history.as_slice(), [("queued", _), ("held", until)] if until.starts_with("until 20")),
        "{held}"
    );
    assert!(
        promo
            .iter()
            .any(|(s, r)| s == "suppressed" && r == "frequency cap: 1 per 1d on in_app"),
        "{promo:?}"
    );
    assert_eq!(
        of("notice"),
        [("sent".to_string(), String::new())],
        "{all:?}"
    );
    let receipt = of("receipt");
    assert!(
        receipt[0].1.contains("452") && receipt[0].1.contains("retry window"),
        "{receipt:?}"
    );
    // One soft bounce is the configured limit: the address is suppressed, and the next
    // receipt (transactional too) is not sent.
    let (_, entry) = get(
        &c,
        &server.base,
        ADMIN,
        "/v1/suppressions/email/full@example.com",
    )
    .await;
    assert_eq!(
        (&entry["reason"], &entry["soft_bounces"]),
        (&json!("soft_bounces"), &json!(1)),
        "{entry}"
    );
    send_batch(
        &c,
        &server.base,
        WRITE_KEY,
        &json!([{"type": "track", "userId": "kim", "event": "Paid"}]),
    )
    .await
    .expect("ingest");
    let all = messages().await;
    let last_receipt = all
        .iter()
        .rfind(|m| m["journey"] == "receipt")
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        (
            last_receipt["status"].as_str(),
            last_receipt["reason"].as_str()
        ),
        (Some("suppressed"), Some("suppression list: soft_bounces")),
        "{all:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsubscribing_from_a_list_stops_that_list_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (smtp, server) = tracked_email_server(dir.path());
    let public = PUBLIC_URL;
    let c = client();
    put_template(
        &c,
        &server.base,
        "plain",
        &json!({"channel": "email", "subject": "{{journey.entry.event}}", "text": "hi"}),
    )
    .await;
    for (key, event, list) in [("news", "News", Some("newsletter")), ("tips", "Tip", None)] {
        let mut node = json!({"id": "send", "type": "message", "channel": "email", "template": "plain", "next": "done"});
        if let Some(list) = list {
            node["subscription"] = json!(list);
        }
        put_and_publish(
            &c,
            &server.base,
            &json!({"key": key, "entry": {"event": event}, "properties": {"reentry": "always"},
                "nodes": [node, {"id": "done", "type": "end"}]}),
        )
        .await;
    }
    send_batch(
        &c,
        &server.base,
        WRITE_KEY,
        &json!([
            {"type": "identify", "userId": "lee", "traits": {"email": "lee@example.com"}},
            {"type": "track", "userId": "lee", "event": "News"},
        ]),
    )
    .await
    .expect("ingest");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let link = loop {
        if let Some(m) = smtp.messages.lock().expect("lock").first() {
            break m["headers"]["List-Unsubscribe"]
                .as_str()
                .expect("header")
                .trim_matches(['<', '>'])
                .to_owned();
        }
        assert!(std::time::Instant::now() < deadline, "no email");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(link.contains("c=list%3Anewsletter"), "{link}");
    let r = c
        .post(link.replace(public, &server.base))
        .body("List-Unsubscribe=One-Click")
        .send()
        .await
        .expect("unsubscribe");
    assert_eq!(r.status(), 200);
    let (_, lee) = get(&c, &server.base, ADMIN, "/v1/profiles/user_id/lee").await;
    assert_eq!(lee["traits"]["unsubscribed_list_newsletter"], true, "{lee}");
    assert!(lee["traits"].get("unsubscribed_email").is_none(), "{lee}");
    send_batch(
        &c,
        &server.base,
        WRITE_KEY,
        &json!([
            {"type": "track", "userId": "lee", "event": "News"},
            {"type": "track", "userId": "lee", "event": "Tip"},
        ]),
    )
    .await
    .expect("ingest");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while smtp.messages.lock().expect("lock").len() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "the tip did not arrive"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let subjects: Vec<String> = smtp
        .messages
        .lock()
        .expect("lock")
        .iter()
        .map(|m| {
            m["headers"]["Subject"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    assert_eq!(
        subjects,
        ["News", "Tip"],
        "the second newsletter is not sent, the tip is"
    );
    let (_, record) = get(&c, &server.base, ADMIN, "/v1/profiles/user_id/lee/messages").await;
    assert!(
        record["messages"]
            .as_array()
            .expect("messages")
            .iter()
            .any(|m| m["journey"] == "news"
                && m["status"] == "suppressed"
                && m["reason"] == "unsubscribed from newsletter"),
        "{record}"
    );
}
