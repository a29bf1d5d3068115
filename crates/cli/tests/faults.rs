//! Faults against the real binary: a disk that fills up, a provider that is slow, a second
//! process restarted beside a running one. What is acknowledged is kept, and nothing is
//! delivered twice.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{ADMIN, Launch, Server, WRITE_KEY, client, get};
use serde_json::{Value, json};

type Calls = Arc<Mutex<HashMap<String, u32>>>;

/// A webhook receiver on loopback that counts calls per `webhook-id` as they arrive,
/// answering each after `delay`.
async fn counting_sink(delay: Duration) -> (String, Calls) {
    let calls: Calls = Arc::default();
    let seen = calls.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: axum::http::HeaderMap| {
            let seen = seen.clone();
            async move {
                // Counted on arrival: a second call is seen even if its answer never comes.
                let id = headers
                    .get("webhook-id")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("missing")
                    .to_owned();
                *seen.lock().expect("lock").entry(id).or_default() += 1;
                tokio::time::sleep(delay).await;
                axum::Json(json!({"ok": true}))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await.expect("sink") });
    (format!("http://{addr}/hook"), calls)
}

async fn publish_hook_journey(c: &reqwest::Client, base: &str, url: &str) {
    let doc = json!({"key": "hook", "entry": {"event": "Go"}, "nodes": [
        {"id": "call", "type": "webhook", "url": url, "timeout": "30s", "retries": 5, "next": "done"},
        {"id": "done", "type": "end"}]});
    let r = c
        .put(format!("{base}/v1/journeys/hook"))
        .bearer_auth(ADMIN)
        .json(&doc)
        .send()
        .await
        .expect("put");
    assert!(r.status().is_success(), "{:?}", r.text().await);
    let r = c
        .post(format!("{base}/v1/journeys/hook/publish"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .expect("publish");
    assert!(r.status().is_success(), "{:?}", r.text().await);
}

async fn completed(c: &reqwest::Client, base: &str) -> u64 {
    let (_, stats) = get(c, base, ADMIN, "/v1/journeys/hook/stats").await;
    stats["completed"].as_u64().unwrap_or(0)
}

async fn wait_for_completed(c: &reqwest::Client, base: &str, want: u64, within: Duration) {
    let started = Instant::now();
    loop {
        let done = completed(c, base).await;
        if done >= want {
            return;
        }
        assert!(
            started.elapsed() < within,
            "only {done} of {want} journeys completed within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A small tmpfs, unmounted when dropped. Mounting needs root, which CI has (it runs on the
/// session's machine as root); there is no other way to make a real disk fill up.
struct Tmpfs {
    path: std::path::PathBuf,
}

impl Tmpfs {
    fn mount(path: std::path::PathBuf, megabytes: u32) -> Tmpfs {
        std::fs::create_dir_all(&path).expect("mount point");
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={megabytes}m"), "tmpfs"])
            .arg(&path)
            .status()
            .expect("run mount");
        assert!(
            status.success(),
            "mounting a tmpfs failed: this test needs root"
        );
        Tmpfs { path }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.path)
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_loses_nothing_acknowledged_sends_nothing_twice_and_recovers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let disk = Tmpfs::mount(dir.path().join("disk"), 48);
    // The data folder is the tmpfs itself; the server's log goes beside it, on a real disk.
    let data = disk.path.clone();
    // A short lease, so that an outage outlasts it several times over.
    let server = Server::start_with_env(
        Launch {
            data_dir: &data,
            store: None,
            configured_keys: true,
        },
        &[("WAYMARK_OUTBOX__LEASE", "4s")],
    );
    let c = client();
    let (url, calls) = counting_sink(Duration::from_millis(5)).await;
    publish_hook_journey(&c, &server.base, &url).await;

    // Leave a few MB free, then write until the store refuses.
    let filler = disk.path.join("filler");
    let free_mb = {
        let out = std::process::Command::new("df")
            .args(["--output=avail", "-m"])
            .arg(&disk.path)
            .output()
            .expect("df");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .nth(1)
            .and_then(|l| l.trim().parse::<u64>().ok())
            .expect("df output")
    };
    std::fs::write(&filler, vec![0u8; ((free_mb - 8) * 1024 * 1024) as usize]).expect("filler");
    let padding = "p".repeat(2_000);
    let mut acknowledged = Vec::new();
    let mut refused = 0;
    let mut retry_after = None;
    for round in 0..400 {
        let batch: Vec<Value> = (0..20)
            .map(|i| {
                let user = format!("d{round}-{i}");
                json!({"type": "track", "event": "Go", "userId": user, "messageId": format!("m-{user}"),
                       "properties": {"padding": padding}})
            })
            .collect();
        let r = c
            .post(format!("{}/v1/batch", server.base))
            .basic_auth(WRITE_KEY, Some(""))
            .json(&json!({ "batch": batch }))
            .send()
            .await
            .expect("answered");
        match r.status().as_u16() {
            200 => acknowledged.extend((0..20).map(|i| format!("d{round}-{i}"))),
            503 => {
                refused += 1;
                retry_after = r
                    .headers()
                    .get("retry-after")
                    .map(|v| v.to_str().unwrap_or("").to_owned());
                if refused >= 5 {
                    break;
                }
            }
            other => panic!("unexpected {other}: {:?}", r.text().await),
        }
    }
    assert!(refused >= 5, "the disk never filled up");
    assert!(!acknowledged.is_empty());
    eprintln!(
        "{} events acknowledged before the disk filled",
        acknowledged.len()
    );
    assert_eq!(
        retry_after.as_deref(),
        Some("5"),
        "a 503 says when to retry"
    );
    let health = c
        .get(format!("{}/healthz", server.base))
        .send()
        .await
        .expect("healthz");
    assert_eq!(
        health.status(),
        503,
        "a store that cannot commit is not healthy"
    );
    // The outage lasts three leases: rows whose outcomes could not be recorded must not be
    // claimed and sent again meanwhile.
    tokio::time::sleep(Duration::from_secs(12)).await;

    // Space returns: the server recovers by itself.
    std::fs::remove_file(&filler).expect("free space");
    let started = Instant::now();
    loop {
        let r = c
            .get(format!("{}/healthz", server.base))
            .send()
            .await
            .expect("healthz");
        if r.status() == 200 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "never healthy again"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let want = acknowledged.len() as u64;
    wait_for_completed(&c, &server.base, want, Duration::from_secs(120)).await;
    // Everything acknowledged is there, once; nothing refused ran.
    let (_, stats) = get(&c, &server.base, ADMIN, "/v1/journeys/hook/stats").await;
    assert_eq!(stats["instances"].as_u64(), Some(want), "{stats}");
    for user in acknowledged.iter().step_by(97) {
        let (status, profile) = get(
            &c,
            &server.base,
            ADMIN,
            &format!("/v1/profiles/user_id/{user}"),
        )
        .await;
        assert_eq!(status, 200, "{user} was acknowledged: {profile}");
        assert_eq!(profile["computed"]["event_count"], 1, "{profile}");
    }
    let calls = calls.lock().expect("lock").clone();
    assert_eq!(
        calls.len() as u64,
        want,
        "one webhook per acknowledged event"
    );
    let twice: Vec<_> = calls.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "sent twice: {twice:?}");
}

/// Two servers on one PostgreSQL database. A claims every row and waits on a slow receiver;
/// B starts (or restarts) meanwhile. B may take back only its own earlier leases: when a
/// start released every lease in the table, B called each of A's rows a second time.
#[cfg(feature = "backend-tests")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarting_one_of_two_postgres_servers_delivers_nothing_twice() {
    let url = common::fresh_postgres_url().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let launch = |name: &str| dir.path().join(name);
    let (a_dir, b_dir) = (launch("a"), launch("b"));
    let a = Server::start(Launch {
        data_dir: &a_dir,
        store: Some(&url),
        configured_keys: true,
    });
    let c = client();
    let (hook, calls) = counting_sink(Duration::from_secs(6)).await;
    publish_hook_journey(&c, &a.base, &hook).await;
    let batch: Vec<Value> = (0..50)
        .map(|i| json!({"type": "track", "event": "Go", "userId": format!("two{i}")}))
        .collect();
    common::send_batch(&c, &a.base, WRITE_KEY, &Value::Array(batch))
        .await
        .expect("ingest");
    // A has claimed the rows and is waiting on the receiver; B starts, stops and starts.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let mut b = Server::start(Launch {
        data_dir: &b_dir,
        store: Some(&url),
        configured_keys: true,
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(b.terminate().code(), Some(0));
    let b = Server::start(Launch {
        data_dir: &b_dir,
        store: Some(&url),
        configured_keys: true,
    });
    wait_for_completed(&c, &b.base, 50, Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let calls = calls.lock().expect("lock").clone();
    assert_eq!(calls.len(), 50);
    let twice = calls.values().filter(|n| **n > 1).count();
    assert_eq!(twice, 0, "rows called twice after the other server started");
    drop(a);
}
