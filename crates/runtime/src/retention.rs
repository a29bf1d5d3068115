//! Retention: once an hour, what is past `retention` (events, finished messages) goes.

use std::sync::Arc;
use std::time::Duration;

use waymark_store::{Store, wall_clock_ms};

pub async fn run(store: Arc<dyn Store>) {
    let mut tick = tokio::time::interval(Duration::from_secs(3600));
    loop {
        tick.tick().await;
        match store.prune_expired(wall_clock_ms()).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(deleted = n, "pruned events past retention"),
            Err(e) => tracing::warn!(error = %e, "retention pruning failed"),
        }
    }
}
