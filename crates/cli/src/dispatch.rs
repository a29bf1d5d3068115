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

use serde_json::{Value, json};
use waymark_store::{Delivery, MessageEvent, OutboxItem, Store, wall_clock_ms};

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
/// Calls in flight at once.
const IN_FLIGHT: usize = 1_024;
/// Rows claimed and not yet recorded: those in flight, those waiting for a call slot and
/// those whose outcome waits to be recorded. More than `IN_FLIGHT`, so that while the
/// store commits one batch of outcomes (behind a busy ingest, that can take a few hundred
/// milliseconds) the next calls are already running; with claims and records each waiting
/// a commit, the rows moved per commit, not the calls, were the limit.
const CLAIMED_AHEAD: usize = 4 * IN_FLIGHT;

/// The HTTP client webhooks (and SMS and push providers) are called with: HTTP/1.1 and
/// HTTPS (rustls, system roots plus `webhooks.ca_file`), connections kept per host, no
/// redirects followed, and addresses in `webhooks.denied_networks` never connected to.
/// `same_host_redirects` gives the client webhooks with `follow_redirects` use instead.
///
/// As many idle connections are kept per host as calls may be in flight: with fewer, each
/// burst of calls to one busy host (a provider API, a CRM) closed most of its connections
/// and opened them again for the next burst.
pub fn client(
    config: &crate::config::Webhooks,
    same_host_redirects: bool,
) -> Result<reqwest::Client, String> {
    let policy = if same_host_redirects {
        // At most 5 hops, each to the host the call was made to: a redirect to another
        // host would carry this call's headers (and body) there.
        reqwest::redirect::Policy::custom(|attempt| {
            let same = attempt.previous().first().is_some_and(|first| {
                first.host_str() == attempt.url().host_str()
                    && first.port_or_known_default() == attempt.url().port_or_known_default()
            });
            if attempt.previous().len() > 5 {
                attempt.error("more than 5 redirects")
            } else if same {
                attempt.follow()
            } else {
                attempt.error("a redirect to another host is not followed")
            }
        })
    } else {
        reqwest::redirect::Policy::none()
    };
    let denied = config.denied_networks()?;
    let mut builder = crate::http::client_builder()
        .pool_max_idle_per_host(IN_FLIGHT)
        .redirect(policy);
    if !denied.is_empty() {
        builder = builder.dns_resolver(Arc::new(crate::http::FilteredResolver::new(denied)));
    }
    if let Some(path) = &config.ca_file {
        let pem =
            std::fs::read(path).map_err(|e| format!("webhooks.ca_file {}: {e}", path.display()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| format!("webhooks.ca_file {}: {e}", path.display()))?;
        if certs.is_empty() {
            return Err(format!(
                "webhooks.ca_file {}: no PEM certificates in it",
                path.display()
            ));
        }
        builder = builder.tls_certs_merge(certs);
    }
    builder
        .build()
        .map_err(|e| format!("cannot build the webhook HTTP client: {e}"))
}

/// Which webhook URLs may be called (`webhooks.allowed_hosts`, `webhooks.denied_networks`).
#[derive(Default)]
pub struct WebhookPolicy {
    /// The client for webhooks that follow same-host redirects.
    pub following: Option<reqwest::Client>,
    /// Hosts calls may go to (`api.example.com`, or `*.example.com` for its subdomains);
    /// empty allows every host.
    pub allowed_hosts: Vec<String>,
    /// Networks no call may reach; checked on IP-literal URLs here and on every resolved
    /// address by the client's resolver.
    pub denied_networks: Vec<ipnet::IpNet>,
}

impl WebhookPolicy {
    /// Why a call to `url` may not be made, if it may not.
    fn refuses(&self, url: &reqwest::Url) -> Option<String> {
        let host = url.host_str()?;
        if !self.allowed_hosts.is_empty()
            && !self
                .allowed_hosts
                .iter()
                .any(|allowed| match allowed.strip_prefix("*.") {
                    Some(domain) => host
                        .strip_suffix(domain)
                        .is_some_and(|sub| sub.ends_with('.')),
                    None => host.eq_ignore_ascii_case(allowed),
                })
        {
            return Some(format!("host {host} is not in webhooks.allowed_hosts"));
        }
        let ip = match url.host()? {
            url::Host::Ipv4(ip) => std::net::IpAddr::V4(ip),
            url::Host::Ipv6(ip) => std::net::IpAddr::V6(ip),
            url::Host::Domain(_) => return None,
        };
        self.denied_networks
            .iter()
            .find(|net| net.contains(&ip))
            .map(|net| format!("{ip} is in a denied network ({net})"))
    }
}

/// What deliveries need besides the HTTP client: channel configuration.
#[derive(Default)]
pub struct Channels {
    pub sms: Option<crate::sms::SmsSender>,
    pub email: Option<Arc<crate::email::Mailer>>,
    pub push: Option<Arc<crate::push::Pusher>>,
    pub direct_mail: Option<Arc<crate::direct_mail::Extractor>>,
    /// Standard Webhooks signing key for webhook calls.
    pub webhook_key: Option<Vec<u8>>,
    /// Soft bounces before an address is suppressed (`governance.soft_bounce_limit`).
    pub soft_bounce_limit: u32,
    /// How long a message may keep being retried after it was decided
    /// (`governance.retry_window`).
    pub retry_window_ms: i64,
    /// Sends per second allowed per channel (`governance.throttle`).
    pub throttles: std::collections::HashMap<String, Pace>,
    /// How long a claimed row stays ours unless renewed (`outbox.lease`).
    pub lease_ms: i64,
    pub webhooks: WebhookPolicy,
}

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
async fn pace(store: &dyn Store, channels: &Channels, item: &OutboxItem) -> Option<i64> {
    if item.kind != "message" {
        return None;
    }
    let channel = item.effect["channel"].as_str()?;
    let pace = channels.throttles.get(channel)?;
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
async fn record_bounce(store: &dyn Store, item: &OutboxItem, bounce: Bounce, limit: u32) {
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

pub async fn run(store: Arc<dyn Store>, client: reqwest::Client, channels: Channels) {
    let channels = Arc::new(channels);
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
    let lease_ms = channels.lease_ms;
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
            let (outcomes, client, channels) = (outcomes.clone(), client.clone(), channels.clone());
            let (store, calls) = (store.clone(), calls.clone());
            tokio::spawn(async move {
                let delivery = deliver_claimed(&client, &store, &channels, &calls, &item).await;
                // If the recorder is gone the server is stopping; the lease brings it back.
                let _ = outcomes.send((item, delivery, permit)).await;
            });
        }
    }
}

/// Paces, waits for a call slot and delivers one claimed row.
async fn deliver_claimed(
    client: &reqwest::Client,
    store: &Arc<dyn Store>,
    channels: &Channels,
    calls: &tokio::sync::Semaphore,
    item: &OutboxItem,
) -> Delivery {
    if let Some(at) = pace(store.as_ref(), channels, item).await {
        return Delivery::Deferred { at };
    }
    let Ok(_call) = calls.acquire().await else {
        return Delivery::Deferred {
            at: wall_clock_ms(),
        };
    };
    let (delivery, bounce) = deliver(client, store, channels, item).await;
    if let Some(bounce) = bounce {
        record_bounce(store.as_ref(), item, bounce, channels.soft_bounce_limit).await;
    }
    let outcome = match &delivery {
        Delivery::Delivered(_) => "delivered",
        Delivery::Retry { .. } => "retry",
        Delivery::Deferred { .. } => "deferred",
        Delivery::Failed(_) => "failed",
    };
    metrics::counter!("waymark_outbox_deliveries_total", "kind" => item.kind.clone(), "outcome" => outcome).increment(1);
    if item.kind == "message" {
        let channel = item.effect["channel"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
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

/// How long a failed attempt waits for the next: how many, or until when.
#[derive(Debug, Clone, Copy)]
pub enum Retry {
    /// This many retries after the first attempt (webhooks: the node's `retries`).
    Attempts(u32),
    /// Retries until this long after the effect was recorded (messages).
    Window(i64),
}

async fn deliver(
    client: &reqwest::Client,
    store: &Arc<dyn Store>,
    channels: &Channels,
    item: &OutboxItem,
) -> (Delivery, Option<Bounce>) {
    let retry = Retry::Window(channels.retry_window_ms);
    let not_configured = |what: &str, section: &str| {
        Delivery::Failed(format!(
            "{what} is not configured ([{section}] in the configuration)"
        ))
    };
    let channel = item.effect["channel"].as_str().unwrap_or_default();
    let delivery = match (item.kind.as_str(), channel) {
        ("webhook", _) => webhook(client, channels, item).await,
        // Email and SMS also say what a failure means for the address.
        ("message", "email") => {
            return match &channels.email {
                Some(mailer) => mailer.send(item, retry).await,
                None => (not_configured("email", "email"), None),
            };
        }
        ("message", "sms") => {
            return crate::sms::send(client, channels.sms.as_ref(), item, retry).await;
        }
        ("message", "push") => match &channels.push {
            Some(pusher) => pusher.send(client, store, item, retry).await,
            None => not_configured("push", "push"),
        },
        ("message", "direct_mail") => match &channels.direct_mail {
            Some(extractor) => extractor.append(item).await,
            None => not_configured("direct mail", "direct_mail"),
        },
        // Held by quiet hours until now; the inbox shows it once it is done.
        ("message", "in_app") => Delivery::Delivered(Value::Null),
        // `log` messages are done when recorded; a channel without a sender cannot deliver.
        ("message", _) => {
            Delivery::Failed(format!("channel {} cannot send", item.effect["channel"]))
        }
        // Applied by the store when it records the delivery.
        ("update_profile", _) => Delivery::Delivered(Value::Null),
        // Carried out by the store when it records the delivery: the person enters the target.
        ("jump", _) => Delivery::Delivered(Value::Null),
        (other, _) => Delivery::Failed(format!("{other} effects are not supported yet")),
    };
    (delivery, None)
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

/// Most bytes of a webhook's response body kept (in the outbox and the journey context);
/// the rest is not read.
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024;

async fn webhook(client: &reqwest::Client, channels: &Channels, item: &OutboxItem) -> Delivery {
    let e = &item.effect;
    let key = channels.webhook_key.as_deref();
    let retries = e["retries"].as_u64().unwrap_or(3) as u32;
    // Clamped for journeys published before the limit was checked.
    let timeout = Duration::from_millis(
        e["timeout_ms"]
            .as_u64()
            .unwrap_or(10_000)
            .min(waymark_core::journey::MAX_WEBHOOK_TIMEOUT_MS as u64),
    );
    let method = reqwest::Method::from_bytes(e["method"].as_str().unwrap_or("POST").as_bytes())
        .unwrap_or(reqwest::Method::POST);
    let url = match reqwest::Url::parse(e["url"].as_str().unwrap_or_default()) {
        Ok(url) => url,
        Err(err) => return Delivery::Failed(format!("invalid URL: {err}")),
    };
    if let Some(why) = channels.webhooks.refuses(&url) {
        return Delivery::Failed(format!("not called: {why}"));
    }
    let client = match (
        &channels.webhooks.following,
        e["follow_redirects"].as_bool(),
    ) {
        (Some(following), Some(true)) => following,
        _ => client,
    };
    let mut request = client
        .request(method, url)
        .timeout(timeout)
        .header("idempotency-key", &item.key)
        .header("webhook-id", &item.key);
    for (name, value) in e["headers"].as_object().into_iter().flatten() {
        if let Some(v) = value.as_str() {
            request = request.header(name.as_str(), v);
        }
    }
    let body = if e["body"].is_null() {
        Vec::new()
    } else {
        request = request.header(reqwest::header::CONTENT_TYPE, "application/json");
        serde_json::to_vec(&e["body"]).unwrap_or_default()
    };
    if let Some(key) = key {
        // Signed over the exact bytes sent; the timestamp lets receivers refuse replays.
        let timestamp = wall_clock_ms() / 1000;
        request = request
            .header("webhook-timestamp", timestamp.to_string())
            .header(
                "webhook-signature",
                waymark_core::links::webhook_signature(key, &item.key, timestamp, &body),
            );
    }
    if !body.is_empty() {
        request = request.body(body);
    }
    let retry_or_fail = |error: String| retry_or_fail(item, Retry::Attempts(retries), error);
    match request.send().await {
        Ok(response) if response.status().is_success() => {
            let status = response.status().as_u16();
            let (bytes, truncated) = read_capped(response, MAX_RESPONSE_BYTES).await;
            if truncated {
                let text = String::from_utf8_lossy(&bytes).into_owned();
                return Delivery::Delivered(
                    json!({"status": status, "body": text, "truncated": true}),
                );
            }
            let text = String::from_utf8_lossy(&bytes).into_owned();
            let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
            Delivery::Delivered(json!({"status": status, "body": body}))
        }
        Ok(response) if response.status().is_redirection() => Delivery::Failed(format!(
            "HTTP {} redirect not followed (to {}); set follow_redirects for same-host redirects",
            response.status(),
            response
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("?")
        )),
        Ok(response) if provider_busy(response.status()) => {
            retry_or_fail(format!("HTTP {}", response.status()))
        }
        Ok(response) => Delivery::Failed(format!("HTTP {}", response.status())),
        Err(err) if err.is_timeout() => retry_or_fail(format!("timed out after {timeout:?}")),
        Err(err) => retry_or_fail(format!("request failed: {}", with_causes(&err))),
    }
}

/// At most `cap` bytes of a response body, and whether there was more (left unread).
async fn read_capped(mut response: reqwest::Response, cap: usize) -> (Vec<u8>, bool) {
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
