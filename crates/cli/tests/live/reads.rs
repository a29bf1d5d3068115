//! Journeys that read an audience (a brand-initiated send): every member of an uploaded
//! list enters at the journey's pace, and a kill -9 part way through resumes the read where
//! its last commit left it: nobody is entered twice, nobody is skipped, on both stores.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::{ADMIN, Launch, Server, WRITE_KEY, client, get, send_batch};
use crate::support::*;

const PEOPLE: usize = 3_000;

async fn journey_view(c: &reqwest::Client, base: &str) -> Value {
    get(c, base, ADMIN, "/v1/journeys/promo").await.1
}

async fn read_killed_part_way(store: Option<&str>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let launch = || Launch {
        data_dir: &data,
        store,
        configured_keys: true,
    };
    let mut server = Server::start(launch());
    let c = client();
    for chunk in (0..PEOPLE).collect::<Vec<_>>().chunks(500) {
        let batch: Vec<Value> = chunk
            .iter()
            .map(|n| json!({"type": "identify", "userId": format!("r{n}")}))
            .collect();
        send_batch(&c, &server.base, WRITE_KEY, &Value::Array(batch))
            .await
            .expect("ingest");
    }
    put_document(
        &c,
        &server.base,
        "/v1/audiences/leads",
        &json!({"key": "leads", "refresh": "upload"}),
    )
    .await;
    let everyone: Vec<String> = (0..PEOPLE).map(|n| format!("r{n}")).collect();
    upload_list(&c, &server.base, "leads", &everyone).await;
    let (url, calls) = crm_sink(false).await;
    // `reentry: always`: only the read's cursor keeps a person from entering twice.
    let promo = json!({"key": "promo",
        "entry": {"audience": "leads", "on": "read"},
        "properties": {"entry_rate_limit": 1000, "reentry": "always"},
        "nodes": [
            {"id": "hook", "type": "webhook", "url": url, "body": {"user": "{{profile.id}}"}, "timeout": "2s", "retries": 3, "next": "done"},
            {"id": "done", "type": "end"}]});
    put_and_publish(&c, &server.base, &promo).await;
    let started = Instant::now();
    let part_way = loop {
        let view = journey_view(&c, &server.base).await;
        if view["read"]["members_read"].as_u64().is_some_and(|n| n > 0) {
            break view;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the read never started: {view}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    server.kill9();
    assert_eq!(
        part_way["read"]["state"], "reading",
        "killed part way: {part_way}"
    );
    let server = Server::start(launch());
    let started = Instant::now();
    let done = loop {
        let view = journey_view(&c, &server.base).await;
        if view["read"]["state"] == "done" {
            break view;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the read never finished: {view}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(done["read"]["last_read"], PEOPLE, "{done}");
    let started = Instant::now();
    let stats = loop {
        let (_, stats) = get(&c, &server.base, ADMIN, "/v1/journeys/promo/stats").await;
        if stats["completed"] == PEOPLE {
            break stats;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "not all completed: {stats}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(stats["instances"], PEOPLE, "one instance each: {stats}");
    let calls = calls.lock().expect("lock").clone();
    assert_eq!(calls.len(), PEOPLE, "everyone's webhook, once per step key");
    let repeated = calls.values().filter(|n| **n > 1).count();
    assert!(
        repeated <= 512,
        "{repeated} repeated: more than the calls in flight"
    );
    let (_, one) = get(
        &c,
        &server.base,
        ADMIN,
        "/v1/profiles/user_id/r1234/journeys",
    )
    .await;
    let instances = one["journeys"][0]["instances"]
        .as_array()
        .map_or(0, Vec::len);
    assert_eq!(instances, 1, "{one}");
    eprintln!(
        "read killed after {} of {PEOPLE} members; {repeated} webhook calls repeated after restart",
        part_way["read"]["members_read"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_killed_part_way_resumes_without_entering_anyone_twice() {
    read_killed_part_way(None).await;
}

#[cfg(feature = "backend-tests")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_killed_part_way_resumes_without_entering_anyone_twice_on_postgres() {
    let url = crate::common::fresh_postgres_url().await;
    read_killed_part_way(Some(&url)).await;
}
