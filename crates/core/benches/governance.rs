//! The per-send governance decision (caps and quiet hours) for a person with a busy recent
//! history. Run: `cargo bench -p waymark-core --bench governance`.

use divan::Bencher;
use waymark_core::governance::{Cap, Policy, QuietAction, QuietHours, Sent};

fn main() {
    divan::main();
}

fn policy() -> Policy {
    Policy {
        caps: vec![
            Cap {
                channel: Some("email".into()),
                max: 3,
                window_ms: 7 * 86_400_000,
                window: "7d".into(),
            },
            Cap {
                channel: Some("sms".into()),
                max: 2,
                window_ms: 86_400_000,
                window: "1d".into(),
            },
            Cap {
                channel: None,
                max: 10,
                window_ms: 7 * 86_400_000,
                window: "7d".into(),
            },
        ],
        quiet_hours: Some(QuietHours {
            start: "21:00".into(),
            end: "08:00".into(),
            action: QuietAction::Hold,
        }),
    }
}

/// 20 messages over the last two weeks (more than any cap allows, so every cap is scanned).
fn history(now: i64) -> Vec<Sent> {
    (0..20)
        .map(|i| Sent {
            channel: if i % 3 == 0 { "sms" } else { "push" }.into(),
            at: now - i * 16 * 3_600_000,
        })
        .collect()
}

#[divan::bench]
fn decide_email_in_the_persons_zone(bencher: Bencher) {
    let p = policy();
    let now = 1_795_000_000_000; // a weekday afternoon in Berlin
    let recent = history(now);
    let zone = jiff::tz::TimeZone::get("Europe/Berlin").expect("zone");
    bencher.bench(|| {
        p.decide(
            divan::black_box("email"),
            false,
            divan::black_box(now),
            &zone,
            &recent,
        )
    });
}

#[divan::bench]
fn decide_including_the_zone_lookup(bencher: Bencher) {
    let p = policy();
    let now = 1_795_000_000_000;
    let recent = history(now);
    bencher.bench(|| {
        let zone = jiff::tz::TimeZone::get(divan::black_box("Europe/Berlin")).expect("zone");
        p.decide("email", false, now, &zone, &recent)
    });
}

/// The suppression-list check of a send: normalise the recipient, look it up among the
/// person's listed addresses (here a list of 100,000 entries, as if every person of a large
/// plan had been read).
#[divan::bench]
fn suppression_check(bencher: Bencher) {
    let listed: std::collections::HashMap<(String, String), String> = (0..100_000)
        .map(|i| {
            (
                ("email".to_owned(), format!("user{i}@example.com")),
                "hard_bounce".to_owned(),
            )
        })
        .collect();
    bencher.bench(|| {
        let address = waymark_core::governance::suppression_address(
            divan::black_box("email"),
            divan::black_box(" User4711@Example.com"),
        )
        .expect("address");
        listed.get(&("email".to_owned(), address)).cloned()
    });
}
