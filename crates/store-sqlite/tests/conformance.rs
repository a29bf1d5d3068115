//! The shared store conformance suite, run against SQLite in a fresh temporary directory.

use async_trait::async_trait;
use waymark_store::StoreOptions;
use waymark_store::conformance::Backend;
use waymark_store_sqlite::SqliteStore;

struct TempSqlite(tempfile::TempDir);

#[async_trait]
impl Backend for TempSqlite {
    type Store = SqliteStore;
    async fn open(&self, options: StoreOptions) -> SqliteStore {
        SqliteStore::open(self.0.path(), options).expect("open sqlite store")
    }
}

async fn backend() -> TempSqlite {
    TempSqlite(tempfile::tempdir().expect("tempdir"))
}

waymark_store::conformance_suite!(backend());
