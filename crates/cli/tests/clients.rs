//! The official Segment and RudderStack Node libraries send to a running Waymark, and what
//! they sent lands in the profiles. Installs the pinned libraries with `npm ci` on first run.

mod common;

use std::process::Command;

use common::{ADMIN, Launch, Server, WRITE_KEY, client, get, workspace_root};

fn ensure_client_libraries() -> std::path::PathBuf {
    let dir = workspace_root().join("tests/clients");
    if !dir.join("node_modules/@segment/analytics-node").exists()
        || !dir
            .join("node_modules/@rudderstack/rudder-sdk-node")
            .exists()
    {
        let status = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--ignore-scripts"])
            .current_dir(&dir)
            .status()
            .expect("npm must be installed to run the client-library test (Node.js 20+)");
        assert!(status.success(), "npm ci failed in {}", dir.display());
    }
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segment_and_rudderstack_node_libraries_land_in_profiles() {
    let dir = ensure_client_libraries();
    let data = tempfile::tempdir().expect("tempdir");
    let server = Server::start(Launch {
        data_dir: &data.path().join("data"),
        store: None,
        configured_keys: true,
    });
    let run = format!("r{}", std::process::id());
    let base = server.base.clone();
    let output = tokio::task::spawn_blocking({
        let run = run.clone();
        move || {
            Command::new("node")
                .arg("send.mjs")
                .args([&base, WRITE_KEY, &run])
                .current_dir(&dir)
                .output()
                .expect("run node")
        }
    })
    .await
    .expect("node");
    assert!(
        output.status.success(),
        "client script failed\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );

    let c = client();
    let (status, seg) = get(
        &c,
        &server.base,
        ADMIN,
        &format!("/v1/profiles/user_id/{run}-segment-user"),
    )
    .await;
    assert_eq!(status, 200, "{seg}");
    assert_eq!(seg["traits"]["plan"], "pro");
    assert_eq!(
        seg["computed"]["event_count"], 4,
        "anonymous track and page merged in by identify: {seg}"
    );
    assert_eq!(seg["computed"]["event_counts"]["Order Completed"], 1);
    assert_eq!(seg["computed"]["event_counts"]["Page Viewed"], 1);
    let (status, by_email) = get(
        &c,
        &server.base,
        ADMIN,
        &format!("/v1/profiles/email/{run}@segment.example"),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(by_email["id"], seg["id"]);
    let (_, events) = get(
        &c,
        &server.base,
        ADMIN,
        &format!("/v1/profiles/user_id/{run}-segment-user/events"),
    )
    .await;
    let libs: Vec<&str> = events["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["context"]["library"]["name"].as_str())
        .collect();
    assert!(
        libs.iter().all(|l| *l == "@segment/analytics-node"),
        "{libs:?}"
    );

    let (status, rud) = get(
        &c,
        &server.base,
        ADMIN,
        &format!("/v1/profiles/user_id/{run}-rudder-user"),
    )
    .await;
    assert_eq!(status, 200, "{rud}");
    assert_eq!(rud["traits"]["name"], "Rudy");
    assert_eq!(rud["computed"]["event_counts"]["Signed Up"], 1);
    let (status, aliased) = get(
        &c,
        &server.base,
        ADMIN,
        &format!("/v1/profiles/anonymous_id/{run}-rudder-anon"),
    )
    .await;
    assert_eq!(status, 200, "alias attached the previous id");
    assert_eq!(aliased["id"], rud["id"]);
}
