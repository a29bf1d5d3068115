//! `waymark bench ingest`: a load generator for the ingest API, so the figures in
//! BENCHMARKS.md come from a command anyone can rerun. Closed loop by default (N
//! connections, each sending as fast as answers come back); with `--rate` it is open loop,
//! and latency is measured from when each request was due, so a stalled server cannot hide
//! its queueing delay (no coordinated omission).

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use base64::Engine;
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use tokio::sync::Mutex;

#[derive(clap::Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    target: Target,
}

#[derive(clap::Subcommand)]
enum Target {
    /// Send Segment events to a running server.
    Ingest(IngestArgs),
    /// Read profiles written by an earlier `bench ingest` run.
    Profiles(ProfilesArgs),
    /// A local HTTP sink for webhook benchmarks: answers every POST with 200 `{}` and
    /// reports how many it received at `GET /count` (in total and per second).
    Sink {
        #[arg(long, default_value = "127.0.0.1:9900")]
        listen: String,
    },
}

#[derive(clap::Args, Clone)]
pub struct ProfilesArgs {
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    #[arg(long, env = "WAYMARK_ADMIN_TOKEN")]
    admin_token: String,
    /// The `run_id` the ingest run reported.
    #[arg(long)]
    run_id: String,
    /// How many profiles that run spread its events over.
    #[arg(long)]
    profiles: u64,
    /// Reads to make.
    #[arg(long, default_value_t = 100_000)]
    requests: u64,
    #[arg(long, default_value_t = 16)]
    connections: usize,
    /// Reads per second to offer (open loop); unset means as fast as possible.
    #[arg(long)]
    rate: Option<f64>,
}

#[derive(clap::Args, Clone)]
pub struct IngestArgs {
    /// Server base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    #[arg(long, env = "WAYMARK_WRITE_KEY")]
    write_key: String,
    /// Events per request: 1 uses /v1/track, more uses /v1/batch.
    #[arg(long, default_value_t = 100)]
    batch_size: usize,
    /// Total events to send.
    #[arg(long, default_value_t = 100_000)]
    events: u64,
    /// Concurrent connections.
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Distinct profiles the events are spread over.
    #[arg(long, default_value_t = 10_000)]
    profiles: u64,
    /// Events per second to offer (open loop); unset means as fast as possible.
    #[arg(long)]
    rate: Option<f64>,
    /// Prefix for message ids and user ids, so runs do not collide.
    #[arg(long)]
    run_id: Option<String>,
    /// Also send an identify with traits every Nth event (0 = never).
    #[arg(long, default_value_t = 10)]
    identify_every: u64,
    /// Identify events also register a push token (`context.device`, Android: FCM).
    #[arg(long)]
    device_tokens: bool,
    /// Append the message ids of every acknowledged request to this file.
    #[arg(long)]
    ack_log: Option<std::path::PathBuf>,
    /// Gzip request bodies.
    #[arg(long)]
    gzip: bool,
}

/// Waits until request `r` is due and returns the instant its latency is measured from.
/// A request already late when its turn comes (the server held up the ones before it) is
/// measured from when it was due, so queueing delay counts. A request whose wait ended a
/// little late only because of timer granularity is measured from when it was sent: that
/// delay is the generator's own, not the server's.
async fn pace(started: Instant, interval: Option<Duration>, r: u64) -> Instant {
    let Some(iv) = interval else {
        return Instant::now();
    };
    let due = started + iv.mul_f64(r as f64);
    if Instant::now() >= due {
        return due;
    }
    tokio::time::sleep_until(due.into()).await;
    Instant::now()
}

pub async fn run(args: BenchArgs) -> Result<(), String> {
    match args.target {
        Target::Ingest(a) => ingest(a).await,
        Target::Profiles(a) => profiles(a).await,
        Target::Sink { listen } => sink(&listen).await,
    }
}

fn event(run: &str, n: u64, profiles: u64, identify_every: u64, device_tokens: bool) -> Value {
    let user = format!("{run}-u{}", n % profiles);
    if identify_every > 0 && n.is_multiple_of(identify_every) {
        let mut e = json!({"type": "identify", "messageId": format!("{run}-{n}"), "userId": user, "anonymousId": format!("{run}-a{}", n % profiles),
            "traits": {"email": format!("{user}@example.com"), "phone": format!("+1555{:07}", n % profiles),
                       "plan": if n.is_multiple_of(3) { "pro" } else { "free" }, "seq": n}});
        if device_tokens {
            e["context"] = json!({"device": {"type": "android", "token": format!("{run}-fcm-{}", n % profiles)}});
        }
        e
    } else {
        json!({"type": "track", "messageId": format!("{run}-{n}"), "userId": user, "event": "Product Viewed",
            "properties": {"product_id": format!("sku-{}", n % 977), "price": (n % 100) as f64 + 0.99, "currency": "EUR",
                           "sent_at_ms": waymark_store::wall_clock_ms()},
            "context": {"library": {"name": "waymark-bench", "version": "1"}}})
    }
}

struct Shared {
    next: AtomicU64,
    errors: AtomicU64,
    acked_events: AtomicU64,
    latency: Mutex<Histogram<u64>>,
    ack_log: Option<Mutex<std::fs::File>>,
}

#[allow(clippy::print_stdout, reason = "the benchmark's report is its output")]
async fn ingest(a: IngestArgs) -> Result<(), String> {
    let run = a
        .run_id
        .clone()
        .unwrap_or_else(|| format!("b{}", &uuid::Uuid::new_v4().simple().to_string()[..8]));
    let client = waymark_runtime::http::client_builder()
        .pool_max_idle_per_host(a.connections)
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| e.to_string())?;
    let auth = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{}:", a.write_key))
    );
    let requests = a.events.div_ceil(a.batch_size as u64);
    let ack_log = match &a.ack_log {
        Some(p) => Some(Mutex::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .map_err(|e| e.to_string())?,
        )),
        None => None,
    };
    let shared = Arc::new(Shared {
        next: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        acked_events: AtomicU64::new(0),
        latency: Mutex::new(
            Histogram::new_with_bounds(1, 60_000_000, 3).map_err(|e| e.to_string())?,
        ),
        ack_log,
    });
    let interval = a
        .rate
        .map(|r| Duration::from_secs_f64(a.batch_size as f64 / r));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..a.connections {
        let (client, auth, shared, a, run) = (
            client.clone(),
            auth.clone(),
            shared.clone(),
            a.clone(),
            run.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut local =
                Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("bounds are valid");
            loop {
                let r = shared.next.fetch_add(1, Ordering::Relaxed);
                if r >= requests {
                    break;
                }
                let due = pace(started, interval, r).await;
                let first = r * a.batch_size as u64;
                let last = (first + a.batch_size as u64).min(a.events);
                let events: Vec<Value> = (first..last)
                    .map(|n| event(&run, n, a.profiles, a.identify_every, a.device_tokens))
                    .collect();
                let (path, body) = if a.batch_size == 1 {
                    let kind = events[0]["type"].as_str().unwrap_or("track");
                    (format!("/v1/{kind}"), events[0].clone())
                } else {
                    let body = json!({"batch": events, "sentAt": "2026-11-29T12:00:00Z"});
                    ("/v1/batch".to_owned(), body)
                };
                let mut bytes = serde_json::to_vec(&body).expect("json");
                let mut req = client
                    .post(format!("{}{}", a.url, path))
                    .header("authorization", &auth)
                    .header("content-type", "application/json");
                if a.gzip {
                    let mut enc =
                        flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                    let _ = enc.write_all(&bytes);
                    bytes = enc.finish().unwrap_or_default();
                    req = req.header("content-encoding", "gzip");
                }
                let ok = match req.body(bytes).send().await {
                    Ok(resp) => resp.status().is_success(),
                    Err(_) => false,
                };
                if ok {
                    let _ = local.record(due.elapsed().as_micros().max(1) as u64);
                    shared
                        .acked_events
                        .fetch_add(last - first, Ordering::Relaxed);
                    if let Some(log) = &shared.ack_log {
                        let ids: String = (first..last).map(|n| format!("{run}-{n}\n")).collect();
                        let mut f = log.lock().await;
                        let _ = f.write_all(ids.as_bytes());
                    }
                } else {
                    shared.errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            let _ = shared.latency.lock().await.add(&local);
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let h = shared.latency.lock().await;
    let acked = shared.acked_events.load(Ordering::Relaxed);
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    let report = json!({
        "run_id": run,
        "mode": if a.batch_size == 1 { "single (/v1/track, /v1/identify)" } else { "batch (/v1/batch)" },
        "batch_size": a.batch_size,
        "connections": a.connections,
        "offered_rate": a.rate,
        "events_acked": acked,
        "requests_acked": h.len(),
        "errors": shared.errors.load(Ordering::Relaxed),
        "seconds": (elapsed * 1000.0).round() / 1000.0,
        "events_per_second": (acked as f64 / elapsed).round(),
        "latency_ms": {"p50": ms(0.5), "p90": ms(0.9), "p99": ms(0.99), "p999": ms(0.999), "max": h.max() as f64 / 1000.0},
    });
    println!(
        "{}",
        serde_json::to_string_pretty(&report).unwrap_or_default()
    );
    Ok(())
}

#[allow(clippy::print_stdout, reason = "the benchmark's report is its output")]
async fn profiles(a: ProfilesArgs) -> Result<(), String> {
    let client = waymark_runtime::http::client_builder()
        .pool_max_idle_per_host(a.connections)
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| e.to_string())?;
    let next = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let found = Arc::new(AtomicU64::new(0));
    let total = Arc::new(Mutex::new(
        Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).map_err(|e| e.to_string())?,
    ));
    let interval = a.rate.map(|r| Duration::from_secs_f64(1.0 / r));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..a.connections {
        let (client, next, errors, found, total, a) = (
            client.clone(),
            next.clone(),
            errors.clone(),
            found.clone(),
            total.clone(),
            a.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut local =
                Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("bounds are valid");
            loop {
                let r = next.fetch_add(1, Ordering::Relaxed);
                if r >= a.requests {
                    break;
                }
                let due = pace(started, interval, r).await;
                // A multiplicative hash spreads reads over the whole keyspace.
                let user = r.wrapping_mul(0x9E37_79B9_7F4A_7C15) % a.profiles;
                let url = format!("{}/v1/profiles/user_id/{}-u{user}", a.url, a.run_id);
                match client.get(url).bearer_auth(&a.admin_token).send().await {
                    Ok(resp) if resp.status().is_success() => {
                        let _ = resp.bytes().await;
                        found.fetch_add(1, Ordering::Relaxed);
                        let _ = local.record(due.elapsed().as_micros().max(1) as u64);
                    }
                    _ => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            let _ = total.lock().await.add(&local);
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let h = total.lock().await;
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    let report = json!({
        "reads_ok": found.load(Ordering::Relaxed),
        "errors": errors.load(Ordering::Relaxed),
        "connections": a.connections,
        "offered_rate": a.rate,
        "seconds": (elapsed * 1000.0).round() / 1000.0,
        "reads_per_second": (h.len() as f64 / elapsed).round(),
        "latency_ms": {"p50": ms(0.5), "p90": ms(0.9), "p99": ms(0.99), "p999": ms(0.999), "max": h.max() as f64 / 1000.0},
    });
    println!(
        "{}",
        serde_json::to_string_pretty(&report).unwrap_or_default()
    );
    Ok(())
}

#[allow(
    clippy::print_stdout,
    reason = "tells the operator where the sink listens"
)]
async fn sink(listen: &str) -> Result<(), String> {
    // Calls whose JSON body carries `sent_at_ms` (a webhook body templated from the bench
    // event's property) also give the event-to-call latency, generator clock to sink clock
    // (same machine).
    struct Seen {
        count: AtomicU64,
        latency_us: std::sync::Mutex<Histogram<u64>>,
        /// Calls per second of wall clock (pacing), by the second's start in ms.
        per_second: std::sync::Mutex<std::collections::BTreeMap<i64, u64>>,
        /// The distinct `To` of form-encoded calls (SMS APIs): repeats show as calls over it.
        recipients: std::sync::Mutex<std::collections::HashSet<String>>,
    }
    let seen = Arc::new(Seen {
        count: AtomicU64::new(0),
        per_second: std::sync::Mutex::default(),
        recipients: std::sync::Mutex::default(),
        latency_us: std::sync::Mutex::new(
            Histogram::new_with_bounds(1, 600_000_000, 3).map_err(|e| e.to_string())?,
        ),
    });
    let hits = seen.clone();
    let app = axum::Router::new()
        .route(
            "/{*path}",
            axum::routing::post(move |body: axum::body::Bytes| {
                let hits = hits.clone();
                async move {
                    hits.count.fetch_add(1, Ordering::Relaxed);
                    let now = waymark_store::wall_clock_ms();
                    if let Ok(mut seconds) = hits.per_second.lock() {
                        *seconds.entry(now - now.rem_euclid(1000)).or_default() += 1;
                    }
                    let to = url::form_urlencoded::parse(&body)
                        .find(|(k, _)| k == "To")
                        .map(|(_, v)| v.into_owned());
                    if let (Some(to), Ok(mut seen)) = (to, hits.recipients.lock()) {
                        seen.insert(to);
                    }
                    let sent = serde_json::from_slice::<Value>(&body)
                        .ok()
                        .and_then(|b| b["sent_at_ms"].as_i64());
                    if let Some(sent) = sent {
                        let us = (waymark_store::wall_clock_ms() - sent).max(0) as u64 * 1000;
                        if let Ok(mut h) = hits.latency_us.lock() {
                            let _ = h.record(us.max(1));
                        }
                    }
                    axum::Json(json!({}))
                }
            }),
        )
        .route(
            "/count",
            axum::routing::get(move || {
                let seen = seen.clone();
                async move {
                    let latency = seen.latency_us.lock().ok().filter(|h| !h.is_empty()).map(|h| {
                        let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
                        json!({"samples": h.len(), "p50_ms": ms(0.5), "p99_ms": ms(0.99), "max_ms": h.max() as f64 / 1000.0})
                    });
                    let per_second: Vec<(i64, u64)> = seen
                        .per_second
                        .lock()
                        .map(|s| s.iter().map(|(k, v)| (*k, *v)).collect())
                        .unwrap_or_default();
                    let recipients = seen.recipients.lock().map(|r| r.len()).unwrap_or(0);
                    axum::Json(json!({"count": seen.count.load(Ordering::Relaxed), "recipients": recipients,
                        "event_to_call": latency, "per_second": per_second}))
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    println!("sink listening on http://{listen}");
    axum::serve(listener, app).await.map_err(|e| e.to_string())
}
