//! The shared store conformance suite against a live PostgreSQL, each test in a schema of
//! its own. Enabled by the `backend-tests` feature (see `.ci/run`).
#![cfg(feature = "backend-tests")]

use std::str::FromStr;

use async_trait::async_trait;
use waymark_store::StoreOptions;
use waymark_store::conformance::Backend;
use waymark_store_postgres::PostgresStore;

struct TempSchema {
    config: tokio_postgres::Config,
}

#[async_trait]
impl Backend for TempSchema {
    type Store = PostgresStore;
    async fn open(&self, options: StoreOptions) -> PostgresStore {
        PostgresStore::open_with_config(self.config.clone(), options)
            .await
            .expect("open postgres store")
    }
}

fn url() -> String {
    std::env::var("WAYMARK_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

async fn backend() -> TempSchema {
    let base = tokio_postgres::Config::from_str(&url()).expect("WAYMARK_TEST_POSTGRES_URL");
    let (client, conn) = base
        .connect(tokio_postgres::NoTls)
        .await
        .expect("connect to test postgres");
    tokio::spawn(conn);
    let schema = format!("wm_test_{}", uuid::Uuid::now_v7().simple());
    client
        .batch_execute(&format!("CREATE SCHEMA {schema}"))
        .await
        .expect("create schema");
    let mut config = base.clone();
    config.options(format!("-c search_path={schema}"));
    TempSchema { config }
}

waymark_store::conformance_suite!(backend());

/// PostgreSQL cannot store a NUL character in text or jsonb. The server refuses such
/// events before they reach the store; this drives the store directly to prove that one
/// refused request in a group commit no longer fails the good ones beside it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_postgres_refuses_fails_alone() {
    let store = backend().await.open(StoreOptions::default()).await;
    let refused = waymark_store::conformance::refused_requests_fail_alone(
        std::sync::Arc::new(store),
        |event| {
            event
                .properties
                .insert("p".into(), serde_json::Value::String("a\u{0}b".into()));
        },
    )
    .await;
    assert_eq!(refused, 50);
}
