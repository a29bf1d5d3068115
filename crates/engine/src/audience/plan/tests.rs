use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::json;
use waymark_core::ProfileState;
use waymark_core::audience::{AudienceDoc, Refresh};
use waymark_core::time::Millis;

use super::*;
use crate::audience::{CompiledAudience, HistoryEvent};

const DAY: Millis = 86_400_000;
const T0: Millis = 1_750_000_000_000;

fn catalog(rules: &[(&str, &str)]) -> AudienceCatalog {
    AudienceCatalog::new(
        rules
            .iter()
            .map(|(key, rule)| {
                let doc = AudienceDoc {
                    key: (*key).into(),
                    name: None,
                    description: None,
                    rule: (*rule).into(),
                    ..Default::default()
                };
                Arc::new(CompiledAudience::compile(&doc, 2).expect("compiles"))
            })
            .collect(),
    )
}

fn orders(times: &[Millis]) -> Vec<HistoryEvent> {
    times
        .iter()
        .map(|t| HistoryEvent {
            name: "Order Completed".into(),
            at: *t,
            body: json!({"properties": {}}),
        })
        .collect()
}

fn input<'a>(
    profile: &'a ProfileState,
    events: Vec<HistoryEvent>,
    members: &[&str],
    trigger: Trigger,
) -> PersonInput<'a> {
    PersonInput {
        profile,
        events,
        members: members
            .iter()
            .map(|m| ((*m).to_owned(), T0))
            .collect::<BTreeMap<_, _>>(),
        trigger,
    }
}

#[test]
fn an_order_enters_buyers_and_their_readers_and_schedules_the_exit() {
    let catalog = catalog(&[
        (
            "loyal",
            r#"in_audience("buyers") && profile.traits.plan == "pro""#,
        ),
        ("buyers", r#"events.count("Order Completed", "30d") >= 2"#),
        ("browsers", r#"events.any("Page Viewed", "7d")"#),
    ]);
    let mut profile = ProfileState::new("p1".into(), 0, T0);
    profile.traits.insert("plan".into(), json!("pro"));
    let now = T0 + DAY;
    let person = input(
        &profile,
        orders(&[T0, T0 + DAY]),
        &[],
        Trigger::Events(vec!["Order Completed".into()]),
    );
    let plan = plan(&catalog, &[person], now);
    let entered: Vec<(&str, bool)> = plan
        .changes
        .iter()
        .map(|c| (c.audience.as_str(), c.entered))
        .collect();
    assert_eq!(
        entered,
        [("buyers", true), ("loyal", true)],
        "dependency first"
    );
    assert_eq!(
        plan.evaluated, 2,
        "browsers does not read orders or the profile"
    );
    assert_eq!(
        plan.checks,
        [Check {
            profile_id: "p1".into(),
            due: Some(T0 + 30 * DAY),
            exact: false
        }]
    );
    let event = plan.changes[0].event();
    assert_eq!(event.display_name(), ENTERED);
    assert_eq!(event.properties["audience"], json!("buyers"));
    assert_eq!(event.properties["version"], json!(2));
    assert_eq!(event.timestamp, now);
}

#[test]
fn a_due_check_decides_everything_and_exits_those_time_flipped() {
    let catalog = catalog(&[("buyers", r#"events.count("Order Completed", "30d") >= 2"#)]);
    let profile = ProfileState::new("p1".into(), 0, T0);
    let person = input(
        &profile,
        orders(&[T0, T0 + DAY]),
        &["buyers"],
        Trigger::Everything,
    );
    let plan = plan(&catalog, &[person], T0 + 30 * DAY);
    assert_eq!(plan.changes.len(), 1);
    assert!(!plan.changes[0].entered);
    assert_eq!(plan.changes[0].event().display_name(), EXITED);
    assert_eq!(
        plan.checks,
        [Check {
            profile_id: "p1".into(),
            due: Some(T0 + 31 * DAY),
            exact: true
        }],
        "the remaining order still ages out"
    );
}

#[test]
fn nothing_changes_for_a_member_who_still_matches() {
    let catalog = catalog(&[("pro", r#"profile.traits.plan == "pro""#)]);
    let mut profile = ProfileState::new("p1".into(), 0, T0);
    profile.traits.insert("plan".into(), json!("pro"));
    let person = input(
        &profile,
        vec![],
        &["pro"],
        Trigger::Events(vec!["Identify".into()]),
    );
    let plan = plan(&catalog, &[person], T0);
    assert!(plan.changes.is_empty());
    assert!(plan.checks.is_empty(), "no time-driven change to wait for");
}

#[test]
fn a_backfill_decides_its_audiences_and_their_readers_only() {
    let catalog = catalog(&[
        (
            "loyal",
            r#"in_audience("buyers") && profile.traits.plan == "pro""#,
        ),
        ("buyers", r#"events.count("Order Completed", "30d") >= 2"#),
        ("pros", r#"profile.traits.plan == "pro""#),
    ]);
    let mut profile = ProfileState::new("p1".into(), 0, T0);
    profile.traits.insert("plan".into(), json!("pro"));
    let keys = ["buyers".to_owned(), "deleted".to_owned()].into();
    let person = input(
        &profile,
        orders(&[T0, T0 + DAY]),
        &["deleted", "also-deleted"],
        Trigger::Audiences(keys),
    );
    let plan = plan(&catalog, &[person], T0 + DAY);
    let changes: Vec<(&str, bool)> = plan
        .changes
        .iter()
        .map(|c| (c.audience.as_str(), c.entered))
        .collect();
    assert_eq!(
        changes,
        [("buyers", true), ("loyal", true), ("deleted", false)],
        "pros is not being backfilled; also-deleted is not this backfill's"
    );
    assert_eq!(plan.evaluated, 2);
    assert_eq!(
        plan.checks,
        [Check {
            profile_id: "p1".into(),
            due: Some(T0 + 30 * DAY),
            exact: false
        }],
        "a partial decision only brings a check forward"
    );
}

#[test]
fn snapshots_and_uploaded_lists_are_not_decided_on_events_or_time() {
    let compiled = |key: &str, rule: &str, refresh: Refresh| {
        let doc = AudienceDoc {
            key: key.into(),
            rule: rule.into(),
            refresh,
            ..Default::default()
        };
        Arc::new(CompiledAudience::compile(&doc, 1).expect("compiles"))
    };
    let catalog = AudienceCatalog::new(vec![
        compiled(
            "recent-buyers",
            r#"events.any("Order Completed", "30d")"#,
            Refresh::Snapshot,
        ),
        compiled("leads", "", Refresh::Upload),
        compiled(
            "hot-leads",
            r#"in_audience("leads") && in_audience("recent-buyers")"#,
            Refresh::Streaming,
        ),
    ]);
    assert!(
        !catalog.affected_by("Order Completed"),
        "only the snapshot reads orders"
    );
    let profile = ProfileState::new("p1".into(), 0, T0);
    let decide = |members: &[&str], trigger: Trigger| {
        plan(
            &catalog,
            &[input(&profile, orders(&[T0]), members, trigger)],
            T0 + DAY,
        )
    };
    // A due check: the snapshot keeps its stale answer, the uploaded list its member.
    let checked = decide(&["leads"], Trigger::Everything);
    assert!(checked.changes.is_empty(), "{:?}", checked.changes);
    assert_eq!(checked.evaluated, 1, "hot-leads only");
    // The snapshot's run decides it, and what reads it follows.
    let run = decide(
        &["leads"],
        Trigger::Audiences(["recent-buyers".to_owned(), "leads".to_owned()].into()),
    );
    let changes: Vec<(&str, bool)> = run
        .changes
        .iter()
        .map(|c| (c.audience.as_str(), c.entered))
        .collect();
    assert_eq!(changes, [("recent-buyers", true), ("hot-leads", true)]);
    assert!(
        run.checks.is_empty(),
        "a snapshot's window does not schedule a check: {:?}",
        run.checks
    );
}
