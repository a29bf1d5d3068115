//! Email to real SMTP servers (aiosmtpd): parts and one-click unsubscribe, STARTTLS and SMTPS with login, pooled connections, slow relays, named senders, open and click tracking.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::{ADMIN, Launch, Server, WRITE_KEY, client, get, send_batch};
use crate::support::*;

/// A relay that takes 500 ms per message, one connection, and a 4 s lease: the last of 16
/// emails waits about 8 s for the connection, twice the lease. Leases are renewed while
/// rows wait, so none is claimed again and every Message-ID arrives once (before renewal,
/// every email still waiting when its lease ran out was sent a second time).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_smtp_server_gets_each_email_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let smtp = smtp_sink_configured(&[], Duration::from_millis(500));
    let url = format!("smtp://127.0.0.1:{}", smtp.port);
    let server = Server::start_with_env(
        Launch {
            data_dir: &dir.path().join("data"),
            store: None,
            configured_keys: true,
        },
        &[
            ("WAYMARK_EMAIL__SMTP_URL", url.as_str()),
            ("WAYMARK_EMAIL__FROM", "hello@example.com"),
            ("WAYMARK_EMAIL__POOL_SIZE", "1"),
            ("WAYMARK_OUTBOX__LEASE", "4s"),
        ],
    );
    let c = client();
    let template = json!({"channel": "email", "subject": "Hi", "text": "Hello"});
    put_template(&c, &server.base, "hi", &template).await;
    let journey = json!({"key": "hello", "entry": {"event": "Identify"}, "nodes": [
        {"id": "send", "type": "message", "channel": "email", "template": "hi", "next": "done"},
        {"id": "done", "type": "end"}]});
    put_and_publish(&c, &server.base, &journey).await;
    let batch: Vec<Value> = (0..16)
        .map(|i| json!({"type": "identify", "userId": format!("slow{i}"), "traits": {"email": format!("slow{i}@example.com")}}))
        .collect();
    send_batch(&c, &server.base, WRITE_KEY, &Value::Array(batch))
        .await
        .expect("ingest");
    smtp.wait_for(16, Duration::from_secs(40)).await;
    // Time for any second claim of a row whose lease ran out to be sent as well.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let messages = smtp.messages.lock().expect("lock").clone();
    let mut ids: Vec<&str> = messages
        .iter()
        .filter_map(|m| m["headers"]["Message-ID"].as_str())
        .collect();
    ids.sort_unstable();
    let total = ids.len();
    ids.dedup();
    assert_eq!(
        (total, ids.len()),
        (16, 16),
        "emails sent, distinct Message-IDs"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_over_smtps_trusts_the_configured_ca_and_logs_in() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (smtp, ca) = tls_smtp_sink(dir.path(), true);
    let url = format!("smtps://bot:s3cret@127.0.0.1:{}", smtp.port);
    let server = tls_email_server(&dir.path().join("data"), &url, &ca);
    let c = client();
    mail_one_person(&c, &server.base, "ada").await;
    let settled = settled_messages(&c, &server.base, &["ada"]).await;
    assert_eq!(settled[0]["effects"][0]["status"], "done", "{}", settled[0]);
    let messages = smtp.messages.lock().expect("lock").clone();
    assert_eq!(messages.len(), 1, "{messages:?}");
    assert_eq!(messages[0]["tls"], true, "{messages:?}");
    assert_eq!(messages[0]["login"], "bot");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_upgrades_with_starttls_and_logs_in_and_a_wrong_password_bounces_no_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (smtp, ca) = tls_smtp_sink(dir.path(), false);
    let start = |data: &str, password: &str| {
        let url = format!("smtp://bot:{password}@127.0.0.1:{}?tls=required", smtp.port);
        tls_email_server(&dir.path().join(data), &url, &ca)
    };
    let c = client();

    let server = start("good", "s3cret");
    mail_one_person(&c, &server.base, "ada").await;
    let settled = settled_messages(&c, &server.base, &["ada"]).await;
    assert_eq!(settled[0]["effects"][0]["status"], "done", "{}", settled[0]);
    let messages = smtp.messages.lock().expect("lock").clone();
    assert_eq!(messages.len(), 1, "{messages:?}");
    assert_eq!(messages[0]["tls"], true, "sent after STARTTLS");
    assert_eq!(messages[0]["login"], "bot", "sent after AUTH");
    drop(server);

    let server = start("bad", "wrong");
    mail_one_person(&c, &server.base, "bob").await;
    let started = Instant::now();
    let record = loop {
        let (_, record) = get(&c, &server.base, ADMIN, "/v1/profiles/user_id/bob/messages").await;
        if record["messages"][0]["status"] == "retrying" {
            break record;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "{record}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        record["messages"][0]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("AUTH")),
        "{record}"
    );
    let (status, _) = get(
        &c,
        &server.base,
        ADMIN,
        "/v1/suppressions/email/bob@example.com",
    )
    .await;
    assert_eq!(status, 404, "a refused login is not the recipient's bounce");
    assert_eq!(smtp.messages.lock().expect("lock").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_reuses_its_pooled_smtp_connections() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (smtp, server) = email_server(
        dir.path(),
        &[
            ("WAYMARK_EMAIL__FROM", "hello@example.com"),
            ("WAYMARK_EMAIL__POOL_SIZE", "2"),
        ],
    );
    let c = client();
    put_template(
        &c,
        &server.base,
        "note",
        &json!({"channel": "email",
            "subject": "Note {{profile.traits.n}}", "text": "n = {{profile.traits.n}}"}),
    )
    .await;
    put_and_publish(
        &c,
        &server.base,
        &json!({"key": "notes", "entry": {"event": "Identify"}, "properties": {"reentry": "always"},
            "nodes": [
            {"id": "send", "type": "message", "channel": "email", "template": "note", "next": "done"},
            {"id": "done", "type": "end"}]}),
    )
    .await;
    let people = 30;
    let batch: Vec<Value> = (0..people)
        .map(|n| json!({"type": "identify", "userId": format!("p{n}"), "traits": {"n": n, "email": format!("p{n}@example.com")}}))
        .collect();
    send_batch(&c, &server.base, WRITE_KEY, &Value::Array(batch))
        .await
        .expect("ingest");
    let messages = smtp.wait_for(people, Duration::from_secs(30)).await;
    let peers: std::collections::BTreeSet<&str> =
        messages.iter().filter_map(|m| m["peer"].as_str()).collect();
    assert!(
        !peers.is_empty() && peers.len() <= 2,
        "{people} emails over {} connections with a pool of 2: {peers:?}",
        peers.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_reaches_a_real_smtp_server_with_parts_and_one_click_unsubscribe() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (smtp, server) = email_server(
        dir.path(),
        &[
            ("WAYMARK_EMAIL__FROM", "Waymark <hello@example.com>"),
            ("WAYMARK_EMAIL__REPLY_TO", "help@example.com"),
            ("WAYMARK_EMAIL__PUBLIC_URL", "https://waymark.example.com"),
        ],
    );
    let c = client();
    put_template(&c, &server.base, "welcome-mail", &json!({"channel": "email",
            "subject": "Welcome, {{profile.traits.first_name}}!",
            "preheader": "Your account is ready",
            "html": "<h1>Hi {{profile.traits.first_name}}</h1><p>Plan: {{journey.entry.properties.plan}}</p>",
            "text": "Hi {{profile.traits.first_name}}, plan: {{journey.entry.properties.plan}}"})).await;
    put_and_publish(
        &c,
        &server.base,
        &json!({"key": "mail", "entry": {"event": "Signed Up"}, "nodes": [
            {"id": "send", "type": "message", "channel": "email", "template": "welcome-mail", "next": "done"},
            {"id": "done", "type": "end"}]}),
    )
    .await;
    let batch = json!([
        {"type": "identify", "userId": "ada", "traits": {"first_name": "Ada <3", "email": "ada@example.com"}},
        {"type": "track", "userId": "ada", "event": "Signed Up", "properties": {"plan": "pro"}},
        {"type": "identify", "userId": "gone", "traits": {"email": "bounce@example.com"}},
        {"type": "track", "userId": "gone", "event": "Signed Up", "properties": {"plan": "free"}},
    ]);
    send_batch(&c, &server.base, WRITE_KEY, &batch)
        .await
        .expect("ingest");
    let settled = settled_messages(&c, &server.base, &["ada", "gone"]).await;
    assert_eq!(settled[0]["effects"][0]["status"], "done", "{}", settled[0]);
    assert_eq!(
        settled[1]["effects"][0]["status"], "failed",
        "a 550 is a hard bounce: {}",
        settled[1]
    );
    let (_, record) = get(
        &c,
        &server.base,
        ADMIN,
        "/v1/profiles/user_id/gone/messages",
    )
    .await;
    let bounced = &record["messages"][0];
    assert_eq!(bounced["status"], "bounced", "{record}");
    assert!(
        bounced["reason"]
            .as_str()
            .is_some_and(|r| r.contains("hard bounce") && r.contains("550")),
        "{record}"
    );
    let history: Vec<&str> = bounced["history"]
        .as_array()
        .expect("history")
        .iter()
        .filter_map(|h| h["status"].as_str())
        .collect();
    assert_eq!(history, ["queued", "failed", "bounced"], "{record}");
    let messages = smtp.messages.lock().expect("lock").clone();
    assert_eq!(messages.len(), 1, "{messages:?}");
    let m = &messages[0];
    assert_eq!(m["rcpt_tos"], json!(["ada@example.com"]));
    assert_eq!(m["mail_from"], "hello@example.com");
    assert_eq!(m["content_type"], "multipart/alternative");
    let h = &m["headers"];
    assert_eq!(h["Subject"], "Welcome, Ada <3!");
    assert_eq!(h["From"], "Waymark <hello@example.com>");
    assert_eq!(h["Reply-To"], "help@example.com");
    assert_eq!(h["List-Unsubscribe-Post"], "List-Unsubscribe=One-Click");
    assert!(
        h["Message-ID"]
            .as_str()
            .is_some_and(|id| id.ends_with("@example.com>")),
        "{h}"
    );
    let parts = m["parts"].as_array().expect("parts");
    assert_eq!(parts[0]["type"], "text/plain");
    assert_eq!(
        parts[0]["body"].as_str().map(str::trim),
        Some("Hi Ada <3, plan: pro")
    );
    assert_eq!(parts[1]["type"], "text/html");
    let html = parts[1]["body"].as_str().expect("html");
    assert!(
        html.contains("<h1>Hi Ada &lt;3</h1><p>Plan: pro</p>"),
        "{html}"
    );
    assert!(
        html.contains("Your account is ready"),
        "the preheader leads the HTML: {html}"
    );

    // The one-click unsubscribe link works (RFC 8058 POST); an altered one is refused.
    let link = h["List-Unsubscribe"]
        .as_str()
        .expect("header")
        .trim_matches(['<', '>']);
    let local = link.replace("https://waymark.example.com", &server.base);
    let forged = local.replace("ada%40example.com", "bob%40example.com");
    let r = c
        .post(&forged)
        .body("List-Unsubscribe=One-Click")
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 403);
    // A GET (a person following the link, or a mail scanner) only shows a page whose
    // button POSTs the same link: nothing changes yet.
    let r = c.get(&local).send().await.expect("get");
    assert_eq!(r.status(), 200);
    let page = r.text().await.unwrap_or_default();
    assert!(page.contains("<form method=\"post\" action=\"/v1/unsubscribe?c=email&amp;i=email%3Aada%40example%2Ecom&amp;s="), "{page}");
    let (_, ada) = get(&c, &server.base, ADMIN, "/v1/profiles/user_id/ada").await;
    assert!(
        ada["traits"].get("unsubscribed_email").is_none(),
        "a GET unsubscribed: {ada}"
    );
    assert_eq!(c.get(&forged).send().await.expect("get").status(), 403);
    // POSTed twice (the mail client, then the person): one change, one event.
    for _ in 0..2 {
        let r = c
            .post(&local)
            .body("List-Unsubscribe=One-Click")
            .send()
            .await
            .expect("post");
        assert_eq!(r.status(), 200, "{:?}", r.text().await);
    }
    let (_, ada) = get(&c, &server.base, ADMIN, "/v1/profiles/user_id/ada").await;
    assert_eq!(ada["traits"]["unsubscribed_email"], true, "{ada}");
    assert_eq!(ada["computed"]["event_counts"]["Unsubscribed"], 1, "{ada}");
    // The address that got the message is suppressed, whoever it belongs to later.
    let (status, entry) = get(
        &c,
        &server.base,
        ADMIN,
        "/v1/suppressions/email/ada@example.com",
    )
    .await;
    assert_eq!(
        (status, entry["reason"].as_str()),
        (200, Some("unsubscribed")),
        "{entry}"
    );
    // Unsubscribed: the next email to Ada is suppressed, with the reason recorded.
    send_batch(
        &c,
        &server.base,
        WRITE_KEY,
        &json!([{"type": "track", "userId": "ada", "event": "Newsletter Due"}]),
    )
    .await
    .expect("ingest");
    put_and_publish(
        &c,
        &server.base,
        &json!({"key": "news", "entry": {"event": "Newsletter Due"}, "nodes": [
            {"id": "send", "type": "message", "channel": "email", "template": "welcome-mail", "next": "done"},
            {"id": "done", "type": "end"}]}),
    )
    .await;
    send_batch(&c, &server.base, WRITE_KEY, &json!([
        {"type": "track", "userId": "ada", "event": "Newsletter Due", "properties": {"plan": "pro"}},
        {"type": "track", "userId": "gone", "event": "Newsletter Due", "properties": {"plan": "free"}},
    ]))
        .await
        .expect("ingest");
    // The hard bounce put the address on the suppression list, so the next email to it is
    // suppressed before it is sent, with the list's reason.
    let (status, entry) = get(
        &c,
        &server.base,
        ADMIN,
        "/v1/suppressions/email/bounce@example.com",
    )
    .await;
    assert_eq!(status, 200, "{entry}");
    assert_eq!(entry["reason"], "hard_bounce", "{entry}");
    assert!(
        entry["detail"].as_str().is_some_and(|d| d.contains("550")),
        "{entry}"
    );
    let (_, record) = get(
        &c,
        &server.base,
        ADMIN,
        "/v1/profiles/user_id/gone/messages",
    )
    .await;
    let last = record["messages"]
        .as_array()
        .and_then(|m| m.last())
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        (last["status"].as_str(), last["reason"].as_str()),
        (Some("suppressed"), Some("suppression list: hard_bounce")),
        "{record}"
    );
    assert_eq!(
        smtp.messages.lock().expect("lock").len(),
        1,
        "nothing more was sent"
    );
    let (_, record) = get(&c, &server.base, ADMIN, "/v1/profiles/user_id/ada/messages").await;
    let last = record["messages"]
        .as_array()
        .and_then(|m| m.last())
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        (last["status"].as_str(), last["reason"].as_str()),
        (Some("suppressed"), Some("unsubscribed")),
        "{record}"
    );
    let (_, events) = get(&c, &server.base, ADMIN, "/v1/profiles/user_id/ada/events").await;
    assert!(
        events["events"]
            .as_array()
            .expect("events")
            .iter()
            .any(|e| e["event"] == "Unsubscribed" && e["properties"]["channel"] == "email"),
        "{events}"
    );
    // A complaint from the mailbox provider's feedback loop names the email by its
    // Message-ID: it is kept on the message and suppresses the address. An id of ours with
    // the right row but another hash is refused, not taken for that row.
    let message_id = h["Message-ID"].as_str().expect("Message-ID");
    let report = |body: Value| post_report(&c, &server.base, ADMIN, body);
    let (seq_part, _) = message_id.split_once('@').expect("id");
    let seq = seq_part.rsplit('.').next().expect("seq");
    let guessed = format!("<0000000000000000.{seq}@example.com>");
    let (status, body) = report(json!({"email_message_id": guessed, "status": "complained"})).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (404, Some("not_found")),
        "{body}"
    );
    let (status, body) = report(
        json!({"email_message_id": message_id, "status": "complained",
        "detail": "ARF abuse report"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (body["channel"].as_str(), body["suppressed"].as_bool()),
        (Some("email"), Some(true)),
        "{body}"
    );
    let (_, entry) = get(
        &c,
        &server.base,
        ADMIN,
        "/v1/suppressions/email/ada@example.com",
    )
    .await;
    assert_eq!(
        (entry["reason"].as_str(), entry["detail"].as_str()),
        (Some("complaint"), Some("ARF abuse report")),
        "{entry}"
    );
    let (_, record) = get(&c, &server.base, ADMIN, "/v1/profiles/user_id/ada/messages").await;
    let first = &record["messages"][0];
    assert_eq!(first["status"], "complained", "{record}");
    let history: Vec<&str> = first["history"]
        .as_array()
        .expect("history")
        .iter()
        .filter_map(|h| h["status"].as_str())
        .collect();
    assert_eq!(history, ["queued", "sent", "complained"], "{record}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_templates_send_from_their_named_sending_configuration() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("waymark.toml");
    std::fs::write(
        &config,
        "[email.senders.billing]\nfrom = \"Acme Billing <billing@acme.example>\"\nreply_to = \"accounts@acme.example\"\n",
    )
    .expect("config");
    let config = config.to_string_lossy().into_owned();
    let (smtp, server) = email_server(
        dir.path(),
        &[
            ("WAYMARK_EMAIL__FROM", "Acme <hello@example.com>"),
            ("WAYMARK_CONFIG", &config),
        ],
    );
    let c = client();
    // A name that is not configured, or a sender on another channel, is refused up front.
    for (doc, code, field) in [
        (
            json!({"channel": "email", "subject": "s", "text": "t", "sender": "sales"}),
            "unknown_sender",
            "sender",
        ),
        (
            json!({"channel": "sms", "text": "t", "sender": "billing"}),
            "unexpected_field",
            "sender",
        ),
    ] {
        let r = c
            .put(format!("{}/v1/templates/bad", server.base))
            .bearer_auth(ADMIN)
            .json(&doc)
            .send()
            .await
            .expect("put");
        let status = r.status().as_u16();
        let body: Value = r.json().await.expect("json");
        let problem = body["errors"]
            .as_array()
            .and_then(|e| e.first())
            .unwrap_or(&body);
        assert!((400..=422).contains(&status), "{body}");
        assert_eq!(
            (problem["code"].as_str(), problem["field"].as_str()),
            (Some(code), Some(field)),
            "{body}"
        );
    }
    // A journey carrying such a template inline does not publish either.
    let inline = json!({"key": "sales", "entry": {"event": "Billed"},
        "templates": {"pitch": {"document": {"channel": "email", "sender": "sales", "subject": "s", "text": "t"}}},
        "nodes": [
            {"id": "pitch", "type": "message", "channel": "email", "template": "pitch", "next": "done"},
            {"id": "done", "type": "end"}]});
    put_draft(&c, &server.base, &inline).await;
    let r = c
        .post(format!("{}/v1/journeys/sales/publish", server.base))
        .bearer_auth(ADMIN)
        .send()
        .await
        .expect("publish");
    assert_eq!(r.status().as_u16(), 422);
    let body: Value = r.json().await.expect("json");
    assert!(
        body["errors"]
            .as_array()
            .is_some_and(|e| e.iter().any(|p| p["code"] == "unknown_sender"
                && p["field"] == "templates.pitch.document.sender")),
        "{body}"
    );
    put_template(
        &c,
        &server.base,
        "invoice",
        &json!({"channel": "email", "sender": "billing",
        "subject": "Invoice", "text": "Your invoice"}),
    )
    .await;
    put_template(
        &c,
        &server.base,
        "hello",
        &json!({"channel": "email",
        "subject": "Hello", "text": "Hello"}),
    )
    .await;
    put_and_publish(
        &c,
        &server.base,
        &json!({"key": "bills", "entry": {"event": "Billed"}, "nodes": [
            {"id": "invoice", "type": "message", "channel": "email", "template": "invoice", "next": "hello"},
            {"id": "hello", "type": "message", "channel": "email", "template": "hello", "next": "done"},
            {"id": "done", "type": "end"}]}),
    )
    .await;
    send_batch(
        &c,
        &server.base,
        WRITE_KEY,
        &json!([
            {"type": "identify", "userId": "ada", "traits": {"email": "ada@example.com"}},
            {"type": "track", "userId": "ada", "event": "Billed"},
        ]),
    )
    .await
    .expect("ingest");
    let messages = smtp.wait_for(2, Duration::from_secs(20)).await;
    let by_subject = |subject: &str| {
        messages
            .iter()
            .find(|m| m["headers"]["Subject"] == subject)
            .cloned()
            .expect("sent")
    };
    let invoice = by_subject("Invoice");
    assert_eq!(invoice["mail_from"], "billing@acme.example");
    assert_eq!(
        invoice["headers"]["From"],
        "Acme Billing <billing@acme.example>"
    );
    assert_eq!(invoice["headers"]["Reply-To"], "accounts@acme.example");
    assert!(
        invoice["headers"]["Message-ID"]
            .as_str()
            .is_some_and(|id| id.ends_with("@acme.example>")),
        "{invoice}"
    );
    let hello = by_subject("Hello");
    assert_eq!(hello["mail_from"], "hello@example.com");
    assert_eq!(hello["headers"]["From"], "Acme <hello@example.com>");
    assert!(
        hello["headers"].get("Reply-To").is_none_or(Value::is_null),
        "{hello}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_opens_and_clicks_come_back_as_events_that_journeys_wait_for() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (smtp, server) = tracked_email_server(dir.path());
    let public = PUBLIC_URL;
    let c = client();
    put_template(&c, &server.base, "cart-mail", &json!({"channel": "email",
            "subject": "Your cart",
            "html": "<html><body><p><a href=\"https://shop.example.com/cart?id={{journey.entry.properties.cart}}&ref=mail\">Back to your cart</a> <a href=\"mailto:help@example.com\">help</a></p></body></html>",
            "text": "Your cart"})).await;
    put_and_publish(
        &c,
        &server.base,
        &json!({"key": "cart", "entry": {"event": "Cart Abandoned"}, "nodes": [
            {"id": "send", "type": "message", "channel": "email", "template": "cart-mail", "next": "wait"},
            {"id": "wait", "type": "wait", "event": {"name": "Email Link Clicked", "timeout": "1d", "timeout_next": "done"}, "next": "clicked"},
            {"id": "clicked", "type": "update_profile", "set": {"came_back": true}, "next": "done"},
            {"id": "done", "type": "end"}]}),
    )
    .await;
    send_batch(&c, &server.base, WRITE_KEY, &json!([
        {"type": "identify", "userId": "ada", "traits": {"email": "ada@example.com"}},
        {"type": "track", "userId": "ada", "event": "Cart Abandoned", "properties": {"cart": "c&7"}},
    ]))
    .await
    .expect("ingest");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let html = loop {
        if let Some(m) = smtp.messages.lock().expect("lock").first() {
            break m["parts"][1]["body"].as_str().expect("html").to_owned();
        }
        assert!(std::time::Instant::now() < deadline, "no email arrived");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // The shop link is wrapped (its URL decoded from the HTML); mailto: is left alone.
    let links = tracked_links(&html);
    assert_eq!(links.len(), 1, "{html}");
    let (target, click) = &links[0];
    // What a mail client would follow: the HTML-escaped `&amp;` read back as `&`.
    assert_eq!(target, "https://shop.example.com/cart?id=c&7&ref=mail");
    assert!(html.contains("href=\"mailto:help@example.com\""), "{html}");
    let pixel = html
        .split("<img src=\"")
        .nth(1)
        .and_then(|p| p.split('"').next())
        .expect("open pixel")
        .replace("&amp;", "&");
    assert!(
        pixel.starts_with(&format!("{public}/v1/email/open?")),
        "{pixel}"
    );
    let local = |url: &str| url.replace(public, &server.base);

    // Opening: a GIF, and one `Email Opened` however often the images load.
    for _ in 0..2 {
        let r = c.get(local(&pixel)).send().await.expect("pixel");
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["content-type"], "image/gif");
        assert_eq!(r.bytes().await.expect("gif").len(), 43);
    }
    // Forged and altered links are refused and redirect nowhere.
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let elsewhere = reqwest::Url::parse(&local(click))
        .map(|mut u| {
            let pairs: Vec<(String, String)> = u
                .query_pairs()
                .map(|(k, v)| {
                    let v = if k == "u" {
                        "https://evil.example.net/".into()
                    } else {
                        v.into_owned()
                    };
                    (k.into_owned(), v)
                })
                .collect();
            u.query_pairs_mut().clear().extend_pairs(pairs);
            u.to_string()
        })
        .expect("url");
    let r = no_redirects.get(&elsewhere).send().await.expect("forged");
    assert_eq!(r.status(), 403);
    assert!(r.headers().get("location").is_none());
    let r = no_redirects
        .get(local(&pixel).replace("email%3Aada", "email%3Abob"))
        .send()
        .await
        .expect("forged");
    assert_eq!(r.status(), 403);
    // Clicking: a redirect to exactly the URL that was in the message.
    let r = no_redirects.get(local(click)).send().await.expect("click");
    assert_eq!(r.status(), 302);
    assert_eq!(r.headers()["location"], target.as_str());

    // The click moved the waiting journey on.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (_, ada) = get(&c, &server.base, ADMIN, "/v1/profiles/user_id/ada").await;
        if ada["traits"]["came_back"] == true {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the click did not reach the journey: {ada}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, events) = get(&c, &server.base, ADMIN, "/v1/profiles/user_id/ada/events").await;
    let events = events["events"].as_array().expect("events").clone();
    let named = |name: &str| {
        events
            .iter()
            .filter(|e| e["event"] == name)
            .cloned()
            .collect::<Vec<_>>()
    };
    assert_eq!(named("Email Opened").len(), 1, "{events:?}");
    let clicked = named("Email Link Clicked");
    assert_eq!(clicked.len(), 1, "{events:?}");
    assert_eq!(clicked[0]["properties"]["url"], target.as_str());
    assert_eq!(clicked[0]["properties"]["journey"], "cart");
    assert_eq!(named("Email Opened")[0]["properties"]["journey"], "cart");
}
