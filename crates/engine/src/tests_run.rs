//! The runtime functions of `run`, driven the way a store drives them: a tiny in-memory
//! store keeps states, timers and counters between plans.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{Value, json};
use waymark_core::journey::lifecycle::Status as JourneyStatus;
use waymark_core::journey::{Format, parse};
use waymark_core::segment::{Receipt, parse_batch};
use waymark_core::{Event, ProfileState};

use crate::run::{
    Catalog, EntryRate, JumpIn, Planned, TimerRow, plan_events, plan_jump, plan_timers,
    plan_webhook_result, stop_all,
};
use crate::stats::{Counts, count_states, from_counters};
use crate::{JourneyState, Status, StepKind, compile};

#[derive(Default)]
struct Memory {
    catalog: Catalog,
    states: HashMap<(String, String), JourneyState>,
    timers: Vec<TimerRow>,
    counts: Counts,
    outbox: Vec<crate::run::OutboxRow>,
}

impl Memory {
    fn publish(&mut self, yaml: &str) {
        let doc = parse(yaml, Format::Yaml).expect("parses");
        let key = doc.key.clone();
        let compiled = compile(doc, 1).unwrap_or_else(|e| panic!("{e:?}"));
        if let Some(limit) = compiled.doc.properties.entry_rate_limit {
            self.catalog.rates.insert(
                key.clone(),
                EntryRate {
                    limit,
                    window: 0,
                    used: 0,
                },
            );
        }
        self.catalog
            .journeys
            .insert(key.clone(), (JourneyStatus::Live, Some(1)));
        self.catalog.versions.insert((key, 1), Arc::new(compiled));
    }

    fn apply(&mut self, planned: Planned) {
        for (p, k, s) in planned.states {
            self.states.insert((p, k), s);
        }
        self.timers.extend(planned.timers);
        self.timers.retain(|t| {
            !planned
                .ended
                .iter()
                .any(|(p, k, i)| (p, k, *i) == (&t.profile_id, &t.journey, t.instance))
        });
        for (k, v) in planned.counts {
            *self.counts.entry(k).or_default() += v;
        }
        for (k, r) in planned.rates {
            self.catalog.rates.insert(k, r);
        }
        self.outbox.extend(planned.outbox);
    }

    fn events(&mut self, events: &[(Event, ProfileState)], now: i64) {
        let inputs: Vec<(&Event, &ProfileState)> = events.iter().map(|(e, p)| (e, p)).collect();
        let planned = plan_events(&self.catalog, self.states.clone(), &inputs, now);
        self.apply(planned);
    }

    fn fire(&mut self, profiles: &HashMap<String, ProfileState>, now: i64) {
        self.timers.sort_by_key(|t| t.due);
        let due: Vec<TimerRow> = self
            .timers
            .iter()
            .filter(|t| t.due <= now)
            .cloned()
            .collect();
        self.timers.retain(|t| t.due > now);
        let inputs: Vec<(&TimerRow, &ProfileState)> =
            due.iter().map(|t| (t, &profiles[&t.profile_id])).collect();
        let planned = plan_timers(&self.catalog, self.states.clone(), &inputs, now);
        self.apply(planned);
    }

    fn stats(&self, journey: &str) -> crate::stats::JourneyStats {
        from_counters(
            self.counts
                .iter()
                .filter(|((j, _, _), _)| j == journey)
                .map(|((_, n, c), v)| (n.as_str(), c.as_str(), *v)),
        )
    }
}

fn track(user: &str, event: &str, properties: Value, at: i64) -> (Event, ProfileState) {
    let body = serde_json::to_vec(
        &json!({"batch": [{"type": "track", "userId": user, "event": event, "properties": properties}]}),
    )
    .expect("json");
    let mut id = || format!("{user}-{event}-{at}");
    let mut events = parse_batch(
        &body,
        &mut Receipt {
            received_at: at,
            new_message_id: &mut id,
        },
    )
    .expect("valid")
    .events;
    (events.remove(0), ProfileState::new(user.into(), 0, at))
}

use crate::tests::LOOP;

/// A journey `key` that sends one email (template `key`) from node `node` on `event`.
fn one_email(key: &str, event: &str, node: &str, category: &str) -> String {
    format!(
        "key: {key}\nentry: {{ event: {event} }}\nnodes:\n  \
         - {{ id: {node}, type: message, channel: email, template: {key}, category: {category}, next: done }}\n  \
         - {{ id: done, type: end }}\n"
    )
}

#[test]
fn counters_kept_per_transaction_agree_with_counting_the_states_from_scratch() {
    let mut m = Memory::default();
    m.publish(LOOP);
    let hour = 3_600_000;
    let people: Vec<String> = (0..12).map(|i| format!("p{i}")).collect();
    let profiles: HashMap<String, ProfileState> = people
        .iter()
        .map(|p| (p.clone(), ProfileState::new(p.clone(), 0, 0)))
        .collect();
    let go: Vec<_> = people
        .iter()
        .enumerate()
        .map(|(i, p)| track(p, "Go", json!({"vip": i % 3 == 0}), 0))
        .collect();
    m.events(&go, 0);
    m.fire(&profiles, 2 * hour);
    // Webhook results: even people succeed, odd ones fail (and take the error path).
    for (i, p) in people.iter().enumerate() {
        let outcome = if i % 2 == 0 {
            Ok(json!({"ok": true}))
        } else {
            Err("HTTP 500".into())
        };
        let planned = plan_webhook_result(
            &m.catalog,
            m.states.clone(),
            &profiles[p],
            crate::run::WebhookOutcome {
                journey: "loop",
                instance: 1,
                node: "ping",
                outcome,
            },
            2 * hour,
        );
        m.apply(planned);
    }
    let stops: Vec<_> = people
        .iter()
        .take(4)
        .map(|p| track(p, "Stop", json!({}), 3 * hour))
        .collect();
    m.events(&stops, 3 * hour);
    let stats = m.stats("loop");
    let from_scratch = from_counters(
        count_states("loop", m.states.values())
            .iter()
            .map(|((_, n, c), v)| (n.as_str(), c.as_str(), *v)),
    );
    assert_eq!(stats, from_scratch);
    assert_eq!(stats.instances, 12);
    assert_eq!(stats.nodes["vip"].entered, 4);
    assert_eq!(
        stats.nodes["ping"].errored, 6,
        "odd people's webhook failed"
    );
    assert_eq!(
        stats.exited, 2,
        "p0 and p2 were waiting again when they stopped"
    );
    assert_eq!(stats.nodes["tick"].waiting, 4, "p4, p6, p8, p10 wait again");

    // Stopping the journey ends the rest; the counters follow.
    let states: Vec<(String, JourneyState)> = m
        .states
        .iter()
        .map(|((p, _), s)| (p.clone(), s.clone()))
        .collect();
    let (changed, counts) = stop_all("loop", states, 4 * hour);
    for (p, s) in changed {
        m.states.insert((p, "loop".into()), s);
    }
    for (k, v) in counts {
        *m.counts.entry(k).or_default() += v;
    }
    let stats = m.stats("loop");
    assert_eq!((stats.active, stats.nodes["tick"].waiting), (0, 0));
    assert_eq!(stats.exited, 6);
}

#[test]
fn the_entry_rate_limit_refuses_entries_over_the_limit_in_each_second() {
    let mut m = Memory::default();
    m.publish(
        r#"
key: limited
entry: { event: Go }
properties: { entry_rate_limit: 3 }
nodes:
  - { id: hold, type: wait, duration: 1d, next: done }
  - { id: done, type: end }
"#,
    );
    let burst = |from: usize, at: i64| -> Vec<(Event, ProfileState)> {
        (from..from + 5)
            .map(|i| track(&format!("u{i}"), "Go", json!({}), at))
            .collect()
    };
    m.events(&burst(0, 10_000), 10_000);
    let stats = m.stats("limited");
    assert_eq!((stats.instances, stats.rate_limited), (3, 2));
    // Same second, next batch: still no room.
    m.events(&burst(5, 10_900), 10_900);
    assert_eq!(m.stats("limited").rate_limited, 7);
    // Next second: room again.
    m.events(&burst(10, 11_000), 11_000);
    let stats = m.stats("limited");
    assert_eq!((stats.instances, stats.rate_limited), (6, 9));
    let refused = m.states.get(&("u3".to_string(), "limited".to_string()));
    assert!(
        refused.is_none_or(|s| s.instances.is_empty()),
        "a refused entry leaves no instance: {refused:?}"
    );
}

const TARGET: &str = r#"
key: target
entry: { event: Never Sent }
properties: { reentry: never }
nodes:
  - { id: hello, type: message, channel: log, template: hi, next: hold }
  - { id: hold, type: wait, duration: 1h, next: done }
  - { id: done, type: end }
"#;

#[test]
fn a_jump_enters_the_target_journey_with_the_entry_context_once() {
    let mut m = Memory::default();
    m.publish(TARGET);
    m.publish(
        r#"
key: source
entry: { event: Go }
nodes:
  - { id: over, type: jump, journey: target }
"#,
    );
    let (event, profile) = track("ann", "Go", json!({"plan": "pro"}), 1_000);
    m.events(&[(event, profile.clone())], 1_000);
    let jump = m
        .outbox
        .iter()
        .find(|o| o.effect.kind() == "jump")
        .expect("the jump is an outbox row")
        .clone();
    assert_eq!(jump.status, "pending");
    let crate::Effect::Jump(to) = &jump.effect else {
        panic!("not a jump: {jump:?}");
    };
    let entry = to.entry.clone();
    let jump_in = || JumpIn {
        journey: "target",
        from: "source",
        entry: &entry,
    };
    let planned = plan_jump(&m.catalog, m.states.clone(), &profile, jump_in(), 2_000);
    m.apply(planned);
    let state = &m.states[&("ann".to_string(), "target".to_string())];
    let i = &state.instances[0];
    assert_eq!(i.status, Status::Active);
    assert_eq!(i.context["jumped_from"], "source");
    assert_eq!(i.context["entry"]["properties"]["plan"], "pro");
    assert!(
        m.outbox
            .iter()
            .any(|o| o.journey == "target" && o.effect.kind() == "message")
    );
    // A second jump while the person is in the target (or after, with reentry: never)
    // makes no second instance.
    let planned = plan_jump(&m.catalog, m.states.clone(), &profile, jump_in(), 3_000);
    m.apply(planned);
    assert_eq!(
        m.states[&("ann".to_string(), "target".to_string())]
            .instances
            .len(),
        1
    );
    assert_eq!(m.stats("source").completed, 1);
    assert_eq!(m.stats("target").instances, 1);
}

#[test]
fn suppressed_addresses_get_nothing_even_transactional_and_the_reason_is_a_step() {
    let mut m = Memory::default();
    m.publish(&one_email("receipt", "Paid", "send", "transactional"));
    m.catalog.suppressed.insert(
        ("email".into(), "bounced@example.com".into()),
        "hard_bounce".into(),
    );
    let person = |user: &str, email: &str, at: i64| {
        let (event, mut profile) = track(user, "Paid", json!({}), at);
        profile.traits.insert("email".into(), json!(email));
        (event, profile)
    };
    // Listed addresses match however they are written in the profile.
    m.events(&[person("ann", "Bounced@Example.com ", 1_000)], 1_000);
    m.events(&[person("bob", "bob@example.com", 1_000)], 1_000);
    let sent: Vec<&str> = m
        .outbox
        .iter()
        .filter(|o| o.effect.kind() == "message")
        .map(|o| o.profile_id.as_str())
        .collect();
    assert_eq!(sent, ["bob"]);
    let ann = &m.states[&("ann".to_string(), "receipt".to_string())].instances[0];
    let step = ann
        .steps
        .iter()
        .find(|s| s.what == "suppressed")
        .expect("suppressed step");
    assert_eq!(
        step.detail.as_ref().expect("detail")["reason"],
        "suppression list: hard_bounce"
    );
    assert_eq!(ann.status, Status::Completed, "the journey goes on");
    // The addresses a store looks up for a person: identities and traits, normalised.
    let (_, mut p) = person("cy", "CY@example.com", 0);
    p.identities
        .insert("phone".into(), vec!["+1 555 0100".into()]);
    assert_eq!(
        crate::run::addresses(&p),
        vec![
            ("email", "cy@example.com".to_string()),
            ("sms", "+15550100".to_string())
        ]
    );
}

#[test]
fn a_message_held_by_quiet_hours_is_held_where_its_node_stands_in_the_trace() {
    use waymark_core::governance::{Policy, QuietAction, QuietHours};
    let mut m = Memory::default();
    m.publish(&one_email("promo", "Browse", "offer", "marketing"));
    m.catalog.governance = Arc::new(Policy {
        caps: Vec::new(),
        quiet_hours: Some(QuietHours {
            start: "00:00".into(),
            end: "23:59".into(),
            action: QuietAction::Hold,
        }),
    });
    let (event, mut profile) = track("kim", "Browse", json!({}), 60_000);
    profile
        .traits
        .insert("email".into(), json!("kim@example.com"));
    m.events(&[(event, profile)], 60_000);
    let kim = &m.states[&("kim".to_string(), "promo".to_string())].instances[0];
    let trace: Vec<(&str, &str)> = kim
        .steps
        .iter()
        .map(|s| (s.node.as_str(), s.what.as_str()))
        .collect();
    let at_offer: Vec<&str> = trace
        .iter()
        .filter(|(node, _)| *node == "offer")
        .map(|(_, what)| *what)
        .collect();
    assert_eq!(at_offer, ["entered", "held"], "{trace:?}");
    let held = trace.iter().position(|s| *s == ("offer", "held"));
    let done = trace.iter().position(|(_, what)| *what == "completed");
    assert!(
        held < done,
        "held is where the node stands, not after the end: {trace:?}"
    );
    let detail = kim
        .steps
        .iter()
        .find(|s| s.what == "held")
        .and_then(|s| s.detail.clone());
    let detail = detail.expect("detail");
    assert_eq!(
        (detail["channel"].as_str(), detail["template"].as_str()),
        (Some("email"), Some("promo"))
    );
    assert!(
        detail["until"]
            .as_str()
            .is_some_and(|u| u.starts_with("1970-01-01T23:59")),
        "{detail}"
    );
    let stats = m.stats("promo");
    assert_eq!(stats.nodes["offer"].held, 1);
    assert_eq!(stats.nodes["offer"].suppressed, 0);
    // The kept counters agree with counting the states from scratch.
    let scratch = count_states("promo", m.states.values());
    let kept: Counts = m
        .counts
        .clone()
        .into_iter()
        .filter(|(_, v)| *v != 0)
        .collect();
    assert_eq!(
        kept,
        scratch
            .into_iter()
            .filter(|(_, v)| *v != 0)
            .collect::<Counts>()
    );
}

#[test]
fn a_read_enters_members_its_entry_allows_and_no_event_starts_it() {
    let mut m = Memory::default();
    m.publish(
        r#"
key: promo
entry: { audience: buyers, on: read, when: 'profile.traits.plan == "pro"' }
properties: { reentry: { after: 1d } }
nodes:
  - { id: offer, type: message, channel: log, template: t, next: done }
  - { id: done, type: end }
"#,
    );
    let person = |user: &str, plan: &str| {
        let (_, mut profile) = track(user, "x", json!({}), 1_000);
        profile.traits.insert("plan".into(), json!(plan));
        profile
    };
    let (ann, bob) = (person("ann", "pro"), person("bob", "free"));
    let read = |at| crate::run::ReadIn {
        journey: "promo",
        audience: "buyers",
        started_at: at,
    };
    let planned = crate::run::plan_read(
        &m.catalog,
        m.states.clone(),
        &[&ann, &bob],
        read(1_000),
        1_000,
    );
    m.apply(planned);
    let ann_state = &m.states[&("ann".to_string(), "promo".to_string())];
    assert_eq!(ann_state.instances.len(), 1);
    assert_eq!(ann_state.instances[0].status, Status::Completed);
    assert_eq!(
        ann_state.instances[0].context["entry"],
        json!({"audience": "buyers", "read_at": 1_000})
    );
    assert!(
        m.states
            .get(&("bob".to_string(), "promo".to_string()))
            .is_none_or(|s| s.instances.is_empty()),
        "entry.when keeps bob out"
    );
    // The audience-entry event is not this journey's entry.
    let (entered, profile) = track(
        "ann",
        "Audience Entered",
        json!({"audience": "buyers"}),
        2_000,
    );
    m.events(&[(entered, profile)], 2_000);
    assert_eq!(m.stats("promo").instances, 1);
    // Re-entry rules hold across reads: not within a day, then again.
    let planned = crate::run::plan_read(&m.catalog, m.states.clone(), &[&ann], read(5_000), 5_000);
    m.apply(planned);
    assert_eq!(m.stats("promo").instances, 1);
    let day = 86_400_000;
    let planned = crate::run::plan_read(
        &m.catalog,
        m.states.clone(),
        &[&ann],
        read(day + 1_000),
        day + 1_000,
    );
    m.apply(planned);
    assert_eq!(m.stats("promo").instances, 2);
    assert_eq!(
        m.outbox
            .iter()
            .filter(|o| o.effect.kind() == "message")
            .count(),
        2
    );
}

#[test]
fn a_conversion_is_credited_once_to_the_message_node_within_its_window() {
    let mut m = Memory::default();
    m.publish(
        r#"
key: sale
entry: { event: Go }
properties:
  conversion: { event: Order Completed, within: 1d, when: 'event.properties.total > 0', revenue: total }
nodes:
  - { id: offer, type: message, channel: log, template: t, next: done }
  - { id: done, type: end }
"#,
    );
    let day = 86_400_000;
    let (go, profile) = track("ann", "Go", json!({}), 1_000);
    m.events(&[(go, profile.clone())], 1_000);
    let order = |total: f64, at: i64| {
        let (e, _) = track("ann", "Order Completed", json!({"total": total}), at);
        (e, profile.clone())
    };
    // Not counted: a zero order (the condition), then the first real one, once.
    m.events(&[order(0.0, 2_000)], 2_000);
    assert_eq!(m.stats("sale").nodes["offer"].converted, 0);
    m.events(&[order(12.5, 3_000), order(40.0, 4_000)], 4_000);
    let offer = &m.stats("sale").nodes["offer"];
    assert_eq!((offer.converted, offer.revenue_cents), (1, 1250));
    let steps = &m.states[&("ann".to_string(), "sale".to_string())].instances[0].steps;
    let converted: Vec<&crate::Step> = steps
        .iter()
        .filter(|s| s.what == StepKind::Converted)
        .collect();
    assert_eq!(converted.len(), 1);
    assert_eq!(converted[0].node, "offer");
    // Bob's order comes after the window: no conversion.
    let (go, bob) = track("bob", "Go", json!({}), 1_000);
    m.events(&[(go, bob.clone())], 1_000);
    let (late, _) = track("bob", "Order Completed", json!({"total": 5}), day + 2_000);
    m.events(&[(late, bob)], day + 2_000);
    assert_eq!(m.stats("sale").nodes["offer"].converted, 1);
    // The counters kept per transaction agree with counting the states from scratch.
    let recount = from_counters(
        count_states(
            "sale",
            m.states
                .iter()
                .filter(|((_, k), _)| k == "sale")
                .map(|(_, s)| s),
        )
        .iter()
        .map(|((_, n, c), v)| (n.as_str(), c.as_str(), *v)),
    );
    assert_eq!(recount, m.stats("sale"));
}

#[test]
fn people_without_a_time_zone_wait_in_the_fallback_zone() {
    let mut m = Memory::default();
    m.publish(
        r#"
key: local
entry: { event: Go }
properties: { timezone: profile, fallback_timezone: Asia/Tokyo }
nodes:
  - { id: nine, type: wait, until: "09:00", next: done }
  - { id: done, type: end }
"#,
    );
    let at = |t: &str| waymark_core::time::parse_iso8601(t).expect("time");
    let now = at("2026-12-07T01:00:00Z");
    let (go, tokyo) = track("ann", "Go", json!({}), now);
    let (go_oslo, mut oslo) = track("bob", "Go", json!({}), now);
    oslo.traits.insert("timezone".into(), json!("Europe/Oslo"));
    m.events(&[(go, tokyo), (go_oslo, oslo)], now);
    let due = |user: &str| {
        m.timers
            .iter()
            .find(|t| {
                t.profile_id == user && t.journey == "local" && t.timer != crate::DEADLINE_TIMER
            })
            .map(|t| t.due)
    };
    assert_eq!(
        due("ann"),
        Some(at("2026-12-08T00:00:00Z")),
        "09:00 in Tokyo"
    );
    assert_eq!(
        due("bob"),
        Some(at("2026-12-07T08:00:00Z")),
        "09:00 in Oslo"
    );
}

#[test]
fn first_opens_and_clicks_of_a_message_are_counted_at_the_node_that_sent_it() {
    let mut m = Memory::default();
    m.publish(
        r#"
key: news
entry: { event: Go }
nodes:
  - { id: letter, type: message, channel: log, template: t, next: done }
  - { id: done, type: end }
"#,
    );
    let (go, ann) = track("ann", "Go", json!({}), 1_000);
    m.events(&[(go, ann.clone())], 1_000);
    let key = m
        .outbox
        .iter()
        .find(|o| o.journey == "news")
        .map(|o| o.key.clone())
        .expect("the message");
    let engagement = |name: &str, at: i64, journey: &str| {
        // The message key names the journey that sent it.
        let message = key.replacen("news:", &format!("{journey}:"), 1);
        let (e, _) = track(
            "ann",
            name,
            json!({"message": message, "journey": journey, "channel": "email"}),
            at,
        );
        (e, ann.clone())
    };
    m.events(&[engagement("Email Opened", 2_000, "news")], 2_000);
    // A second open (another client), two clicks, and an open of another journey's message.
    m.events(
        &[
            engagement("Email Opened", 3_000, "news"),
            engagement("Email Link Clicked", 3_000, "news"),
            engagement("Email Link Clicked", 4_000, "news"),
            engagement("Email Opened", 4_000, "other"),
        ],
        4_000,
    );
    let letter = &m.stats("news").nodes["letter"];
    assert_eq!((letter.opened, letter.clicked), (1, 1));
}
