use super::*;

fn parse(source: &str) -> Rule {
    Rule::parse(source).unwrap_or_else(|e| panic!("{source}: {e:?}"))
}

fn problems(source: &str) -> Vec<RuleError> {
    Rule::parse(source).expect_err(source)
}

#[test]
fn behaviour_calls_become_variables_with_their_arguments() {
    let rule = parse(
        r#"events.count("Order Completed", "30d") >= 3 && events.sum("Order Completed", "total", "90d") > 500.0"#,
    );
    assert_eq!(rule.calls.len(), 2);
    let count = &rule.calls[0];
    assert_eq!(count.function, Function::Count);
    assert_eq!(count.event, "Order Completed");
    assert_eq!(count.window_ms, Some(30 * 86_400_000));
    assert_eq!(count.text, r#"events.count("Order Completed", "30d")"#);
    let sum = &rule.calls[1];
    assert_eq!(sum.function, Function::Sum);
    assert_eq!(sum.property, Some(vec!["total".to_owned()]));
    assert_eq!(sum.window_ms, Some(90 * 86_400_000));
    assert_eq!(sum.text, r#"events.sum("Order Completed", "total", "90d")"#);
    // CEL sees only the variables.
    let refs = format!("{:?}", rule.expression);
    assert!(refs.contains("@b0") && refs.contains("@b1"), "{refs}");
    assert!(!refs.contains("events"), "{refs}");
    assert!(!rule.reads_profile);
}

#[test]
fn filters_last_first_any_and_audiences_are_understood() {
    let rule = parse(
        r#"events.count("Cart Viewed", "24h", e, e.properties.value > 50) > 0
           && events.last("Order Completed").properties.category == "shoes"
           && !events.any("Order Completed", "30d")
           && events.first("Signed Up") != null
           && in_audience("vip") && !in_audience("churned") && in_audience("vip")
           && profile.traits.plan == "pro""#,
    );
    let functions: Vec<Function> = rule.calls.iter().map(|c| c.function).collect();
    assert_eq!(
        functions,
        [
            Function::Count,
            Function::Last,
            Function::Any,
            Function::First
        ]
    );
    let filter = rule.calls[0].filter.as_ref().expect("filter");
    assert_eq!(filter.variable, "e");
    assert_eq!(rule.calls[0].window_ms, Some(86_400_000));
    assert_eq!(
        rule.calls[0].text,
        r#"events.count("Cart Viewed", "24h", e, e.properties.value > 50)"#
    );
    assert_eq!(rule.calls[1].window_ms, None);
    assert_eq!(
        rule.audiences,
        ["vip", "churned"],
        "each audience bound once"
    );
    assert!(rule.reads_profile);
}

#[test]
fn a_window_may_be_left_out_and_a_filter_follows_the_name() {
    let rule = parse(r#"events.count("Login") > 0 && events.any("Login", e, e.properties.ok)"#);
    assert_eq!(rule.calls[0].window_ms, None);
    assert_eq!(rule.calls[1].window_ms, None);
    assert!(rule.calls[1].filter.is_some());
}

#[test]
fn comprehension_variables_are_not_unknown() {
    parse(r#"profile.traits.tags.exists(t, t == "vip")"#);
    let e = problems(r#"profile.traits.tags.exists(t, u == "vip")"#);
    assert!(e[0].message.contains("`u`"), "{e:?}");
}

#[test]
fn mistakes_are_reported_with_their_position() {
    let e = problems("profile.traits.plan ==");
    assert_eq!(e[0].line, 1, "{e:?}");
    let e = problems("profile.traits.plan == 'pro' &&\n  events.count(\"Order\", \"30 dayz\") > 1");
    assert_eq!((e[0].line, e[0].column), (2, 25), "{e:?}");
    assert!(e[0].message.contains("30 dayz"), "{e:?}");
    let e = problems("events.cnt(\"Order\") > 1");
    assert!(e[0].message.contains("no function `cnt`"), "{e:?}");
    let e = problems("events.count(name) > 1");
    assert!(e[0].message.contains("event name comes first"), "{e:?}");
    let e = problems("events.sum(\"Order\") > 1");
    assert!(e[0].message.contains("property"), "{e:?}");
    let e = problems("events.count(\"Order\", \"30d\", e) > 1");
    assert!(e[0].message.contains("followed by a condition"), "{e:?}");
    let e = problems("events.count(\"Order\", \"30d\", e, e.x, 1) > 1");
    assert!(e[0].message.contains("too many"), "{e:?}");
    let e = problems("size(events) > 1");
    assert!(e[0].message.contains("through its functions"), "{e:?}");
    let e = problems("event.name == 'x'");
    assert!(e[0].message.contains("unknown variable `event`"), "{e:?}");
    let e = problems("in_audience(vip)");
    assert!(e[0].message.contains("one audience key"), "{e:?}");
    let e = problems("events.count(\"Order\", \"0s\") > 1");
    assert!(e[0].message.contains("longer than 0s"), "{e:?}");
    let e = problems(r#"events.any("A", "1d", e, events.any("B"))"#);
    assert!(e[0].message.contains("reads the event"), "{e:?}");
    assert!(!problems("  ").is_empty());
}

#[test]
fn every_problem_is_reported_at_once() {
    let e = problems(r#"evnt.x == 1 && events.count("A", "3 fortnights") > 1 && in_audience(1)"#);
    assert_eq!(e.len(), 3, "{e:?}");
}

#[test]
fn positions_count_characters_not_bytes() {
    let e = problems("profile.traits.name == \"Zoë\" && evnt.x");
    assert_eq!((e[0].line, e[0].column), (1, 33), "{e:?}");
    let rule = parse("events.count(\"Zoë's Order\", \"1d\") > 0");
    assert_eq!(rule.calls[0].text, "events.count(\"Zoë's Order\", \"1d\")");
}

#[test]
fn long_rules_and_too_many_calls_are_refused() {
    let long = format!("profile.traits.a == '{}'", "x".repeat(MAX_RULE_BYTES));
    assert!(problems(&long)[0].message.contains("longer than"));
    let many = (0..=MAX_CALLS)
        .map(|i| format!("events.any(\"E{i}\")"))
        .collect::<Vec<_>>()
        .join(" || ");
    assert!(problems(&many)[0].message.contains("at most"));
}
