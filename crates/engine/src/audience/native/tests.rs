//! The native decision against CEL's, on rules and people drawn at random: wherever the
//! native form decides, CEL decides the same (and without an error); and wherever it
//! decides before the events are read, CEL decides the same with them.

use proptest::prelude::*;
use serde_json::{Value, json};
use waymark_core::ProfileState;
use waymark_core::audience::AudienceDoc;

use crate::audience::{CompiledAudience, HistoryEvent, Person};

fn operand() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(r#"events.count("A", "1d")"#.to_owned()),
        Just(r#"events.sum("A", "v", "1d")"#.to_owned()),
        Just(r#"events.any("B")"#.to_owned()),
        Just(r#"events.last("A")"#.to_owned()),
        Just("profile.traits.n".to_owned()),
        Just("profile.traits.s".to_owned()),
        Just("profile.traits.b".to_owned()),
        Just("profile.traits.missing".to_owned()),
        Just("profile.traits.nested.x".to_owned()),
        Just("profile.event_count".to_owned()),
        Just("in_audience(\"vip\")".to_owned()),
        Just("calendar.day()".to_owned()),
        Just("calendar.month(profile.traits.s)".to_owned()),
        (-3i64..4).prop_map(|i| i.to_string()),
        (-3i64..4).prop_map(|i| format!("{i}.5")),
        Just("2.0".to_owned()),
        Just("\"x\"".to_owned()),
        Just("true".to_owned()),
    ]
}

fn rule() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        (
            operand(),
            prop_oneof!["==", "!=", "<", "<=", ">", ">="],
            operand()
        )
            .prop_map(|(a, op, b)| format!("{a} {op} {b}")),
        operand(),
    ];
    leaf.prop_recursive(3, 12, 2, |inner| {
        prop_oneof![
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a}) && ({b})")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a}) || ({b})")),
            inner.prop_map(|a| format!("!({a})")),
        ]
    })
}

fn trait_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        (-3i64..4).prop_map(|i| json!(i)),
        (-3i64..4).prop_map(|i| json!(i as f64 + 0.5)),
        Just(json!(2.0)),
        Just(json!("x")),
        Just(json!("y")),
        Just(json!(true)),
        Just(json!(null)),
        Just(json!({"x": 1})),
        Just(json!([1])),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]
    #[test]
    fn the_native_decision_is_cels(
        rule in rule(),
        n in trait_value(), s in trait_value(), b in trait_value(), nested in trait_value(),
        orders in 0usize..4, values in prop::collection::vec(-2i64..3, 4),
        any_b in any::<bool>(), vip in any::<bool>(),
    ) {
        let doc = AudienceDoc { key: "r".into(), name: None, description: None, rule: rule.clone(), ..Default::default() };
        let Ok(audience) = CompiledAudience::compile(&doc, 1) else {
            return Ok(());
        };
        let mut profile = ProfileState::new("p".into(), 0, 5);
        for (k, v) in [("n", n), ("s", s), ("b", b), ("nested", json!({"x": nested}))] {
            profile.traits.insert(k.into(), v);
        }
        profile.event_count = orders as u64;
        let now = 1_000_000;
        let mut events: Vec<HistoryEvent> = (0..orders)
            .map(|i| HistoryEvent {
                name: "A".into(),
                at: now - 10 - i as i64,
                body: json!({"properties": {"v": values[i]}}),
            })
            .collect();
        if any_b {
            events.push(HistoryEvent { name: "B".into(), at: now - 1, body: json!({}) });
        }
        let member_of = |k: &str| k == "vip" && vip;
        let person = Person { profile: &profile, events: &events, member_of: &member_of };
        let decided = audience.evaluate(&person, now);
        // The same rule with the native form taken away: CEL alone.
        let cel_only = CompiledAudience { native: None, ..CompiledAudience::compile(&doc, 1).expect("compiles") };
        let by_cel = cel_only.evaluate(&person, now);
        prop_assert_eq!(
            (decided.member, decided.error.is_some()),
            (by_cel.member, by_cel.error.is_some()),
            "{}", rule
        );
        // A missing field is reported as CEL reports it.
        if let (Some(native), Some(cel)) = (&decided.error, &by_cel.error)
            && native.starts_with("No such key")
        {
            prop_assert_eq!(native, cel, "{}", rule);
        }
        if let Some((member, error)) = audience.decide_without_events(&profile, &member_of) {
            prop_assert_eq!(
                (member, error.is_some()),
                (by_cel.member, by_cel.error.is_some()),
                "decided before the events: {}", rule
            );
        }
    }
}

#[test]
fn a_trait_that_settles_the_rule_is_decided_before_the_events() {
    let doc = AudienceDoc {
        key: "r".into(),
        rule: r#"profile.traits.plan == "pro" && events.count("Viewed", "30d") >= 2"#.into(),
        ..Default::default()
    };
    let audience = CompiledAudience::compile(&doc, 1).expect("compiles");
    assert!(audience.may_decide_without_events());
    let mut profile = ProfileState::new("p".into(), 0, 5);
    let nobody = |_: &str| false;
    profile.traits.insert("plan".into(), json!("free"));
    assert_eq!(
        audience.decide_without_events(&profile, &nobody),
        Some((false, None))
    );
    profile.traits.insert("plan".into(), json!("pro"));
    assert_eq!(audience.decide_without_events(&profile, &nobody), None);
    // Without the trait the comparison fails, and CEL's `error && false` is false: the
    // events still decide whether this is an error or not a member.
    profile.traits.clear();
    assert_eq!(audience.decide_without_events(&profile, &nobody), None);
    let settled = AudienceDoc {
        key: "s".into(),
        rule: r#"profile.traits.plan == "pro" || events.count("Viewed", "30d") >= 2"#.into(),
        ..Default::default()
    };
    let settled = CompiledAudience::compile(&settled, 1).expect("compiles");
    profile.traits.insert("plan".into(), json!("pro"));
    assert_eq!(
        settled.decide_without_events(&profile, &nobody),
        Some((true, None))
    );
    // A rule of calls alone always needs the events.
    let calls_only = AudienceDoc {
        key: "c".into(),
        rule: r#"events.count("Viewed", "30d") >= 2"#.into(),
        ..Default::default()
    };
    let calls_only = CompiledAudience::compile(&calls_only, 1).expect("compiles");
    assert!(!calls_only.may_decide_without_events());
    assert_eq!(calls_only.decide_without_events(&profile, &nobody), None);
}

#[test]
fn common_rules_take_the_native_path() {
    for rule in [
        r#"events.count("Order Completed", "30d") >= 3"#,
        r#"profile.traits.plan == "pro" && events.sum("Order Completed", "total", "90d") > 500.0"#,
        r#"in_audience("a") && !in_audience("b") || events.any("X", "1d")"#,
        r#"profile.event_count > 10"#,
    ] {
        let doc = AudienceDoc {
            key: "r".into(),
            name: None,
            description: None,
            rule: rule.into(),
            ..Default::default()
        };
        assert!(
            CompiledAudience::compile(&doc, 1)
                .expect("compiles")
                .decided_natively(),
            "{rule}"
        );
    }
    for rule in [
        r#"events.last("A").properties.c == "x""#,
        r#"has(profile.traits.plan)"#,
        r#"profile.traits.tags.exists(t, t == "vip")"#,
        r#"profile.traits.n + 1 > 2"#,
    ] {
        let doc = AudienceDoc {
            key: "r".into(),
            name: None,
            description: None,
            rule: rule.into(),
            ..Default::default()
        };
        assert!(
            !CompiledAudience::compile(&doc, 1)
                .expect("compiles")
                .decided_natively(),
            "{rule}"
        );
    }
}
