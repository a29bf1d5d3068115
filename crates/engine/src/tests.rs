use serde_json::{Value, json};
use waymark_core::journey::{Format, parse};
use waymark_core::segment::{Receipt, parse_batch};
use waymark_core::time::parse_iso8601;

use crate::simulate::{Simulation, Webhooks, path};
use crate::{CompiledJourney, Effect, Status, compile};

const WELCOME: &str = include_str!("../../../examples/journeys/welcome.yaml");

/// A track event of user `u`, received (and stamped) at 1 s.
fn track_at_1s(name: &str) -> waymark_core::Event {
    let body =
        serde_json::to_vec(&json!({"batch": [{"type": "track", "userId": "u", "event": name}]}))
            .expect("json");
    let mut id = || "m".to_string();
    parse_batch(
        &body,
        &mut Receipt {
            received_at: 1_000,
            new_message_id: &mut id,
        },
    )
    .expect("valid")
    .events
    .remove(0)
}

fn journey(yaml: &str) -> CompiledJourney {
    compile(parse(yaml, Format::Yaml).expect("parses"), 1)
        .unwrap_or_else(|e| panic!("invalid journey: {e:?}"))
}

fn run(j: &CompiledJourney, events: Value, webhooks: Webhooks) -> Simulation<'_> {
    let body = serde_json::to_vec(&json!({ "batch": events })).expect("json");
    let mut n = 0;
    let mut id = || {
        n += 1;
        format!("m{n}")
    };
    let parsed = parse_batch(
        &body,
        &mut Receipt {
            received_at: 0,
            new_message_id: &mut id,
        },
    )
    .expect("events")
    .events;
    let mut sim = Simulation::new(j, webhooks);
    for e in &parsed {
        sim.event(e).expect("in order");
    }
    sim.finish();
    sim
}

fn t(iso: &str) -> i64 {
    parse_iso8601(iso).expect("time")
}

#[test]
fn pro_sign_up_takes_the_crm_path() {
    let j = journey(WELCOME);
    let sim = run(
        &j,
        json!([{"type": "track", "userId": "ada", "event": "Signed Up", "properties": {"plan": "pro"}, "timestamp": "2026-11-02T10:00:00Z"}]),
        Webhooks::Succeed,
    );
    let report = sim.report();
    assert_eq!(report.len(), 1);
    let instance = &report[0].instances[0];
    assert_eq!(
        path(instance),
        ["greet", "plan-check", "tell-crm", "mark", "done"]
    );
    assert_eq!(instance.status, Status::Completed);
    let kinds: Vec<&str> = report[0]
        .effects
        .iter()
        .map(|e| match &e.effect {
            Effect::Message(_) => "message",
            Effect::Webhook(_) => "webhook",
            Effect::UpdateProfile(_) => "update",
            Effect::Jump(_) => "jump",
            Effect::Timer { .. } => "timer",
        })
        .collect();
    assert_eq!(kinds, ["message", "webhook", "update"]);
    let keys: Vec<String> = report[0]
        .effects
        .iter()
        .filter_map(|e| match &e.effect {
            Effect::Timer { .. } => None,
            other => other.key().map(str::to_owned),
        })
        .collect();
    let mut unique = keys.clone();
    unique.dedup();
    assert_eq!(
        unique.len(),
        keys.len(),
        "idempotency keys must differ per step: {keys:?}"
    );
    assert!(keys[0].starts_with("welcome:sim:ada:1:greet:"), "{keys:?}");
}

#[test]
fn waits_use_the_profile_time_zone_and_event_waits_resume_or_time_out() {
    let j = journey(WELCOME);
    let sim = run(
        &j,
        json!([
            {"type": "identify", "userId": "kenji", "traits": {"timezone": "Asia/Tokyo"}, "timestamp": "2026-11-02T00:30:00Z"},
            {"type": "identify", "userId": "lena", "traits": {"timezone": "Europe/Berlin"}, "timestamp": "2026-11-02T00:30:00Z"},
            // 10:00 UTC is 19:00 in Tokyo, 11:00 in Berlin.
            {"type": "track", "userId": "kenji", "event": "Signed Up", "properties": {"plan": "free"}, "timestamp": "2026-11-02T10:00:00Z"},
            {"type": "track", "userId": "lena", "event": "Signed Up", "properties": {"plan": "free"}, "timestamp": "2026-11-02T10:00:00Z"},
            {"type": "track", "userId": "lena", "event": "Project Created", "timestamp": "2026-11-03T12:00:00Z"},
        ]),
        Webhooks::Succeed,
    );
    let report = sim.report();
    let person = |name: &str| report.iter().find(|r| r.person == name).expect("person");
    for name in ["kenji", "lena"] {
        let waited = person(name).instances[0]
            .steps
            .iter()
            .find(|s| s.node == "next-morning" && s.what == "waiting")
            .map(|s| s.detail.clone());
        // Both hash into the 90% path of the holdout split (deterministic per person).
        assert!(
            waited.is_some(),
            "{name} should wait for the morning: {:?}",
            path(&person(name).instances[0])
        );
    }
    let due = |name: &str| {
        person(name).instances[0]
            .steps
            .iter()
            .find(|s| s.node == "next-morning" && s.what == "waiting")
            .and_then(|s| s.detail.as_ref())
            .and_then(|d| d["until"].as_str())
            .map(str::to_owned)
    };
    assert_eq!(
        due("kenji").as_deref(),
        Some("2026-11-03T00:00:00.000Z"),
        "09:00 in Tokyo the next day"
    );
    assert_eq!(
        due("lena").as_deref(),
        Some("2026-11-03T08:00:00.000Z"),
        "09:00 in Berlin (CET) the next day"
    );
    // Lena created a project within two days: no nudge. Kenji did not: nudged at the timeout.
    assert_eq!(
        path(&person("lena").instances[0])
            .last()
            .map(String::as_str),
        Some("done")
    );
    assert!(!path(&person("lena").instances[0]).contains(&"nudge".to_owned()));
    let kenji = path(&person("kenji").instances[0]);
    assert_eq!(
        kenji[kenji.len() - 2..],
        ["nudge".to_owned(), "done".to_owned()]
    );
    let nudge_at = person("kenji")
        .effects
        .iter()
        .find(|e| matches!(&e.effect, Effect::Message(m) if m.template == "activation-nudge"))
        .map(|e| e.at);
    assert_eq!(
        nudge_at,
        Some(t("2026-11-05T00:00:00Z")),
        "two days after the 09:00 wait ended"
    );
}

pub(crate) const LOOP: &str = r#"
key: loop
entry: { event: Go }
properties:
  reentry: always
  exit: { events: [Stop] }
  timeout: 5h
nodes:
  - { id: check, type: condition, branches: [{ when: 'event.properties.vip == true', next: vip }], else: tick }
  - { id: vip, type: message, channel: log, template: vip, next: tick }
  - { id: tick, type: wait, duration: 2h, next: ping }
  - { id: ping, type: webhook, url: "http://127.0.0.1:9/ping", next: tick, on_error: done }
  - { id: done, type: end }
"#;

#[test]
fn exit_events_end_the_instance_and_later_timers_are_ignored() {
    let j = journey(LOOP);
    let sim = run(
        &j,
        json!([
            {"type": "track", "userId": "u", "event": "Go", "timestamp": "2026-01-01T00:00:00Z"},
            {"type": "track", "userId": "u", "event": "Stop", "timestamp": "2026-01-01T03:00:00Z"},
        ]),
        Webhooks::Succeed,
    );
    let report = sim.report();
    let i = &report[0].instances[0];
    assert_eq!(i.status, Status::Exited);
    assert_eq!(i.ended_at, Some(t("2026-01-01T03:00:00Z")));
    let pings = report[0]
        .effects
        .iter()
        .filter(|e| matches!(e.effect, Effect::Webhook(_)))
        .count();
    assert_eq!(pings, 1, "one ping at 02:00, none after the exit");
}

#[test]
fn instance_timeout_ends_a_journey_that_would_loop_forever() {
    let j = journey(LOOP);
    let sim = run(
        &j,
        json!([{"type": "track", "userId": "u", "event": "Go", "timestamp": "2026-01-01T00:00:00Z"}]),
        Webhooks::Succeed,
    );
    let report = sim.report();
    let i = &report[0].instances[0];
    assert_eq!(i.status, Status::TimedOut);
    assert_eq!(i.ended_at, Some(t("2026-01-01T05:00:00Z")));
    assert_eq!(
        report[0]
            .effects
            .iter()
            .filter(|e| matches!(e.effect, Effect::Webhook(_)))
            .count(),
        2,
        "pings at 02:00 and 04:00"
    );
}

#[test]
fn failing_webhooks_take_the_error_path() {
    let j = journey(LOOP);
    let sim = run(
        &j,
        json!([{"type": "track", "userId": "u", "event": "Go", "timestamp": "2026-01-01T00:00:00Z"}]),
        Webhooks::Fail,
    );
    let i = &sim.report()[0].instances[0];
    assert_eq!(path(i), ["check", "tick", "ping", "done"]);
    assert_eq!(i.status, Status::Completed);
    assert!(
        i.steps
            .iter()
            .any(|s| s.what == "error" && s.node == "ping")
    );
}

#[test]
fn a_missing_field_in_a_condition_takes_else_and_is_recorded() {
    let j = journey(LOOP);
    let sim = run(
        &j,
        json!([{"type": "track", "userId": "u", "event": "Go", "properties": {}, "timestamp": "2026-01-01T00:00:00Z"}]),
        Webhooks::Fail,
    );
    let i = &sim.report()[0].instances[0];
    assert_eq!(path(i)[..2], ["check".to_owned(), "tick".to_owned()]);
    assert!(
        i.steps
            .iter()
            .any(|s| s.what == "error" && s.node == "check"),
        "{:?}",
        i.steps
    );
    let sim = run(
        &j,
        json!([{"type": "track", "userId": "u", "event": "Go", "properties": {"vip": true}, "timestamp": "2026-01-01T00:00:00Z"}]),
        Webhooks::Fail,
    );
    assert_eq!(
        path(&sim.report()[0].instances[0])[..2],
        ["check".to_owned(), "vip".to_owned()]
    );
}

#[test]
fn reentry_rules_and_one_active_instance() {
    let never = journey(&LOOP.replace("reentry: always", "reentry: never"));
    let events = json!([
        {"type": "track", "userId": "u", "event": "Go", "timestamp": "2026-01-01T00:00:00Z"},
        {"type": "track", "userId": "u", "event": "Go", "timestamp": "2026-01-01T01:00:00Z"},
        {"type": "track", "userId": "u", "event": "Go", "timestamp": "2026-01-01T06:00:00Z"},
    ]);
    assert_eq!(
        run(&never, events.clone(), Webhooks::Succeed).report()[0]
            .instances
            .len(),
        1
    );
    let always = journey(LOOP);
    let report = run(&always, events.clone(), Webhooks::Succeed).report();
    assert_eq!(
        report[0].instances.len(),
        2,
        "the 01:00 entry is refused while the first is active"
    );
    assert_eq!(report[0].instances[1].number, 2);
    let after = journey(&LOOP.replace("reentry: always", "reentry: { after: 8h }"));
    assert_eq!(
        run(&after, events, Webhooks::Succeed).report()[0]
            .instances
            .len(),
        1,
        "06:00 is within 8h of the first entry"
    );
}

#[test]
fn the_same_stream_always_gives_the_same_result() {
    let j = journey(WELCOME);
    let events: Vec<Value> = (0..40)
        .map(|i| json!({"type": "track", "userId": format!("p{i}"), "event": "Signed Up", "properties": {"plan": if i % 3 == 0 { "pro" } else { "free" }}, "timestamp": "2026-11-02T10:00:00Z"}))
        .collect();
    let a =
        serde_json::to_string(&run(&j, Value::Array(events.clone()), Webhooks::Succeed).report())
            .expect("json");
    let b = serde_json::to_string(&run(&j, Value::Array(events), Webhooks::Succeed).report())
        .expect("json");
    assert_eq!(a, b);
    let report: Vec<Value> = serde_json::from_str(&a).expect("json");
    let holdouts = report
        .iter()
        .filter(|p| {
            p["instances"][0]["steps"]
                .as_array()
                .is_some_and(|s| s.iter().any(|s| s["detail"]["path"] == 1))
        })
        .count();
    assert!(
        (1..10).contains(&holdouts),
        "about 10% of the ~27 free sign-ups are held out, got {holdouts}"
    );
}

#[test]
fn compiled_journeys_can_be_shared_between_worker_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<CompiledJourney>();
}

#[test]
fn old_finished_instances_are_dropped_and_entry_properties_stay_readable() {
    let j = journey(
        r#"
key: often
entry: { event: Go }
properties: { reentry: always }
nodes:
  - { id: big, type: condition, branches: [{ when: 'journey.entry.properties.total > 100', next: done }], else: small }
  - { id: small, type: message, channel: log, template: small, next: done }
  - { id: done, type: end }
"#,
    );
    let events: Vec<Value> = (0..30)
        .map(|i| json!({"type": "track", "userId": "u", "event": "Go", "properties": {"total": i * 10}, "timestamp": format!("2026-01-01T00:{:02}:00Z", i)}))
        .collect();
    let report = run(&j, Value::Array(events), Webhooks::Succeed).report();
    let instances = &report[0].instances;
    assert_eq!(
        instances.len(),
        crate::KEEP_FINISHED_INSTANCES + 1,
        "older finished instances dropped"
    );
    assert_eq!(
        instances.last().map(|i| i.number),
        Some(30),
        "numbering continues"
    );
    let smalls = report[0]
        .effects
        .iter()
        .filter(|e| matches!(&e.effect, Effect::Message(m) if m.template == "small"))
        .count();
    assert_eq!(smalls, 11, "totals 0..=100 take the small path");
}

#[test]
fn stats_count_entered_waiting_passed_errored_and_exited_per_node() {
    let j = journey(LOOP);
    let sim = run(
        &j,
        json!([
            {"type": "track", "userId": "a", "event": "Go", "properties": {"vip": true}, "timestamp": "2026-01-01T00:00:00Z"},
            {"type": "track", "userId": "b", "event": "Go", "timestamp": "2026-01-01T00:00:00Z"},
            {"type": "track", "userId": "b", "event": "Stop", "timestamp": "2026-01-01T01:00:00Z"},
        ]),
        Webhooks::Succeed,
    );
    let report = sim.report();
    let states: Vec<crate::JourneyState> = report
        .iter()
        .map(|p| crate::JourneyState {
            instances: p.instances.clone(),
        })
        .collect();
    let stats = crate::stats::compute(&states);
    assert_eq!((stats.instances, stats.exited, stats.timed_out), (2, 1, 1));
    assert_eq!(stats.nodes["check"].entered, 2);
    assert_eq!(stats.nodes["check"].errored, 1, "b has no vip property");
    assert_eq!(stats.nodes["vip"].entered, 1);
    assert_eq!(
        stats.nodes["tick"].exited, 2,
        "b exited while waiting; a timed out waiting"
    );
    assert_eq!(stats.nodes["ping"].passed, stats.nodes["ping"].entered);
}

#[test]
fn a_wait_already_due_fires_in_the_same_plan() {
    use std::collections::HashMap;
    use std::sync::Arc;
    use waymark_core::journey::lifecycle::Status as JourneyStatus;
    let j = journey(
        r#"
key: zero
entry: { event: Go }
nodes:
  - { id: pause, type: wait, duration: 0s, next: hello }
  - { id: hello, type: message, channel: log, template: hi, next: done }
  - { id: done, type: end }
"#,
    );
    let mut catalog = crate::run::Catalog::default();
    catalog
        .journeys
        .insert("zero".into(), (JourneyStatus::Live, Some(1)));
    catalog.versions.insert(("zero".into(), 1), Arc::new(j));
    let events = [track_at_1s("Go")];
    let profile = waymark_core::ProfileState::new("p".into(), 0, 0);
    let planned =
        crate::run::plan_events(&catalog, HashMap::new(), &[(&events[0], &profile)], 1_000);
    assert_eq!(
        planned.outbox.len(),
        1,
        "the message after the 0 s wait is already recorded"
    );
    assert!(
        planned.timers.is_empty(),
        "no row for a timer that fired at once, nor for a deadline never waited behind: {:?}",
        planned.timers
    );
    assert_eq!(planned.states[0].2.instances[0].status, Status::Completed);
    assert_eq!(planned.ended.len(), 1, "its deadline timer is released too");
}

#[test]
fn webhook_headers_and_body_are_rendered_for_the_person_and_bad_templates_do_not_compile() {
    let j = journey(
        r#"
key: templated
entry: { event: Ordered }
nodes:
  - id: tell
    type: webhook
    url: http://127.0.0.1:9/orders
    headers: { X-Customer: "{{profile.id}}", X-Plan: "plan-{{journey.entry.properties.plan}}" }
    body:
      order: "{{journey.entry.properties.order_id}}"
      total: "{{event.properties.total}}"
      note: "Thanks {{profile.traits.name}}{{#if event.properties.gift}} (gift){{/if}}"
      lines: ["{{event.properties.items.0.sku}}", "fixed"]
      coupon: "{{event.properties.coupon}}"
    next: done
  - { id: done, type: end }
"#,
    );
    let sim = run(
        &j,
        json!([
            {"type": "identify", "userId": "ada", "traits": {"name": "Ada"}, "timestamp": "2026-11-02T09:00:00Z"},
            {"type": "track", "userId": "ada", "event": "Ordered", "timestamp": "2026-11-02T10:00:00Z",
             "properties": {"order_id": "o-17", "total": 99.5, "gift": true, "plan": "pro", "items": [{"sku": "A1"}]}},
        ]),
        Webhooks::Succeed,
    );
    let report = sim.report();
    let Some(Effect::Webhook(crate::WebhookCall { headers, body, .. })) = report[0]
        .effects
        .iter()
        .map(|e| &e.effect)
        .find(|e| matches!(e, Effect::Webhook(_)))
    else {
        panic!("no webhook effect: {:?}", report[0].effects);
    };
    assert_eq!(headers["X-Plan"], "plan-pro");
    assert!(!headers["X-Customer"].is_empty(), "{headers:?}");
    assert_eq!(
        body.as_ref().expect("body"),
        &json!({"order": "o-17", "total": 99.5, "note": "Thanks Ada (gift)", "lines": ["A1", "fixed"], "coupon": null})
    );

    let problems = compile(
        parse(
            r#"
key: broken
entry: { event: Ordered }
nodes:
  - { id: tell, type: webhook, url: "http://127.0.0.1:9/x", headers: { X-A: "{{#if x}}" }, body: { a: ["{{/each}}"] }, next: done }
  - { id: done, type: end }
"#,
            Format::Yaml,
        )
        .expect("parses"),
        1,
    )
    .err()
    .expect("invalid");
    let paths: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
    assert_eq!(
        paths,
        ["nodes[0].headers.X-A", "nodes[0].body.a[0]"],
        "{problems:?}"
    );
}

#[test]
fn people_who_unsubscribed_from_a_channel_get_no_message_on_it() {
    let j = journey(
        r#"
key: news
entry: { event: Go }
nodes:
  - { id: mail, type: message, channel: log, template: news, next: done }
  - { id: done, type: end }
"#,
    );
    let sim = run(
        &j,
        json!([
            {"type": "identify", "userId": "out", "traits": {"unsubscribed_log": true}, "timestamp": "2026-01-01T00:00:00Z"},
            {"type": "track", "userId": "out", "event": "Go", "timestamp": "2026-01-01T00:01:00Z"},
            {"type": "track", "userId": "in", "event": "Go", "timestamp": "2026-01-01T00:01:00Z"},
        ]),
        Webhooks::Succeed,
    );
    let report = sim.report();
    let person = |name: &str| report.iter().find(|r| r.person == name).expect("person");
    assert!(
        person("out")
            .effects
            .iter()
            .all(|e| !matches!(e.effect, Effect::Message(_)))
    );
    let steps: Vec<&str> = person("out").instances[0]
        .steps
        .iter()
        .map(|s| s.what.as_str())
        .collect();
    assert!(steps.contains(&"suppressed"), "{steps:?}");
    assert_eq!(person("out").instances[0].status, Status::Completed);
    assert!(
        person("in")
            .effects
            .iter()
            .any(|e| matches!(e.effect, Effect::Message(_)))
    );
}

#[test]
fn the_deadline_timer_is_stored_only_once_an_instance_waits_into_the_future() {
    let event = track_at_1s;
    let profile = waymark_core::ProfileState::new("p".into(), 0, 0);
    let winners = Default::default();
    let ctx = crate::Ctx {
        profile: &profile,
        now: 1_000,
        winners: &winners,
    };
    let timers = |effects: &[Effect]| -> Vec<(u64, i64)> {
        effects
            .iter()
            .filter_map(|e| match e {
                Effect::Timer { timer, due, .. } => Some((*timer, *due)),
                _ => None,
            })
            .collect()
    };

    let hook = journey(
        r#"
key: hook
entry: { event: Go }
nodes:
  - { id: call, type: webhook, url: "http://127.0.0.1:9/x", next: done }
  - { id: done, type: end }
"#,
    );
    let mut state = crate::JourneyState::default();
    let effects = crate::apply(&hook, &mut state, crate::Input::Event(&event("Go")), &ctx);
    assert!(matches!(effects[..], [Effect::Webhook(_)]), "{effects:?}");
    assert!(state.instances[0].deadline_pending);

    let later = journey(
        r#"
key: later
entry: { event: Go }
nodes:
  - { id: pause, type: wait, duration: 1d, next: done }
  - { id: done, type: end }
"#,
    );
    let mut state = crate::JourneyState::default();
    let effects = crate::apply(&later, &mut state, crate::Input::Event(&event("Go")), &ctx);
    let deadline = state.instances[0].deadline;
    assert_eq!(
        timers(&effects),
        [(crate::DEADLINE_TIMER, deadline), (1, 1_000 + 86_400_000)]
    );
    assert!(!state.instances[0].deadline_pending);
    let stored = serde_json::to_value(&state).expect("json");
    assert!(
        stored["instances"][0].get("deadline_pending").is_none(),
        "not written once stored: {stored}"
    );
}

/// Steps are stored by name: the names states already hold must keep reading back.
#[test]
fn step_kinds_are_stored_by_their_names() {
    let all = crate::StepKind::ALL;
    for kind in all {
        let stored = serde_json::to_value(kind).expect("serialise");
        assert_eq!(stored, json!(kind.as_str()));
        let back: crate::StepKind = serde_json::from_value(stored).expect("read back");
        assert_eq!(back, kind);
    }
    let names: Vec<&str> = all.iter().map(|k| k.as_str()).collect();
    for name in [
        "entered",
        "sent",
        "wait_timed_out",
        "timed_out",
        "stopped",
        "error",
    ] {
        assert!(names.contains(&name), "{name}");
    }
}

#[test]
fn effect_keys_read_back() {
    let key = crate::EffectKey {
        journey: "welcome",
        profile: "0192-ab",
        instance: 3,
        node: "send",
        step: 7,
    };
    let text = key.to_string();
    assert_eq!(text, "welcome:0192-ab:3:send:7");
    assert_eq!(crate::EffectKey::parse(&text), Some(key));
    assert_eq!(crate::EffectKey::parse("welcome:p:x:send:7"), None);
}

#[test]
fn an_audience_entry_starts_on_that_audience_only() {
    let enter = journey(
        "key: vip-welcome\nentry: {audience: vip}\nnodes:\n  - {id: hi, type: message, channel: log, template: hi, next: done}\n  - {id: done, type: end}\n",
    );
    let leave = journey(
        "key: vip-bye\nentry: {audience: vip, on: exit}\nnodes:\n  - {id: bye, type: message, channel: log, template: bye, next: done}\n  - {id: done, type: end}\n",
    );
    let events = json!([
        {"type": "track", "userId": "a", "event": "Audience Entered", "properties": {"audience": "other"}},
        {"type": "track", "userId": "b", "event": "Audience Entered", "properties": {"audience": "vip"}},
        {"type": "track", "userId": "c", "event": "Audience Exited", "properties": {"audience": "vip"}},
    ]);
    let entered: Vec<usize> = [&enter, &leave]
        .iter()
        .map(|j| run(j, events.clone(), Webhooks::Succeed).report().len())
        .collect();
    // The simulation runs one person at a time: one instance each for b and c.
    assert_eq!(entered, [1, 1]);
    let problems = waymark_core::journey::validate(
        &parse(
            "key: x\nentry: {event: Go, audience: vip, on: exit}\nnodes: [{id: done, type: end}]\n",
            Format::Yaml,
        )
        .expect("parses"),
    );
    assert_eq!(problems[0].field, "entry.audience", "{problems:?}");
    let problems = waymark_core::journey::validate(
        &parse(
            "key: x\nentry: {on: exit}\nnodes: [{id: done, type: end}]\n",
            Format::Yaml,
        )
        .expect("parses"),
    );
    let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
    assert_eq!(fields, ["entry.event", "entry.on"], "{problems:?}");
}

#[test]
fn a_winner_node_waits_for_its_decision_then_takes_the_chosen_path() {
    let ab = journey(
        r#"
key: ab
entry: { event: Go }
properties: { conversion: { event: Order Completed } }
nodes:
  - { id: pick, type: winner, paths: [a, b], metric: converted, at: "1970-01-01T00:00:05Z" }
  - { id: a, type: message, channel: log, template: ta, next: done }
  - { id: b, type: message, channel: log, template: tb, next: done }
  - { id: done, type: end }
"#,
    );
    assert_eq!(ab.winners, [("pick".to_owned(), 5_000)]);
    let go = track_at_1s("Go");
    let profile = waymark_core::ProfileState::new("p".into(), 0, 0);
    let undecided = Default::default();
    let at = |now, winners| crate::Ctx {
        profile: &profile,
        now,
        winners,
    };
    let mut state = crate::JourneyState::default();
    let effects = crate::apply(
        &ab,
        &mut state,
        crate::Input::Event(&go),
        &at(1_000, &undecided),
    );
    let timer = effects
        .iter()
        .find_map(|e| match e {
            Effect::Timer { timer, due, .. } if *timer != crate::DEADLINE_TIMER => {
                Some((*timer, *due))
            }
            _ => None,
        })
        .expect("a timer at the winner's time");
    assert_eq!(timer.1, 5_000);
    assert_eq!(state.instances[0].node.as_deref(), Some("pick"));
    // Due, but not decided (a store decides first; this one has not): it looks again later.
    let fire = crate::Input::Timer {
        instance: 1,
        timer: timer.0,
    };
    let effects = crate::apply(&ab, &mut state, fire, &at(5_000, &undecided));
    let again = effects
        .iter()
        .find_map(|e| match e {
            Effect::Timer { timer, due, .. } if *timer != crate::DEADLINE_TIMER => {
                Some((*timer, *due))
            }
            _ => None,
        })
        .expect("a retry");
    assert!(again.1 > 5_000, "{again:?}");
    assert!(!effects.iter().any(|e| matches!(e, Effect::Message(_))));
    // Decided: on down the chosen path, recorded as the step's detail.
    let decided: crate::winner::Winners =
        [(("ab".to_owned(), "pick".to_owned()), "b".to_owned())].into();
    let fire = crate::Input::Timer {
        instance: 1,
        timer: again.0,
    };
    let effects = crate::apply(&ab, &mut state, fire, &at(65_000, &decided));
    let sent: Vec<&str> = effects
        .iter()
        .filter_map(|e| match e {
            Effect::Message(m) => Some(m.template.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(sent, ["tb"]);
    let step = state.instances[0]
        .steps
        .iter()
        .find(|s| s.what == crate::StepKind::Split)
        .expect("split step");
    assert_eq!(step.detail, Some(json!({"winner": "b"})));
    assert_eq!(state.instances[0].status, crate::Status::Completed);
}

#[test]
fn the_winner_is_the_best_rate_and_significant_only_when_it_beats_every_other() {
    use crate::stats::{JourneyStats, NodeStats};
    let three = journey(
        r#"
key: three
entry: { event: Go }
nodes:
  - { id: pick, type: winner, paths: [a, b, c], metric: opened, at: "2026-12-08T00:00:00Z", inconclusive: c }
  - { id: a, type: message, channel: email, template: t, next: done }
  - { id: b, type: message, channel: email, template: t, next: done }
  - { id: c, type: message, channel: email, template: t, next: done }
  - { id: done, type: end }
"#,
    );
    let stats = |counts: [(u64, u64, u64); 3]| {
        let mut s = JourneyStats::default();
        for (node, (entered, suppressed, opened)) in ["a", "b", "c"].into_iter().zip(counts) {
            s.nodes.insert(
                node.to_owned(),
                NodeStats {
                    entered,
                    suppressed,
                    opened,
                    ..NodeStats::default()
                },
            );
        }
        s
    };
    // b opens 30% of 1,000 sent against 10% and 12%: it wins outright. Suppressed
    // messages were never sent and do not count.
    let clear = crate::winner::decide(
        &three,
        "pick",
        &stats([(1000, 0, 100), (1100, 100, 300), (1000, 0, 120)]),
    )
    .expect("decided");
    assert_eq!((clear.chosen.as_str(), clear.significant), ("b", true));
    assert_eq!(clear.tested[1].n, 1000);
    assert!(clear.tested[1].chance_to_beat_all > 0.99, "{clear:?}");
    // 12% against 11% and 10% of 100: nothing is sure, so the `inconclusive` path.
    let close = crate::winner::decide(
        &three,
        "pick",
        &stats([(100, 0, 10), (100, 0, 11), (100, 0, 12)]),
    )
    .expect("decided");
    assert_eq!((close.chosen.as_str(), close.significant), ("c", false));
    // Nobody sent yet: not significant, and the rule's path.
    let empty = crate::winner::decide(&three, "pick", &stats([(0, 0, 0); 3])).expect("decided");
    assert_eq!((empty.chosen.as_str(), empty.significant), ("c", false));
    assert!(crate::winner::decide(&three, "a", &stats([(0, 0, 0); 3])).is_none());
}
