//! The `waymark` binary as a user runs it: first start, restart, graceful stop, kill -9.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{ADMIN, Launch, Server, WRITE_KEY, client, get, message_ids, send_batch};
use serde_json::{Value, json};
use tokio::sync::Mutex;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_start_generates_keys_prints_them_once_and_data_survives_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let mut server = Server::start(Launch {
        data_dir: &data,
        store: None,
        configured_keys: false,
    });
    let (write_key, admin) = (server.printed("write key:"), server.printed("admin token:"));
    let c = client();
    let r = send_batch(
        &c,
        &server.base,
        &write_key,
        &json!([{"type": "identify", "userId": "first", "traits": {"plan": "pro"}}]),
    )
    .await;
    assert!(r.is_ok(), "{r:?}");
    assert!(
        send_batch(
            &c,
            &server.base,
            "wk_wrong",
            &json!([{"type": "identify", "userId": "x"}])
        )
        .await
        .is_err()
    );
    assert_eq!(server.terminate().code(), Some(0));

    let server = Server::start(Launch {
        data_dir: &data,
        store: None,
        configured_keys: false,
    });
    assert!(
        !server.stdout.iter().any(|l| l.contains("write key")),
        "keys are printed only on first start: {:?}",
        server.stdout
    );
    let (status, profile) = get(&c, &server.base, &admin, "/v1/profiles/user_id/first").await;
    assert_eq!(status, 200);
    assert_eq!(profile["traits"]["plan"], "pro");
}

/// Sends batches from `workers` tasks until `stop`, recording the message ids of every
/// batch the server acknowledged with a 200.
async fn load(
    base: String,
    workers: usize,
    users: usize,
    stop: Arc<AtomicBool>,
) -> (Vec<String>, usize) {
    let acked = Arc::new(Mutex::new(Vec::new()));
    let sent = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for w in 0..workers {
        let (base, acked, stop, sent) = (base.clone(), acked.clone(), stop.clone(), sent.clone());
        tasks.push(tokio::spawn(async move {
            let c = client();
            let mut n = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let ids: Vec<String> = (0..50).map(|i| format!("crash-{w}-{n}-{i}")).collect();
                let batch: Vec<Value> = ids
                    .iter()
                    .enumerate()
                    .map(|(i, id)| json!({"type": "track", "messageId": id, "userId": format!("cu{}", (w * 7 + n + i) % users), "event": "Load"}))
                    .collect();
                n += 1;
                sent.fetch_add(ids.len(), Ordering::Relaxed);
                if send_batch(&c, &base, WRITE_KEY, &Value::Array(batch)).await.is_ok() {
                    acked.lock().await.extend(ids);
                } else if stop.load(Ordering::Relaxed) {
                    break;
                } else {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let acked = std::mem::take(&mut *acked.lock().await);
    (acked, sent.load(Ordering::Relaxed))
}

async fn assert_all_acked_present_once(base: &str, users: usize, acked: &[String]) {
    let c = client();
    let mut stored = Vec::new();
    for u in 0..users {
        stored.extend(message_ids(&c, base, ADMIN, &format!("cu{u}")).await);
    }
    let unique: HashSet<&String> = stored.iter().collect();
    assert_eq!(unique.len(), stored.len(), "an event was stored twice");
    let missing: Vec<&String> = acked.iter().filter(|id| !unique.contains(id)).collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged events lost, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
}

/// Starts a server on `store`, loads it, kills it with SIGKILL mid-load, restarts it, and
/// checks that every acknowledged event is stored exactly once.
async fn kill_9_scenario(store: Option<&str>, users: usize, min_acked: usize) {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let mut server = Server::start(Launch {
        data_dir: &data,
        store,
        configured_keys: true,
    });
    let stop = Arc::new(AtomicBool::new(false));
    let loader = tokio::spawn(load(server.base.clone(), 16, users, stop.clone()));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    server.kill9();
    stop.store(true, Ordering::Relaxed);
    let (acked, sent) = loader.await.expect("load");
    assert!(
        acked.len() >= min_acked,
        "load too small to mean anything: {} acked",
        acked.len()
    );
    assert!(
        sent > acked.len(),
        "the kill must land mid-load (sent {sent}, acked {})",
        acked.len()
    );

    let server = Server::start(Launch {
        data_dir: &data,
        store,
        configured_keys: true,
    });
    assert_all_acked_present_once(&server.base, users, &acked).await;
    let backend = get(&client(), &server.base, ADMIN, "/healthz").await.1["store"].clone();
    eprintln!(
        "kill -9 on {backend}: {} events acknowledged of {sent} sent; all present exactly once",
        acked.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_load_loses_no_acknowledged_event() {
    kill_9_scenario(None, 200, 1000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_and_stops_cleanly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let users = 50;
    let mut server = Server::start(Launch {
        data_dir: &data,
        store: None,
        configured_keys: true,
    });
    let stop = Arc::new(AtomicBool::new(false));
    let loader = tokio::spawn(load(server.base.clone(), 8, users, stop.clone()));
    tokio::time::sleep(Duration::from_millis(800)).await;
    let status = tokio::task::spawn_blocking(move || {
        let status = server.terminate();
        drop(server);
        status
    })
    .await
    .expect("terminate");
    stop.store(true, Ordering::Relaxed);
    assert_eq!(status.code(), Some(0), "graceful shutdown exits 0");
    let (acked, _) = loader.await.expect("load");
    assert!(!acked.is_empty());
    let server = Server::start(Launch {
        data_dir: &data,
        store: None,
        configured_keys: true,
    });
    assert_all_acked_present_once(&server.base, users, &acked).await;
}

#[cfg(feature = "backend-tests")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_load_on_postgres_loses_no_acknowledged_event() {
    let url = common::fresh_postgres_url().await;
    kill_9_scenario(Some(&url), 100, 500).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn journeys_apply_uploads_and_publishes_only_what_changed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(Launch {
        data_dir: &dir.path().join("data"),
        store: None,
        configured_keys: true,
    });
    let journeys = dir.path().join("journeys");
    std::fs::create_dir_all(&journeys).expect("mkdir");
    let welcome =
        std::fs::read_to_string(common::workspace_root().join("examples/journeys/welcome.yaml"))
            .expect("example");
    std::fs::write(journeys.join("welcome.yaml"), &welcome).expect("write");
    let apply = |base: String, dir: std::path::PathBuf| {
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_waymark"))
                .args([
                    "journeys",
                    "apply",
                    dir.to_str().expect("utf8"),
                    "--url",
                    &base,
                    "--admin-token",
                    ADMIN,
                ])
                .output()
                .expect("run apply")
        })
    };
    let out = apply(server.base.clone(), journeys.clone())
        .await
        .expect("join");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("welcome: version 1 published"));
    let out = apply(server.base.clone(), journeys.clone())
        .await
        .expect("join");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("welcome: version 1 unchanged"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    std::fs::write(
        journeys.join("welcome.yaml"),
        welcome.replace("template: activation-nudge", "template: nudge-v2"),
    )
    .expect("write");
    let out = apply(server.base.clone(), journeys.clone())
        .await
        .expect("join");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("welcome: version 2 published"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // An invalid file stops the whole apply before anything is uploaded.
    std::fs::write(journeys.join("broken.yaml"), "key: broken\nentry: { event: Go }\nnodes:\n  - { id: a, type: message, channel: log, template: t, next: nowhere }\n").expect("write");
    std::fs::write(
        journeys.join("welcome.yaml"),
        welcome.replace("template: activation-nudge", "template: nudge-v3"),
    )
    .expect("write");
    let out = apply(server.base.clone(), journeys.clone())
        .await
        .expect("join");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("broken.yaml: nodes[0].next"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (status, record) = get(&client(), &server.base, ADMIN, "/v1/journeys/welcome").await;
    assert_eq!(status, 200);
    assert_eq!(
        record["live_version"], 2,
        "nothing was applied from the failed run"
    );
}
