//! Per-channel pacing (`governance.throttle`): each send takes a slot, shared through the
//! store when several processes send (PostgreSQL), else this process's own.

use std::collections::HashMap;
use std::time::Duration;

use waymark_store::{OutboxItem, Store, wall_clock_ms};

/// How long a throttled send may wait in its task for its slot; a later slot sends the
/// row back to the store until then, so waiting rows do not hold delivery slots other
/// channels need.
const PACE_WAIT_MS: i64 = 1_000;

/// Per-channel pacing, as GCRA: sends are `interval` apart on average, with bursts of up to
/// `burst`. Hand-rolled (a dozen lines) rather than the `governor` crate because the
/// dispatcher has to *reserve* a future slot (sleep until it, or defer the row to it and
/// give it back) where a rate limiter only answers "now or not".
pub struct Pace {
    interval_ms: f64,
    burst: f64,
    /// Theoretical arrival time: the slot after the last one reserved (ms).
    tat: std::sync::Mutex<f64>,
}

impl Pace {
    pub fn per_second(rate: u32) -> Self {
        Self {
            interval_ms: 1_000.0 / f64::from(rate.max(1)),
            burst: f64::from(rate.max(1)),
            tat: std::sync::Mutex::new(0.0),
        }
    }

    /// Reserves the next slot at or after `now`: the time this send may go.
    fn reserve(&self, now: i64) -> i64 {
        let mut tat = self
            .tat
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *tat = tat.max(now as f64);
        let slot = waymark_core::governance::gcra_slot(*tat, now, self.interval_ms, self.burst);
        *tat += self.interval_ms;
        slot
    }

    /// Gives a reserved slot back (the send was deferred instead).
    fn give_back(&self) {
        let mut tat = self
            .tat
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *tat -= self.interval_ms;
    }
}

/// Waits for the channel's next send slot, or says when to come back if it is further
/// away than `PACE_WAIT_MS`. The slot comes from the store when it is shared by several
/// processes (PostgreSQL), so together they keep to the quota; else from this process.
pub(crate) async fn pace(
    store: &dyn Store,
    throttles: &HashMap<String, Pace>,
    item: &OutboxItem,
) -> Option<i64> {
    let channel = item.message()?.channel.as_str();
    let pace = throttles.get(channel)?;
    let now = wall_clock_ms();
    let shared = store
        .reserve_send_slot(channel, pace.interval_ms, pace.burst, now)
        .await;
    let slot = match shared {
        Ok(Some(slot)) => slot,
        Ok(None) => pace.reserve(now),
        Err(e) => {
            // Sending without a slot could break the quota: try again shortly.
            tracing::warn!(error = %e, channel, "could not reserve a send slot; deferring");
            return Some(now + PACE_WAIT_MS);
        }
    };
    if slot - now > PACE_WAIT_MS {
        match shared {
            Ok(Some(_)) => {
                if let Err(e) = store.give_back_send_slot(channel, pace.interval_ms).await {
                    tracing::warn!(error = %e, channel, "could not give a send slot back");
                }
            }
            _ => pace.give_back(),
        }
        metrics::counter!("waymark_throttled_total", "channel" => channel.to_owned()).increment(1);
        return Some(slot);
    }
    if slot > now {
        tokio::time::sleep(Duration::from_millis((slot - now) as u64)).await;
    }
    None
}
