use serde_json::json;
use waymark_core::ProfileState;
use waymark_core::audience::AudienceDoc;

use super::*;

const DAY: Millis = 86_400_000;
const T0: Millis = 1_750_000_000_000;

fn audience(rule: &str) -> CompiledAudience {
    let doc = AudienceDoc {
        key: "a".into(),
        name: None,
        description: None,
        rule: rule.into(),
        ..Default::default()
    };
    CompiledAudience::compile(&doc, 1).expect("compiles")
}

fn person() -> ProfileState {
    let mut p = ProfileState::new("p1".into(), 0, T0);
    p.traits.insert("plan".into(), json!("pro"));
    p.traits.insert("age".into(), json!(31));
    p
}

fn event(name: &str, at: Millis, properties: serde_json::Value) -> HistoryEvent {
    HistoryEvent {
        name: name.into(),
        at,
        body: json!({"event": name, "properties": properties}),
    }
}

fn orders(times: &[Millis]) -> Vec<HistoryEvent> {
    times
        .iter()
        .enumerate()
        .map(|(i, t)| {
            event(
                "Order Completed",
                *t,
                json!({"total": 100 + i, "category": "shoes"}),
            )
        })
        .collect()
}

fn decide(rule: &CompiledAudience, events: &[HistoryEvent], now: Millis) -> Evaluation {
    let profile = person();
    let member_of = |key: &str| key == "vip";
    rule.evaluate(
        &Person {
            profile: &profile,
            events,
            member_of: &member_of,
        },
        now,
    )
}

#[test]
fn three_orders_in_thirty_days_holds_until_the_oldest_ages_out() {
    let rule = audience(r#"events.count("Order Completed", "30d") >= 3"#);
    let events = orders(&[T0, T0 + 5 * DAY, T0 + 10 * DAY]);
    let now = T0 + 12 * DAY;
    let e = decide(&rule, &events, now);
    assert!(e.member, "{e:?}");
    assert_eq!(e.values[0].value, json!(3));
    assert_eq!(e.values[0].matched, 3);
    // The first order leaves the window exactly 30 days after it was placed.
    assert_eq!(e.next_change, Some(T0 + 30 * DAY));
    let just_before = decide(&rule, &events, T0 + 30 * DAY - 1);
    assert!(just_before.member);
    let at_the_instant = decide(&rule, &events, T0 + 30 * DAY);
    assert!(!at_the_instant.member, "{at_the_instant:?}");
    assert_eq!(at_the_instant.values[0].value, json!(2));
    assert_eq!(at_the_instant.next_change, Some(T0 + 35 * DAY));
}

#[test]
fn lapsed_buyers_enter_when_their_last_order_leaves_the_window() {
    let rule =
        audience(r#"events.any("Order Completed") && !events.any("Order Completed", "30d")"#);
    let events = orders(&[T0, T0 + 3 * DAY]);
    let e = decide(&rule, &events, T0 + 4 * DAY);
    assert!(!e.member);
    assert_eq!(
        e.next_change,
        Some(T0 + 30 * DAY),
        "the older order ages out first"
    );
    let e = decide(&rule, &events, T0 + 30 * DAY);
    assert!(!e.member, "one order still in the window");
    assert_eq!(e.next_change, Some(T0 + 33 * DAY));
    let e = decide(&rule, &events, T0 + 33 * DAY);
    assert!(e.member, "{e:?}");
    assert_eq!(e.next_change, None, "nothing left to age out");
}

#[test]
fn sums_filters_last_and_traits_decide_together() {
    let rule = audience(
        r#"events.sum("Order Completed", "total", "90d") > 200.0
           && events.count("Cart Viewed", "24h", e, e.properties.value > 50) > 0
           && events.last("Order Completed").properties.category == "shoes"
           && profile.traits.plan == "pro""#,
    );
    let mut events = orders(&[T0, T0 + DAY]);
    events.push(event("Cart Viewed", T0 + DAY, json!({"value": 20})));
    events.push(event("Cart Viewed", T0 + DAY + 1000, json!({"value": 80})));
    events.push(event("Cart Viewed", T0 + DAY + 2000, json!({})));
    let now = T0 + DAY + 3000;
    let e = decide(&rule, &events, now);
    assert!(e.member, "{e:?}");
    assert_eq!(e.values[0].value, json!(201.0));
    assert_eq!(
        e.values[1].value,
        json!(1),
        "one cart over 50; a missing value is no match"
    );
    assert_eq!(e.values[2].value["properties"]["total"], json!(101));
    // The cart view leaves its 24h window before either order leaves 90 days.
    assert_eq!(e.next_change, Some(T0 + DAY + 1000 + DAY));
}

#[test]
fn audiences_read_other_audiences() {
    let rule = audience(r#"in_audience("vip") && !in_audience("churned")"#);
    let e = decide(&rule, &[], T0);
    assert!(e.member);
    assert_eq!(
        e.audiences,
        [("vip".to_owned(), true), ("churned".to_owned(), false)]
    );
}

#[test]
fn a_rule_that_fails_for_one_person_makes_them_not_a_member_and_says_why() {
    let rule = audience(r#"profile.traits.missing + 1 > 2"#);
    let e = decide(&rule, &[], T0);
    assert!(!e.member);
    assert!(
        e.error.as_deref().is_some_and(|m| m.contains("missing")),
        "{e:?}"
    );
    let rule = audience(r#"events.last("Order Completed").properties.category == "shoes""#);
    let e = decide(&rule, &[], T0);
    assert!(!e.member, "no order: last is null");
    assert!(e.error.is_some());
}

#[test]
fn future_dated_events_count_from_their_time() {
    let rule = audience(r#"events.count("Order Completed", "1d") > 0"#);
    let events = orders(&[T0 + 1000]);
    let e = decide(&rule, &events, T0);
    assert!(!e.member);
    assert_eq!(e.next_change, Some(T0 + 1000));
    let e = decide(&rule, &events, T0 + 1000);
    assert!(e.member);
    assert_eq!(e.next_change, Some(T0 + 1000 + DAY));
}

#[test]
fn only_named_events_are_read_and_profile_fields_are_pruned() {
    let rule = audience(r#"events.count("A", "1d") > 0 && profile.traits.plan == "pro""#);
    assert_eq!(rule.event_names, BTreeSet::from(["A".to_owned()]));
    let e = decide(&rule, &[event("B", T0, json!({}))], T0);
    assert_eq!(e.values[0].value, json!(0));
}

/// The cookbook in docs/audiences.md: every rule is valid against the others, and a few
/// decide as the page says for a person who did those things.
#[test]
fn the_cookbook_rules_are_valid_and_decide_as_documented() {
    let page = include_str!("../../../../docs/audiences.md");
    let cookbook = page.split("## Cookbook").nth(1).expect("cookbook section");
    let yaml = cookbook
        .split("```yaml")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("a yaml block");
    let docs: Vec<AudienceDoc> = serde_norway::from_str(yaml).expect("cookbook parses");
    assert!(docs.len() >= 20, "{} rules", docs.len());
    let catalog: waymark_core::audience::Catalog = docs
        .iter()
        .map(|d| {
            let rule = waymark_core::audience::Rule::parse(&d.rule).expect("parses");
            (d.key.clone(), rule.audiences)
        })
        .collect();
    let year = 365 * DAY;
    for doc in &docs {
        let mut others = catalog.clone();
        others.remove(&doc.key);
        if let Err(problems) = waymark_core::audience::validate(doc, &others, Some(year)) {
            panic!("{}: {problems:?}", doc.key);
        }
    }
    let rule = |key: &str| {
        let doc = docs.iter().find(|d| d.key == key).expect("in the cookbook");
        CompiledAudience::compile(doc, 1).expect("compiles")
    };
    let now = T0 + 1000;
    let events = vec![
        event("Cart Viewed", T0, json!({"value": 80.5})),
        event(
            "Order Completed",
            T0,
            json!({"total": 1200, "category": "shoes"}),
        ),
    ];
    for key in ["big-carts", "big-spenders-once", "shoe-buyers"] {
        let e = decide(&rule(key), &events, now);
        assert!(e.member && e.error.is_none(), "{key}: {e:?}");
    }
    let e = decide(&rule("lapsed-buyers"), &events, T0 + 60 * DAY);
    assert!(e.member, "{e:?}");
    let e = decide(&rule("nordics"), &[], now);
    assert!(!e.member, "no country trait: not a member");
    // person() has no birthday: null is no month. With one, on the day:
    let e = decide(&rule("birthday-today"), &[], now);
    assert!(!e.member && e.error.is_none(), "{e:?}");
    let mut born = person();
    let today = jiff::Timestamp::from_millisecond(now)
        .expect("time")
        .to_zoned_datetime(jiff::tz::TimeZone::UTC);
    born.traits.insert(
        "birthday".into(),
        json!(format!("1990-{:02}-{:02}", today.month(), today.day())),
    );
    let member_of = |_: &str| false;
    for key in ["birthday-today", "birthday-this-month"] {
        let e = rule(key).evaluate(
            &Person {
                profile: &born,
                events: &[],
                member_of: &member_of,
            },
            now,
        );
        assert!(e.member && e.error.is_none(), "{key}: {e:?}");
    }
}

#[test]
fn explain_lists_the_events_each_call_counted_newest_first() {
    let rule = audience(
        r#"events.count("Order Completed", "30d") >= 1 && events.count("Cart Viewed", "1d", e, e.properties.value > 50) >= 0"#,
    );
    let mut events = orders(&[T0, T0 + 5 * DAY, T0 + 40 * DAY]);
    events.push(event("Cart Viewed", T0 + 40 * DAY, json!({"value": 80})));
    events.push(event("Cart Viewed", T0 + 40 * DAY, json!({"value": 20})));
    let profile = person();
    let member_of = |_: &str| false;
    let person = Person {
        profile: &profile,
        events: &events,
        member_of: &member_of,
    };
    let now = T0 + 40 * DAY + 1000;
    let counted = rule.matching_events(&person, now, 10);
    let times: Vec<Millis> = counted[0].iter().map(|e| e.at).collect();
    assert_eq!(times, [T0 + 40 * DAY], "only the order inside 30 days");
    assert_eq!(counted[1].len(), 1, "the cart over 50 only");
    let limited = rule.matching_events(&person, T0 + 6 * DAY, 1);
    assert_eq!(limited[0][0].at, T0 + 5 * DAY, "newest first, limited");
}

#[test]
fn events_are_read_only_as_far_as_the_calls_need() {
    let bodies = |rule: &str| audience(rule).bodies;
    assert_eq!(
        bodies(r#"events.count("Order Completed", "30d") > 1"#),
        BodyPart::Nothing
    );
    assert_eq!(
        bodies(r#"events.sum("Order Completed", "total") > 1"#),
        BodyPart::Properties
    );
    assert_eq!(
        bodies(r#"events.any("Cart Viewed", "1d", e, e.properties.value > 50)"#),
        BodyPart::Properties
    );
    assert_eq!(
        bodies(r#"events.any("Page Viewed", e, e.context.page.path == "/")"#),
        BodyPart::Whole
    );
    assert_eq!(
        bodies(r#"events.last("Order Completed").properties.category == "shoes""#),
        BodyPart::Whole
    );
}

#[test]
fn birthday_this_month_flips_at_the_persons_first_of_the_month() {
    let at = |text: &str| {
        text.parse::<jiff::Timestamp>()
            .expect("time")
            .as_millisecond()
    };
    let rule = audience(
        "calendar.month(profile.traits.birthday) == calendar.month() && events.any(\"Order Completed\")",
    );
    assert!(rule.rule.reads_profile);
    let mut profile = person();
    profile
        .traits
        .insert("birthday".into(), json!("1990-05-17"));
    profile
        .traits
        .insert("timezone".into(), json!("Pacific/Auckland"));
    let bought = orders(&[at("2027-01-10T00:00:00Z")]);
    let member_of = |_: &str| false;
    let decide_at = |now: Millis| {
        rule.evaluate(
            &Person {
                profile: &profile,
                events: &bought,
                member_of: &member_of,
            },
            now,
        )
    };
    // 30 April 13:00 UTC is already 1 May in Auckland (UTC+12).
    let april = decide_at(at("2027-04-30T11:00:00Z"));
    assert!(!april.member);
    assert_eq!(april.next_change, Some(at("2027-04-30T12:00:00Z")));
    let may = decide_at(at("2027-04-30T12:00:00Z"));
    assert!(may.member, "{may:?}");
    assert_eq!(may.next_change, Some(at("2027-05-31T12:00:00Z")));
    assert_eq!(
        may.values
            .last()
            .map(|v| (v.call.as_str(), v.value.clone())),
        Some(("calendar.month()", json!(5)))
    );
    // Without a birthday the reading is null, and null is no month.
    let mut nobody = profile.clone();
    nobody.traits.remove("birthday");
    let unknown = rule.evaluate(
        &Person {
            profile: &nobody,
            events: &bought,
            member_of: &member_of,
        },
        at("2027-05-02T00:00:00Z"),
    );
    assert!(!unknown.member);
}

#[test]
fn calendar_readings_compare_with_int_literals_through_cel_too() {
    // Saturday 2 January 2027, noon UTC.
    let now = "2027-01-02T12:00:00Z"
        .parse::<jiff::Timestamp>()
        .expect("time")
        .as_millisecond();
    for (rule, member) in [
        ("calendar.weekday() == 6", true),
        ("calendar.weekday() >= 6 && calendar.hour() < 13", true),
        ("calendar.day() == 2 && profile.traits.age + 1 == 32", true),
        ("[6, 7].exists(d, d == calendar.weekday())", true),
        ("calendar.weekday() in [1, 2, 3, 4, 5]", false),
    ] {
        let compiled = audience(rule);
        let decided = decide(&compiled, &[], now);
        assert_eq!((decided.member, decided.error), (member, None), "{rule}");
    }
}

/// Batch evaluation decodes only what `trait_keys_read` names when `reads_traits_only`
/// holds: a date read outside the traits, or the zone calendar readings are in, left out
/// would decide everyone on a default.
#[test]
fn the_traits_a_rule_reads_include_those_its_calendar_readings_need() {
    let keys = |rule: &str| audience(rule).trait_keys_read();
    assert_eq!(
        keys(r#"profile.traits.plan == "pro" && events.count("Order Completed", "30d") >= 3"#),
        Some(vec!["plan".to_owned()])
    );
    assert_eq!(
        keys("calendar.month(profile.traits.birthday) == calendar.month() && profile.traits.vip"),
        Some(vec![
            "birthday".to_owned(),
            "timezone".to_owned(),
            "vip".to_owned()
        ])
    );
    assert_eq!(keys("size(profile.traits) > 2"), None, "all of the traits");
    assert_eq!(keys(r#"profile.id != """#), None, "more than traits");
    let outside = audience("calendar.month(profile.first_seen) == 12");
    assert!(!outside.reads_traits_only(), "first_seen is not a trait");
    assert_eq!(outside.trait_keys_read(), None);
}
