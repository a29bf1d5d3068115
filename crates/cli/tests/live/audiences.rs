//! Audiences in a running server: a new audience is backfilled from stored events in the
//! background, and a rule that time alone flips ends membership at that instant, which a
//! journey acts on (a webhook to a CRM on loopback), on both stores; across a kill -9 too.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::{ADMIN, Launch, Server, WRITE_KEY, client, get, send_batch};
use crate::support::*;

async fn put_audience(c: &reqwest::Client, base: &str, doc: &Value) -> Value {
    let key = doc["key"].as_str().expect("key");
    put_document(c, base, &format!("/v1/audiences/{key}"), doc).await
}

/// Ann: three orders of 300; Bob: three of 10; Cy: one of 900.
async fn ingest_orders(c: &reqwest::Client, base: &str) {
    let mut batch = Vec::new();
    for (user, orders, total) in [("ann", 3, 300), ("bob", 3, 10), ("cy", 1, 900)] {
        for _ in 0..orders {
            batch.push(json!({"type": "track", "userId": user, "event": "Order Completed", "properties": {"total": total}}));
        }
    }
    send_batch(c, base, WRITE_KEY, &Value::Array(batch))
        .await
        .expect("ingest");
}

/// Waits until `check` holds for the audience's GET answer.
async fn wait_for_audience(
    c: &reqwest::Client,
    base: &str,
    key: &str,
    within: Duration,
    check: impl Fn(&Value) -> bool,
) -> Value {
    let started = Instant::now();
    loop {
        let (_, body) = get(c, base, ADMIN, &format!("/v1/audiences/{key}")).await;
        if check(&body) {
            return body;
        }
        assert!(
            started.elapsed() < within,
            "audience {key} never got there: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn backfill_then_time_driven_exit(store: Option<&str>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let mut server = Server::start(Launch {
        data_dir: &data,
        store,
        configured_keys: true,
    });
    let c = client();
    let (url, calls) = crm_sink(false).await;
    // When someone stops being an active pinger, the CRM hears of it.
    put_and_publish(
        &c,
        &server.base,
        &json!({"key": "lapsed", "entry": {"event": "Audience Exited", "when": "event.properties.audience == 'pingers'"},
            "nodes": [
                {"id": "tell", "type": "webhook", "url": url, "body": {"lapsed": "{{profile.id}}"}, "next": "done"},
                {"id": "done", "type": "end"}]}),
    )
    .await;
    // History first: 30 people ping twice, 10 once.
    let mut batch = Vec::new();
    for n in 0..40 {
        batch.push(json!({"type": "track", "userId": format!("p{n}"), "event": "Ping"}));
        if n < 30 {
            batch.push(json!({"type": "track", "userId": format!("p{n}"), "event": "Ping"}));
        }
    }
    send_batch(&c, &server.base, WRITE_KEY, &Value::Array(batch))
        .await
        .expect("ingest");
    // Then the audience: everyone already stored is decided in the background.
    let put = put_audience(
        &c,
        &server.base,
        &json!({"key": "pingers", "rule": "events.count(\"Ping\", \"4s\") >= 2"}),
    )
    .await;
    assert_eq!(put["version"], 1, "{put}");
    let built = wait_for_audience(&c, &server.base, "pingers", Duration::from_secs(3), |a| {
        a["state"] == "current"
    })
    .await;
    let entered_by = Instant::now();
    assert_eq!(built["size"], 30, "{built}");
    // Kill -9 while every membership waits to age out: the checks are durable.
    server.kill9();
    let server = Server::start(Launch {
        data_dir: &data,
        store,
        configured_keys: true,
    });
    // About 4 s after the pings, everyone leaves at once (time alone flips the rule), and
    // the journey tells the CRM about each, once.
    let emptied = wait_for_audience(&c, &server.base, "pingers", Duration::from_secs(15), |a| {
        a["size"] == 0
    })
    .await;
    assert!(emptied["last_change"].is_string(), "{emptied}");
    assert!(
        entered_by.elapsed() < Duration::from_secs(8),
        "exits came {:?} after the backfill",
        entered_by.elapsed()
    );
    let started = Instant::now();
    while calls.lock().expect("lock").len() < 30 {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "not every exit reached the CRM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let calls = calls.lock().expect("lock").clone();
    assert_eq!(calls.len(), 30);
    assert!(
        calls.values().all(|n| *n == 1),
        "each exit called once: {calls:?}"
    );
    // p35 pinged once: never a member, no exit.
    let (_, explain) = get(
        &c,
        &server.base,
        ADMIN,
        "/v1/profiles/user_id/p35/audiences/pingers/explain",
    )
    .await;
    assert_eq!(explain["member"], false, "{explain}");
    let (_, events) = get(&c, &server.base, ADMIN, "/v1/profiles/user_id/p0/events").await;
    let names: Vec<&str> = events["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["event"].as_str())
        .collect();
    assert_eq!(
        names,
        ["Audience Exited", "Audience Entered", "Ping", "Ping"],
        "{events}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audiences_are_backfilled_and_left_when_time_flips_the_rule() {
    backfill_then_time_driven_exit(None).await;
}

#[cfg(feature = "backend-tests")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audiences_are_backfilled_and_left_when_time_flips_the_rule_on_postgres() {
    let url = crate::common::fresh_postgres_url().await;
    backfill_then_time_driven_exit(Some(&url)).await;
}

/// Killed part way through a backfill, the server resumes it after restart (from where it
/// stood, not from the start: nobody enters twice) and ends with the membership a clean
/// evaluation of the rule gives.
async fn backfill_killed_part_way(store: Option<&str>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let mut server = Server::start(Launch {
        data_dir: &data,
        store,
        configured_keys: true,
    });
    let c = client();
    // Person n pings n % 3 times: a third of them twice.
    const PEOPLE: usize = 6_000;
    let mut batch = Vec::new();
    for n in 0..PEOPLE {
        for _ in 0..n % 3 {
            batch.push(json!({"type": "track", "userId": format!("p{n}"), "event": "Ping"}));
        }
        batch.push(json!({"type": "identify", "userId": format!("p{n}")}));
        if batch.len() >= 400 {
            send_batch(
                &c,
                &server.base,
                WRITE_KEY,
                &Value::Array(std::mem::take(&mut batch)),
            )
            .await
            .expect("ingest");
        }
    }
    send_batch(&c, &server.base, WRITE_KEY, &Value::Array(batch))
        .await
        .expect("ingest");
    let rule = json!({"key": "pingers", "rule": "events.count(\"Ping\") >= 2"});
    put_audience(&c, &server.base, &rule).await;
    let part_way = wait_for_audience(&c, &server.base, "pingers", Duration::from_secs(30), |a| {
        a["backfill"]["decided"].as_u64().is_some_and(|d| d > 0) || a["state"] == "current"
    })
    .await;
    server.kill9();
    assert_eq!(part_way["state"], "building", "killed part way: {part_way}");
    let server = Server::start(Launch {
        data_dir: &data,
        store,
        configured_keys: true,
    });
    let done = wait_for_audience(&c, &server.base, "pingers", Duration::from_secs(60), |a| {
        a["state"] == "current"
    })
    .await;
    assert_eq!(done["size"], PEOPLE / 3, "{done}");
    // The same rule decided for everyone from scratch agrees.
    let clean = c
        .post(format!("{}/v1/audiences/pingers/preview", server.base))
        .bearer_auth(ADMIN)
        .json(&rule)
        .send()
        .await
        .expect("preview")
        .json::<Value>()
        .await
        .expect("json");
    assert_eq!(clean["size"], done["size"], "{clean}");
    let export = c
        .get(format!(
            "{}/v1/audiences/pingers/export?identities=user_id",
            server.base
        ))
        .bearer_auth(ADMIN)
        .send()
        .await
        .expect("export")
        .text()
        .await
        .expect("text");
    let mut users: Vec<usize> = export
        .lines()
        .skip(1)
        .filter_map(|l| l.rsplit(',').next()?.strip_prefix('p')?.parse().ok())
        .collect();
    users.sort_unstable();
    let expected: Vec<usize> = (0..PEOPLE).filter(|n| n % 3 == 2).collect();
    assert!(
        users == expected,
        "members are exactly those who pinged twice"
    );
    let (_, events) = get(&c, &server.base, ADMIN, "/v1/profiles/user_id/p2/events").await;
    let entered = events["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| e["event"] == "Audience Entered")
        .count();
    assert_eq!(entered, 1, "{events}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backfill_killed_part_way_resumes_and_agrees_with_a_clean_evaluation() {
    backfill_killed_part_way(None).await;
}

#[cfg(feature = "backend-tests")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backfill_killed_part_way_resumes_and_agrees_with_a_clean_evaluation_on_postgres() {
    let url = crate::common::fresh_postgres_url().await;
    backfill_killed_part_way(Some(&url)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audiences_are_applied_as_code_and_the_backfill_is_followed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(Launch {
        data_dir: &dir.path().join("data"),
        store: None,
        configured_keys: true,
    });
    let c = client();
    ingest_orders(&c, &server.base).await;
    let examples = format!("{}/../../examples/audiences", env!("CARGO_MANIFEST_DIR"));
    let base = server.base.clone();
    let apply = move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_waymark"))
            .args(["audiences", "apply", &examples, "--url", &base, "--wait"])
            .env("WAYMARK_ADMIN_TOKEN", ADMIN)
            .output()
            .expect("run waymark")
    };
    let out = tokio::task::spawn_blocking(apply.clone())
        .await
        .expect("join");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Dependencies first, then each backfill followed to the end.
    let stored: Vec<&str> = stdout
        .lines()
        .filter(|l| l.contains("stored"))
        .map(|l| l.split(':').next().unwrap_or_default())
        .collect();
    assert_eq!(stored, ["high-value", "repeat-buyers", "vip"], "{stdout}");
    assert!(
        stdout.contains("repeat-buyers: current, 2 members"),
        "{stdout}"
    );
    assert!(
        stdout.contains("high-value: current, 2 members"),
        "{stdout}"
    );
    assert!(stdout.contains("vip: current, 1 members"), "{stdout}");
    let again = tokio::task::spawn_blocking(apply).await.expect("join");
    let stdout = String::from_utf8_lossy(&again.stdout);
    assert_eq!(stdout.matches("unchanged").count(), 3, "{stdout}");
}

/// Runs `waymark audiences ARGS...` against the server; (success, stdout, stderr).
async fn audiences_cli(base: &str, args: &[&str]) -> (bool, String, String) {
    let mut all: Vec<String> = vec!["audiences".into()];
    all.extend(args.iter().map(|a| (*a).to_owned()));
    all.extend(["--url".into(), base.to_owned()]);
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_waymark"))
            .args(&all)
            .env("WAYMARK_ADMIN_TOKEN", ADMIN)
            .output()
            .expect("run waymark")
    })
    .await
    .expect("join");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audiences_are_previewed_exported_uploaded_and_run_from_the_cli() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(Launch {
        data_dir: &dir.path().join("data"),
        store: None,
        configured_keys: true,
    });
    let c = client();
    ingest_orders(&c, &server.base).await;
    let base = server.base.as_str();

    let draft = dir.path().join("big-spenders.yaml");
    std::fs::write(
        &draft,
        "key: big-spenders\nrule: events.sum(\"Order Completed\", \"total\") > 500\n",
    )
    .expect("write");
    let (ok, stdout, stderr) = audiences_cli(
        base,
        &["preview", &draft.to_string_lossy(), "--sample", "5"],
    )
    .await;
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("big-spenders: 2 of 3 people would be members (0 errors)"),
        "ann (900) and cy (900), not bob (30): {stdout}"
    );
    assert_eq!(
        stdout.lines().count(),
        3,
        "the two members listed: {stdout}"
    );

    let buyers = dir.path().join("buyers.yaml");
    std::fs::write(
        &buyers,
        "key: buyers\nrule: events.count(\"Order Completed\") >= 3\n",
    )
    .expect("write");
    let (ok, _, stderr) =
        audiences_cli(base, &["apply", &buyers.to_string_lossy(), "--wait"]).await;
    assert!(ok, "{stderr}");
    let out = dir.path().join("buyers.csv");
    let (ok, _, stderr) = audiences_cli(
        base,
        &[
            "export",
            "buyers",
            "--identities",
            "user_id",
            "--output",
            &out.to_string_lossy(),
        ],
    )
    .await;
    assert!(ok, "{stderr}");
    let csv = std::fs::read_to_string(&out).expect("exported");
    let mut users: Vec<&str> = csv
        .lines()
        .skip(1)
        .filter_map(|l| l.rsplit(',').next())
        .collect();
    users.sort_unstable();
    assert_eq!(users, ["ann", "bob"], "{csv}");
    assert!(
        csv.starts_with("profile_id,since,identity:user_id\n"),
        "{csv}"
    );
    assert!(!out.with_extension("partial").exists());

    put_audience(&c, base, &json!({"key": "leads", "refresh": "upload"})).await;
    let list = dir.path().join("leads.csv");
    std::fs::write(&list, "user_id\nann\nzed\n").expect("write");
    let (ok, stdout, stderr) =
        audiences_cli(base, &["upload", "leads", &list.to_string_lossy()]).await;
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("leads: 2 rows, 1 matched, 1 unmatched; 1 entered, 0 left"),
        "{stdout}"
    );
    assert!(stdout.contains("unmatched rows: [3]"), "{stdout}");

    let (ok, stdout, stderr) = audiences_cli(base, &["run", "buyers", "--wait"]).await;
    assert!(ok, "{stderr}");
    assert!(stdout.contains("buyers: current, 2 members"), "{stdout}");
    let (ok, _, stderr) = audiences_cli(base, &["run", "leads"]).await;
    assert!(!ok);
    assert!(
        stderr.contains("409"),
        "an uploaded list has no rule: {stderr}"
    );
}
