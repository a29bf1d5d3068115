//! Durable waits: events enter journeys, the timer service fires waits, and after a kill -9 every overdue timer fires once.

use std::time::Duration;

use crate::common::{ADMIN, Launch, Server, client, get};
use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_enter_journeys_and_waits_fire() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(Launch {
        data_dir: &dir.path().join("data"),
        store: None,
        configured_keys: true,
    });
    let c = client();
    put_and_publish(&c, &server.base, &greet_journey("1s")).await;
    enter(&c, &server.base, 20).await;
    let (state, templates) = progress(&c, &server.base, "g0").await;
    assert_eq!(
        (state.as_str(), templates),
        ("active", vec!["hello".to_owned()]),
        "the first step runs in the ingest transaction"
    );
    let (_, stats) = get(&c, &server.base, ADMIN, "/v1/journeys/greet/stats").await;
    assert_eq!(
        (
            stats["active"].as_u64(),
            stats["nodes"]["pause"]["waiting"].as_u64()
        ),
        (Some(20), Some(20)),
        "{stats}"
    );
    wait_until_completed(&c, &server.base, 20, Duration::from_secs(15)).await;
    for u in 0..20 {
        assert_eq!(
            progress(&c, &server.base, &format!("g{u}")).await.1,
            ["hello", "bye"]
        );
    }
    let (_, stats) = get(&c, &server.base, ADMIN, "/v1/journeys/greet/stats").await;
    assert_eq!(
        (stats["instances"].as_u64(), stats["completed"].as_u64()),
        (Some(20), Some(20)),
        "{stats}"
    );
    assert_eq!(
        (
            stats["nodes"]["pause"]["entered"].as_u64(),
            stats["nodes"]["pause"]["passed"].as_u64()
        ),
        (Some(20), Some(20)),
        "{stats}"
    );
    assert_eq!(
        get(&c, &server.base, ADMIN, "/v1/journeys/ghost/stats")
            .await
            .0,
        404
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overdue_timers_fire_once_after_kill_9() {
    kill_9_while_waiting(None).await;
}

#[cfg(feature = "backend-tests")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overdue_timers_fire_once_after_kill_9_on_postgres() {
    let url = crate::common::fresh_postgres_url().await;
    kill_9_while_waiting(Some(&url)).await;
}
