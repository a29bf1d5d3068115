//! The one vocabulary every channel answers in: how long a failure may be retried, what a
//! failure says about the address (a bounce), and what counts as the provider's trouble.

use serde_json::Value;
use waymark_store::{Delivery, MessageEvent, OutboxItem, Store, wall_clock_ms};

/// Calls in flight at once, over every channel (the dispatcher's limit, and so the idle
/// connections worth keeping per host).
pub const IN_FLIGHT: usize = 1_024;

/// What one delivery attempt came to: the outcome to record, and what a failure says about
/// the address it went to.
#[derive(Debug)]
pub struct Attempt {
    pub delivery: Delivery,
    pub bounce: Option<Bounce>,
}

impl From<Delivery> for Attempt {
    fn from(delivery: Delivery) -> Self {
        Self {
            delivery,
            bounce: None,
        }
    }
}

impl Attempt {
    pub fn delivered(value: Value) -> Self {
        Delivery::Delivered(value).into()
    }

    pub fn failed(reason: impl Into<String>) -> Self {
        Delivery::Failed(reason.into()).into()
    }
}

/// How long a failed attempt waits for the next: how many, or until when.
#[derive(Debug, Clone, Copy)]
pub enum Retry {
    /// This many retries after the first attempt (webhooks: the node's `retries`).
    Attempts(u32),
    /// Retries until this long after the effect was recorded (messages).
    Window(i64),
}

fn backoff(attempts: u32) -> i64 {
    (500i64 << attempts.min(7)).min(60_000)
}

/// A failure worth trying again: due again after an exponential backoff while the policy
/// allows, else final (saying why it gave up).
pub fn retry_or_fail(item: &OutboxItem, retry: Retry, error: String) -> Delivery {
    let at = wall_clock_ms() + backoff(item.attempts);
    match retry {
        Retry::Attempts(n) if item.attempts < n => Delivery::Retry { at, error },
        Retry::Attempts(_) => Delivery::Failed(error),
        Retry::Window(ms) if at <= item.created_at + ms => Delivery::Retry { at, error },
        Retry::Window(ms) => Delivery::Failed(format!(
            "{error} (gave up after {} attempts: the retry window of {} s ends before the next)",
            item.attempts + 1,
            ms / 1000
        )),
    }
}

/// What a failed message says about its address, for the suppression list.
#[derive(Debug)]
pub enum Bounce {
    /// The address cannot receive: suppressed now, for `reason` (`governance::REASONS`).
    Hard {
        reason: &'static str,
        detail: String,
    },
    /// A temporary refusal that outlasted the retries: counted, suppressed at the limit.
    Soft(String),
}

/// Puts a bounced address on the suppression list (or counts a soft bounce), and marks a
/// hard-bounced message `bounced`. A failure here is logged: the message's own outcome is
/// recorded regardless.
pub(crate) async fn record_bounce(
    store: &dyn Store,
    item: &OutboxItem,
    bounce: Bounce,
    limit: u32,
) {
    let Some((channel, address)) = item.suppressible_address() else {
        return;
    };
    let now = wall_clock_ms();
    let result = match &bounce {
        Bounce::Hard { reason, detail } => {
            let report = MessageEvent {
                status: waymark_core::delivery::BOUNCED.into(),
                detail: detail.clone(),
                at: now,
            };
            // The list matters more than the message's record: suppress either way.
            if let Err(e) = store.record_message_event(&item.key, report).await {
                tracing::warn!(error = %e, channel, "could not mark a bounced message");
            }
            store.suppress(channel, &address, reason, detail, now).await
        }
        Bounce::Soft(detail) => store
            .soft_bounce(channel, &address, detail, limit, now)
            .await
            .map(|_| ()),
    };
    let kind = if matches!(bounce, Bounce::Hard { .. }) {
        "hard"
    } else {
        "soft"
    };
    metrics::counter!("waymark_bounces_total", "channel" => channel.to_owned(), "kind" => kind)
        .increment(1);
    if let Err(e) = result {
        tracing::warn!(error = %e, channel, "could not record a bounce on the suppression list");
    }
}

/// An answer that is the far side's trouble, not the request's (5xx, or 429 Too Many
/// Requests): worth trying again later.
pub fn provider_busy(status: reqwest::StatusCode) -> bool {
    status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS
}

/// An error with its causes ("error sending request: ... : invalid peer certificate: ..."):
/// reqwest's own message alone does not say why a call failed.
pub fn with_causes(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

/// At most `cap` bytes of a response body, and whether there was more (left unread).
pub async fn read_capped(mut response: reqwest::Response, cap: usize) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        let room = cap - out.len();
        if chunk.len() > room {
            out.extend_from_slice(&chunk[..room]);
            return (out, true);
        }
        out.extend_from_slice(&chunk);
    }
    (out, false)
}
