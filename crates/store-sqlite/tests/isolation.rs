//! One request the database refuses fails alone, however many it was committed with.

use waymark_store::StoreOptions;
use waymark_store_sqlite::SqliteStore;

/// A store whose database refuses events named `Poison`. SQLite stores anything the parser
/// accepts, so the refusal is a real constraint added to the database: a trigger that
/// aborts an insert of one event name.
fn refusing_poison(dir: &std::path::Path) -> SqliteStore {
    let store = SqliteStore::open(dir, StoreOptions::default()).expect("open");
    let conn = rusqlite::Connection::open(dir.join(waymark_store_sqlite::DATABASE_FILE))
        .expect("second connection");
    conn.execute_batch(
        "CREATE TRIGGER refuse_poison BEFORE INSERT ON events WHEN NEW.name = 'Poison'
         BEGIN SELECT RAISE(ABORT, 'poisoned event'); END;",
    )
    .expect("trigger");
    store
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_sqlite_refuses_fails_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = refusing_poison(dir.path());
    let refused = waymark_store::conformance::refused_requests_fail_alone(
        std::sync::Arc::new(store),
        |event| event.name = Some("Poison".into()),
    )
    .await;
    assert_eq!(refused, 50);
}

/// An event written in a request that is then rolled back is not counted by the next
/// audience decision (nothing the writer learned in the rolled-back part survives it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_rolled_back_is_not_counted_by_the_next_decision() {
    use waymark_store::conformance::events;
    use waymark_store::{AudienceStore, ProfileStore};
    let dir = tempfile::tempdir().expect("tempdir");
    let store = refusing_poison(dir.path());
    let rule =
        serde_json::json!({"key": "viewers", "rule": r#"events.count("Viewed", "30d") >= 3"#});
    store.put_audience("viewers", &rule, 1).await.expect("put");
    let viewed = |n: u32| serde_json::json!({"type": "track", "event": "Viewed", "userId": "ann", "messageId": format!("v{n}")});
    // Ann's history is read (and kept) by the decision on her first event.
    store
        .ingest(events(serde_json::json!([viewed(1)])))
        .await
        .expect("first");
    // A second view is written, then the request fails on its next event: all of it goes.
    let refused = store
        .ingest(events(serde_json::json!([viewed(2),
            {"type": "track", "event": "Poison", "userId": "ann", "messageId": "p1"}])))
        .await;
    assert!(refused.is_err(), "the trigger refuses the request");
    // Two views stored: not three.
    store
        .ingest(events(serde_json::json!([viewed(3)])))
        .await
        .expect("third");
    let ann = store
        .profile(&waymark_core::Identity::parse("user_id", "ann").expect("identity"))
        .await
        .expect("read")
        .expect("ann");
    assert_eq!(ann.event_count, 2);
    assert!(
        store
            .profile_audiences(&ann.id)
            .await
            .expect("read")
            .is_empty(),
        "a rolled-back view was counted"
    );
    store
        .ingest(events(serde_json::json!([viewed(4)])))
        .await
        .expect("fourth");
    let audiences = store.profile_audiences(&ann.id).await.expect("read");
    assert_eq!(audiences.len(), 1, "three views stored: a member");
}
