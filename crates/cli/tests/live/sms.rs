//! SMS through a Twilio-compatible stand-in and a generic HTTP provider: rendering, status callbacks, dead numbers, throttles (shared across servers on PostgreSQL) and retry windows.

use std::time::Duration;

use serde_json::{Value, json};

use crate::common::{ADMIN, Launch, Server, WRITE_KEY, client, get, send_batch};
use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sms_messages_render_the_pinned_template_and_reach_a_twilio_compatible_api() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (server, got) = twilio_server(
        dir.path(),
        (
            "WAYMARK_SMS__INBOUND_URL",
            "https://waymark.example.com/v1/sms/inbound",
        ),
    )
    .await;
    let c = client();
    put_template(&c, &server.base, "shipped", &json!({"channel": "sms", "text": "Hi {{default profile.traits.first_name \"there\"}}, order {{journey.entry.properties.order}} is on its way. Reply STOP to opt out."})).await;
    put_and_publish(
        &c,
        &server.base,
        &json!({"key": "shipping", "entry": {"event": "Order Shipped"}, "properties": {"reentry": "always"}, "nodes": [
            {"id": "text", "type": "message", "channel": "sms", "template": "shipped", "next": "done"},
            {"id": "done", "type": "end"}]}),
    )
    .await;
    let batch = json!([
        {"type": "identify", "userId": "ada", "traits": {"first_name": "Ada", "phone": "+1 (555) 010-1234"}},
        {"type": "track", "userId": "ada", "event": "Order Shipped", "properties": {"order": "o-1"}},
        {"type": "identify", "userId": "bad", "traits": {"phone": "+15550101110"}},
        {"type": "track", "userId": "bad", "event": "Order Shipped", "properties": {"order": "o-2"}},
        {"type": "track", "userId": "nophone", "event": "Order Shipped", "properties": {"order": "o-3"}},
    ]);
    send_batch(&c, &server.base, WRITE_KEY, &batch)
        .await
        .expect("ingest");
    let settled = settled_messages(&c, &server.base, &["ada", "bad"]).await;
    assert_eq!(settled[0]["effects"][0]["status"], "done", "{}", settled[0]);
    assert_eq!(
        settled[1]["effects"][0]["status"], "failed",
        "an invalid number fails at once: {}",
        settled[1]
    );
    assert_eq!(
        got.lock().expect("lock").clone(),
        [(
            "+15550101234".to_string(),
            "Hi Ada, order o-1 is on its way. Reply STOP to opt out.".to_string(),
            None
        )]
    );
    // The person's message record says what became of each message, and why.
    let messages = |user: &'static str| {
        let (c, base) = (c.clone(), server.base.clone());
        async move {
            let (status, body) = get(
                &c,
                &base,
                ADMIN,
                &format!("/v1/profiles/user_id/{user}/messages"),
            )
            .await;
            assert_eq!(status, 200, "{body}");
            body["messages"].as_array().cloned().unwrap_or_default()
        }
    };
    let ada = messages("ada").await;
    assert_eq!(
        (
            ada[0]["status"].as_str(),
            ada[0]["to"].as_str(),
            ada[0]["provider"]["provider_id"].as_str()
        ),
        (Some("sent"), Some("+15550101234"), Some("SM123")),
        "{ada:?}"
    );
    let bad = messages("bad").await;
    assert_eq!(bad[0]["status"], "bounced", "{bad:?}");
    assert!(
        bad[0]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("21211")),
        "{bad:?}"
    );
    let nophone = messages("nophone").await;
    assert_eq!(nophone[0]["status"], "not_sent", "{nophone:?}");
    // Twilio's 21211 (invalid number) put the number on the suppression list: the next
    // message to it is suppressed without calling the provider.
    let (_, entry) = get(&c, &server.base, ADMIN, "/v1/suppressions/sms/+15550101110").await;
    assert_eq!(entry["reason"], "invalid_address", "{entry}");
    send_batch(&c, &server.base, WRITE_KEY, &json!([
        {"type": "track", "userId": "bad", "event": "Order Shipped", "properties": {"order": "o-4"}},
    ]))
    .await
    .expect("ingest");
    let bad = messages("bad").await;
    assert_eq!(
        (
            bad.len(),
            bad[1]["status"].as_str(),
            bad[1]["reason"].as_str()
        ),
        (
            2,
            Some("suppressed"),
            Some("suppression list: invalid_address")
        ),
        "{bad:?}"
    );
    // Inbound keywords from the provider, signed as Twilio signs: STOP opts out (and the next
    // SMS is suppressed), HELP answers, a forged request is refused.
    let inbound = |body: &'static str, token: &'static str| {
        let (c, base) = (c.clone(), server.base.clone());
        async move {
            let params: Vec<(String, String)> = [
                ("From", "+15550101234"),
                ("Body", body),
                ("MessageSid", "SM-in-1"),
            ]
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
            let signature = waymark_core::links::sign_twilio(
                token,
                "https://waymark.example.com/v1/sms/inbound",
                &params,
            );
            let r = c
                .post(format!("{base}/v1/sms/inbound"))
                .header("x-twilio-signature", signature)
                .form(&params)
                .send()
                .await
                .expect("inbound");
            (r.status().as_u16(), r.text().await.unwrap_or_default())
        }
    };
    assert_eq!(
        inbound("STOP", "not-the-token").await.0,
        403,
        "a forged request is refused"
    );
    let (status, help) = inbound("help", "secret-token").await;
    assert_eq!(status, 200);
    assert!(
        help.contains("<Message>Reply STOP to unsubscribe"),
        "{help}"
    );
    assert_eq!(inbound("Stop.", "secret-token").await.0, 200);
    assert_eq!(inbound(" stop ALL ", "secret-token").await.0, 200);
    let (_, profile) = get(&c, &server.base, ADMIN, "/v1/profiles/user_id/ada").await;
    assert_eq!(profile["traits"]["unsubscribed_sms"], true, "{profile}");
    assert_eq!(
        profile["computed"]["event_counts"]["Unsubscribed"], 1,
        "one opt-out recorded: {profile}"
    );
    let (status, entry) = get(&c, &server.base, ADMIN, "/v1/suppressions/sms/+15550101234").await;
    assert_eq!(
        (status, entry["reason"].as_str()),
        (200, Some("unsubscribed")),
        "{entry}"
    );
    send_batch(&c, &server.base, WRITE_KEY, &json!([{"type": "track", "userId": "ada", "event": "Order Shipped", "properties": {"order": "o-4"}}]))
        .await
        .expect("ingest");
    let after = messages("ada").await;
    assert_eq!(
        after.last().map(|m| m["status"].clone()),
        Some(json!("suppressed")),
        "{after:?}"
    );
    assert_eq!(got.lock().expect("lock").len(), 1, "nothing more was sent");
    assert_eq!(inbound("START", "secret-token").await.0, 200);
    let (_, profile) = get(&c, &server.base, ADMIN, "/v1/profiles/user_id/ada").await;
    assert_eq!(profile["traits"]["unsubscribed_sms"], false, "{profile}");
    let (status, _) = get(&c, &server.base, ADMIN, "/v1/suppressions/sms/+15550101234").await;
    assert_eq!(status, 404, "opting back in takes the opt-out off the list");

    // No phone number: the message fails with why, and the journey goes on.
    let (_, nophone) = get(
        &c,
        &server.base,
        ADMIN,
        "/v1/profiles/user_id/nophone/journeys",
    )
    .await;
    let instance = &nophone["journeys"][0]["instances"][0];
    assert_eq!(instance["status"], "completed", "{nophone}");
    assert!(
        instance["steps"]
            .as_array()
            .expect("steps")
            .iter()
            .any(|s| s["what"] == "error"
                && s["detail"]["reason"]
                    .as_str()
                    .is_some_and(|r| r.contains("phone"))),
        "{nophone}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sms_status_callbacks_mark_messages_delivered_and_suppress_dead_numbers() {
    const STATUS_URL: &str = "https://waymark.example.com/v1/sms/status";
    let dir = tempfile::tempdir().expect("tempdir");
    let (server, got) = twilio_server(dir.path(), ("WAYMARK_SMS__STATUS_URL", STATUS_URL)).await;
    let c = client();
    put_template(
        &c,
        &server.base,
        "ping",
        &json!({"channel": "sms", "text": "ping"}),
    )
    .await;
    put_and_publish(
        &c,
        &server.base,
        &json!({"key": "pings", "entry": {"event": "Ping"}, "properties": {"reentry": "always"}, "nodes": [
            {"id": "text", "type": "message", "channel": "sms", "template": "ping", "next": "done"},
            {"id": "done", "type": "end"}]}),
    )
    .await;
    send_batch(
        &c,
        &server.base,
        WRITE_KEY,
        &json!([
            {"type": "identify", "userId": "ada", "traits": {"phone": "+15550101234"}},
            {"type": "track", "userId": "ada", "event": "Ping"},
            {"type": "identify", "userId": "gone", "traits": {"phone": "+15550101235"}},
            {"type": "track", "userId": "gone", "event": "Ping"},
        ]),
    )
    .await
    .expect("ingest");
    settled_messages(&c, &server.base, &["ada", "gone"]).await;
    let messages = |user: &'static str| {
        let (c, base) = (c.clone(), server.base.clone());
        async move {
            let (_, body) = get(
                &c,
                &base,
                ADMIN,
                &format!("/v1/profiles/user_id/{user}/messages"),
            )
            .await;
            body["messages"].as_array().cloned().unwrap_or_default()
        }
    };
    // Each send gave the provider a callback URL naming the message.
    let callback_of = |to: &str| {
        got.lock()
            .expect("lock")
            .iter()
            .find(|(t, _, _)| t == to)
            .and_then(|(_, _, cb)| cb.clone())
            .expect("a StatusCallback")
    };
    let (ada, gone) = (messages("ada").await, messages("gone").await);
    let ada_callback = callback_of("+15550101234");
    let query = ada_callback
        .strip_prefix(&format!("{STATUS_URL}?"))
        .expect("the configured URL")
        .to_owned();
    let named: Vec<(String, String)> = url_pairs(&query);
    assert_eq!(
        named,
        [(
            "m".to_string(),
            ada[0]["id"].as_str().expect("id").to_string()
        )]
    );
    // The provider calls back, signing as Twilio does over the URL it was given.
    let callback = |url: String, status: &'static str, code: &'static str, token: &'static str| {
        let (c, base) = (c.clone(), server.base.clone());
        async move {
            let params: Vec<(String, String)> = [
                ("MessageSid", "SM123"),
                ("MessageStatus", status),
                ("ErrorCode", code),
            ]
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
            let signature = waymark_core::links::sign_twilio(token, &url, &params);
            let local = url.replace("https://waymark.example.com", &base);
            let r = c
                .post(local)
                .header("x-twilio-signature", signature)
                .form(&params)
                .send()
                .await
                .expect("callback");
            r.status().as_u16()
        }
    };
    assert_eq!(
        callback(ada_callback.clone(), "delivered", "", "not-the-token").await,
        403
    );
    // A signature for Ada's URL does not carry over to another message's.
    let gone_callback = callback_of("+15550101235");
    let delivered = [("MessageStatus".to_string(), "delivered".to_string())];
    let signed_for_ada =
        waymark_core::links::sign_twilio("secret-token", &ada_callback, &delivered);
    let r = c
        .post(gone_callback.replace("https://waymark.example.com", &server.base))
        .header("x-twilio-signature", signed_for_ada)
        .form(&delivered)
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 403);
    assert_eq!(
        callback(ada_callback.clone(), "sent", "", "secret-token").await,
        204
    );
    assert_eq!(
        messages("ada").await[0]["status"],
        "sent",
        "a step on the way is not a report"
    );
    assert_eq!(
        callback(ada_callback.clone(), "delivered", "", "secret-token").await,
        204
    );
    // Twilio repeats callbacks: the second is kept once.
    assert_eq!(
        callback(ada_callback.clone(), "delivered", "", "secret-token").await,
        204
    );
    let ada = messages("ada").await;
    assert_eq!(ada[0]["status"], "delivered", "{ada:?}");
    assert!(ada[0]["reason"].is_null(), "{ada:?}");
    let history: Vec<&str> = ada[0]["history"]
        .as_array()
        .expect("history")
        .iter()
        .filter_map(|h| h["status"].as_str())
        .collect();
    assert_eq!(history, ["queued", "sent", "delivered"], "{ada:?}");
    // An unknown number (30005) is a bounce: the message says so and the number is listed.
    assert_eq!(
        callback(gone_callback, "undelivered", "30005", "secret-token").await,
        204
    );
    let gone_after = messages("gone").await;
    assert_eq!(
        (
            gone_after[0]["status"].as_str(),
            gone_after[0]["reason"].as_str()
        ),
        (Some("bounced"), Some("undelivered SM123 (error 30005)")),
        "{gone:?} -> {gone_after:?}"
    );
    let (_, entry) = get(&c, &server.base, ADMIN, "/v1/suppressions/sms/+15550101235").await;
    assert_eq!(entry["reason"], "invalid_address", "{entry}");
    send_batch(
        &c,
        &server.base,
        WRITE_KEY,
        &json!([{"type": "track", "userId": "gone", "event": "Ping"}]),
    )
    .await
    .expect("ingest");
    let gone_after = messages("gone").await;
    assert_eq!(
        gone_after.last().map(|m| m["status"].clone()),
        Some(json!("suppressed")),
        "{gone_after:?}"
    );
    assert_eq!(got.lock().expect("lock").len(), 2, "nothing more was sent");

    // The generic report API: by message id, admin token, checked input.
    let report = |token: &'static str, body: Value| post_report(&c, &server.base, token, body);
    let id = ada[0]["id"].as_str().expect("id");
    assert_eq!(
        report(WRITE_KEY, json!({"message": id, "status": "delivered"}))
            .await
            .0,
        401
    );
    let (status, body) = report(ADMIN, json!({"message": id, "status": "read-it"})).await;
    assert_eq!(
        (status, body["code"].as_str(), body["field"].as_str()),
        (400, Some("invalid_status"), Some("status")),
        "{body}"
    );
    let (status, body) = report(
        ADMIN,
        json!({"message": id, "email_message_id": "<x@y>", "status": "delivered"}),
    )
    .await;
    assert_eq!(
        (status, body["field"].as_str()),
        (400, Some("message")),
        "{body}"
    );
    let (status, body) = report(
        ADMIN,
        json!({"message": "pings:nobody:0:text:1", "status": "delivered"}),
    )
    .await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = report(
        ADMIN,
        json!({"message": id, "status": "complained", "detail": "carrier spam report"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["suppressed"], true, "{body}");
    let (_, entry) = get(&c, &server.base, ADMIN, "/v1/suppressions/sms/+15550101234").await;
    assert_eq!(entry["reason"], "complaint", "{entry}");
    let (_, metrics) = get_text(&c, &format!("{}/metrics", server.base)).await;
    for line in [
        r#"waymark_message_reports_total{channel="sms",status="delivered"} 2"#,
        r#"waymark_message_reports_total{channel="sms",status="bounced"} 1"#,
        r#"waymark_message_reports_total{channel="sms",status="complained"} 1"#,
    ] {
        assert!(metrics.contains(line), "{line} in\n{metrics}");
    }
}

/// Two servers on one PostgreSQL database share the throttle: together they keep to it.
#[cfg(feature = "backend-tests")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_sharing_postgres_share_the_throttle() {
    let (provider, arrivals) = timed_twilio().await;
    let url = crate::common::fresh_postgres_url().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let start =
        |name: &str| throttled_sms_server(&dir.path().join(name), &provider, Some(&url), "1h");
    let (one, _two) = (start("one"), start("two"));
    ping_everyone(&one.base, 100, Vec::new()).await;
    wait_for_arrivals(&arrivals, 100).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_paced(&arrivals.lock().expect("lock"), 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttled_sms_never_exceed_the_rate_and_retries_stop_at_the_window() {
    let (provider, arrivals) = timed_twilio().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let server = throttled_sms_server(&dir.path().join("data"), &provider, None, "2s");
    let c = client();
    let down = vec![
        json!({"type": "identify", "userId": "down", "traits": {"phone": "+15550109999"}}),
        json!({"type": "track", "userId": "down", "event": "Ping"}),
    ];
    ping_everyone(&server.base, 80, down).await;
    wait_for_arrivals(&arrivals, 80).await;
    // 20 per second with bursts of 20: no second ever sees more than 20 + 20, and 80 sends
    // take at least (80 - 20) / 20 = 3 s.
    assert_paced(&arrivals.lock().expect("lock"), 80);
    // The number whose provider is down: retried with backoff, then failed once the retry
    // window (2 s) has no room for another attempt, with the reason.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let failed = loop {
        let (_, record) = get(
            &c,
            &server.base,
            ADMIN,
            "/v1/profiles/user_id/down/messages",
        )
        .await;
        let m = record["messages"][0].clone();
        if m["status"] == "failed" {
            break m;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still not failed: {record}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let reason = failed["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("503") && reason.contains("retry window of 2 s"),
        "{failed}"
    );
    assert!(
        failed["attempts"]
            .as_u64()
            .is_some_and(|a| (2..=4).contains(&a)),
        "{failed}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sms_through_a_generic_http_provider_sends_the_configured_request() {
    use axum::http::StatusCode;
    let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::<(Value, Value)>::new()));
    let seen = got.clone();
    let app = axum::Router::new().route(
        "/api/send",
        axum::routing::post(
            move |headers: axum::http::HeaderMap, axum::Json(body): axum::Json<Value>| {
                let seen = seen.clone();
                async move {
                    let h: serde_json::Map<String, Value> = headers
                        .iter()
                        .map(|(k, v)| (k.to_string(), json!(v.to_str().unwrap_or_default())))
                        .collect();
                    seen.lock()
                        .expect("lock")
                        .push((Value::Object(h), body.clone()));
                    if body["recipient"] == "+15550101119" {
                        return (
                            StatusCode::UNPROCESSABLE_ENTITY,
                            axum::Json(json!({"error": "blocked"})),
                        );
                    }
                    (
                        StatusCode::ACCEPTED,
                        axum::Json(json!({"messages": [{"id": "m-77"}]})),
                    )
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/api/send", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await.expect("provider") });
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("waymark.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[sms]
provider = "http"
url = "{url}"
from = "WAYMARK"
id_field = "messages.0.id"
headers = {{ Authorization = "Bearer sms-key", X-Message = "{{{{message_id}}}}" }}
body = {{ recipient = "{{{{to}}}}", sender = "{{{{from}}}}", content = "{{{{text}}}}", options = {{ unicode = true }} }}
"#
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
        "code",
        &json!({"channel": "sms", "text": "Code {{journey.entry.properties.code}} ✓"}),
    )
    .await;
    put_and_publish(
        &c,
        &server.base,
        &json!({"key": "otp", "entry": {"event": "Code Requested"}, "nodes": [
            {"id": "send", "type": "message", "channel": "sms", "template": "code", "category": "transactional", "next": "done"},
            {"id": "done", "type": "end"}]}),
    )
    .await;
    send_batch(&c, &server.base, WRITE_KEY, &json!([
        {"type": "identify", "userId": "ada", "traits": {"phone": "+1 555 010 1234"}},
        {"type": "track", "userId": "ada", "event": "Code Requested", "properties": {"code": "4711"}},
        {"type": "identify", "userId": "blocked", "traits": {"phone": "+15550101119"}},
        {"type": "track", "userId": "blocked", "event": "Code Requested", "properties": {"code": "1"}},
    ]))
    .await
    .expect("ingest");
    let settled = settled_messages(&c, &server.base, &["ada", "blocked"]).await;
    assert_eq!(settled[0]["effects"][0]["status"], "done", "{}", settled[0]);
    assert_eq!(
        settled[1]["effects"][0]["status"], "failed",
        "{}",
        settled[1]
    );
    let got = got.lock().expect("lock").clone();
    let (headers, body) = got
        .iter()
        .find(|(_, b)| b["recipient"] == "+15550101234")
        .expect("ada's request");
    assert_eq!(
        body,
        &json!({"recipient": "+15550101234", "sender": "WAYMARK", "content": "Code 4711 ✓", "options": {"unicode": true}})
    );
    assert_eq!(headers["authorization"], "Bearer sms-key");
    assert_eq!(
        headers["x-message"], headers["idempotency-key"],
        "{headers}"
    );
    let (_, ada) = get(&c, &server.base, ADMIN, "/v1/profiles/user_id/ada/messages").await;
    assert_eq!(
        ada["messages"][0]["provider"]["provider_id"], "m-77",
        "{ada}"
    );
    let (_, blocked) = get(
        &c,
        &server.base,
        ADMIN,
        "/v1/profiles/user_id/blocked/messages",
    )
    .await;
    assert!(
        blocked["messages"][0]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("422") && r.contains("blocked")),
        "{blocked}"
    );
}
