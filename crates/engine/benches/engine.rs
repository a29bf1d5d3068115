//! The pure engine's cost per input, with no storage: an upper bound for the durable step
//! rate the runtime can reach. Run: `cargo bench -p waymark-engine`.

use divan::Bencher;
use serde_json::json;
use waymark_core::ProfileState;
use waymark_core::journey::{Format, parse};
use waymark_core::segment::{Receipt, parse_batch};
use waymark_engine::{Ctx, Input, JourneyState, apply, compile};

fn main() {
    divan::main();
}

const WELCOME: &str = include_str!("../../../examples/journeys/welcome.yaml");

/// One sign-up on the pro path: message, condition, webhook (waits for its result).
#[divan::bench]
fn entry_through_three_nodes(bencher: Bencher) {
    let journey = compile(parse(WELCOME, Format::Yaml).expect("parses"), 1).expect("valid");
    let body = serde_json::to_vec(&json!({"batch": [{"type": "track", "userId": "ada", "event": "Signed Up", "properties": {"plan": "pro"}}]})).expect("json");
    let mut id = || "m".to_string();
    let event = parse_batch(
        &body,
        &mut Receipt {
            received_at: 1_800_000_000_000,
            new_message_id: &mut id,
        },
    )
    .expect("valid")
    .events
    .remove(0);
    let profile = ProfileState::new("p1".into(), 0, 0);
    let winners = Default::default();
    bencher.bench(|| {
        let mut state = JourneyState::default();
        let effects = apply(
            &journey,
            &mut state,
            Input::Event(divan::black_box(&event)),
            &Ctx {
                profile: &profile,
                now: 1_800_000_000_000,
                winners: &winners,
            },
        );
        // The message and the webhook (the deadline timer is stored only once an instance
        // waits into the future).
        assert_eq!(effects.len(), 2);
        state
    });
}

/// One person's audience decision: a rule mixing a trait and a 30-day count, over the
/// person's 20 kept events (what a backfill or a streaming update costs in the engine).
#[divan::bench(args = [false, true])]
fn audience_rule_over_twenty_events(bencher: Bencher, with_condition: bool) {
    use waymark_core::audience::AudienceDoc;
    use waymark_engine::audience::{CompiledAudience, HistoryEvent, Person};
    let rule = if with_condition {
        r#"profile.traits.plan == "pro" && events.count("Order Completed", "30d", e, e.properties.total > 12) >= 3"#
    } else {
        r#"profile.traits.plan == "pro" && events.count("Order Completed", "30d") >= 3"#
    };
    let doc = AudienceDoc {
        key: "a".into(),
        name: None,
        description: None,
        rule: rule.into(),
        ..Default::default()
    };
    let audience = CompiledAudience::compile(&doc, 1).expect("compiles");
    let now = 1_800_000_000_000i64;
    let day = 86_400_000i64;
    let events: Vec<HistoryEvent> = (0..20)
        .map(|i| {
            let name = if i % 2 == 0 { "Order Completed" } else { "Page Viewed" };
            HistoryEvent {
                name: name.into(),
                at: now - i * 3 * day,
                body: json!({"event": name, "properties": {"total": 10 + i, "sku": "SKU-1", "category": "shoes"}}),
            }
        })
        .collect();
    let mut profile = ProfileState::new("p1".into(), 0, 0);
    profile.traits.insert("plan".into(), json!("pro"));
    profile.traits.insert("name".into(), json!("Ada"));
    let member_of = |_: &str| false;
    bencher.bench(|| {
        let e = audience.evaluate(
            &Person {
                profile: divan::black_box(&profile),
                events: &events,
                member_of: &member_of,
            },
            now,
        );
        assert!(e.member);
        e
    });
}
