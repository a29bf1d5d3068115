//! Hot paths of ingest that run for every event: parsing a Segment batch, and planning
//! identity resolution for it. Run: `cargo bench -p waymark-core`.

use divan::Bencher;
use serde_json::{Value, json};
use waymark_core::ingest::{WorkingSet, lookups, plan};
use waymark_core::segment::{Receipt, parse_batch};

fn main() {
    divan::main();
}

fn batch_body(n: usize) -> Vec<u8> {
    let items: Vec<Value> = (0..n)
        .map(|i| {
            if i % 10 == 0 {
                json!({"type": "identify", "messageId": format!("m-{i}"), "userId": format!("u{i}"), "anonymousId": format!("a{i}"),
                    "traits": {"email": format!("u{i}@example.com"), "plan": "pro", "seq": i}})
            } else {
                json!({"type": "track", "messageId": format!("m-{i}"), "userId": format!("u{i}"), "event": "Product Viewed",
                    "properties": {"product_id": format!("sku-{i}"), "price": 19.99, "currency": "EUR"},
                    "context": {"library": {"name": "bench", "version": "1"}}})
            }
        })
        .collect();
    serde_json::to_vec(&json!({"batch": items, "sentAt": "2026-11-29T12:00:00Z"})).expect("json")
}

#[divan::bench]
fn parse_batch_of_100(bencher: Bencher) {
    let body = batch_body(100);
    bencher
        .counter(divan::counter::ItemsCount::new(100usize))
        .bench(|| {
            let mut id = || String::from("generated");
            let mut receipt = Receipt {
                received_at: 1_800_000_000_000,
                new_message_id: &mut id,
            };
            parse_batch(divan::black_box(&body), &mut receipt).expect("valid")
        });
}

#[divan::bench]
fn plan_batch_of_100_new_profiles(bencher: Bencher) {
    let body = batch_body(100);
    let mut id = || String::from("generated");
    let events = parse_batch(
        &body,
        &mut Receipt {
            received_at: 1_800_000_000_000,
            new_message_id: &mut id,
        },
    )
    .expect("valid")
    .events;
    bencher
        .counter(divan::counter::ItemsCount::new(100usize))
        .bench(|| {
            let _ = lookups(&events);
            let mut n = 0u64;
            plan(
                WorkingSet::default(),
                divan::black_box(&events),
                64,
                0,
                &mut || {
                    n += 1;
                    format!("profile-{n}")
                },
            )
        });
}

#[divan::bench]
fn serialize_event_for_storage(bencher: Bencher) {
    let body = batch_body(10);
    let mut id = || String::from("generated");
    let events = parse_batch(
        &body,
        &mut Receipt {
            received_at: 1_800_000_000_000,
            new_message_id: &mut id,
        },
    )
    .expect("valid")
    .events;
    bencher.bench(|| serde_json::to_string(divan::black_box(&events[1])).expect("json"));
}
