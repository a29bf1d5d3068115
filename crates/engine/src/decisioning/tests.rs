use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{Value, json};
use waymark_core::decisioning::{
    Cap, CapEvent, CapScope, Catalogue, CollectionDoc, ContentType, OfferDoc, PlacementDoc,
    PolicyDoc, Ranking, SurfaceChannel,
};

use super::*;

const DAY: i64 = 86_400_000;
const NOW: i64 = 1_800_000_000_000;

fn placement(key: &str, content: ContentType) -> PlacementDoc {
    PlacementDoc {
        key: key.into(),
        name: None,
        channel: SurfaceChannel::Web,
        surface: format!("web://shop.example/home#{key}"),
        content,
    }
}

fn offer(key: &str, priority: i64, content: Value) -> OfferDoc {
    OfferDoc {
        key: key.into(),
        priority,
        content: [("hero".to_owned(), content)].into(),
        ..OfferDoc::default()
    }
}

fn catalogue(offers: Vec<OfferDoc>, policy: Option<PolicyDoc>) -> CompiledCatalogue {
    let mut c = Catalogue::default();
    c.placements
        .insert("hero".into(), placement("hero", ContentType::Html));
    for o in offers {
        c.offers.insert(o.key.clone(), o);
    }
    if let Some(p) = policy {
        c.policies.insert(p.key.clone(), p);
    }
    let compiled = CompiledCatalogue::compile(c);
    assert!(compiled.problems.is_empty(), "{:?}", compiled.problems);
    compiled
}

fn policy(ranking: Ranking, items: u32, fallback: Option<&str>) -> PolicyDoc {
    PolicyDoc {
        key: "home".into(),
        placement: "hero".into(),
        items,
        ranking,
        fallback: fallback.map(str::to_owned),
        ..PolicyDoc::default()
    }
}

fn person(traits: Value) -> ProfileState {
    let mut p = nobody();
    p.id = "p1".into();
    p.traits = traits.as_object().cloned().unwrap_or_default();
    p
}

fn event(name: &str, days_ago: i64, properties: Value) -> HistoryEvent {
    HistoryEvent {
        name: Arc::from(name),
        at: NOW - days_ago * DAY,
        body: json!({ "properties": properties }),
    }
}

struct Asked<'a> {
    profile: &'a ProfileState,
    events: &'a [HistoryEvent],
    audiences: &'a [&'a str],
    context: Value,
}

/// The same, with content journeys placed for the person.
fn decide_with_placed(
    c: &CompiledCatalogue,
    profile: &ProfileState,
    placed: &[Placed],
    items: Option<u32>,
) -> Decided {
    let member_of = |_: &str| false;
    let visitor = Visitor {
        profile,
        events: &[],
        member_of: &member_of,
        id: &profile.id,
        placed,
    };
    let asks = [Ask {
        placement: "hero".into(),
        items,
    }];
    c.decide(&visitor, &json!({}), &asks, NOW, 7, &NoCounts, false)
        .expect("the placement exists")
        .remove(0)
}

impl Asked<'_> {
    fn decide(
        &self,
        c: &CompiledCatalogue,
        seed: u64,
        counts: &dyn OfferCounts,
        explain: bool,
    ) -> Decided {
        let member_of = |k: &str| self.audiences.contains(&k);
        let visitor = Visitor {
            profile: self.profile,
            events: self.events,
            member_of: &member_of,
            id: &self.profile.id,
            placed: &[],
        };
        let asks = [Ask {
            placement: "hero".into(),
            items: None,
        }];
        c.decide(&visitor, &self.context, &asks, NOW, seed, counts, explain)
            .expect("the placement exists")
            .remove(0)
    }
}

fn offers_of(d: &Decided) -> Vec<&str> {
    d.items.iter().filter_map(|i| i.offer.as_deref()).collect()
}

#[test]
fn the_highest_priority_eligible_offer_wins_and_the_fallback_covers_nobody_eligible() {
    let mut vip = offer("vip", 10, json!("<b>VIP {{profile.traits.name}}</b>"));
    vip.eligibility = Some(r#"in_audience("vip") && context.page == "/shop""#.into());
    let mut future = offer("future", 20, json!("soon"));
    future.starts_at = Some("2099-01-01T00:00:00Z".into());
    let mut ended = offer("ended", 30, json!("gone"));
    ended.ends_at = Some("2020-01-01T00:00:00Z".into());
    let generic = offer("generic", 1, json!("hello"));
    let mut fallback_only = offer("house", -5, json!("house ad"));
    fallback_only.eligibility = Some("false".into());
    let c = catalogue(
        vec![vip, future, ended, generic, fallback_only],
        Some(policy(Ranking::Priority, 1, Some("house"))),
    );
    let profile = person(json!({"name": "<Ann>"}));
    let asked = Asked {
        profile: &profile,
        events: &[],
        audiences: &["vip"],
        context: json!({"page": "/shop"}),
    };
    let d = asked.decide(&c, 1, &NoCounts, true);
    assert_eq!(offers_of(&d), ["vip"]);
    assert_eq!(d.ranking, "priority");
    // Values from the profile are escaped in HTML content.
    assert_eq!(d.items[0].content, json!("<b>VIP &lt;Ann&gt;</b>"));
    let why = |offer: &str| {
        d.explain
            .iter()
            .find(|e| e.offer == offer)
            .and_then(|e| e.why.clone())
            .unwrap_or_default()
    };
    assert!(
        why("future").starts_with("it starts at 2099-01-01"),
        "{}",
        why("future")
    );
    assert!(
        why("ended").starts_with("it ended at 2020-01-01"),
        "{}",
        why("ended")
    );
    assert_eq!(why("generic"), "ranked below the 1 shown");
    assert_eq!(why("house"), "its eligibility is false");

    // Another page: the VIP offer's rule fails, the generic one wins.
    let elsewhere = Asked {
        context: json!({"page": "/"}),
        ..asked
    };
    assert_eq!(
        offers_of(&elsewhere.decide(&c, 1, &NoCounts, false)),
        ["generic"]
    );

    // Nobody eligible: the fallback, marked.
    let only_vip = catalogue(
        vec![
            {
                let mut o = offer("vip", 10, json!("v"));
                o.eligibility = Some(r#"in_audience("vip")"#.into());
                o
            },
            offer("house", 0, json!("house ad")),
        ],
        Some(PolicyDoc {
            collection: None,
            ..policy(Ranking::Priority, 1, Some("house"))
        }),
    );
    let stranger = nobody();
    let d = Asked {
        profile: &stranger,
        events: &[],
        audiences: &[],
        context: Value::Null,
    }
    .decide(&only_vip, 1, &NoCounts, false);
    // "house" is itself a candidate (it holds content for hero) and eligible.
    assert_eq!(offers_of(&d), ["house"]);
    assert!(!d.items[0].fallback);
}

#[test]
fn the_fallback_is_marked_when_nothing_in_the_collection_is_eligible() {
    let mut vip = offer("vip", 10, json!("v"));
    vip.eligibility = Some("profile.traits.tier == \"gold\"".into());
    vip.tags = vec!["promo".into()];
    let mut c = Catalogue::default();
    c.placements
        .insert("hero".into(), placement("hero", ContentType::Html));
    c.offers.insert("vip".into(), vip);
    c.offers
        .insert("house".into(), offer("house", 0, json!("house ad")));
    c.collections.insert(
        "promo".into(),
        CollectionDoc {
            key: "promo".into(),
            tags: vec!["promo".into()],
            ..CollectionDoc::default()
        },
    );
    c.policies.insert(
        "home".into(),
        PolicyDoc {
            collection: Some("promo".into()),
            ..policy(Ranking::Priority, 1, Some("house"))
        },
    );
    let c = CompiledCatalogue::compile(c);
    let silver = person(json!({"tier": "silver"}));
    let d = Asked {
        profile: &silver,
        events: &[],
        audiences: &[],
        context: Value::Null,
    }
    .decide(&c, 3, &NoCounts, false);
    assert_eq!(offers_of(&d), ["house"]);
    assert!(d.items[0].fallback);
    // A missing trait in the rule is an error for this person, counted, never a failure.
    let bare = person(json!({}));
    let d = Asked {
        profile: &bare,
        events: &[],
        audiences: &[],
        context: Value::Null,
    }
    .decide(&c, 3, &NoCounts, true);
    assert_eq!(offers_of(&d), ["house"]);
    assert_eq!(d.errors.len(), 1, "{:?}", d.errors);
    assert!(d.explain[0].why.as_deref().unwrap_or("").contains("failed"));
}

#[test]
fn person_caps_count_their_own_displays_in_the_window_and_totals_count_everyones() {
    let mut capped = offer("capped", 10, json!("c"));
    capped.caps = vec![Cap {
        per: CapScope::Person,
        max: 2,
        on: CapEvent::Display,
        window: Some("7d".into()),
    }];
    let mut clicked_once = offer("once", 5, json!("o"));
    clicked_once.caps = vec![Cap {
        per: CapScope::Person,
        max: 1,
        on: CapEvent::Click,
        window: None,
    }];
    let c = catalogue(
        vec![capped, clicked_once, offer("rest", 0, json!("r"))],
        Some(policy(Ranking::Priority, 1, None)),
    );
    let profile = person(json!({}));
    let shown = |offer: &str, days: i64| {
        event(
            waymark_core::decisioning::OFFER_DISPLAYED,
            days,
            json!({"offer": offer, "placement": "hero"}),
        )
    };
    // One display this week, one a month ago: room left.
    let events = vec![shown("capped", 1), shown("capped", 30)];
    let asked = Asked {
        profile: &profile,
        events: &events,
        audiences: &[],
        context: Value::Null,
    };
    assert_eq!(
        offers_of(&asked.decide(&c, 1, &NoCounts, false)),
        ["capped"]
    );
    // Two this week: capped, the next one wins.
    let events = vec![shown("capped", 1), shown("capped", 2), shown("other", 1)];
    let d = Asked {
        events: &events,
        ..asked
    }
    .decide(&c, 1, &NoCounts, true);
    assert_eq!(offers_of(&d), ["once"]);
    assert_eq!(
        d.explain[0].why.as_deref(),
        Some("capped: this person's displays in 7d reached 2 of 2")
    );
    // A click on "once", however long ago, caps it too.
    let mut events = events;
    events.push(event(
        waymark_core::decisioning::OFFER_CLICKED,
        300,
        json!({"offer": "once", "placement": "hero"}),
    ));
    let d = Asked {
        profile: &profile,
        events: &events,
        audiences: &[],
        context: Value::Null,
    }
    .decide(&c, 1, &NoCounts, false);
    assert_eq!(offers_of(&d), ["rest"]);

    // Total caps read everyone's counts.
    struct Totals(u64);
    impl OfferCounts for Totals {
        fn total(&self, offer: &str, on: CapEvent, since: Option<Millis>) -> u64 {
            assert_eq!(since, Some(NOW - DAY));
            if offer == "popular" && on == CapEvent::Display {
                self.0
            } else {
                0
            }
        }
        fn learned(&self, _: &str, _: &str) -> (u64, u64) {
            (0, 0)
        }
    }
    let mut popular = offer("popular", 10, json!("p"));
    popular.caps = vec![Cap {
        per: CapScope::Total,
        max: 1000,
        on: CapEvent::Display,
        window: Some("1d".into()),
    }];
    let c = catalogue(
        vec![popular, offer("rest", 0, json!("r"))],
        Some(policy(Ranking::Priority, 1, None)),
    );
    let asked = Asked {
        profile: &profile,
        events: &[],
        audiences: &[],
        context: Value::Null,
    };
    assert_eq!(
        offers_of(&asked.decide(&c, 1, &Totals(999), false)),
        ["popular"]
    );
    assert_eq!(
        offers_of(&asked.decide(&c, 1, &Totals(1000), false)),
        ["rest"]
    );
}

#[test]
fn a_formula_ranks_by_offer_profile_context_and_behaviour() {
    let formula = r#"offer.priority + (offer.key == context.boost ? 100 : 0) + (offer.key == "loyal" ? events.count("Order Completed", "30d") * 10 : 0)"#;
    let c = catalogue(
        vec![
            offer("a", 5, json!("a")),
            offer("b", 1, json!("b")),
            offer("loyal", 0, json!("l")),
        ],
        Some(policy(
            Ranking::Formula {
                formula: formula.into(),
            },
            3,
            None,
        )),
    );
    let profile = person(json!({}));
    let none = Asked {
        profile: &profile,
        events: &[],
        audiences: &[],
        context: json!({"boost": "nothing"}),
    };
    let d = none.decide(&c, 9, &NoCounts, true);
    assert_eq!(offers_of(&d), ["a", "b", "loyal"]);
    assert_eq!(d.ranking, "formula");
    assert_eq!(
        d.explain.iter().map(|e| e.score).collect::<Vec<_>>(),
        [Some(5.0), Some(1.0), Some(0.0)]
    );
    let boosted = Asked {
        context: json!({"boost": "b"}),
        ..none
    };
    assert_eq!(
        offers_of(&boosted.decide(&c, 9, &NoCounts, false)),
        ["b", "a", "loyal"]
    );
    let orders: Vec<HistoryEvent> = (0..3)
        .map(|d| event("Order Completed", d, json!({})))
        .chain([event("Order Completed", 45, json!({}))])
        .collect();
    let loyal = Asked {
        events: &orders,
        context: json!({"boost": "nothing"}),
        ..boosted
    };
    assert_eq!(
        offers_of(&loyal.decide(&c, 9, &NoCounts, false)),
        ["loyal", "a", "b"]
    );
    assert!(c.event_names().contains("Order Completed"));
    // A formula failing for one offer (context without the field) leaves that offer out.
    let c = catalogue(
        vec![offer("a", 5, json!("a"))],
        Some(policy(
            Ranking::Formula {
                formula: "context.weight * 2".into(),
            },
            1,
            None,
        )),
    );
    let d = Asked {
        profile: &profile,
        events: &[],
        audiences: &[],
        context: json!({}),
    }
    .decide(&c, 1, &NoCounts, false);
    assert!(d.items.is_empty());
    assert_eq!(d.errors.len(), 1);
}

struct Learned(HashMap<&'static str, (u64, u64)>);

impl OfferCounts for Learned {
    fn total(&self, _: &str, _: CapEvent, _: Option<Millis>) -> u64 {
        0
    }
    fn learned(&self, placement: &str, offer: &str) -> (u64, u64) {
        assert_eq!(placement, "hero");
        self.0.get(offer).copied().unwrap_or((0, 0))
    }
}

#[test]
fn the_learned_ranker_prefers_what_is_clicked_explores_and_keeps_a_control_group() {
    let c = catalogue(
        vec![offer("weak", 0, json!("w")), offer("strong", 0, json!("s"))],
        Some(policy(
            Ranking::Learned {
                exploration: 0.0,
                control: 0.0,
            },
            1,
            None,
        )),
    );
    let counts = Learned([("weak", (1000, 10)), ("strong", (1000, 100))].into());
    let profile = person(json!({}));
    let asked = Asked {
        profile: &profile,
        events: &[],
        audiences: &[],
        context: Value::Null,
    };
    let strong = (0..200)
        .filter(|seed| offers_of(&asked.decide(&c, *seed, &counts, false)) == ["strong"])
        .count();
    assert_eq!(
        strong, 200,
        "1% vs 10% over 1,000 displays each is beyond doubt"
    );
    let d = asked.decide(&c, 1, &counts, true);
    assert_eq!(d.ranking, "learned");
    let estimate = d
        .explain
        .iter()
        .find(|e| e.offer == "strong")
        .and_then(|e| e.estimate);
    assert_eq!(
        estimate,
        Some(Estimate {
            displays: 1000,
            clicks: 100,
            mean: 101.0 / 1002.0
        })
    );
    // With no evidence both are tried.
    let fresh = Learned(HashMap::new());
    let strong = (0..200)
        .filter(|seed| offers_of(&asked.decide(&c, *seed, &fresh, false)) == ["strong"])
        .count();
    assert!((60..140).contains(&strong), "{strong} of 200");

    // Exploration: about that share of requests get a random order.
    let exploring = catalogue(
        vec![offer("weak", 0, json!("w")), offer("strong", 0, json!("s"))],
        Some(policy(
            Ranking::Learned {
                exploration: 0.3,
                control: 0.0,
            },
            1,
            None,
        )),
    );
    let explored = (0..1000)
        .filter(|seed| asked.decide(&exploring, *seed, &counts, false).ranking == "exploration")
        .count();
    assert!((240..360).contains(&explored), "{explored} of 1000");

    // Control: the same people every time, about the share asked for.
    let controlled = catalogue(
        vec![offer("weak", 0, json!("w")), offer("strong", 0, json!("s"))],
        Some(policy(
            Ranking::Learned {
                exploration: 0.0,
                control: 0.2,
            },
            1,
            None,
        )),
    );
    let mut in_control = 0;
    for i in 0..1000 {
        let mut p = nobody();
        p.id = format!("person-{i}");
        let someone = Asked {
            profile: &p,
            events: &[],
            audiences: &[],
            context: Value::Null,
        };
        let first = someone.decide(&controlled, 1, &counts, false).ranking;
        let again = someone.decide(&controlled, 2, &counts, false).ranking;
        assert_eq!(
            first, again,
            "a person stays in (or out of) the control group"
        );
        if first == "control" {
            in_control += 1;
        }
    }
    assert!((150..250).contains(&in_control), "{in_control} of 1000");
}

#[test]
fn the_same_seed_gives_the_same_answer_and_ties_are_broken_at_random() {
    let c = catalogue(
        (0..5)
            .map(|i| offer(&format!("o{i}"), 1, json!(format!("{i}"))))
            .collect(),
        Some(policy(Ranking::Priority, 1, None)),
    );
    let profile = person(json!({}));
    let asked = Asked {
        profile: &profile,
        events: &[],
        audiences: &[],
        context: Value::Null,
    };
    let first = asked.decide(&c, 42, &NoCounts, false);
    assert_eq!(first, asked.decide(&c, 42, &NoCounts, false));
    let winners: std::collections::BTreeSet<String> = (0..100)
        .map(|s| {
            asked.decide(&c, s, &NoCounts, false).items[0]
                .offer
                .clone()
                .expect("an offer")
        })
        .collect();
    assert_eq!(
        winners.len(),
        5,
        "every tied offer wins sometimes: {winners:?}"
    );
}

#[test]
fn json_content_keeps_types_and_placements_are_asked_by_key_or_surface() {
    let mut c = Catalogue::default();
    c.placements
        .insert("card".into(), placement("card", ContentType::Json));
    c.offers.insert(
        "o".into(),
        OfferDoc {
            key: "o".into(),
            content: [(
                "card".to_owned(),
                json!({"title": "Hi {{profile.traits.name}}", "points": "{{profile.traits.points}}", "cart": "{{context.cart.total}}"}),
            )]
            .into(),
            ..OfferDoc::default()
        },
    );
    let c = CompiledCatalogue::compile(c);
    let profile = person(json!({"name": "<Ann>", "points": 120}));
    let member_of = |_: &str| false;
    let visitor = Visitor {
        profile: &profile,
        events: &[],
        member_of: &member_of,
        id: "p1",
        placed: &[],
    };
    let asks = [
        Ask {
            placement: "web://shop.example/home#card".into(),
            items: Some(3),
        },
        Ask {
            placement: "nope".into(),
            items: None,
        },
    ];
    let err = c
        .decide(&visitor, &json!({}), &asks, NOW, 1, &NoCounts, false)
        .expect_err("an unknown placement");
    assert_eq!(err, (1, UnknownPlacement("nope".into())));
    let d = c
        .decide(
            &visitor,
            &json!({"cart": {"total": 42.5}}),
            &asks[..1],
            NOW,
            1,
            &NoCounts,
            false,
        )
        .expect("decided");
    assert_eq!(d[0].placement, "card");
    assert_eq!(d[0].content_type, "json");
    assert_eq!(d[0].policy, None);
    assert_eq!(
        d[0].items[0].content,
        json!({"title": "Hi <Ann>", "points": 120, "cart": 42.5})
    );
}

#[test]
fn rules_on_the_context_are_decided_without_cel_exactly_as_cel_would() {
    let rule = waymark_core::audience::Rule::parse_with(
        r#"context.cart.total > 40 && context.page == "/shop" || in_audience("vip")"#,
        waymark_core::decisioning::ELIGIBILITY_VARIABLES,
    )
    .expect("parses");
    let compiled = CompiledAudience::from_rule("r".into(), 0, rule.clone());
    assert!(compiled.decided_natively());
    // The same rule made opaque to the native path (a function call it does not know):
    // decided by CEL alone.
    let by_cel = CompiledAudience::from_rule(
        "c".into(),
        0,
        waymark_core::audience::Rule::parse_with(
            r#"(context.cart.total > 40 && context.page == "/shop" || in_audience("vip")) && size("") == 0"#,
            waymark_core::decisioning::ELIGIBILITY_VARIABLES,
        )
        .expect("parses"),
    );
    assert!(!by_cel.decided_natively());
    let profile = person(json!({}));
    for (context, vip) in [
        (json!({"cart": {"total": 41}, "page": "/shop"}), false),
        (json!({"cart": {"total": 40.5}, "page": "/shop"}), false),
        (json!({"cart": {"total": 40}, "page": "/shop"}), false),
        (json!({"cart": {"total": 99}, "page": "/"}), false),
        (json!({"page": "/shop"}), false),
        (json!({"page": "/shop"}), true),
        (json!({"cart": "full", "page": "/shop"}), false),
        (json!({"cart": {"total": "41"}, "page": "/shop"}), false),
        (json!({}), true),
    ] {
        let member_of = |_: &str| vip;
        let person = Person {
            profile: &profile,
            events: &[],
            member_of: &member_of,
        };
        let lazy = Lazy::default();
        let extra = ExtraVars {
            context: &context,
            context_prepared: &lazy,
            offer: None,
        };
        let native = compiled.evaluate_with(&person, NOW, &extra);
        let lazy = Lazy::default();
        let extra = ExtraVars {
            context: &context,
            context_prepared: &lazy,
            offer: None,
        };
        let cel = by_cel.evaluate_with(&person, NOW, &extra);
        assert_eq!(
            (native.member, native.error.is_some()),
            (cel.member, cel.error.is_some()),
            "{context} vip={vip}: native {native:?} cel {cel:?}"
        );
    }
}

fn placed(key: &str, journey: &str, surface: &str, priority: i64, at: i64) -> Placed {
    Placed {
        key: key.into(),
        journey: journey.into(),
        instance: 1,
        surface: surface.into(),
        priority,
        placed_at: at,
        expires_at: None,
        content: waymark_core::content::Rendered {
            channel: "code_based".into(),
            fields: [("html".to_owned(), format!("<p>{journey}</p>"))].into(),
            data: None,
            sender: None,
        },
    }
}

#[test]
fn content_journeys_placed_comes_first_by_priority_then_newest_and_offers_fill_the_rest() {
    let c = catalogue(
        vec![offer("a", 5, json!("A")), offer("b", 1, json!("B"))],
        Some(policy(Ranking::Priority, 3, None)),
    );
    let profile = person(json!({}));
    let mut expired = placed("m0", "old", "hero", 100, NOW - DAY);
    expired.expires_at = Some(NOW - 1);
    let elsewhere = placed("m1", "cart", "web://shop.example/cart#top", 50, NOW);
    let low = placed("m2", "welcome", "hero", 0, NOW - 2 * DAY);
    let newer_low = placed("m3", "browse", "web://shop.example/home#hero", 0, NOW - DAY);
    let high = placed("m4", "winback", "hero", 9, NOW - 3 * DAY);
    let all = [expired, elsewhere, low, newer_low, high];
    // Journeys' content first (priority, then newest; by key or surface; not expired, not
    // another surface's), then the best offer in the one item left.
    let d = decide_with_placed(&c, &profile, &all, None);
    let shown: Vec<(Option<&str>, Option<&str>)> = d
        .items
        .iter()
        .map(|i| (i.journey.as_deref(), i.offer.as_deref()))
        .collect();
    assert_eq!(
        shown,
        [
            (Some("winback"), None),
            (Some("browse"), None),
            (Some("welcome"), None),
        ]
    );
    assert_eq!(d.items[0].content, json!("<p>winback</p>"));
    assert_eq!(d.items[0].message.as_deref(), Some("m4"));
    assert_eq!(d.ranking, "journey");
    let d = decide_with_placed(&c, &profile, &all[..3], None);
    assert_eq!(d.items[0].journey.as_deref(), Some("welcome"));
    assert_eq!(offers_of(&d), ["a", "b"]);
    assert_eq!(d.ranking, "priority");
    // Content without the field this placement shows is left out and counted.
    let mut text_only = placed("m5", "sms-like", "hero", 99, NOW);
    text_only.content.fields = [("text".to_owned(), "plain".to_owned())].into();
    let d = decide_with_placed(&c, &profile, &[text_only], Some(1));
    assert_eq!(offers_of(&d), ["a"]);
    assert_eq!(d.errors.len(), 1);
    assert!(d.errors[0].1.contains("no html"), "{:?}", d.errors);
}
