use super::*;
use crate::journey::validate;

fn campaign(yaml: &str) -> Campaign {
    crate::journey::parse_document(yaml, crate::journey::Format::Yaml).expect("parses")
}

const AB: &str = "
key: december-sale
audience: buyers
exclude: [opted-out]
channel: email
variants:
  - {key: a, template: sale-a}
  - {key: b, template: sale-b}
holdout: 10
send_at: 2026-12-08T09:00:00Z
rate: 2000
";

#[test]
fn variants_split_what_the_holdout_leaves_and_the_journey_reads_the_audience() {
    let c = campaign(AB);
    assert!(c.problems().is_empty(), "{:?}", c.problems());
    assert_eq!(
        c.shares(),
        [
            ("a".into(), "sale-a".into(), 45),
            ("b".into(), "sale-b".into(), 45)
        ]
    );
    let j = c.to_journey();
    assert!(validate(&j).is_empty(), "{:?}", validate(&j));
    assert_eq!(j.entry.read_audience(), Some("buyers"));
    assert_eq!(j.entry.except, ["opted-out"]);
    // 2,000 sends a second with 10% held out: 2,223 people read a second.
    assert_eq!(j.properties.entry_rate_limit, Some(2223));
    assert_eq!(
        j.properties.start_at.as_deref(),
        Some("2026-12-08T09:00:00Z")
    );
    let NodeKind::RandomSplit { paths } = &j.nodes[0].kind else {
        panic!("starts with the split: {:?}", j.nodes[0]);
    };
    let paths: Vec<(u32, &str)> = paths.iter().map(|p| (p.percent, p.next.as_str())).collect();
    assert_eq!(
        paths,
        [(45, "variant-a"), (45, "variant-b"), (10, "holdout")]
    );
    assert_eq!(
        of_journey(&serde_json::to_value(&j).expect("json")),
        Some(c)
    );
}

#[test]
fn three_variants_share_the_remainder_and_one_template_needs_no_split() {
    let mut c = campaign(AB);
    c.holdout = 0;
    c.variants.push(Variant {
        key: "c".into(),
        template: "sale-c".into(),
        percent: None,
    });
    let percents: Vec<u32> = c.shares().iter().map(|s| s.2).collect();
    assert_eq!(percents, [34, 33, 33]);
    let single = campaign("{key: news, audience: all, channel: email, template: news}");
    assert!(single.problems().is_empty());
    let j = single.to_journey();
    assert_eq!(j.nodes[0].id, "variant-main", "no split for one path");
    assert!(validate(&j).is_empty());
}

#[test]
fn bad_campaigns_say_which_field() {
    let fields = |yaml: &str| -> Vec<String> {
        let c = campaign(yaml);
        let journey = c.to_journey();
        let mut out: Vec<String> = c.problems().into_iter().map(|e| e.field).collect();
        out.extend(
            validate(&journey)
                .into_iter()
                .map(|e| journey_field(&c, &journey, &e.field)),
        );
        out
    };
    let none = fields("{key: x, audience: a, channel: email}");
    assert!(none.contains(&"template".to_owned()), "{none:?}");
    let both = fields(
        "{key: x, audience: a, channel: email, template: t, variants: [{key: a, template: t}]}",
    );
    assert!(both.contains(&"variants".to_owned()), "{both:?}");
    let over = fields(
        "{key: x, audience: a, channel: email, holdout: 20, variants: [{key: a, template: t, percent: 90}]}",
    );
    assert!(over.contains(&"variants".to_owned()), "{over:?}");
    let dup = fields(
        "{key: x, audience: a, channel: email, variants: [{key: a, template: t}, {key: a, template: u}]}",
    );
    assert!(dup.contains(&"variants[1].key".to_owned()), "{dup:?}");
    let bad = fields(
        "{key: x, audience: a, channel: pigeon, template: t, send_at: soon, schedule: {cron: often}}",
    );
    for field in ["channel", "send_at", "schedule.cron"] {
        assert!(bad.contains(&field.to_owned()), "{field} in {bad:?}");
    }
}

#[test]
fn the_example_campaign_and_multi_step_read_journey_are_valid() {
    let example = include_str!("../../../../examples/campaigns/vip-preview.json");
    let c: Campaign =
        crate::journey::parse_document(example, crate::journey::Format::Json).expect("parses");
    assert!(c.problems().is_empty(), "{:?}", c.problems());
    assert!(validate(&c.to_journey()).is_empty());
    let follow_up = include_str!("../../../../examples/read-journeys/vip-follow-up.yaml");
    let j = crate::journey::parse(follow_up, crate::journey::Format::Yaml).expect("parses");
    assert!(validate(&j).is_empty(), "{:?}", validate(&j));
    assert_eq!(j.entry.read_audience(), Some("vip"));
}

#[test]
fn report_statistics_are_the_textbook_ones() {
    // Wilson interval of 10 in 100: 0.0552..0.1744 (Newcombe 1998, table I style figures).
    let (lo, hi) = rate_interval(10, 100);
    assert!(
        (lo - 0.0552).abs() < 5e-4 && (hi - 0.1744).abs() < 5e-4,
        "{lo} {hi}"
    );
    assert_eq!(rate_interval(0, 0), (0.0, 0.0));
    let (lo, hi) = rate_interval(0, 20);
    assert!(lo == 0.0 && hi > 0.1 && hi < 0.2, "{hi}");
    // 12% of 1000 against 10% of 1000: z = 0.02 / 0.01404 = 1.424, P = 0.923.
    let p = chance_to_beat(120, 1000, 100, 1000);
    assert!((p - 0.923).abs() < 2e-3, "{p}");
    assert!((chance_to_beat(100, 1000, 120, 1000) - (1.0 - p)).abs() < 1e-9);
    assert_eq!(chance_to_beat(5, 10, 0, 0), 0.5);
    assert_eq!(chance_to_beat(0, 10, 0, 10), 0.5);
}

#[test]
fn a_local_time_send_waits_for_each_persons_time_first() {
    let mut c = campaign(AB);
    c.local_time = Some("09:00".into());
    c.fallback_timezone = Some("America/New_York".into());
    let j = c.to_journey();
    assert!(validate(&j).is_empty(), "{:?}", validate(&j));
    assert_eq!(j.nodes[0].id, LOCAL_TIME_NODE);
    assert!(
        matches!(&j.nodes[0].kind, NodeKind::Wait { until: Some(t), next, .. } if t == "09:00" && next == SPLIT_NODE)
    );
    assert_eq!(j.properties.timezone.as_deref(), Some("profile"));
    c.local_time = Some("25:99".into());
    c.fallback_timezone = Some("Nowhere/Land".into());
    let journey = c.to_journey();
    let fields: Vec<String> = validate(&journey)
        .into_iter()
        .map(|e| journey_field(&c, &journey, &e.field))
        .collect();
    assert!(fields.contains(&"local_time".to_owned()), "{fields:?}");
    assert!(
        fields.contains(&"fallback_timezone".to_owned()),
        "{fields:?}"
    );
}

proptest::proptest! {
    /// Whatever shares, holdout and variants a document has, checking it and making its
    /// journey never panic, and a campaign found valid makes a valid journey.
    #[test]
    fn any_shares_are_checked_without_panicking(
        holdout in proptest::prop_oneof![0u32..200, proptest::prelude::Just(u32::MAX)],
        percents in proptest::collection::vec(
            proptest::option::of(proptest::prop_oneof![0u32..150, proptest::prelude::Just(u32::MAX)]),
            0..5,
        ),
        single in proptest::bool::ANY,
        test in proptest::option::of(proptest::option::of(proptest::prop_oneof![0u32..150, proptest::prelude::Just(u32::MAX)])),
    ) {
        let mut c = campaign("{key: x, audience: a, channel: log, conversion: {event: Order Completed}}");
        c.holdout = holdout;
        c.winner = test.map(|test_percent| WinnerRule {
            metric: WinnerMetric::Converted,
            after: DurationText("1h".into()),
            test_percent,
            inconclusive: None,
        });
        if single {
            c.template = Some("t".into());
        }
        c.variants = percents
            .iter()
            .enumerate()
            .map(|(i, p)| Variant { key: format!("v{i}"), template: "t".into(), percent: *p })
            .collect();
        let problems = c.problems();
        let journey = c.to_journey();
        let journey_problems = validate(&journey);
        for e in &journey_problems {
            let _ = journey_field(&c, &journey, &e.field);
        }
        if problems.is_empty() {
            proptest::prop_assert!(journey_problems.is_empty(), "{:?}", journey_problems);
            let total: u32 = c.shares().iter().map(|s| s.2).sum::<u32>() + c.holdout;
            if c.winner.is_some() {
                proptest::prop_assert!(total < 100);
            } else {
                proptest::prop_assert_eq!(total, 100);
            }
        }
    }
}

const WINNER: &str = "
key: subject-test
audience: buyers
channel: email
variants:
  - {key: a, template: sale-a}
  - {key: b, template: sale-b}
holdout: 10
send_at: 2026-12-08T09:00:00Z
winner: {metric: clicked, after: 4h, inconclusive: b}
";

#[test]
fn a_winner_tests_on_a_share_and_sends_the_rest_the_best_variant_at_its_time() {
    let c = campaign(WINNER);
    assert!(c.problems().is_empty(), "{:?}", c.problems());
    // The default test share of 20 percent, split between the variants.
    assert_eq!(
        c.shares(),
        [
            ("a".into(), "sale-a".into(), 10),
            ("b".into(), "sale-b".into(), 10)
        ]
    );
    let j = c.to_journey();
    assert!(validate(&j).is_empty(), "{:?}", validate(&j));
    let split = j.nodes.iter().find(|n| n.id == SPLIT_NODE).expect("split");
    let NodeKind::RandomSplit { paths } = &split.kind else {
        panic!("{split:?}");
    };
    let paths: Vec<(u32, &str)> = paths.iter().map(|p| (p.percent, p.next.as_str())).collect();
    assert_eq!(
        paths,
        [
            (10, "variant-a"),
            (10, "variant-b"),
            (10, "holdout"),
            (70, "winner")
        ]
    );
    let winner = j
        .nodes
        .iter()
        .find(|n| n.id == WINNER_NODE)
        .expect("winner");
    assert_eq!(
        winner.kind,
        NodeKind::Winner {
            paths: vec!["variant-a".into(), "variant-b".into()],
            metric: WinnerMetric::Clicked,
            at: "2026-12-08T13:00:00.000Z".into(),
            inconclusive: Some("variant-b".into()),
        }
    );
    // Without send_at, the test runs from the launch.
    let mut now = c.clone();
    now.send_at = None;
    let launched = parse_iso8601("2026-12-07T20:00:00Z").expect("time");
    let j = now.to_journey_launched(Some(launched));
    let winner = j
        .nodes
        .iter()
        .find(|n| n.id == WINNER_NODE)
        .expect("winner");
    assert!(
        matches!(&winner.kind, NodeKind::Winner { at, .. } if at == "2026-12-08T00:00:00.000Z"),
        "{winner:?}"
    );
}

#[test]
fn a_winner_that_cannot_be_picked_is_refused_at_its_field() {
    let problems = |edit: &dyn Fn(&mut Campaign)| -> Vec<String> {
        let mut c = campaign(WINNER);
        edit(&mut c);
        let journey = c.to_journey();
        let mut out: Vec<String> = c.problems().into_iter().map(|e| e.field).collect();
        out.extend(
            validate(&journey)
                .into_iter()
                .map(|e| journey_field(&c, &journey, &e.field)),
        );
        out
    };
    let sms = problems(&|c| c.channel = "sms".into());
    assert!(sms.contains(&"winner.metric".to_owned()), "{sms:?}");
    let goal = problems(&|c| {
        if let Some(w) = &mut c.winner {
            w.metric = WinnerMetric::Converted;
        }
    });
    assert!(goal.contains(&"conversion".to_owned()), "{goal:?}");
    let recurring = problems(&|c| {
        c.schedule = Some(Schedule {
            cron: "0 9 * * 1".into(),
            timezone: None,
        })
    });
    assert!(recurring.contains(&"winner".to_owned()), "{recurring:?}");
    let nothing_left = problems(&|c| {
        if let Some(w) = &mut c.winner {
            w.test_percent = Some(90);
        }
    });
    assert!(
        nothing_left.contains(&"variants".to_owned()),
        "{nothing_left:?}"
    );
    let unknown = problems(&|c| {
        if let Some(w) = &mut c.winner {
            w.inconclusive = Some("c".into());
        }
    });
    assert!(
        unknown.contains(&"winner.inconclusive".to_owned()),
        "{unknown:?}"
    );
    let never = problems(&|c| {
        if let Some(w) = &mut c.winner {
            w.after = DurationText("0s".into());
        }
    });
    assert!(never.contains(&"winner.after".to_owned()), "{never:?}");
    let one = problems(&|c| {
        c.variants.truncate(1);
    });
    assert!(one.contains(&"winner".to_owned()), "{one:?}");
}

#[test]
fn a_code_based_campaign_places_content_and_keeps_it_up_for_expires() {
    let c = campaign(
        "
key: spring
audience: everyone
channel: code_based
template: spring-banner
surface: web://shop.example/home#banner
expires: 14d
priority: 7
",
    );
    assert!(c.problems().is_empty(), "{:?}", c.problems());
    let j = c.to_journey();
    assert!(validate(&j).is_empty(), "{:?}", validate(&j));
    assert_eq!(j.properties.priority, 7);
    let node = |id: &str| j.nodes.iter().find(|n| n.id == id).map(|n| &n.kind);
    match node(&variant_node("main")) {
        Some(NodeKind::Message { surface, next, .. }) => {
            assert_eq!(surface.as_deref(), Some("web://shop.example/home#banner"));
            assert_eq!(next, ON_SURFACE_NODE);
        }
        other => panic!("{other:?}"),
    }
    match node(ON_SURFACE_NODE) {
        Some(NodeKind::Wait { duration, next, .. }) => {
            assert_eq!(duration.as_ref().map(|d| d.0.as_str()), Some("14d"));
            assert_eq!(next, SENT_NODE);
        }
        other => panic!("{other:?}"),
    }
    // Without a surface it is refused at `surface`; `expires` on email at `expires`.
    let bad = campaign("key: s\naudience: a\nchannel: code_based\ntemplate: t\n");
    let fields: Vec<String> = validate(&bad.to_journey())
        .into_iter()
        .map(|e| journey_field(&bad, &bad.to_journey(), &e.field))
        .collect();
    assert_eq!(fields, ["surface"]);
    let bad = campaign("key: s\naudience: a\nchannel: email\ntemplate: t\nexpires: 1d\n");
    let fields: Vec<String> = validate(&bad.to_journey())
        .into_iter()
        .map(|e| journey_field(&bad, &bad.to_journey(), &e.field))
        .collect();
    assert_eq!(fields, ["expires"]);
}
