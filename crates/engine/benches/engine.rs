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
    bencher.bench(|| {
        let mut state = JourneyState::default();
        let effects = apply(
            &journey,
            &mut state,
            Input::Event(divan::black_box(&event)),
            &Ctx {
                profile: &profile,
                now: 1_800_000_000_000,
            },
        );
        // The message and the webhook (the deadline timer is stored only once an instance
        // waits into the future).
        assert_eq!(effects.len(), 2);
        state
    });
}
