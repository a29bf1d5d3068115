//! One request the database refuses fails alone, however many it was committed with.

use waymark_store::StoreOptions;
use waymark_store_sqlite::SqliteStore;

/// SQLite stores anything the parser accepts, so the refusal is a real constraint added to
/// the database: a trigger that aborts an insert of one event name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_sqlite_refuses_fails_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(dir.path(), StoreOptions::default()).expect("open");
    let conn = rusqlite::Connection::open(dir.path().join(waymark_store_sqlite::DATABASE_FILE))
        .expect("second connection");
    conn.execute_batch(
        "CREATE TRIGGER refuse_poison BEFORE INSERT ON events WHEN NEW.name = 'Poison'
         BEGIN SELECT RAISE(ABORT, 'poisoned event'); END;",
    )
    .expect("trigger");
    drop(conn);
    let refused = waymark_store::conformance::refused_requests_fail_alone(
        std::sync::Arc::new(store),
        |event| event.name = Some("Poison".into()),
    )
    .await;
    assert_eq!(refused, 50);
}
