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

async fn publish(c: &reqwest::Client, base: &str, doc: &Value) {
    let r = c
        .put(format!("{base}/v1/journeys/greet"))
        .bearer_auth(ADMIN)
        .json(doc)
        .send()
        .await
        .expect("put");
    assert!(r.status().is_success(), "{:?}", r.text().await);
    let r = c
        .post(format!("{base}/v1/journeys/greet/publish"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .expect("publish");
    assert!(r.status().is_success());
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
    let started = Instant::now();
    loop {
        let mut done = 0;
        for u in 0..users {
            if progress(c, base, &format!("g{u}")).await.0 == "completed" {
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
    publish(&c, &server.base, &greet_journey("1s")).await;
    enter(&c, &server.base, 20).await;
    let (state, templates) = progress(&c, &server.base, "g0").await;
    assert_eq!(
        (state.as_str(), templates),
        ("active", vec!["hello".to_owned()]),
        "the first step runs in the ingest transaction"
    );
    wait_until_completed(&c, &server.base, 20, Duration::from_secs(15)).await;
    for u in 0..20 {
        assert_eq!(
            progress(&c, &server.base, &format!("g{u}")).await.1,
            ["hello", "bye"]
        );
    }
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
    publish(&c, &server.base, &greet_journey("2s")).await;
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
    let base = std::env::var("WAYMARK_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let (pg, conn) = tokio_postgres::connect(&base, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(conn);
    let schema = format!(
        "wm_live_{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_nanos()
    );
    pg.batch_execute(&format!("CREATE SCHEMA {schema}"))
        .await
        .expect("schema");
    let sep = if base.contains('?') { '&' } else { '?' };
    let url = format!("{base}{sep}options=-csearch_path%3D{schema}");
    kill_9_while_waiting(Some(&url)).await;
}
