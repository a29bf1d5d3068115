//! The WAL is checkpointed beside the writer (the writer's own automatic checkpoint is off),
//! so it is rewound and stays small however much is written.

use serde_json::json;
use waymark_store::conformance::events;
use waymark_store::{ProfileStore, StoreOptions};
use waymark_store_sqlite::SqliteStore;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wal_stays_small_while_far_more_is_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(dir.path(), StoreOptions::default()).expect("open");
    let wal = dir.path().join("waymark.db-wal");
    let padding = "x".repeat(2_000);
    let mut largest_wal = 0;
    for round in 0..40 {
        let batch: Vec<_> = (0..200)
            .map(|i| {
                json!({"type": "track", "userId": format!("u{round}-{i}"), "event": "Padded",
                       "messageId": format!("m{round}-{i}"), "properties": {"padding": padding}})
            })
            .collect();
        store.ingest(events(json!(batch))).await.expect("ingest");
        largest_wal = largest_wal.max(std::fs::metadata(&wal).map_or(0, |m| m.len()));
        tokio::time::sleep(std::time::Duration::from_millis(30)).await;
    }
    let database = std::fs::metadata(dir.path().join("waymark.db"))
        .expect("db")
        .len();
    // 8,000 events of 2 KB (events, profiles and indexes: well over 16 MB) went through;
    // without checkpoints all of it would still be in the WAL: every page of the database
    // was written there at least once, so a WAL never rewound is at least as large as the
    // database. (How far below it stays depends on how often the checkpoint thread gets a
    // core: a busy machine measured 0.61 of the database, an idle one well under half.)
    assert!(database > 16_000_000, "database only {database} bytes");
    assert!(
        largest_wal < database * 4 / 5,
        "WAL reached {largest_wal} bytes for a {database}-byte database: not checkpointed"
    );
}
