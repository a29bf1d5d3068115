//! Hostile clients against the real binary: what a public write key (or no key at all)
//! must not be able to do to the server, its memory, or other people's requests.

mod common;

use std::io::Write;

use common::{Launch, Server, WRITE_KEY, client};
use serde_json::{Value, json};

/// The most memory the process has held since it started (VmHWM), in bytes.
fn peak_rss(server: &Server) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.child.id()))
        .expect("proc status");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM");
    kb * 1024
}

/// A few KB on the wire: a 240 KB batch-level context and 5,000 one-line messages, gzipped
/// (under the 500 KB inflated limit). Merged as it once was, every message would carry its
/// own copy of the context: 1.2 GB.
fn amplifying_body() -> Vec<u8> {
    let items: Vec<Value> = (0..5000)
        .map(|i| json!({"type": "track", "event": "x", "userId": i % 10}))
        .collect();
    let doc = json!({"context": {"blob": "a".repeat(240 * 1024)}, "batch": items});
    assert!(serde_json::to_vec(&doc).expect("json").len() < 500 * 1024);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(&serde_json::to_vec(&doc).expect("json"))
        .expect("gzip");
    gz.finish().expect("gzip")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_batch_cannot_make_the_server_allocate_gigabytes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let server = Server::start(Launch {
        data_dir: &data,
        store: None,
        configured_keys: true,
    });
    let c = client();
    let body = amplifying_body();
    assert!(body.len() < 20_000, "{} bytes", body.len());
    let before = peak_rss(&server);
    let send = |key: Option<&'static str>| {
        let (c, body, url) = (c.clone(), body.clone(), format!("{}/v1/batch", server.base));
        async move {
            let mut req = c
                .post(url)
                .header("content-type", "application/json")
                .header("content-encoding", "gzip")
                .body(body);
            if let Some(key) = key {
                req = req.basic_auth(key, Some(""));
            }
            let resp = req.send().await.expect("answered");
            let status = resp.status().as_u16();
            (status, resp.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    // Without a key: refused before the messages are parsed.
    let (status, _) = send(None).await;
    assert_eq!(status, 401);
    // With the key, eight at once: each refused with the limit named, nothing stored.
    let answers = futures::future::join_all((0..8).map(|_| send(Some(WRITE_KEY)))).await;
    for (status, body) in answers {
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["code"], "event_too_large", "{body}");
        assert_eq!(body["field"], "batch[0]", "{body}");
    }
    let grown = peak_rss(&server).saturating_sub(before);
    // Eight bodies of 500 KB inflated each, parsed, and nothing more.
    assert!(
        grown < 64 * 1024 * 1024,
        "peak RSS grew by {} MB",
        grown / 1024 / 1024
    );
}

async fn poisoned_neighbours_do_not_fail(store: Option<&str>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let server = Server::start(Launch {
        data_dir: &data,
        store,
        configured_keys: true,
    });
    let c = client();
    let sends = (0..100).map(|i| {
        let (c, url) = (c.clone(), format!("{}/v1/track", server.base));
        async move {
            let poisoned = i % 2 == 1;
            let value = if poisoned { "a\u{0}b" } else { "ab" };
            let resp = c
                .post(url)
                .basic_auth(WRITE_KEY, Some(""))
                .json(&json!({"userId": format!("n{i}"), "event": "x", "properties": {"p": value}}))
                .send()
                .await
                .expect("answered");
            let status = resp.status().as_u16();
            (
                poisoned,
                status,
                resp.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    });
    for (poisoned, status, body) in futures::future::join_all(sends).await {
        if poisoned {
            assert_eq!(status, 400, "{body}");
            assert_eq!(body["field"], "properties.p", "{body}");
        } else {
            assert_eq!(
                status, 200,
                "a good request failed beside a poisoned one: {body}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nul_character_is_refused_alone() {
    poisoned_neighbours_do_not_fail(None).await;
}

#[cfg(feature = "backend-tests")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nul_character_is_refused_alone_on_postgres() {
    let url = common::fresh_postgres_url().await;
    poisoned_neighbours_do_not_fail(Some(&url)).await;
}

/// Reads from `stream` until the server closes it; how long that took.
async fn closed_after(
    stream: &mut tokio::net::TcpStream,
    within: std::time::Duration,
) -> (std::time::Duration, Vec<u8>) {
    use tokio::io::AsyncReadExt;
    let started = std::time::Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(within, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (started.elapsed(), got),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => panic!("the server kept the connection open for {within:?}"),
        }
    }
}

/// Slow clients cannot hold the server: headers must arrive within `http.header_timeout`,
/// bodies within `http.body_timeout`, and connections past `http.max_connections` wait
/// for a free one instead of piling up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_cut_off_and_connections_are_capped() {
    use tokio::io::AsyncWriteExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let server = Server::start_with_env(
        Launch {
            data_dir: &data,
            store: None,
            configured_keys: true,
        },
        &[
            ("WAYMARK_HTTP__HEADER_TIMEOUT", "1s"),
            ("WAYMARK_HTTP__BODY_TIMEOUT", "1s"),
            ("WAYMARK_HTTP__MAX_CONNECTIONS", "3"),
        ],
    );
    let addr = server.base.trim_start_matches("http://").to_owned();
    let limit = std::time::Duration::from_secs(5);
    // Slowloris: half a request line, then nothing.
    let mut slow = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    slow.write_all(b"POST /v1/track HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("write");
    let (took, _) = closed_after(&mut slow, limit).await;
    assert!(
        took < std::time::Duration::from_secs(3),
        "closed after {took:?}"
    );
    // Headers in, body promised and never finished: 408.
    let mut stalled = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    let auth = base64_basic(WRITE_KEY);
    stalled
        .write_all(format!("POST /v1/track HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {auth}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"userId\"").as_bytes())
        .await
        .expect("write");
    let (_, answer) = closed_after(&mut stalled, limit).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    // Three idle connections fill the cap; a fourth client is served once the header
    // timeout has closed one of them, not refused and not left hanging.
    let mut idle = Vec::new();
    for _ in 0..3 {
        idle.push(
            tokio::net::TcpStream::connect(&addr)
                .await
                .expect("connect"),
        );
    }
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let started = std::time::Instant::now();
    let r = client()
        .get(format!("{}/healthz", server.base))
        .send()
        .await
        .expect("served");
    assert_eq!(r.status(), 200);
    let waited = started.elapsed();
    assert!(
        waited >= std::time::Duration::from_millis(500),
        "served at once ({waited:?}): the cap did not hold"
    );
    // And the method label of the metrics takes no made-up methods.
    let mut odd = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    odd.write_all(b"BREW /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let _ = closed_after(&mut odd, limit).await;
    let metrics = client()
        .get(format!("{}/metrics", server.base))
        .bearer_auth(common::ADMIN)
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        !metrics.contains("BREW"),
        "a made-up method made a time series"
    );
    assert!(metrics.contains("method=\"other\""), "{metrics}");
}

fn base64_basic(key: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(format!("{key}:"))
}

/// The client write key ships in every page, so anyone holds it: it must not let a stranger
/// route a signed-in person's messages to themselves, nor grow their profile without end.
/// Against the real binary, with the keys and identity secret it generates on first start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_public_client_key_cannot_take_over_or_bloat_a_known_person() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let server = Server::start(Launch {
        data_dir: &data,
        store: None,
        configured_keys: false,
    });
    let (server_key, client_key) = (
        server.printed("write key:"),
        server.printed("client write key:"),
    );
    let c = client();
    let send = |key: &str, path: &str, body: Value, hash: Option<&str>| {
        let mut req = c
            .post(format!("{}{path}", server.base))
            .basic_auth(key, Some(""))
            .json(&body);
        if let Some(hash) = hash {
            req = req.header("x-waymark-user-hash", hash);
        }
        async move {
            let resp = req.send().await.expect("answered");
            let status = resp.status().as_u16();
            (status, resp.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let (status, body) = send(
        &server_key,
        "/v1/identify",
        json!({"userId": "victim", "traits": {"email": "victim@example.com"}}),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");

    let (status, body) = send(
        &client_key,
        "/v1/identify",
        json!({"userId": "victim", "traits": {"email": "thief@example.com"}}),
        None,
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("user_hash_required")),
        "{body}"
    );
    assert_eq!(body["field"], "traits.email");

    // 200 new anonymous ids for one known person: the profile stops at its limit.
    let devices: Vec<Value> = (0..200)
        .map(|i| json!({"type": "identify", "userId": "victim", "anonymousId": format!("device-{i}")}))
        .collect();
    let (status, body) = send(&client_key, "/v1/batch", json!({ "batch": devices }), None).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("profile_limit")),
        "{body}"
    );
    // user id + email + 98 devices = 100 identities; the 99th device is one too many.
    assert_eq!(body["field"], "batch[98].anonymousId");

    // The person's own page, with the user hash the customer's backend made for them.
    let secret = std::fs::read_to_string(data.join("identity_secret")).expect("secret");
    let hash = waymark_core::links::user_hash(secret.trim().as_bytes(), "user_id", "victim");
    let (status, body) = send(
        &client_key,
        "/v1/identify",
        json!({"userId": "victim", "traits": {"email": "new@example.com"}}),
        Some(&hash),
    )
    .await;
    assert_eq!(status, 200, "{body}");
}
