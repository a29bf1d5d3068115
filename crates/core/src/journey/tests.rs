use super::*;

const WELCOME: &str = include_str!("../../../../examples/journeys/welcome.yaml");

fn errors(yaml: &str) -> Vec<(String, &'static str)> {
    let journey = parse(yaml, Format::Yaml).expect("parses");
    validate(&journey)
        .into_iter()
        .map(|e| (e.field, e.code))
        .collect()
}

#[test]
fn the_example_journey_is_valid_and_uses_every_node_type() {
    let journey = parse(WELCOME, Format::Yaml).expect("parses");
    assert_eq!(validate(&journey), vec![]);
    let mut types: Vec<&str> = journey.nodes.iter().map(|n| n.kind.type_name()).collect();
    types.sort_unstable();
    types.dedup();
    assert_eq!(
        types,
        [
            "condition",
            "end",
            "message",
            "random_split",
            "update_profile",
            "wait",
            "webhook"
        ]
    );
}

#[test]
fn json_and_yaml_are_the_same_document() {
    let journey = parse(WELCOME, Format::Yaml).expect("yaml");
    let json = serde_json::to_string(&journey).expect("json");
    assert_eq!(parse(&json, Format::Json).expect("json parses"), journey);
}

#[test]
fn unknown_nodes_are_reported_with_their_path() {
    let doc = WELCOME
        .replace("next: tell-crm", "next: tell-crn")
        .replace("timeout_next: nudge", "timeout_next: nudj");
    let errs = errors(&doc);
    assert!(
        errs.contains(&("nodes[1].branches[0].next".into(), "unknown_node")),
        "{errs:?}"
    );
    assert!(
        errs.contains(&("nodes[4].event.timeout_next".into(), "unknown_node")),
        "{errs:?}"
    );
}

#[test]
fn bad_cel_is_reported_before_running() {
    let doc = WELCOME
        .replace(
            r#"event.properties.plan == "pro""#,
            "event.properties.plan ==",
        )
        .replace("has(event.properties.plan)", "evnt.plan");
    let errs = errors(&doc);
    assert!(
        errs.contains(&("nodes[1].branches[0].when".into(), "invalid_expression")),
        "{errs:?}"
    );
    assert!(
        errs.contains(&("entry.when".into(), "invalid_expression")),
        "{errs:?}"
    );
}

#[test]
fn unreachable_nodes_and_loops_without_waits_are_rejected() {
    let doc = r#"
key: loops
entry: { event: Go }
nodes:
  - { id: a, type: condition, branches: [{ when: "true", next: b }], else: c }
  - { id: b, type: update_profile, set: { x: 1 }, next: a }
  - { id: c, type: wait, duration: 1h, next: a }
  - { id: orphan, type: end }
"#;
    let errs = errors(doc);
    assert!(
        errs.contains(&("nodes[3]".into(), "unreachable_node")),
        "{errs:?}"
    );
    assert!(
        errs.contains(&("nodes[0]".into(), "cycle_without_wait")),
        "{errs:?}"
    );
    assert_eq!(
        errs.iter()
            .filter(|(_, c)| *c == "cycle_without_wait")
            .count(),
        1,
        "the loop through the wait is fine: {errs:?}"
    );
}

#[test]
fn every_field_problem_is_reported_at_once() {
    let doc = r#"
key: Bad Key
entry: { event: "" }
properties: { timeout: forever, timezone: Mars/Olympus, start_at: "2027-01-01T00:00:00Z", end_at: "2026-01-01T00:00:00Z" }
nodes:
  - { id: w, type: wait, duration: 1h, until: "25:00", next: s }
  - { id: s, type: random_split, paths: [{ percent: 70, next: m }, { percent: 20, next: m }] }
  - { id: m, type: message, channel: pigeon, template: "", next: h }
  - { id: h, type: webhook, method: BREW, url: "ftp://x", timeout: 5m, next: e }
  - { id: e, type: end }
  - { id: e, type: end }
"#;
    let errs = errors(doc);
    for expected in [
        ("key", "invalid_value"),
        ("entry.event", "missing_field"),
        ("properties.timeout", "invalid_duration"),
        ("properties.timezone", "invalid_value"),
        ("properties.end_at", "invalid_value"),
        ("nodes[0].type", "invalid_value"),
        ("nodes[0].until", "invalid_value"),
        ("nodes[1].paths", "invalid_value"),
        ("nodes[2].channel", "invalid_value"),
        ("nodes[2].template", "missing_field"),
        ("nodes[3].method", "invalid_value"),
        ("nodes[3].url", "invalid_value"),
        ("nodes[3].timeout", "invalid_value"),
        ("nodes[5].id", "duplicate_id"),
    ] {
        assert!(
            errs.contains(&(expected.0.into(), expected.1)),
            "missing {expected:?} in {errs:?}"
        );
    }
}

#[test]
fn syntax_and_shape_errors_say_where() {
    let e = parse(
        "key: x\nentry: { event: Go }\nnodes:\n  - id: a\n    type: teleport\n",
        Format::Yaml,
    )
    .expect_err("bad type");
    assert!(e.field.starts_with("nodes[0]"), "{e:?}");
    assert!(e.message.contains("line"), "{e:?}");
    let e = parse("key: x\nentry: { event: Go }\nnodes: [\n", Format::Yaml).expect_err("bad yaml");
    assert!(e.message.contains("line"), "{e:?}");
    let e = parse(
        r#"{"key": "x", "entry": {"event": "Go", "whenn": "true"}, "nodes": []}"#,
        Format::Json,
    )
    .expect_err("unknown field");
    assert!(e.field.contains("entry"), "{e:?}");
    assert!(e.message.contains("whenn"), "{e:?}");
}

#[test]
fn committed_json_schema_is_current() {
    let committed = include_str!("../../../../docs/journey.schema.json");
    let committed: serde_json::Value = serde_json::from_str(committed).expect("schema json");
    assert_eq!(
        committed,
        json_schema(),
        "docs/journey.schema.json is stale: run `waymark journeys schema > docs/journey.schema.json`"
    );
}

#[test]
fn a_journey_of_a_hundred_thousand_nodes_validates_without_recursion() {
    // A chain as long as this overflowed the stack while cycles were looked for
    // recursively; the last node loops back to the first to prove the walk still finds it.
    let n = 100_000;
    let mut nodes = String::new();
    for i in 0..n {
        let next = if i + 1 == n { 0 } else { i + 1 };
        nodes.push_str(&format!(
            "  - {{id: n{i}, type: update_profile, set: {{k: 1}}, next: n{next}}}\n"
        ));
    }
    let doc = format!("key: long\nname: Long\nentry: {{event: Signed Up}}\nnodes:\n{nodes}");
    let errs = std::thread::Builder::new()
        .stack_size(256 * 1024)
        .spawn(move || errors(&doc))
        .expect("thread")
        .join()
        .expect("validation did not overflow a 256 KB stack");
    assert!(
        errs.contains(&("nodes[0]".into(), "cycle_without_wait")),
        "{:?}",
        &errs[..errs.len().min(5)]
    );
}

const READER: &str = "key: promo
entry: {audience: buyers, on: read}
nodes:
  - {id: done, type: end}
";

#[test]
fn a_read_entry_reads_once_at_start_or_on_its_schedule() {
    let at = |t: &str| crate::time::parse_iso8601(t).expect("time");
    let now = at("2026-12-07T10:20:00Z");
    let once = parse(READER, Format::Yaml).expect("parses");
    assert!(validate(&once).is_empty());
    assert_eq!(once.first_read(now), Some(now), "at publish");
    assert_eq!(once.next_read(now), None, "once");

    let later = parse(
        &READER.replace(
            "nodes:",
            "properties: {start_at: 2026-12-08T09:00:00Z}\nnodes:",
        ),
        Format::Yaml,
    )
    .expect("parses");
    assert_eq!(later.first_read(now), Some(at("2026-12-08T09:00:00Z")));

    let weekly = parse(
        &READER.replace(
            "on: read}",
            "on: read, schedule: {cron: '0 9 * * MON', timezone: Europe/Oslo}}",
        ),
        Format::Yaml,
    )
    .expect("parses");
    assert!(validate(&weekly).is_empty());
    // Monday 2026-12-14 09:00 in Oslo (UTC+1).
    assert_eq!(weekly.first_read(now), Some(at("2026-12-14T08:00:00Z")));
    assert_eq!(
        weekly.next_read(at("2026-12-14T08:00:00Z")),
        Some(at("2026-12-21T08:00:00Z"))
    );
    // A run exactly at start_at counts.
    let from = weekly.clone();
    let mut from = from;
    from.properties.start_at = Some("2026-12-14T08:00:00Z".into());
    assert_eq!(from.first_read(now), Some(at("2026-12-14T08:00:00Z")));
    // None after end_at.
    from.properties.end_at = Some("2026-12-20T00:00:00Z".into());
    assert_eq!(from.next_read(at("2026-12-14T08:00:00Z")), None);
}

#[test]
fn a_schedule_goes_with_a_read_entry_and_must_run() {
    let on_enter = READER.replace("on: read}", "on: enter, schedule: {cron: '0 9 * * *'}}");
    assert!(errors(&on_enter).contains(&("entry.schedule".into(), "invalid_value")));
    let bad = READER.replace("on: read}", "on: read, schedule: {cron: 'often'}}");
    assert!(errors(&bad).contains(&("entry.schedule.cron".into(), "invalid_schedule")));
    let zone = READER.replace(
        "on: read}",
        "on: read, schedule: {cron: '0 9 * * *', timezone: Mars/Base}}",
    );
    assert!(errors(&zone).contains(&("entry.schedule.timezone".into(), "invalid_schedule")));
}

#[test]
fn split_percents_that_would_overflow_are_refused_not_wrapped() {
    // 2^32 - 1 + 101 wraps to 100 in 32 bits.
    let yaml = "key: s
entry: {event: Go}
nodes:
  - {id: split, type: random_split, paths: [{percent: 4294967295, next: a}, {percent: 101, next: b}]}
  - {id: a, type: end}
  - {id: b, type: end}
";
    assert!(
        errors(yaml).contains(&("nodes[0].paths".into(), "invalid_value")),
        "{:?}",
        errors(yaml)
    );
}

#[test]
fn content_goes_on_a_surface_only_from_code_based_nodes() {
    let doc = |channel: &str, surface: &str| {
        format!(
            "key: j\nentry: {{event: E}}\nnodes:\n  - {{id: a, type: message, channel: {channel}, template: t{surface}, next: b}}\n  - {{id: b, type: end}}\n"
        )
    };
    assert!(errors(&doc("code_based", ", surface: hero")).is_empty());
    assert!(
        errors(&doc(
            "code_based",
            ", surface: \"web://shop.example/home#hero\""
        ))
        .is_empty()
    );
    assert_eq!(
        errors(&doc("code_based", "")),
        [("nodes[0].surface".to_owned(), "missing_field")]
    );
    assert_eq!(
        errors(&doc("code_based", ", surface: \"ftp://x\"")),
        [("nodes[0].surface".to_owned(), "invalid_value")]
    );
    assert_eq!(
        errors(&doc("email", ", surface: hero")),
        [("nodes[0].surface".to_owned(), "invalid_value")]
    );
}
