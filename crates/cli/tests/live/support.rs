//! Shared by the live tests: loopback stand-ins for providers (an HTTP sink, HTTPS with a
//! test CA, Twilio, SMTP sinks, FCM and APNs) and helpers to publish journeys and read
//! what became of people.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub use waymark_test_support::smtp::{SmtpSink, smtp_sink, smtp_sink_configured, smtp_sink_with};

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

/// A real HTTP server on loopback standing in for a CRM: counts calls per Idempotency-Key
/// and answers 200 with a JSON body, or 500 when told to fail.
pub async fn sink(
    fail: bool,
) -> (
    String,
    std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, u32>>>,
) {
    use axum::http::HeaderMap;
    let calls = std::sync::Arc::new(std::sync::Mutex::new(std::collections::HashMap::<
        String,
        u32,
    >::new()));
    let seen = calls.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
            let seen = seen.clone();
            async move {
                let key = headers
                    .get("idempotency-key")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("missing")
                    .to_owned();
                let n = {
                    let mut map = seen.lock().expect("lock");
                    let n = map.entry(key).or_default();
                    *n += 1;
                    map.len()
                };
                let user: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                if fail {
                    (
                        axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                        axum::Json(json!({"error": "down"})),
                    )
                } else {
                    (
                        axum::http::StatusCode::OK,
                        axum::Json(json!({"crm_id": n, "echo": user})),
                    )
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind sink");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await.expect("sink") });
    (format!("http://{addr}/hook"), calls)
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
    let (url, calls) = sink(false).await;
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

/// Stores `doc` as its journey's draft; returns the key.
pub async fn put_draft<'d>(c: &reqwest::Client, base: &str, doc: &'d Value) -> &'d str {
    let key = doc["key"].as_str().expect("key");
    let r = c
        .put(format!("{base}/v1/journeys/{key}"))
        .bearer_auth(ADMIN)
        .json(doc)
        .send()
        .await
        .expect("put");
    assert!(r.status().is_success(), "{:?}", r.text().await);
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

/// A CA and a certificate it signed for 127.0.0.1, made with the openssl command line.
pub fn test_ca(
    dir: &std::path::Path,
) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    run(&[
        &["req", "-x509"][..],
        &ec,
        &[
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-subj",
            "/CN=waymark test CA",
            "-days",
            "2",
        ],
    ]
    .concat());
    run(&[
        &["req"][..],
        &ec,
        &[
            "-keyout",
            "leaf.key",
            "-out",
            "leaf.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
    ]
    .concat());
    std::fs::write(
        dir.join("leaf.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .expect("ext");
    run(&[
        "x509",
        "-req",
        "-in",
        "leaf.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "leaf.pem",
        "-days",
        "2",
        "-extfile",
        "leaf.ext",
    ]);
    (
        dir.join("ca.pem"),
        dir.join("leaf.pem"),
        dir.join("leaf.key"),
    )
}

/// A real HTTPS server (Python's http.server behind its ssl module) that answers every POST
/// with `{"tls": true, "calls": n}`; killed when dropped.
pub struct HttpsSink {
    pub child: std::process::Child,
    pub url: String,
}

impl Drop for HttpsSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn https_sink(cert: &std::path::Path, key: &std::path::Path) -> HttpsSink {
    use std::io::BufRead;
    const SCRIPT: &str = r#"
import http.server, json, ssl, sys
calls = 0
class Hook(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        global calls
        calls += 1
        self.rfile.read(int(self.headers.get("content-length", 0)))
        body = json.dumps({"tls": True, "calls": calls}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hook)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(sys.argv[1], sys.argv[2])
server.socket = context.wrap_socket(server.socket, server_side=True)
print(server.server_address[1], flush=True)
server.serve_forever()
"#;
    let mut child = std::process::Command::new("python3")
        .arg("-c")
        .arg(SCRIPT)
        .arg(cert)
        .arg(key)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("port");
    let port: u16 = line
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("no port: {line:?}"));
    HttpsSink {
        child,
        url: format!("https://127.0.0.1:{port}/hook"),
    }
}

pub async fn put_template(c: &reqwest::Client, base: &str, key: &str, doc: &Value) {
    let r = c
        .put(format!("{base}/v1/templates/{key}"))
        .bearer_auth(ADMIN)
        .json(doc)
        .send()
        .await
        .expect("put template");
    assert!(r.status().is_success(), "{:?}", r.text().await);
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

/// A stand-in for Twilio's Messages API that checks the request the way Twilio documents it
/// (path with the account SID, Basic auth, form-encoded To/From/Body) and keeps what it got.
/// Numbers ending in 0 are refused as Twilio refuses invalid numbers (400, code 21211).
/// Keeps (To, Body, StatusCallback) of each message taken.
pub async fn twilio() -> (String, TwilioSent) {
    use axum::http::{HeaderMap, StatusCode};
    let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = got.clone();
    let app = axum::Router::new().route(
        "/2010-04-01/Accounts/{sid}/Messages.json",
        axum::routing::post(
            move |axum::extract::Path(sid): axum::extract::Path<String>,
                  headers: HeaderMap,
                  axum::extract::Form(form): axum::extract::Form<std::collections::HashMap<String, String>>| {
                let seen = seen.clone();
                async move {
                    use base64::Engine;
                    let expected = format!(
                        "Basic {}",
                        base64::engine::general_purpose::STANDARD.encode("ACtest:secret-token")
                    );
                    if sid != "ACtest" || headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(&expected) {
                        return (StatusCode::UNAUTHORIZED, axum::Json(json!({"code": 20003, "message": "Authenticate"})));
                    }
                    if form.get("From").map(String::as_str) != Some("+15550000000") {
                        return (StatusCode::BAD_REQUEST, axum::Json(json!({"code": 21212, "message": "bad From"})));
                    }
                    let to = form.get("To").cloned().unwrap_or_default();
                    if to.ends_with('0') {
                        return (StatusCode::BAD_REQUEST, axum::Json(json!({"code": 21211, "message": format!("The 'To' number {to} is not a valid phone number.")})));
                    }
                    let body = form.get("Body").cloned().unwrap_or_default();
                    seen.lock().expect("lock").push((to, body, form.get("StatusCallback").cloned()));
                    (StatusCode::CREATED, axum::Json(json!({"sid": "SM123", "status": "queued"})))
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await.expect("twilio") });
    (format!("http://{addr}"), got)
}

pub type TwilioSent = std::sync::Arc<std::sync::Mutex<Vec<(String, String, Option<String>)>>>;

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

/// An aiosmtpd sink with TLS (from the first byte if `implicit`, else STARTTLS required)
/// and AUTH required as `bot` / `s3cret`, and the CA its certificate chains to.
pub fn tls_smtp_sink(dir: &std::path::Path, implicit: bool) -> (SmtpSink, std::path::PathBuf) {
    let (ca, cert, key) = test_ca(dir);
    let (cert, key) = (cert.to_str().expect("utf-8"), key.to_str().expect("utf-8"));
    let mut args = vec![cert, key, "bot", "s3cret"];
    if implicit {
        args.push("implicit");
    }
    (smtp_sink_with(&args), ca)
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

/// A Twilio stand-in that notes when each send arrives, and is down (503) for numbers
/// ending in 9.
pub async fn timed_twilio() -> (String, std::sync::Arc<std::sync::Mutex<Vec<Instant>>>) {
    use axum::http::StatusCode;
    let arrivals = std::sync::Arc::new(std::sync::Mutex::new(Vec::<std::time::Instant>::new()));
    let seen = arrivals.clone();
    let app = axum::Router::new().route(
        "/2010-04-01/Accounts/{sid}/Messages.json",
        axum::routing::post(
            move |axum::extract::Form(form): axum::extract::Form<
                std::collections::HashMap<String, String>,
            >| {
                let seen = seen.clone();
                async move {
                    if form.get("To").is_some_and(|t| t.ends_with('9')) {
                        return (
                            StatusCode::SERVICE_UNAVAILABLE,
                            axum::Json(json!({"code": 20500})),
                        );
                    }
                    seen.lock().expect("lock").push(std::time::Instant::now());
                    (
                        StatusCode::CREATED,
                        axum::Json(json!({"sid": "SM1", "status": "queued"})),
                    )
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let provider = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await.expect("provider") });
    (provider, arrivals)
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

/// What the push stand-in received: (platform, token, HTTP version, headers, body).
pub type PushLog = std::sync::Arc<std::sync::Mutex<Vec<(String, String, String, Value, Value)>>>;

/// FCM HTTP v1 and APNs stand-ins on one loopback server (HTTP/1.1 and HTTP/2 cleartext).
/// Tokens starting with "dead" are answered as the providers answer unregistered ones.
pub async fn push_providers(service_account_public_key: Vec<u8>) -> (String, PushLog) {
    use axum::http::StatusCode;
    let log: PushLog = Default::default();
    let (fcm_log, apns_log, token_log) = (log.clone(), log.clone(), log.clone());
    let headers_json = |h: &axum::http::HeaderMap| -> Value {
        h.iter()
            .map(|(k, v)| (k.to_string(), json!(v.to_str().unwrap_or_default())))
            .collect::<serde_json::Map<_, _>>()
            .into()
    };
    let app = axum::Router::new()
        // Google's OAuth 2 token endpoint: a JWT bearer assertion signed RS256 by the
        // service account's key buys an access token.
        .route(
            "/token",
            axum::routing::post(
                move |axum::extract::Form(form): axum::extract::Form<std::collections::HashMap<String, String>>| {
                    let (log, public) = (token_log.clone(), service_account_public_key.clone());
                    async move {
                        use base64::Engine;
                        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
                        let assertion = form.get("assertion").cloned().unwrap_or_default();
                        let parts: Vec<&str> = assertion.split('.').collect();
                        let claims: Value = parts.get(1).and_then(|p| b64.decode(p).ok())
                            .and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default();
                        let signed = parts.len() == 3
                            && ring::signature::UnparsedPublicKey::new(&ring::signature::RSA_PKCS1_2048_8192_SHA256, &public)
                                .verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &b64.decode(parts[2]).unwrap_or_default())
                                .is_ok();
                        log.lock().expect("lock").push(("token".into(), String::new(), String::new(), json!(form), claims.clone()));
                        let grant = form.get("grant_type").map(String::as_str) == Some("urn:ietf:params:oauth:grant-type:jwt-bearer");
                        if !signed || !grant || claims["iss"] != "fcm@proj.iam.gserviceaccount.com"
                            || claims["scope"] != "https://www.googleapis.com/auth/firebase.messaging" {
                            return (StatusCode::BAD_REQUEST, axum::Json(json!({"error": "invalid_grant"})));
                        }
                        (StatusCode::OK, axum::Json(json!({"access_token": "sa-access", "expires_in": 3599, "token_type": "Bearer"})))
                    }
                },
            ),
        )
        .route(
            "/v1/projects/{project}/messages:send",
            axum::routing::post(
                move |axum::extract::Path(project): axum::extract::Path<String>,
                      req: axum::extract::Request| {
                    let log = fcm_log.clone();
                    async move {
                        let version = format!("{:?}", req.version());
                        let headers = headers_json(req.headers());
                        let bytes = axum::body::to_bytes(req.into_body(), 1 << 20).await.expect("body");
                        let body: Value = serde_json::from_slice(&bytes).unwrap_or_default();
                        let token = body["message"]["token"].as_str().unwrap_or_default().to_owned();
                        log.lock().expect("lock").push(("fcm".into(), token.clone(), version, headers.clone(), body));
                        if project != "proj" || headers["authorization"] != "Bearer sa-access" {
                            return (StatusCode::UNAUTHORIZED, axum::Json(json!({"error": {"status": "UNAUTHENTICATED"}})));
                        }
                        if token.starts_with("dead") {
                            return (StatusCode::NOT_FOUND, axum::Json(json!({"error": {"code": 404, "status": "NOT_FOUND",
                                "details": [{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": "UNREGISTERED"}]}})));
                        }
                        (StatusCode::OK, axum::Json(json!({"name": format!("projects/proj/messages/{token}-1")})))
                    }
                },
            ),
        )
        .route(
            "/3/device/{token}",
            axum::routing::post(
                move |axum::extract::Path(token): axum::extract::Path<String>, req: axum::extract::Request| {
                    let log = apns_log.clone();
                    async move {
                        let version = format!("{:?}", req.version());
                        let headers = headers_json(req.headers());
                        let bytes = axum::body::to_bytes(req.into_body(), 1 << 20).await.expect("body");
                        let body: Value = serde_json::from_slice(&bytes).unwrap_or_default();
                        log.lock().expect("lock").push(("apns".into(), token.clone(), version, headers, body));
                        if token.starts_with("dead") {
                            return (StatusCode::GONE, [("apns-id", "x")], axum::Json(json!({"reason": "Unregistered"})));
                        }
                        (StatusCode::OK, [("apns-id", "APNS-ID-1")], axum::Json(json!({})))
                    }
                },
            ),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await.expect("push providers") });
    (base, log)
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
