//! The outbox dispatcher: delivers effects that journeys recorded (webhooks, profile
//! updates), with an idempotency key on every call, retries with exponential backoff, and
//! the final outcome fed back to the journey by the store in one transaction.
//!
//! Delivery is at least once: a claim is a lease, so if the server dies mid-call the row
//! comes due again and the call is repeated with the same `Idempotency-Key`, which lets the
//! receiver drop the repeat. A journey step itself is never repeated: completing a row twice
//! changes nothing the second time.

use std::sync::Arc;
use std::time::Duration;

use waymark_store::{Delivery, OutboxItem, Store, wall_clock_ms};

use crate::channels::Channels;
use crate::delivery::{IN_FLIGHT, Retry, record_bounce};
use crate::pace::{Pace, pace};

/// How the dispatcher delivers, besides the channels.
#[derive(Default)]
pub struct Settings {
    /// Soft bounces before an address is suppressed (`governance.soft_bounce_limit`).
    pub soft_bounce_limit: u32,
    /// How long a message may keep being retried after it was decided
    /// (`governance.retry_window`).
    pub retry_window_ms: i64,
    /// Sends per second allowed per channel (`governance.throttle`).
    pub throttles: std::collections::HashMap<String, Pace>,
    /// How long a claimed row stays ours unless renewed (`outbox.lease`).
    pub lease_ms: i64,
}

struct Dispatch {
    channels: Channels,
    settings: Settings,
}

// How long a claimed row is ours before another dispatcher (or this one after a restart)
// may take it again is `Channels::lease_ms` (`outbox.lease`). While this process holds a
// row, from its claim until its outcome is committed, however long a slot, a provider or
// the store takes, its lease is renewed four times per lease; so only a process that died
// lets a lease run out.
/// How long the dispatcher waits before looking again when nothing was due, on a store that
/// cannot signal new rows: the most an effect waits to start once committed.
const IDLE_POLL: Duration = Duration::from_millis(20);
/// The same on a store that signals its commits: then only rows that come due by time
/// (retries, held messages) wait for it.
const IDLE_POLL_SIGNALLED: Duration = Duration::from_millis(100);
const COALESCE: Duration = Duration::from_millis(5);
/// Most rows claimed in one store call.
const BATCH: u32 = 1_024;
/// Rows claimed and not yet recorded: those in flight, those waiting for a call slot and
/// those whose outcome waits to be recorded. More than `IN_FLIGHT`, so that while the
/// store commits one batch of outcomes (behind a busy ingest, that can take a few hundred
/// milliseconds) the next calls are already running; with claims and records each waiting
/// a commit, the rows moved per commit, not the calls, were the limit.
const CLAIMED_AHEAD: usize = 4 * IN_FLIGHT;

/// The rows this process has claimed and not yet recorded, and whether outcomes can be
/// recorded at all right now.
#[derive(Default)]
struct Held {
    seqs: std::sync::Mutex<std::collections::HashSet<i64>>,
    /// Set while recording outcomes fails (a full disk, a store that cannot commit): no
    /// more rows are claimed until it commits again.
    recording_fails: std::sync::atomic::AtomicBool,
}

impl Held {
    fn seqs(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<i64>> {
        self.seqs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Renews the leases of every row this process holds, so none runs out while its delivery
/// or its outcome is still on its way.
async fn renew_leases(store: Arc<dyn Store>, held: Arc<Held>, lease_ms: i64) {
    let mut tick = tokio::time::interval(Duration::from_millis((lease_ms / 4) as u64));
    loop {
        tick.tick().await;
        let seqs: Vec<i64> = held.seqs().iter().copied().collect();
        if seqs.is_empty() {
            continue;
        }
        if let Err(e) = store
            .renew_outbox_leases(&seqs, wall_clock_ms() + lease_ms)
            .await
        {
            tracing::warn!(error = %e, rows = seqs.len(), "could not renew outbox leases; trying again");
        }
    }
}

pub async fn run(store: Arc<dyn Store>, channels: Channels, settings: Settings) {
    let dispatch = Arc::new(Dispatch { channels, settings });
    match store.release_outbox_leases().await {
        Ok(0) => {}
        Ok(n) => tracing::info!(
            rows = n,
            "redelivering outbox rows claimed before the last stop"
        ),
        Err(e) => tracing::warn!(error = %e, "could not release outbox leases; they will expire"),
    }
    // Deliveries run as independent tasks. A row holds a claim permit from its claim until
    // its outcome is recorded, and a call permit only while it is being delivered; the loop
    // claims more as soon as claim permits are free.
    let activity = store.outbox_activity();
    let held = Arc::new(Held::default());
    let lease_ms = dispatch.settings.lease_ms;
    tokio::spawn(renew_leases(store.clone(), held.clone(), lease_ms));
    let claimed = Arc::new(tokio::sync::Semaphore::new(CLAIMED_AHEAD));
    let calls = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
    let (outcomes, recorder_rx) = tokio::sync::mpsc::channel::<Outcome>(CLAIMED_AHEAD);
    tokio::spawn(record_outcomes(store.clone(), recorder_rx, held.clone()));
    loop {
        if held
            .recording_fails
            .load(std::sync::atomic::Ordering::Acquire)
        {
            // Calls made now could not be recorded either; rows stay in the store.
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        let room = claimed.available_permits().min(BATCH as usize) as u32;
        if room == 0 {
            // Wait until at least one outcome is recorded.
            if let Ok(p) = claimed.clone().acquire_owned().await {
                drop(p);
            }
            continue;
        }
        let items = match store.claim_outbox(wall_clock_ms(), room, lease_ms).await {
            Ok(items) => items,
            Err(e) => {
                tracing::warn!(error = %e, "claiming outbox rows failed; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        if items.is_empty() {
            match &activity {
                Some(commits) => {
                    let _ = tokio::time::timeout(IDLE_POLL_SIGNALLED, commits.notified()).await;
                    // Let the commits of the next few milliseconds join this claim: claims
                    // of a few rows each made for as many small outcome commits.
                    tokio::time::sleep(COALESCE).await;
                }
                None => tokio::time::sleep(IDLE_POLL).await,
            }
            continue;
        }
        for item in items {
            // Already on its way (its lease ran out while it was held, which renewal
            // prevents unless the store could not be reached): never a second delivery.
            if !held.seqs().insert(item.seq) {
                continue;
            }
            let Ok(permit) = claimed.clone().acquire_owned().await else {
                return;
            };
            let (outcomes, dispatch) = (outcomes.clone(), dispatch.clone());
            let (store, calls) = (store.clone(), calls.clone());
            tokio::spawn(async move {
                let delivery = deliver_claimed(&store, &dispatch, &calls, &item).await;
                // If the recorder is gone the server is stopping; the lease brings it back.
                let _ = outcomes.send((item, delivery, permit)).await;
            });
        }
    }
}

/// Paces, waits for a call slot and delivers one claimed row.
async fn deliver_claimed(
    store: &Arc<dyn Store>,
    dispatch: &Dispatch,
    calls: &tokio::sync::Semaphore,
    item: &OutboxItem,
) -> Delivery {
    if let Some(at) = pace(store.as_ref(), &dispatch.settings.throttles, item).await {
        return Delivery::Deferred { at };
    }
    let Ok(_call) = calls.acquire().await else {
        return Delivery::Deferred {
            at: wall_clock_ms(),
        };
    };
    let retry = Retry::Window(dispatch.settings.retry_window_ms);
    let attempt = dispatch.channels.deliver(item, retry).await;
    let delivery = attempt.delivery;
    if let Some(bounce) = attempt.bounce {
        let limit = dispatch.settings.soft_bounce_limit;
        record_bounce(store.as_ref(), item, bounce, limit).await;
    }
    let outcome = match &delivery {
        Delivery::Delivered(_) => "delivered",
        Delivery::Retry { .. } => "retry",
        Delivery::Deferred { .. } => "deferred",
        Delivery::Failed(_) => "failed",
    };
    metrics::counter!("waymark_outbox_deliveries_total", "kind" => item.effect.kind(), "outcome" => outcome).increment(1);
    if let Some(message) = item.message() {
        let channel = message.channel.clone();
        // Taken by the provider is `sent`; `delivered` is what it may report later.
        let outcome = if outcome == "delivered" {
            "sent"
        } else {
            outcome
        };
        metrics::counter!("waymark_messages_total", "channel" => channel, "outcome" => outcome)
            .increment(1);
    }
    delivery
}

/// A finished delivery on its way to the store, holding its in-flight slot.
type Outcome = (OutboxItem, Delivery, tokio::sync::OwnedSemaphorePermit);

/// Most outcomes recorded in one store call.
const RECORD_BATCH: usize = CLAIMED_AHEAD;

/// Records outcomes in batches: whatever finished while the last batch was being committed
/// goes into the next one, so under load one transaction records hundreds of deliveries
/// (and moves their journeys on) instead of one each.
async fn record_outcomes(
    store: Arc<dyn Store>,
    mut rx: tokio::sync::mpsc::Receiver<Outcome>,
    held: Arc<Held>,
) {
    let mut batch = Vec::with_capacity(RECORD_BATCH);
    while rx.recv_many(&mut batch, RECORD_BATCH).await > 0 {
        let mut permits = Vec::with_capacity(batch.len());
        let done: Arc<[(OutboxItem, Delivery)]> = batch
            .drain(..)
            .map(|(item, delivery, permit)| {
                permits.push(permit);
                (item, delivery)
            })
            .collect();
        let count = done.len();
        record_until_committed(store.as_ref(), done.clone(), &held).await;
        {
            let mut seqs = held.seqs();
            for (item, _) in done.iter() {
                seqs.remove(&item.seq);
            }
        }
        metrics::histogram!("waymark_outbox_record_batch_size").record(count as f64);
        drop(permits);
    }
}

/// Pauses between attempts to record a batch of outcomes, after a failed commit; the last
/// one repeats.
const RECORD_RETRY_PAUSES_MS: [u64; 7] = [20, 50, 100, 250, 500, 1_000, 5_000];

/// The calls were made, so their outcomes are kept and recorded, however long the store
/// takes to commit again: given up, the rows would come due again and be delivered twice.
/// While it fails, no more rows are claimed (their leases are renewed meanwhile).
/// Completing an outbox row is idempotent (only a pending row changes), so rows a failed
/// try did record are skipped by the next.
async fn record_until_committed(
    store: &dyn Store,
    done: Arc<[(OutboxItem, Delivery)]>,
    held: &Held,
) {
    let count = done.len();
    let mut attempt = 0usize;
    loop {
        match store
            .complete_outbox_many(done.clone(), wall_clock_ms())
            .await
        {
            Ok(()) => {
                if held
                    .recording_fails
                    .swap(false, std::sync::atomic::Ordering::AcqRel)
                {
                    tracing::info!("recording deliveries works again; claiming resumes");
                }
                return;
            }
            Err(e) => {
                if attempt == 2 {
                    held.recording_fails
                        .store(true, std::sync::atomic::Ordering::Release);
                    tracing::error!(error = %e, deliveries = count, "recording deliveries keeps failing; no more rows are claimed until it works");
                } else {
                    tracing::warn!(error = %e, deliveries = count, attempt = attempt + 1, "recording deliveries failed; trying again");
                }
                metrics::counter!("waymark_outbox_record_failures_total").increment(1);
                let pause = RECORD_RETRY_PAUSES_MS[attempt.min(RECORD_RETRY_PAUSES_MS.len() - 1)];
                tokio::time::sleep(Duration::from_millis(pause)).await;
                attempt += 1;
            }
        }
    }
}
