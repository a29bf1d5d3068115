//! Live journeys in a running server: entry on ingest, durable waits fired by the timer
//! service, and a kill -9 while instances wait: after restart every overdue timer fires
//! once and no step repeats.

mod common;

use std::time::{Duration, Instant};

use common::{ADMIN, Launch, Server, WRITE_KEY, client, get, send_batch};
use serde_json::{Value, json};

fn greet_journey(wait: &str) -> Value {
    json!({"key": "greet", "entry": {"event": "Go"}, "nodes": [
        {"id": "hello", "type": "message", "channel": "log", "template": "hello", "next": "pause"},
        {"id": "pause", "type": "wait", "duration": wait, "next": "bye"},
        {"id": "bye", "type": "message", "channel": "log", "template": "bye", "next": "done"},
        {"id": "done", "type": "end"}]})
}

/// (status of the person's greet instance, templates of their recorded messages)
async fn progress(c: &reqwest::Client, base: &str, user: &str) -> (String, Vec<String>) {
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

async fn wait_until_completed(c: &reqwest::Client, base: &str, users: usize, within: Duration) {
    wait_until_completed_as(c, base, "g", users, within).await;
}

async fn wait_until_completed_as(
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

async fn enter(c: &reqwest::Client, base: &str, users: usize) {
    let batch: Vec<Value> = (0..users).map(|u| json!({"type": "track", "messageId": format!("go-{u}"), "userId": format!("g{u}"), "event": "Go"})).collect();
    send_batch(c, base, WRITE_KEY, &Value::Array(batch))
        .await
        .expect("ingest");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_enter_journeys_and_waits_fire() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(Launch {
        data_dir: &dir.path().join("data"),
        store: None,
        configured_keys: true,
    });
    let c = client();
    put_and_publish(&c, &server.base, &greet_journey("1s")).await;
    enter(&c, &server.base, 20).await;
    let (state, templates) = progress(&c, &server.base, "g0").await;
    assert_eq!(
        (state.as_str(), templates),
        ("active", vec!["hello".to_owned()]),
        "the first step runs in the ingest transaction"
    );
    let (_, stats) = get(&c, &server.base, ADMIN, "/v1/journeys/greet/stats").await;
    assert_eq!(
        (
            stats["active"].as_u64(),
            stats["nodes"]["pause"]["waiting"].as_u64()
        ),
        (Some(20), Some(20)),
        "{stats}"
    );
    wait_until_completed(&c, &server.base, 20, Duration::from_secs(15)).await;
    for u in 0..20 {
        assert_eq!(
            progress(&c, &server.base, &format!("g{u}")).await.1,
            ["hello", "bye"]
        );
    }
    let (_, stats) = get(&c, &server.base, ADMIN, "/v1/journeys/greet/stats").await;
    assert_eq!(
        (stats["instances"].as_u64(), stats["completed"].as_u64()),
        (Some(20), Some(20)),
        "{stats}"
    );
    assert_eq!(
        (
            stats["nodes"]["pause"]["entered"].as_u64(),
            stats["nodes"]["pause"]["passed"].as_u64()
        ),
        (Some(20), Some(20)),
        "{stats}"
    );
    assert_eq!(
        get(&c, &server.base, ADMIN, "/v1/journeys/ghost/stats")
            .await
            .0,
        404
    );
}

async fn kill_9_while_waiting(store: Option<&str>) {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overdue_timers_fire_once_after_kill_9() {
    kill_9_while_waiting(None).await;
}

#[cfg(feature = "backend-tests")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overdue_timers_fire_once_after_kill_9_on_postgres() {
    let url = common::fresh_postgres_url().await;
    kill_9_while_waiting(Some(&url)).await;
}

/// A real HTTP server on loopback standing in for a CRM: counts calls per Idempotency-Key
/// and answers 200 with a JSON body, or 500 when told to fail.
async fn sink(
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

fn hook_journey(key: &str, url: &str) -> Value {
    json!({"key": key, "entry": {"event": "Go"}, "nodes": [
        {"id": "hook", "type": "webhook", "url": url, "body": {"plan": "pro"}, "timeout": "2s", "retries": 1, "next": "mark", "on_error": "sorry"},
        {"id": "mark", "type": "update_profile", "set": {"in_crm": true}, "next": "done"},
        {"id": "sorry", "type": "message", "channel": "log", "template": "sorry", "next": "done"},
        {"id": "done", "type": "end"}]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_reach_a_real_sink_once_per_step_and_failures_take_the_error_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(Launch {
        data_dir: &dir.path().join("data"),
        store: None,
        configured_keys: true,
    });
    let c = client();
    let (ok_url, ok_calls) = sink(false).await;
    let r = c
        .put(format!("{}/v1/journeys/greet", server.base))
        .bearer_auth(ADMIN)
        .json(&hook_journey("greet", &ok_url))
        .send()
        .await
        .expect("put");
    assert!(r.status().is_success(), "{:?}", r.text().await);
    c.post(format!("{}/v1/journeys/greet/publish", server.base))
        .bearer_auth(ADMIN)
        .send()
        .await
        .expect("publish");
    enter(&c, &server.base, 30).await;
    wait_until_completed(&c, &server.base, 30, Duration::from_secs(20)).await;
    {
        let calls = ok_calls.lock().expect("lock");
        assert_eq!(calls.len(), 30, "one call per person: {calls:?}");
        assert!(
            calls.values().all(|n| *n == 1),
            "no step called twice: {calls:?}"
        );
        assert!(
            !calls.contains_key("missing"),
            "every call carries an Idempotency-Key"
        );
    }
    let (_, body) = get(&c, &server.base, ADMIN, "/v1/profiles/user_id/g3").await;
    assert_eq!(
        body["traits"]["in_crm"], true,
        "update_profile applied after the webhook: {body}"
    );
    let (_, journeys) = get(&c, &server.base, ADMIN, "/v1/profiles/user_id/g3/journeys").await;
    let hook_response = &journeys["journeys"][0]["instances"][0]["context"]["hook"];
    assert_eq!(hook_response["status"], 200);
    assert_eq!(hook_response["body"]["echo"], json!({"plan": "pro"}));

    // A sink that answers 500: one retry, then the error path.
    let (bad_url, bad_calls) = sink(true).await;
    c.put(format!("{}/v1/journeys/greet", server.base))
        .bearer_auth(ADMIN)
        .json(&hook_journey("greet", &bad_url))
        .send()
        .await
        .expect("put");
    c.post(format!("{}/v1/journeys/greet/publish", server.base))
        .bearer_auth(ADMIN)
        .send()
        .await
        .expect("publish");
    let batch: Vec<Value> = (0..5).map(|u| json!({"type": "track", "messageId": format!("bad-{u}"), "userId": format!("b{u}"), "event": "Go"})).collect();
    send_batch(&c, &server.base, WRITE_KEY, &Value::Array(batch))
        .await
        .expect("ingest");
    wait_until_completed_as(&c, &server.base, "b", 5, Duration::from_secs(20)).await;
    assert!(
        bad_calls.lock().expect("lock").values().all(|n| *n == 2),
        "each failing call is tried twice (retries: 1)"
    );
    let (_, b0) = get(&c, &server.base, ADMIN, "/v1/profiles/user_id/b0/journeys").await;
    let templates: Vec<&str> = b0["effects"]
        .as_array()
        .expect("effects")
        .iter()
        .filter_map(|e| e["effect"]["template"].as_str())
        .collect();
    assert_eq!(templates, ["sorry"]);
    assert_eq!(
        b0["journeys"][0]["instances"][0]["version"], 2,
        "new entries use the newest version"
    );
}

async fn kill_9_during_webhook_dispatch(store: Option<&str>) {
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
    c.put(format!("{}/v1/journeys/greet", server.base))
        .bearer_auth(ADMIN)
        .json(&hook_journey("greet", &url))
        .send()
        .await
        .expect("put");
    c.post(format!("{}/v1/journeys/greet/publish", server.base))
        .bearer_auth(ADMIN)
        .send()
        .await
        .expect("publish");
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_webhook_dispatch_loses_no_step() {
    kill_9_during_webhook_dispatch(None).await;
}

#[cfg(feature = "backend-tests")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_webhook_dispatch_loses_no_step_on_postgres() {
    let url = common::fresh_postgres_url().await;
    kill_9_during_webhook_dispatch(Some(&url)).await;
}

/// Stores `doc` as its journey's draft; returns the key.
async fn put_draft<'d>(c: &reqwest::Client, base: &str, doc: &'d Value) -> &'d str {
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

async fn put_and_publish(c: &reqwest::Client, base: &str, doc: &Value) {
    let key = put_draft(c, base, doc).await;
    let r = c
        .post(format!("{base}/v1/journeys/{key}/publish"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .expect("publish");
    assert!(r.status().is_success(), "{:?}", r.text().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jump_hands_the_person_to_another_journey_that_calls_the_sink() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(Launch {
        data_dir: &dir.path().join("data"),
        store: None,
        configured_keys: true,
    });
    let c = client();
    let (url, calls) = sink(false).await;
    let mut crm = hook_journey("crm", &url);
    crm["entry"]["event"] = json!("Only By Jump");
    put_and_publish(&c, &server.base, &crm).await;
    put_and_publish(
        &c,
        &server.base,
        &json!({"key": "greet", "entry": {"event": "Go"}, "nodes": [
            {"id": "hello", "type": "message", "channel": "log", "template": "hello", "next": "to-crm"},
            {"id": "to-crm", "type": "jump", "journey": "crm"}]}),
    )
    .await;
    enter(&c, &server.base, 10).await;
    let started = Instant::now();
    loop {
        let (_, stats) = get(&c, &server.base, ADMIN, "/v1/journeys/crm/stats").await;
        if stats["completed"] == 10 {
            assert_eq!(stats["instances"], 10, "{stats}");
            assert_eq!(stats["nodes"]["mark"]["passed"], 10, "{stats}");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the jumped-to journey did not finish: {stats}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        calls.lock().expect("lock").len(),
        10,
        "one webhook per person"
    );
    let (_, g0) = get(&c, &server.base, ADMIN, "/v1/profiles/user_id/g0/journeys").await;
    let by_key = |k: &str| {
        g0["journeys"]
            .as_array()
            .expect("journeys")
            .iter()
            .find(|j| j["journey"] == k)
            .cloned()
            .unwrap_or_else(|| panic!("no {k} in {g0}"))
    };
    let greet = by_key("greet");
    assert_eq!(
        greet["instances"][0]["steps"]
            .as_array()
            .expect("steps")
            .last()
            .expect("step")["what"],
        "jumped"
    );
    assert_eq!(
        by_key("crm")["instances"][0]["context"]["jumped_from"],
        "greet"
    );
    let (_, stats) = get(&c, &server.base, ADMIN, "/v1/journeys/greet/stats").await;
    assert_eq!(stats["completed"], 10, "{stats}");
}

/// A CA and a certificate it signed for 127.0.0.1, made with the openssl command line.
fn test_ca(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
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
struct HttpsSink {
    child: std::process::Child,
    url: String,
}

impl Drop for HttpsSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn https_sink(cert: &std::path::Path, key: &std::path::Path) -> HttpsSink {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_webhooks_trust_the_configured_ca_and_refuse_unknown_certificates() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ca, cert, key) = test_ca(dir.path());
    let sink = https_sink(&cert, &key);
    let c = client();

    let ca_text = ca.to_string_lossy().into_owned();
    let trusted = Server::start_with_env(
        Launch {
            data_dir: &dir.path().join("trusted"),
            store: None,
            configured_keys: true,
        },
        &[("WAYMARK_WEBHOOKS__CA_FILE", &ca_text)],
    );
    put_and_publish(&c, &trusted.base, &hook_journey("greet", &sink.url)).await;
    enter(&c, &trusted.base, 3).await;
    wait_until_completed(&c, &trusted.base, 3, Duration::from_secs(20)).await;
    let (_, g0) = get(&c, &trusted.base, ADMIN, "/v1/profiles/user_id/g0/journeys").await;
    let instance = &g0["journeys"][0]["instances"][0];
    assert_eq!(
        instance["context"]["hook"]["body"]["tls"], true,
        "{instance}"
    );

    // Without the CA, the certificate is refused: retried, then the error path, with why.
    let untrusting = Server::start(Launch {
        data_dir: &dir.path().join("untrusting"),
        store: None,
        configured_keys: true,
    });
    put_and_publish(&c, &untrusting.base, &hook_journey("greet", &sink.url)).await;
    enter(&c, &untrusting.base, 1).await;
    wait_until_completed(&c, &untrusting.base, 1, Duration::from_secs(20)).await;
    let (_, g0) = get(
        &c,
        &untrusting.base,
        ADMIN,
        "/v1/profiles/user_id/g0/journeys",
    )
    .await;
    let steps = g0["journeys"][0]["instances"][0]["steps"]
        .as_array()
        .expect("steps")
        .clone();
    let error = steps
        .iter()
        .find(|s| s["node"] == "hook" && s["what"] == "error")
        .unwrap_or_else(|| panic!("no error step: {steps:?}"));
    let reason = error["detail"]["reason"]
        .as_str()
        .unwrap_or_default()
        .to_lowercase();
    assert!(
        reason.contains("certificate"),
        "the reason says why: {reason}"
    );
    assert!(
        steps
            .iter()
            .any(|s| s["node"] == "sorry" && s["what"] == "sent"),
        "{steps:?}"
    );

    // A CA file that is not PEM stops the server at start, saying which file.
    let bad = dir.path().join("bad.pem");
    std::fs::write(&bad, "not a certificate").expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_waymark"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("bad"))
        .env("WAYMARK_WEBHOOKS__CA_FILE", &bad)
        .env("WAYMARK_WRITE_KEY", WRITE_KEY)
        .env("WAYMARK_ADMIN_TOKEN", ADMIN)
        .output()
        .expect("run");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("bad.pem"), "{stderr}");
}

async fn put_template(c: &reqwest::Client, base: &str, key: &str, doc: &Value) {
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
async fn settled_messages(c: &reqwest::Client, base: &str, users: &[&str]) -> Vec<Value> {
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
async fn twilio() -> (String, TwilioSent) {
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

type TwilioSent = std::sync::Arc<std::sync::Mutex<Vec<(String, String, Option<String>)>>>;

/// A server sending SMS to the Twilio fake as account `ACtest`, with one more setting.
async fn twilio_server(dir: &std::path::Path, setting: (&str, &str)) -> (Server, TwilioSent) {
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

/// `POST /v1/messages/reports`: the status and the JSON answer.
async fn post_report(c: &reqwest::Client, base: &str, token: &str, body: Value) -> (u16, Value) {
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

fn url_pairs(query: &str) -> Vec<(String, String)> {
    reqwest::Url::parse(&format!("http://x/?{query}"))
        .expect("query")
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

async fn get_text(c: &reqwest::Client, url: &str) -> (u16, String) {
    let r = c.get(url).bearer_auth(ADMIN).send().await.expect("get");
    (r.status().as_u16(), r.text().await.unwrap_or_default())
}

/// The aiosmtpd SMTP sink (tests/smtp/sink.py); aiosmtpd is installed beside it from PyPI on
/// first use if Python does not have it. Messages it receives arrive as JSON lines.
struct SmtpSink {
    child: std::process::Child,
    port: u16,
    messages: std::sync::Arc<std::sync::Mutex<Vec<Value>>>,
}

impl SmtpSink {
    /// The messages received, once there are at least `count` (fails after `within`).
    async fn wait_for(&self, count: usize, within: Duration) -> Vec<Value> {
        let started = Instant::now();
        loop {
            let messages = self.messages.lock().expect("lock").clone();
            if messages.len() >= count {
                return messages;
            }
            assert!(
                started.elapsed() < within,
                "only {} of {count} emails arrived",
                messages.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn smtp_sink() -> SmtpSink {
    smtp_sink_with(&[])
}

/// The sink with STARTTLS and AUTH required: `[cert.pem, key.pem, user, password]`.
fn smtp_sink_with(args: &[&str]) -> SmtpSink {
    smtp_sink_configured(args, Duration::ZERO)
}

fn smtp_sink_configured(args: &[&str], delay: Duration) -> SmtpSink {
    use std::io::BufRead;
    let here = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/smtp");
    let deps = here.join(".pydeps");
    let has = std::process::Command::new("python3")
        .args(["-c", "import aiosmtpd"])
        .env("PYTHONPATH", &deps)
        .status()
        .is_ok_and(|s| s.success());
    if !has {
        let out = std::process::Command::new("python3")
            .args(["-m", "pip", "install", "--quiet", "--target"])
            .arg(&deps)
            .arg("aiosmtpd==1.4.6")
            .output()
            .expect("pip");
        assert!(
            out.status.success(),
            "pip install aiosmtpd: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut child = std::process::Command::new("python3")
        .arg(here.join("sink.py"))
        .args(args)
        .env("PYTHONPATH", &deps)
        .env("SINK_DELAY_MS", delay.as_millis().to_string())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    let mut lines = std::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
    let first: Value =
        serde_json::from_str(&lines.next().expect("port line").expect("read")).expect("json");
    let port = first["port"].as_u64().expect("port") as u16;
    let messages = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = messages.clone();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str(&line) {
                sink.lock().expect("lock").push(v);
            }
        }
    });
    SmtpSink {
        child,
        port,
        messages,
    }
}

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

/// An aiosmtpd sink with TLS (from the first byte if `implicit`, else STARTTLS required)
/// and AUTH required as `bot` / `s3cret`, and the CA its certificate chains to.
fn tls_smtp_sink(dir: &std::path::Path, implicit: bool) -> (SmtpSink, std::path::PathBuf) {
    let (ca, cert, key) = test_ca(dir);
    let (cert, key) = (cert.to_str().expect("utf-8"), key.to_str().expect("utf-8"));
    let mut args = vec![cert, key, "bot", "s3cret"];
    if implicit {
        args.push("implicit");
    }
    (smtp_sink_with(&args), ca)
}

/// A server sending email to `url`, trusting `ca`.
fn tls_email_server(data_dir: &std::path::Path, url: &str, ca: &std::path::Path) -> Server {
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
async fn mail_one_person(c: &reqwest::Client, base: &str, user: &str) {
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
async fn webhooks_carry_standard_webhooks_signatures_over_the_exact_body() {
    use axum::http::HeaderMap;
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<(HeaderMap, Vec<u8>)>::new()));
    let keep = seen.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
            let keep = keep.clone();
            async move {
                keep.lock().expect("lock").push((headers, body.to_vec()));
                axum::Json(json!({"ok": true}))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await.expect("sink") });
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start_with_env(
        Launch {
            data_dir: &dir.path().join("data"),
            store: None,
            configured_keys: true,
        },
        &[("WAYMARK_WEBHOOKS__SIGNING_SECRET", secret)],
    );
    let c = client();
    put_and_publish(&c, &server.base, &hook_journey("greet", &url)).await;
    enter(&c, &server.base, 2).await;
    wait_until_completed(&c, &server.base, 2, Duration::from_secs(20)).await;
    let key = waymark_core::links::webhook_secret(secret).expect("secret");
    let calls = seen.lock().expect("lock").clone();
    assert_eq!(calls.len(), 2);
    for (headers, body) in &calls {
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        let timestamp: i64 = header("webhook-timestamp").parse().expect("timestamp");
        assert!((timestamp - waymark_store::wall_clock_ms() / 1000).abs() < 60);
        assert_eq!(
            header("webhook-signature"),
            waymark_core::links::webhook_signature(&key, &header("webhook-id"), timestamp, body),
            "signed over the id, the timestamp and the exact body bytes"
        );
        assert_eq!(header("webhook-id"), header("idempotency-key"));
        assert_eq!(
            serde_json::from_slice::<Value>(body).expect("json"),
            json!({"plan": "pro"})
        );
    }
    // A secret that is not whsec_/base64 stops the server at start, naming the setting.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_waymark"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("bad"))
        .env("WAYMARK_WEBHOOKS__SIGNING_SECRET", "whsec_???")
        .env("WAYMARK_WRITE_KEY", WRITE_KEY)
        .env("WAYMARK_ADMIN_TOKEN", ADMIN)
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("webhooks.signing_secret"));
}

/// The `u`, and the whole URL, of each tracked link in some HTML.
fn tracked_links(html: &str) -> Vec<(String, String)> {
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
const PUBLIC_URL: &str = "https://waymark.example.com";

/// A server sending email to a fresh aiosmtpd sink, with links signed for `PUBLIC_URL`.
fn tracked_email_server(dir: &std::path::Path) -> (SmtpSink, Server) {
    email_server(
        dir,
        &[
            ("WAYMARK_EMAIL__FROM", "hello@example.com"),
            ("WAYMARK_EMAIL__PUBLIC_URL", PUBLIC_URL),
        ],
    )
}

/// A server sending email to a fresh aiosmtpd sink, with more `WAYMARK_EMAIL__*` settings.
fn email_server(dir: &std::path::Path, settings: &[(&str, &str)]) -> (SmtpSink, Server) {
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

/// A Twilio stand-in that notes when each send arrives, and is down (503) for numbers
/// ending in 9.
async fn timed_twilio() -> (String, std::sync::Arc<std::sync::Mutex<Vec<Instant>>>) {
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
fn assert_paced(times: &[Instant], count: usize) {
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
fn throttled_sms_server(
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
async fn ping_everyone(base: &str, count: usize, more: Vec<Value>) {
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

async fn wait_for_arrivals(arrivals: &std::sync::Mutex<Vec<Instant>>, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while arrivals.lock().expect("lock").len() < count {
        assert!(Instant::now() < deadline, "not all sends arrived");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Two servers on one PostgreSQL database share the throttle: together they keep to it.
#[cfg(feature = "backend-tests")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_sharing_postgres_share_the_throttle() {
    let (provider, arrivals) = timed_twilio().await;
    let url = common::fresh_postgres_url().await;
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

/// What the push stand-in received: (platform, token, HTTP version, headers, body).
type PushLog = std::sync::Arc<std::sync::Mutex<Vec<(String, String, String, Value, Value)>>>;

/// FCM HTTP v1 and APNs stand-ins on one loopback server (HTTP/1.1 and HTTP/2 cleartext).
/// Tokens starting with "dead" are answered as the providers answer unregistered ones.
async fn push_providers(service_account_public_key: Vec<u8>) -> (String, PushLog) {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_reaches_fcm_and_apns_with_their_payloads_and_dead_tokens_are_removed() {
    let dir = tempfile::tempdir().expect("tempdir");
    // An APNs signing key as Apple issues them (PKCS#8 P-256), and its public half.
    let key_file = dir.path().join("AuthKey_KEY123.p8");
    let status = std::process::Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
        ])
        .arg(&key_file)
        .status()
        .expect("openssl");
    assert!(status.success());
    let spki = std::process::Command::new("openssl")
        .args(["pkey", "-pubout", "-outform", "DER", "-in"])
        .arg(&key_file)
        .output()
        .expect("openssl")
        .stdout;
    let public_point = spki[spki.len() - 65..].to_vec();
    // A Firebase service account key (RSA), as the JSON file Google hands out.
    let rsa_key = dir.path().join("sa.pem");
    let status = std::process::Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
        ])
        .arg(&rsa_key)
        .status()
        .expect("openssl");
    assert!(status.success());
    let rsa_public = std::process::Command::new("openssl")
        .args(["rsa", "-RSAPublicKey_out", "-outform", "DER", "-in"])
        .arg(&rsa_key)
        .output()
        .expect("openssl")
        .stdout;
    let (providers, log) = push_providers(rsa_public).await;
    let account = dir.path().join("service-account.json");
    std::fs::write(
        &account,
        json!({"type": "service_account", "project_id": "proj",
            "client_email": "fcm@proj.iam.gserviceaccount.com",
            "private_key": std::fs::read_to_string(&rsa_key).expect("key"),
            "token_uri": format!("{providers}/token")})
        .to_string(),
    )
    .expect("account");
    let server = Server::start_with_env(
        Launch {
            data_dir: &dir.path().join("data"),
            store: None,
            configured_keys: true,
        },
        &[
            ("WAYMARK_PUSH__FCM_URL", &providers),
            ("WAYMARK_PUSH__FCM_PROJECT_ID", "proj"),
            (
                "WAYMARK_PUSH__FCM_SERVICE_ACCOUNT_FILE",
                account.to_str().expect("path"),
            ),
            ("WAYMARK_PUSH__APNS_URL", &providers),
            ("WAYMARK_PUSH__APNS_TOPIC", "com.example.app"),
            (
                "WAYMARK_PUSH__APNS_KEY_FILE",
                key_file.to_str().expect("path"),
            ),
            ("WAYMARK_PUSH__APNS_KEY_ID", "KEY123"),
            ("WAYMARK_PUSH__APNS_TEAM_ID", "TEAM42"),
        ],
    );
    let c = client();
    put_template(&c, &server.base, "shipped-push", &json!({"channel": "push",
        "title": "Order {{journey.entry.properties.order}}", "body": "On its way, {{profile.traits.name}}",
        "data": {"url": "app://orders/{{journey.entry.properties.order}}", "count": 2}})).await;
    put_and_publish(
        &c,
        &server.base,
        &json!({"key": "ship", "entry": {"event": "Order Shipped"}, "nodes": [
            {"id": "push", "type": "message", "channel": "push", "template": "shipped-push", "next": "done"},
            {"id": "done", "type": "end"}]}),
    )
    .await;
    send_batch(&c, &server.base, WRITE_KEY, &json!([
        {"type": "identify", "userId": "ann", "traits": {"name": "Ann"}, "context": {"device": {"token": "apns-ann-1", "type": "ios"}}},
        {"type": "identify", "userId": "ann", "context": {"device": {"token": "fcm-ann-1", "type": "android"}}},
        {"type": "track", "userId": "ann", "event": "Order Shipped", "properties": {"order": "o-7"}},
        {"type": "identify", "userId": "dan", "traits": {"name": "Dan"}, "context": {"device": {"token": "dead-apns-dan", "type": "ios"}}},
        {"type": "track", "userId": "dan", "event": "Order Shipped", "properties": {"order": "o-8"}},
        {"type": "track", "userId": "nobody", "event": "Order Shipped", "properties": {"order": "o-9"}},
    ]))
    .await
    .expect("ingest");
    let settled = settled_messages(&c, &server.base, &["ann", "dan"]).await;
    assert_eq!(settled[0]["effects"][0]["status"], "done", "{}", settled[0]);
    assert_eq!(
        settled[1]["effects"][0]["status"], "failed",
        "{}",
        settled[1]
    );
    let log = log.lock().expect("lock").clone();
    let find = |platform: &str, token: &str| {
        log.iter()
            .find(|(p, t, ..)| p == platform && t == token)
            .cloned()
            .unwrap_or_else(|| panic!("no {platform} request for {token}: {log:?}"))
    };
    // FCM HTTP v1: the documented message shape, data values as strings.
    let (_, _, _, headers, body) = find("fcm", "fcm-ann-1");
    assert_eq!(
        headers["authorization"], "Bearer sa-access",
        "the token bought with the service account"
    );
    let tokens = log.iter().filter(|(p, ..)| p == "token").count();
    assert_eq!(
        tokens, 1,
        "one access token, reused for every send: {log:?}"
    );
    let m = &body["message"];
    assert_eq!(
        m["notification"],
        json!({"title": "Order o-7", "body": "On its way, Ann"})
    );
    assert_eq!(m["data"], json!({"url": "app://orders/o-7", "count": "2"}));
    assert!(
        m["android"]["collapse_key"]
            .as_str()
            .is_some_and(|k| k.len() == 16),
        "{m}"
    );
    // APNs: HTTP/2, topic and push type, alert payload with the data beside `aps`, and a
    // provider token that verifies with the key's public half.
    let (_, _, version, headers, body) = find("apns", "apns-ann-1");
    assert_eq!(version, "HTTP/2.0");
    assert_eq!(
        (&headers["apns-topic"], &headers["apns-push-type"]),
        (&json!("com.example.app"), &json!("alert"))
    );
    assert_eq!(
        body["aps"]["alert"],
        json!({"title": "Order o-7", "body": "On its way, Ann"})
    );
    assert_eq!(body["url"], "app://orders/o-7");
    let jwt = headers["authorization"]
        .as_str()
        .expect("auth")
        .strip_prefix("bearer ")
        .expect("bearer");
    let parts: Vec<&str> = jwt.split('.').collect();
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let header: Value = serde_json::from_slice(&b64.decode(parts[0]).expect("b64")).expect("json");
    let claims: Value = serde_json::from_slice(&b64.decode(parts[1]).expect("b64")).expect("json");
    assert_eq!(
        (&header["alg"], &header["kid"], &claims["iss"]),
        (&json!("ES256"), &json!("KEY123"), &json!("TEAM42"))
    );
    ring::signature::UnparsedPublicKey::new(
        &ring::signature::ECDSA_P256_SHA256_FIXED,
        &public_point,
    )
    .verify(
        format!("{}.{}", parts[0], parts[1]).as_bytes(),
        &b64.decode(parts[2]).expect("b64"),
    )
    .expect("the provider token verifies with the key");
    // Ann's record keeps what each provider answered.
    let (_, ann) = get(&c, &server.base, ADMIN, "/v1/profiles/user_id/ann/messages").await;
    assert_eq!(ann["messages"][0]["status"], "sent", "{ann}");
    assert_eq!(
        ann["messages"][0]["provider"]["devices"]
            .as_array()
            .map(Vec::len),
        Some(2),
        "{ann}"
    );
    // Dan's only token is dead: the message failed saying so, and the token is gone from
    // the profile, so the next push does not try it.
    let (_, dan) = get(&c, &server.base, ADMIN, "/v1/profiles/user_id/dan/messages").await;
    assert!(
        dan["messages"][0]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("410") && r.contains("token removed")),
        "{dan}"
    );
    let namespaces = |profile: &Value| -> Vec<String> {
        profile["identities"]
            .as_array()
            .expect("identities")
            .iter()
            .map(|i| i["namespace"].as_str().expect("namespace").to_owned())
            .collect()
    };
    let (_, ann_profile) = get(&c, &server.base, ADMIN, "/v1/profiles/user_id/ann").await;
    assert!(
        namespaces(&ann_profile).contains(&"apns_token".to_string()),
        "{ann_profile}"
    );
    let (_, profile) = get(&c, &server.base, ADMIN, "/v1/profiles/user_id/dan").await;
    assert_eq!(namespaces(&profile), ["user_id"], "{profile}");
    let (_, nobody) = get(
        &c,
        &server.base,
        ADMIN,
        "/v1/profiles/user_id/nobody/messages",
    )
    .await;
    assert_eq!(nobody["messages"][0]["status"], "not_sent", "{nobody}");
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_mail_rows_land_in_one_csv_file_per_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let folder = dir.path().join("print");
    let server = Server::start_with_env(
        Launch {
            data_dir: &dir.path().join("data"),
            store: None,
            configured_keys: true,
        },
        &[
            (
                "WAYMARK_DIRECT_MAIL__FOLDER",
                folder.to_str().expect("path"),
            ),
            ("WAYMARK_DIRECT_MAIL__EVERY", "1s"),
        ],
    );
    let c = client();
    put_template(
        &c,
        &server.base,
        "postcard",
        &json!({"channel": "direct_mail", "data": {
        "name": "{{profile.traits.name}}", "street": "{{profile.traits.address.street}}",
        "city": "{{profile.traits.address.city}}", "offer": "{{journey.entry.properties.offer}}"}}),
    )
    .await;
    put_and_publish(
        &c,
        &server.base,
        &json!({"key": "winback", "entry": {"event": "Churn Risk"}, "nodes": [
            {"id": "card", "type": "message", "channel": "direct_mail", "template": "postcard", "next": "done"},
            {"id": "done", "type": "end"}]}),
    )
    .await;
    send_batch(&c, &server.base, WRITE_KEY, &json!([
        {"type": "identify", "userId": "ada", "traits": {"name": "Ada \"The Countess\" Lovelace", "address": {"street": "12 St James's Sq, Flat 2", "city": "London"}}},
        {"type": "track", "userId": "ada", "event": "Churn Risk", "properties": {"offer": "20%"}},
        {"type": "identify", "userId": "bob", "traits": {"name": "Bob", "address": {"street": "1 Main St", "city": "Springfield"}}},
        {"type": "track", "userId": "bob", "event": "Churn Risk", "properties": {"offer": "10%"}},
    ]))
    .await
    .expect("ingest");
    let settled = settled_messages(&c, &server.base, &["ada", "bob"]).await;
    assert_eq!(settled[0]["effects"][0]["status"], "done", "{}", settled[0]);
    // The run ends after a second: its file is renamed from .csv.part to .csv.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let file = loop {
        let done: Vec<std::path::PathBuf> = std::fs::read_dir(&folder)
            .expect("folder")
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "csv"))
            .collect();
        if let [one] = done.as_slice() {
            break one.clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no finished file: {done:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut reader = csv::Reader::from_path(&file).expect("csv");
    let header: Vec<String> = reader
        .headers()
        .expect("header")
        .iter()
        .map(str::to_owned)
        .collect();
    assert_eq!(
        header,
        ["message_id", "journey", "city", "name", "offer", "street"]
    );
    let mut rows: Vec<Vec<String>> = reader
        .records()
        .map(|r| r.expect("row").iter().map(str::to_owned).collect())
        .collect();
    rows.sort_by(|a, b| a[3].cmp(&b[3]));
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(
        rows[0][1..],
        [
            "winback",
            "London",
            "Ada \"The Countess\" Lovelace",
            "20%",
            "12 St James's Sq, Flat 2"
        ]
    );
    assert_eq!(
        rows[1][1..],
        ["winback", "Springfield", "Bob", "10%", "1 Main St"]
    );
    // The messages record names the file the row went to.
    let (_, ada) = get(&c, &server.base, ADMIN, "/v1/profiles/user_id/ada/messages").await;
    assert_eq!(ada["messages"][0]["status"], "sent", "{ada}");
    assert_eq!(
        ada["messages"][0]["provider"]["file"].as_str(),
        file.file_name().and_then(|f| f.to_str()),
        "{ada}"
    );
}

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

/// The webhook's effect row for `user`, once it is no longer pending.
async fn settled_webhook(c: &reqwest::Client, base: &str, user: &str) -> Value {
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
async fn call_once(c: &reqwest::Client, base: &str, key: &str, url: &str, follow: bool) {
    let doc = json!({"key": key, "entry": {"event": key}, "nodes": [
        {"id": "call", "type": "webhook", "url": url, "retries": 0, "follow_redirects": follow, "next": "done"},
        {"id": "done", "type": "end"}]});
    put_and_publish(c, base, &doc).await;
    let entry = json!([{"type": "track", "userId": key, "event": key}]);
    send_batch(c, base, WRITE_KEY, &entry)
        .await
        .expect("ingest");
}

/// Redirects are not followed unless asked for, and then to the same host only; a large
/// response body is kept only up to its cap; a denied network is never called.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_follow_no_foreign_redirect_keep_a_capped_body_and_respect_denied_networks() {
    use std::sync::atomic::{AtomicU32, Ordering};
    let other_host_hits = std::sync::Arc::new(AtomicU32::new(0));
    // "Another host": a second server, on its own port.
    let hits = other_host_hits.clone();
    let other = axum::Router::new().route(
        "/steal",
        axum::routing::post(move || {
            let hits = hits.clone();
            async move {
                hits.fetch_add(1, Ordering::SeqCst);
                "stolen"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.2:0")
        .await
        .expect("bind");
    let other_addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, other).await.expect("other") });
    let foreign = format!("http://{other_addr}/steal");
    let app = axum::Router::new()
        .route(
            "/moved",
            axum::routing::post(|| async {
                (
                    axum::http::StatusCode::TEMPORARY_REDIRECT,
                    [("location", "/final")],
                    "",
                )
            }),
        )
        .route(
            "/final",
            axum::routing::post(|| async { axum::Json(json!({"landed": true})) }),
        )
        .route(
            "/away",
            axum::routing::post(move || {
                let foreign = foreign.clone();
                async move {
                    (
                        axum::http::StatusCode::TEMPORARY_REDIRECT,
                        [("location", foreign)],
                        "",
                    )
                }
            }),
        )
        .route(
            "/big",
            axum::routing::post(|| async { "x".repeat(1024 * 1024) }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await.expect("sink") });

    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start_with_env(
        Launch {
            data_dir: &dir.path().join("data"),
            store: None,
            configured_keys: true,
        },
        &[],
    );
    let c = client();
    for (key, path, follow) in [
        ("plain", "moved", false),
        ("follow", "moved", true),
        ("away", "away", true),
        ("big", "big", false),
    ] {
        call_once(
            &c,
            &server.base,
            key,
            &format!("http://{addr}/{path}"),
            follow,
        )
        .await;
    }
    let plain = settled_webhook(&c, &server.base, "plain").await;
    assert_eq!(plain["status"], "failed", "{plain}");
    assert!(
        plain["last_error"]
            .as_str()
            .unwrap_or_default()
            .contains("redirect not followed"),
        "{plain}"
    );
    let follow = settled_webhook(&c, &server.base, "follow").await;
    assert_eq!(
        (follow["status"].as_str(), &follow["result"]["body"]),
        (Some("done"), &json!({"landed": true})),
        "{follow}"
    );
    let away = settled_webhook(&c, &server.base, "away").await;
    assert_eq!(away["status"], "failed", "{away}");
    assert!(
        away["last_error"]
            .as_str()
            .unwrap_or_default()
            .contains("another host"),
        "{away}"
    );
    assert_eq!(
        other_host_hits.load(Ordering::SeqCst),
        0,
        "the other host was never called"
    );
    let big = settled_webhook(&c, &server.base, "big").await;
    assert_eq!(
        (big["status"].as_str(), big["result"]["truncated"].as_bool()),
        (Some("done"), Some(true))
    );
    assert_eq!(
        big["result"]["body"].as_str().map(str::len),
        Some(64 * 1024)
    );
    drop(server);

    // A deployment that forbids loopback: neither the address nor a name for it is called.
    let denied_dir = tempfile::tempdir().expect("tempdir");
    let config = denied_dir.path().join("waymark.toml");
    std::fs::write(
        &config,
        "[webhooks]\ndenied_networks = [\"127.0.0.0/8\", \"::1/128\"]\n",
    )
    .expect("config");
    let server = Server::start_with_env(
        Launch {
            data_dir: &denied_dir.path().join("data"),
            store: None,
            configured_keys: true,
        },
        &[("WAYMARK_CONFIG", config.to_str().expect("utf-8"))],
    );
    for (key, host) in [
        ("literal", addr.to_string()),
        ("named", format!("localhost:{}", addr.port())),
    ] {
        call_once(
            &c,
            &server.base,
            key,
            &format!("http://{host}/final"),
            false,
        )
        .await;
        let effect = settled_webhook(&c, &server.base, key).await;
        assert_eq!(effect["status"], "failed", "{effect}");
        assert!(
            effect["last_error"]
                .as_str()
                .unwrap_or_default()
                .contains("denied network"),
            "{key}: {effect}"
        );
    }
}
