//! Direct mail: rows land in one CSV file per run.

use std::time::Duration;

use serde_json::json;

use crate::common::{ADMIN, Launch, Server, WRITE_KEY, client, get, send_batch};
use crate::support::*;

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
