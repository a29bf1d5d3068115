//! Shared by the live tests: helpers to start servers wired to providers, publish journeys
//! and read what became of people. The provider stand-ins themselves are
//! `waymark_test_support`'s, shared with the channels' library tests.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub use waymark_test_support::http::crm_sink;
pub use waymark_test_support::push::{
    apns_signing_key, push_providers, service_account_file, service_account_key,
    verified_apns_token,
};
pub use waymark_test_support::smtp::{SmtpSink, smtp_sink, smtp_sink_configured};
pub use waymark_test_support::tls::{https_sink, test_ca, tls_smtp_sink};
pub use waymark_test_support::twilio::{TwilioSent, timed_twilio, twilio};

use crate::common::{ADMIN, Launch, Server, WRITE_KEY, client, get, send_batch};

pub fn greet_journey(wait: &str) -> Value {
    json!({"key": "greet", "entry": {"event": "Go"}, "nodes": [
        {"id": "hello", "type": "message", "channel": "log", "template": "hello", "next": "pause"},
        {"id": "pause", "type": "wait", "duration": wait, "next": "bye"},
        {"id": "bye", "type": "message", "channel": "log", "template": "bye", "next": "done"},
        {"id": "done", "type": "end"}]})
}

/// (status of the person's greet instance, templates of their recorded messages)
pub async fn progress(c: &reqwest::Client, base: &str, user: &str) -> (String, Vec<String>) {
    let (status, body) = get(
        c,
        base,
        ADMIN,
        &format!("/v1/profiles/user_id/{user}/journeys"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let state = body["journeys"][0]["instances"][0]["status"]
        .as_str()
        .unwrap_or("none")
        .to_owned();
    let templates = body["effects"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["effect"]["template"].as_str().map(str::to_owned))
        .collect();
    (state, templates)
}

pub async fn wait_until_completed(c: &reqwest::Client, base: &str, users: usize, within: Duration) {
    wait_until_completed_as(c, base, "g", users, within).await;
}

pub async fn wait_until_completed_as(
    c: &reqwest::Client,
    base: &str,
    prefix: &str,
    users: usize,
    within: Duration,
) {
    let started = Instant::now();
    loop {
        let mut done = 0;
        for u in 0..users {
            if progress(c, base, &format!("{prefix}{u}")).await.0 == "completed" {
                done += 1;
            }
        }
        if done == users {
            return;
        }
        assert!(
            started.elapsed() < within,
            "only {done} of {users} instances completed within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub async fn enter(c: &reqwest::Client, base: &str, users: usize) {
    let batch: Vec<Value> = (0..users).map(|u| json!({"type": "track", "messageId": format!("go-{u}"), "userId": format!("g{u}"), "event": "Go"})).collect();
    send_batch(c, base, WRITE_KEY, &Value::Array(batch))
        .await
        .expect("ingest");
}

pub async fn kill_9_while_waiting(store: Option<&str>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let users = 200;
    let mut server = Server::start(Launch {
        data_dir: &data,
        store,
        configured_keys: true,
    });
    let c = client();
    put_and_publish(&c, &server.base, &greet_journey("2s")).await;
    enter(&c, &server.base, users).await;
    server.kill9();
    // The waits come due while the server is down.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let server = Server::start(Launch {
        data_dir: &data,
        store,
        configured_keys: true,
    });
    wait_until_completed(&c, &server.base, users, Duration::from_secs(30)).await;
    for u in 0..users {
        assert_eq!(
            progress(&c, &server.base, &format!("g{u}")).await.1,
            ["hello", "bye"],
            "g{u}: each step exactly once"
        );
    }
}

pub fn hook_journey(key: &str, url: &str) -> Value {
    json!({"key": key, "entry": {"event": "Go"}, "nodes": [
        {"id": "hook", "type": "webhook", "url": url, "body": {"plan": "pro"}, "timeout": "2s", "retries": 1, "next": "mark", "on_error": "sorry"},
        {"id": "mark", "type": "update_profile", "set": {"in_crm": true}, "next": "done"},
        {"id": "sorry", "type": "message", "channel": "log", "template": "sorry", "next": "done"},
        {"id": "done", "type": "end"}]})
}

pub async fn kill_9_during_webhook_dispatch(store: Option<&str>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let users = 300;
    let mut server = Server::start(Launch {
        data_dir: &data,
        store,
        configured_keys: true,
    });
    let c = client();
    let (url, calls) = crm_sink(false).await;
    put_and_publish(&c, &server.base, &hook_journey("greet", &url)).await;
    enter(&c, &server.base, users).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    server.kill9();
    let before_restart: usize = calls.lock().expect("lock").len();
    let server = Server::start(Launch {
        data_dir: &data,
        store,
        configured_keys: true,
    });
    wait_until_completed(&c, &server.base, users, Duration::from_secs(60)).await;
    let calls = calls.lock().expect("lock").clone();
    assert_eq!(calls.len(), users, "every step's webhook was called");
    let repeated = calls.values().filter(|n| **n > 1).count();
    // A call in flight when the process died is made again (same Idempotency-Key), so a
    // receiver can drop it; nothing else is repeated.
    assert!(
        repeated <= 512,
        "{repeated} keys called more than once: more than the dispatcher's 512 calls in flight"
    );
    for u in 0..users {
        let (_, body) = get(
            &c,
            &server.base,
            ADMIN,
            &format!("/v1/profiles/user_id/g{u}/journeys"),
        )
        .await;
        let kinds: Vec<&str> = body["effects"]
            .as_array()
            .expect("effects")
            .iter()
            .filter_map(|e| e["kind"].as_str())
            .collect();
        assert_eq!(
            kinds,
            ["webhook", "update_profile"],
            "g{u}: each effect recorded once"
        );
        assert!(
            body["effects"]
                .as_array()
                .expect("effects")
                .iter()
                .all(|e| e["status"] == "done"),
            "g{u}: {body}"
        );
    }
    eprintln!(
        "kill -9 during dispatch: {before_restart} of {users} webhooks called before the kill; {repeated} repeated after restart"
    );
}

/// PUTs a document with the admin token, expects success; returns the answer.
pub async fn put_document(c: &reqwest::Client, base: &str, path: &str, doc: &Value) -> Value {
    let r = c
        .put(format!("{base}{path}"))
        .bearer_auth(ADMIN)
        .json(doc)
        .send()
        .await
        .expect("put");
    let status = r.status();
    let text = r.text().await.unwrap_or_default();
    assert!(status.is_success(), "PUT {path}: {status} {text}");
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

/// Stores `doc` as its journey's draft; returns the key.
pub async fn put_draft<'d>(c: &reqwest::Client, base: &str, doc: &'d Value) -> &'d str {
    let key = doc["key"].as_str().expect("key");
    put_document(c, base, &format!("/v1/journeys/{key}"), doc).await;
    key
}

pub async fn put_and_publish(c: &reqwest::Client, base: &str, doc: &Value) {
    let key = put_draft(c, base, doc).await;
    let r = c
        .post(format!("{base}/v1/journeys/{key}/publish"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .expect("publish");
    assert!(r.status().is_success(), "{:?}", r.text().await);
}

pub async fn put_template(c: &reqwest::Client, base: &str, key: &str, doc: &Value) {
    put_document(c, base, &format!("/v1/templates/{key}"), doc).await;
}

/// Waits until each user's first message is no longer pending; returns their
/// `/journeys` answers (instances and effects).
pub async fn settled_messages(c: &reqwest::Client, base: &str, users: &[&str]) -> Vec<Value> {
    let started = Instant::now();
    loop {
        let mut all = Vec::new();
        for user in users {
            let (_, body) = get(
                c,
                base,
                ADMIN,
                &format!("/v1/profiles/user_id/{user}/journeys"),
            )
            .await;
            all.push(body);
        }
        let settled = |b: &Value| {
            b["effects"].as_array().is_some_and(|e| {
                e.iter()
                    .any(|e| e["kind"] == "message" && e["status"] != "pending")
            })
        };
        if all.iter().all(settled) {
            return all;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "not delivered: {all:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A server sending SMS to the Twilio fake as account `ACtest`, with one more setting.
pub async fn twilio_server(dir: &std::path::Path, setting: (&str, &str)) -> (Server, TwilioSent) {
    let (base, got) = twilio().await;
    let server = Server::start_with_env(
        Launch {
            data_dir: &dir.join("data"),
            store: None,
            configured_keys: true,
        },
        &[
            ("WAYMARK_SMS__BASE_URL", &base),
            ("WAYMARK_SMS__ACCOUNT_SID", "ACtest"),
            ("WAYMARK_SMS__AUTH_TOKEN", "secret-token"),
            ("WAYMARK_SMS__FROM", "+15550000000"),
            setting,
        ],
    );
    (server, got)
}

/// `POST /v1/messages/reports`: the status and the JSON answer.
pub async fn post_report(
    c: &reqwest::Client,
    base: &str,
    token: &str,
    body: Value,
) -> (u16, Value) {
    let r = c
        .post(format!("{base}/v1/messages/reports"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .expect("report");
    (
        r.status().as_u16(),
        r.json::<Value>().await.unwrap_or_default(),
    )
}

pub fn url_pairs(query: &str) -> Vec<(String, String)> {
    reqwest::Url::parse(&format!("http://x/?{query}"))
        .expect("query")
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

pub async fn get_text(c: &reqwest::Client, url: &str) -> (u16, String) {
    let r = c.get(url).bearer_auth(ADMIN).send().await.expect("get");
    (r.status().as_u16(), r.text().await.unwrap_or_default())
}

/// A server sending email to `url`, trusting `ca`.
pub fn tls_email_server(data_dir: &std::path::Path, url: &str, ca: &std::path::Path) -> Server {
    Server::start_with_env(
        Launch {
            data_dir,
            store: None,
            configured_keys: true,
        },
        &[
            ("WAYMARK_EMAIL__SMTP_URL", url),
            ("WAYMARK_EMAIL__CA_FILE", ca.to_str().expect("utf-8")),
            ("WAYMARK_EMAIL__FROM", "hello@example.com"),
        ],
    )
}

/// Publishes a one-email journey on `Identify` and identifies `user` (`<user>@example.com`).
pub async fn mail_one_person(c: &reqwest::Client, base: &str, user: &str) {
    let template = json!({"channel": "email", "subject": "Hi", "text": "Hello"});
    put_template(c, base, "hi", &template).await;
    let journey = json!({"key": "hello", "entry": {"event": "Identify"}, "nodes": [
        {"id": "send", "type": "message", "channel": "email", "template": "hi", "next": "done"},
        {"id": "done", "type": "end"}]});
    put_and_publish(c, base, &journey).await;
    let batch = json!([{"type": "identify", "userId": user, "traits": {"email": format!("{user}@example.com")}}]);
    send_batch(c, base, WRITE_KEY, &batch)
        .await
        .expect("ingest");
}

/// The `u`, and the whole URL, of each tracked link in some HTML.
pub fn tracked_links(html: &str) -> Vec<(String, String)> {
    html.split("href=\"")
        .skip(1)
        .filter_map(|part| {
            let href = part.split('"').next()?.replace("&amp;", "&");
            let url = reqwest::Url::parse(&href).ok()?;
            let target = url.query_pairs().find(|(k, _)| k == "u")?.1.into_owned();
            Some((target, href))
        })
        .collect()
}

/// The public URL tracked-email servers of these tests sign their links for.
pub const PUBLIC_URL: &str = "https://waymark.example.com";

/// A server sending email to a fresh aiosmtpd sink, with links signed for `PUBLIC_URL`.
pub fn tracked_email_server(dir: &std::path::Path) -> (SmtpSink, Server) {
    email_server(
        dir,
        &[
            ("WAYMARK_EMAIL__FROM", "hello@example.com"),
            ("WAYMARK_EMAIL__PUBLIC_URL", PUBLIC_URL),
        ],
    )
}

/// A server sending email to a fresh aiosmtpd sink, with more `WAYMARK_EMAIL__*` settings.
pub fn email_server(dir: &std::path::Path, settings: &[(&str, &str)]) -> (SmtpSink, Server) {
    let smtp = smtp_sink();
    let smtp_url = format!("smtp://127.0.0.1:{}", smtp.port);
    let mut env = vec![("WAYMARK_EMAIL__SMTP_URL", smtp_url.as_str())];
    env.extend_from_slice(settings);
    let server = Server::start_with_env(
        Launch {
            data_dir: &dir.join("data"),
            store: None,
            configured_keys: true,
        },
        &env,
    );
    (smtp, server)
}

/// `count` sends at 20 per second with bursts of 20: no second sees more than 20 + 20, and
/// they take at least (count - 20) / 20 seconds.
pub fn assert_paced(times: &[Instant], count: usize) {
    assert_eq!(times.len(), count);
    let busiest = times
        .iter()
        .map(|t| {
            times
                .iter()
                .filter(|u| **u >= *t && u.duration_since(*t) < Duration::from_secs(1))
                .count()
        })
        .max()
        .unwrap_or(0);
    assert!(busiest <= 40, "{busiest} sends within one second");
    let span = times
        .iter()
        .max()
        .expect("max")
        .duration_since(*times.iter().min().expect("min"));
    let least = Duration::from_millis((count as u64 - 20) * 50 - 100);
    assert!(span >= least, "{count} sends in {span:?}");
}

/// A server sending SMS to `provider` at most 20 per second.
pub fn throttled_sms_server(
    data_dir: &std::path::Path,
    provider: &str,
    store: Option<&str>,
    retry_window: &str,
) -> Server {
    Server::start_with_env(
        Launch {
            data_dir,
            store,
            configured_keys: true,
        },
        &[
            ("WAYMARK_SMS__BASE_URL", provider),
            ("WAYMARK_SMS__ACCOUNT_SID", "ACtest"),
            ("WAYMARK_SMS__AUTH_TOKEN", "t"),
            ("WAYMARK_SMS__FROM", "+15550000000"),
            ("WAYMARK_GOVERNANCE__THROTTLE__SMS", "20"),
            ("WAYMARK_GOVERNANCE__RETRY_WINDOW", retry_window),
        ],
    )
}

/// Publishes journey `ping` (an SMS on `Ping`), then `count` people with numbers ending in
/// 0 ping, and `more` events follow.
pub async fn ping_everyone(base: &str, count: usize, more: Vec<Value>) {
    let c = client();
    put_template(&c, base, "ping", &json!({"channel": "sms", "text": "ping"})).await;
    put_and_publish(
        &c,
        base,
        &json!({"key": "ping", "entry": {"event": "Ping"}, "nodes": [
            {"id": "send", "type": "message", "channel": "sms", "template": "ping", "next": "done"},
            {"id": "done", "type": "end"}]}),
    )
    .await;
    let mut batch = Vec::new();
    for n in 0..count {
        batch.push(json!({"type": "identify", "userId": format!("u{n}"), "traits": {"phone": format!("+1555010{n:04}0")}}));
        batch.push(json!({"type": "track", "userId": format!("u{n}"), "event": "Ping"}));
    }
    batch.extend(more);
    send_batch(&c, base, WRITE_KEY, &Value::Array(batch))
        .await
        .expect("ingest");
}

pub async fn wait_for_arrivals(arrivals: &std::sync::Mutex<Vec<Instant>>, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while arrivals.lock().expect("lock").len() < count {
        assert!(Instant::now() < deadline, "not all sends arrived");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The webhook's effect row for `user`, once it is no longer pending.
pub async fn settled_webhook(c: &reqwest::Client, base: &str, user: &str) -> Value {
    let started = Instant::now();
    loop {
        let (_, body) = get(
            c,
            base,
            ADMIN,
            &format!("/v1/profiles/user_id/{user}/journeys"),
        )
        .await;
        let found = body["effects"].as_array().and_then(|e| {
            e.iter()
                .find(|e| e["kind"] == "webhook" && e["status"] != "pending")
                .cloned()
        });
        if let Some(effect) = found {
            return effect;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "not settled: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Publishes journey `key`: a webhook to `url` (no retries), entered by user `key` now.
pub async fn call_once(c: &reqwest::Client, base: &str, key: &str, url: &str, follow: bool) {
    let doc = json!({"key": key, "entry": {"event": key}, "nodes": [
        {"id": "call", "type": "webhook", "url": url, "retries": 0, "follow_redirects": follow, "next": "done"},
        {"id": "done", "type": "end"}]});
    put_and_publish(c, base, &doc).await;
    let entry = json!([{"type": "track", "userId": key, "event": key}]);
    send_batch(c, base, WRITE_KEY, &entry)
        .await
        .expect("ingest");
}

/// Adds people to an uploaded list audience by their `user_id`s (CSV upload).
pub async fn upload_list(c: &reqwest::Client, base: &str, key: &str, users: &[String]) {
    let csv = std::iter::once("user_id")
        .chain(users.iter().map(String::as_str))
        .collect::<Vec<_>>()
        .join("\n");
    let r = c
        .post(format!("{base}/v1/audiences/{key}/members?mode=add"))
        .bearer_auth(ADMIN)
        .header("content-type", "text/csv")
        .body(csv)
        .send()
        .await
        .expect("upload");
    assert!(r.status().is_success(), "upload to {key}");
}
