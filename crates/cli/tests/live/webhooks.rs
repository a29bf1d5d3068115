//! Webhooks against real HTTP(S) servers on loopback: once per step, error paths, signatures, TLS trust, redirects, response caps, denied networks, kill -9 during dispatch, and jumps.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::{ADMIN, Launch, Server, WRITE_KEY, client, get, send_batch};
use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_reach_a_real_sink_once_per_step_and_failures_take_the_error_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(Launch {
        data_dir: &dir.path().join("data"),
        store: None,
        configured_keys: true,
    });
    let c = client();
    let (ok_url, ok_calls) = crm_sink(false).await;
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
    // The profile update is the dispatcher's to apply once the instance has recorded it
    // (an effect, like the webhook): it follows the completion, not with it.
    let started = Instant::now();
    loop {
        let (_, body) = get(&c, &server.base, ADMIN, "/v1/profiles/user_id/g3").await;
        if body["traits"]["in_crm"] == true {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "update_profile applied after the webhook: {body}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (_, journeys) = get(&c, &server.base, ADMIN, "/v1/profiles/user_id/g3/journeys").await;
    let hook_response = &journeys["journeys"][0]["instances"][0]["context"]["hook"];
    assert_eq!(hook_response["status"], 200);
    assert_eq!(hook_response["body"]["echo"], json!({"plan": "pro"}));

    // A sink that answers 500: one retry, then the error path.
    let (bad_url, bad_calls) = crm_sink(true).await;
    put_and_publish(&c, &server.base, &hook_journey("greet", &bad_url)).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_webhook_dispatch_loses_no_step() {
    kill_9_during_webhook_dispatch(None).await;
}

#[cfg(feature = "backend-tests")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_webhook_dispatch_loses_no_step_on_postgres() {
    let url = crate::common::fresh_postgres_url().await;
    kill_9_during_webhook_dispatch(Some(&url)).await;
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
    let (url, calls) = crm_sink(false).await;
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
