use super::*;

fn doc(key: &str, rule: &str) -> AudienceDoc {
    AudienceDoc {
        key: key.into(),
        name: None,
        description: None,
        rule: rule.into(),
        ..Default::default()
    }
}

fn catalog(entries: &[(&str, &[&str])]) -> Catalog {
    entries
        .iter()
        .map(|(k, reads)| {
            (
                (*k).to_owned(),
                reads.iter().map(|r| (*r).to_owned()).collect(),
            )
        })
        .collect()
}

#[test]
fn yaml_and_json_documents_parse_and_unknown_fields_are_refused() {
    let yaml = "key: vip\nname: VIPs\nrule: >\n  events.count(\"Order Completed\", \"30d\") >= 3\n";
    let parsed = parse(yaml, Format::Yaml).expect("yaml");
    assert_eq!(parsed.key, "vip");
    assert_eq!(
        parsed.rule.trim(),
        r#"events.count("Order Completed", "30d") >= 3"#
    );
    let json = r#"{"key": "vip", "rule": "true", "rules": "x"}"#;
    let e = parse(json, Format::Json).expect_err("unknown field");
    assert!(e.message.contains("rules"), "{e:?}");
}

#[test]
fn rule_problems_carry_their_line_and_column() {
    let e = validate(
        &doc("vip", "profile.traits.x ==\n  evnt.y"),
        &Catalog::new(),
        None,
    )
    .expect_err("invalid");
    assert_eq!(
        (e[0].field.as_str(), e[0].line, e[0].column),
        ("rule", Some(2), Some(3))
    );
    assert_eq!(e[0].code, "invalid_rule");
}

#[test]
fn unknown_audiences_cycles_and_long_windows_are_refused() {
    let others = catalog(&[("vip", &[]), ("a", &["b"]), ("b", &["c"]), ("c", &[])]);
    assert!(validate(&doc("x", "in_audience(\"vip\")"), &others, None).is_ok());
    let e = validate(&doc("x", "in_audience(\"vipp\")"), &others, None).expect_err("unknown");
    assert_eq!(e[0].code, "unknown_audience");
    let e = validate(&doc("x", "in_audience(\"x\")"), &others, None).expect_err("itself");
    assert_eq!(e[0].code, "audience_cycle");
    // c is read by b, b by a: c reading a closes the loop.
    let e = validate(&doc("c", "in_audience(\"a\")"), &others, None).expect_err("cycle");
    assert_eq!(e[0].code, "audience_cycle");
    assert!(e[0].message.contains("c → a → b → c"), "{e:?}");
    let year = 365 * 86_400_000;
    let e = validate(
        &doc("x", "events.any(\"A\", \"400d\")"),
        &others,
        Some(year),
    )
    .expect_err("too long");
    assert_eq!(e[0].code, "window_too_long");
    assert!(
        validate(
            &doc("x", "events.any(\"A\", \"365d\")"),
            &others,
            Some(year)
        )
        .is_ok()
    );
    let e = validate(&doc("Bad Key", "true"), &others, None).expect_err("key");
    assert_eq!(e[0].field, "key");
}

#[test]
fn a_long_chain_of_audiences_is_checked_without_recursion() {
    let mut others = Catalog::new();
    for i in 0..100_000 {
        others.insert(format!("a{i}"), vec![format!("a{}", i + 1)]);
    }
    others.insert("a100000".into(), vec!["x".into()]);
    let e = validate(&doc("x", "in_audience(\"a0\")"), &others, None).expect_err("cycle");
    assert_eq!(e[0].code, "audience_cycle");
}

#[test]
fn dependencies_are_evaluated_first() {
    let order = evaluation_order(&catalog(&[
        ("big", &["vip", "active"]),
        ("vip", &["active"]),
        ("active", &[]),
        ("loop1", &["loop2"]),
        ("loop2", &["loop1"]),
    ]));
    assert_eq!(order, ["active", "vip", "big"]);
}

#[test]
fn refresh_and_schedule_are_checked_together_with_the_rule() {
    let others = Catalog::new();
    let yaml = "key: weekly\nrule: '!events.any(\"Order Completed\", \"60d\")'\nrefresh: snapshot\n\
                schedule: {cron: '0 6 * * MON', timezone: Europe/Paris}\n";
    let weekly = parse(yaml, Format::Yaml).expect("parses");
    assert_eq!(weekly.refresh, Refresh::Snapshot);
    assert!(validate(&weekly, &others, None).is_ok());
    let list = parse("key: leads\nrefresh: upload\n", Format::Yaml).expect("parses");
    assert!(
        validate(&list, &others, None).is_ok(),
        "an uploaded list has no rule"
    );
    assert_eq!(rule_text(&list), "false");

    let codes = |d: &AudienceDoc| -> Vec<(String, String)> {
        validate(d, &others, None)
            .expect_err("refused")
            .into_iter()
            .map(|e| (e.code.to_owned(), e.field))
            .collect()
    };
    let mut with_rule = list.clone();
    with_rule.rule = "true".into();
    assert_eq!(
        codes(&with_rule),
        [("rule_not_allowed".into(), "rule".into())]
    );
    let mut no_rule = weekly.clone();
    no_rule.rule = String::new();
    assert_eq!(codes(&no_rule), [("missing_field".into(), "rule".into())]);
    let mut streaming = weekly.clone();
    streaming.refresh = Refresh::Streaming;
    assert_eq!(
        codes(&streaming),
        [("schedule_not_allowed".into(), "schedule".into())]
    );
    let mut bad = weekly.clone();
    bad.schedule = Some(Schedule {
        cron: "0 25 * * *".into(),
        timezone: Some("Nowhere/Land".into()),
    });
    assert_eq!(
        codes(&bad),
        [("invalid_schedule".into(), "schedule.cron".into())],
        "the cron first; the zone once the cron reads"
    );
    // A streaming document is stored as before: no new fields appear.
    let plain = doc("vip", "true");
    let json = serde_json::to_value(&plain).expect("json");
    assert!(
        json.get("refresh").is_none() && json.get("schedule").is_none(),
        "{json}"
    );
}
