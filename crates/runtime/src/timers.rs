//! The timer service: fires due journey timers in due order, and decides the audiences of
//! people whose check is due (a rule time flips, a backfill). The due indexes are the source
//! of truth, so a restart fires everything that came due while the server was down.

use std::sync::Arc;
use std::time::Duration;

use waymark_store::{Store, wall_clock_ms};

/// Most timers (and, after them, most audience checks) done in one transaction.
const BATCH: u32 = 1000;
/// How long the service waits when nothing more is due.
const IDLE: Duration = Duration::from_millis(50);

pub async fn run(store: Arc<dyn Store>) {
    loop {
        let fired = store.fire_due_timers(wall_clock_ms(), BATCH).await;
        if let Ok(n) = fired {
            metrics::counter!("waymark_journey_timers_fired_total").increment(n as u64);
        }
        match fired {
            // A full batch of either: more may be due.
            Ok(n) if n as u32 >= BATCH => continue,
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "firing journey timers failed; retrying"),
        }
        tokio::time::sleep(IDLE).await;
    }
}
