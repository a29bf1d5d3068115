use serde_json::json;

use super::*;

fn placement(key: &str, content: ContentType) -> PlacementDoc {
    PlacementDoc {
        key: key.into(),
        name: None,
        channel: SurfaceChannel::Web,
        surface: format!("web://shop.example/home#{key}"),
        content,
    }
}

fn offer(key: &str, placement: &str, content: Value) -> OfferDoc {
    OfferDoc {
        key: key.into(),
        content: [(placement.to_owned(), content)].into(),
        ..OfferDoc::default()
    }
}

fn base() -> Catalogue {
    let mut c = Catalogue::default();
    c.placements
        .insert("hero".into(), placement("hero", ContentType::Html));
    c.placements
        .insert("card".into(), placement("card", ContentType::Json));
    c.offers
        .insert("sale".into(), offer("sale", "hero", json!("<b>Sale</b>")));
    c
}

fn codes(r: Result<(), Vec<FieldError>>) -> Vec<(&'static str, String)> {
    r.err()
        .unwrap_or_default()
        .into_iter()
        .map(|e| (e.code, e.field))
        .collect()
}

#[test]
fn an_offer_is_checked_against_its_placements_and_its_rule() {
    let c = base();
    let mut o = offer("shoes", "hero", json!("<p>Hi {{profile.traits.name}}</p>"));
    o.eligibility = Some(r#"in_audience("vip") && context.page.path == "/shop""#.into());
    o.caps = vec![Cap {
        per: CapScope::Person,
        max: 3,
        on: CapEvent::Display,
        window: Some("7d".into()),
    }];
    assert_eq!(codes(check(&c, &Document::Offer(o.clone()), None)), vec![]);

    let mut bad = o.clone();
    bad.content.insert("nowhere".into(), json!("x"));
    bad.content
        .insert("card".into(), json!({"title": "{{#if}}"}));
    bad.eligibility = Some("profile.traits.x == ".into());
    bad.caps[0].max = 0;
    bad.caps.push(Cap {
        per: CapScope::Person,
        max: 1,
        on: CapEvent::Click,
        window: Some("400d".into()),
    });
    bad.ends_at = Some("2026-01-01T00:00:00Z".into());
    bad.starts_at = Some("2026-02-01T00:00:00Z".into());
    let found = codes(check(&c, &Document::Offer(bad), Some(30 * 86_400_000)));
    for expected in [
        ("unknown_placement", "content.nowhere"),
        ("invalid_template", "content.card.title"),
        ("invalid_rule", "eligibility"),
        ("invalid_value", "caps[0].max"),
        ("window_too_long", "caps[1].window"),
        ("invalid_value", "ends_at"),
    ] {
        assert!(
            found
                .iter()
                .any(|(code, field)| (*code, field.as_str()) == expected),
            "{expected:?} not in {found:?}"
        );
    }

    // An html placement takes a string; a json one anything.
    let wrong = offer("w", "hero", json!({"title": "x"}));
    assert_eq!(
        codes(check(&c, &Document::Offer(wrong), None)),
        vec![("invalid_type", "content.hero".to_owned())]
    );
}

#[test]
fn the_eligibility_may_read_context_but_not_unknown_variables() {
    let c = base();
    let mut o = offer("x", "hero", json!("x"));
    o.eligibility = Some("request.page == 1".into());
    let e = check(&c, &Document::Offer(o.clone()), None).expect_err("refused");
    assert_eq!(e[0].field, "eligibility");
    assert!(e[0].message.contains("unknown variable `request`"), "{e:?}");
    assert_eq!(e[0].column, Some(1));
    // `offer` is for ranking formulas only.
    o.eligibility = Some("offer.priority > 1".into());
    assert!(check(&c, &Document::Offer(o), None).is_err());
}

#[test]
fn a_policy_is_checked_against_placement_collection_and_fallback() {
    let mut c = base();
    c.collections.insert(
        "seasonal".into(),
        CollectionDoc {
            key: "seasonal".into(),
            tags: vec!["seasonal".into()],
            ..CollectionDoc::default()
        },
    );
    let policy = PolicyDoc {
        key: "home".into(),
        placement: "hero".into(),
        collection: Some("seasonal".into()),
        items: 2,
        fallback: Some("sale".into()),
        ranking: Ranking::Formula {
            formula: "offer.priority + context.boost + events.count(\"Order Completed\", \"30d\")"
                .into(),
        },
        ..PolicyDoc::default()
    };
    assert_eq!(
        codes(check(&c, &Document::Policy(policy.clone()), None)),
        vec![]
    );
    let c = c.with(Document::Policy(policy.clone()));

    let mut other = policy.clone();
    other.key = "second".into();
    other.collection = Some("missing".into());
    other.fallback = Some("nope".into());
    other.items = 0;
    other.ranking = Ranking::Learned {
        exploration: 1.5,
        control: 0.0,
    };
    let found = codes(check(&c, &Document::Policy(other), None));
    assert_eq!(
        found,
        vec![
            ("placement_taken", "placement".to_owned()),
            ("unknown_collection", "collection".to_owned()),
            ("invalid_value", "items".to_owned()),
            ("unknown_offer", "fallback".to_owned()),
            ("invalid_value", "ranking.exploration".to_owned()),
        ]
    );

    // The fallback offer cannot lose its content for the placement afterwards.
    let moved = offer("sale", "card", json!({"a": 1}));
    assert_eq!(
        codes(check(&c, &Document::Offer(moved), None)),
        vec![("missing_content", "content".to_owned())]
    );
}

#[test]
fn a_placement_cannot_change_type_under_offers_holding_other_content() {
    let c = base();
    let to_json = placement("hero", ContentType::Json);
    // Strings are JSON too: a text/html offer fits a json placement.
    assert!(check(&c, &Document::Placement(to_json), None).is_ok());
    let c = c.with(Document::Offer(offer(
        "card-offer",
        "card",
        json!({"t": 1}),
    )));
    let to_text = placement("card", ContentType::Text);
    assert_eq!(
        codes(check(&c, &Document::Placement(to_text), None)),
        vec![("content_mismatch", "content".to_owned())]
    );
    let mut bad_surface = placement("x", ContentType::Text);
    bad_surface.surface = "app://com.example/home".into();
    assert_eq!(
        codes(check(&c, &Document::Placement(bad_surface), None)),
        vec![("invalid_value", "surface".to_owned())]
    );
}

#[test]
fn collections_select_by_tags_or_by_list() {
    let mut o = offer("a", "hero", json!("x"));
    o.tags = vec!["shoes".into(), "sale".into()];
    let any = CollectionDoc {
        key: "c".into(),
        tags: vec!["shoes".into(), "hats".into()],
        ..CollectionDoc::default()
    };
    assert!(any.contains(&o));
    let all = CollectionDoc {
        matching: TagMatch::All,
        ..any.clone()
    };
    assert!(!all.contains(&o));
    let listed = CollectionDoc {
        key: "l".into(),
        offers: vec!["a".into()],
        ..CollectionDoc::default()
    };
    assert!(listed.contains(&o));
    let c = base();
    assert_eq!(
        codes(check(
            &c,
            &Document::Collection(CollectionDoc {
                key: "e".into(),
                ..CollectionDoc::default()
            }),
            None
        )),
        vec![("missing_field", "tags".to_owned())]
    );
    let unknown = CollectionDoc {
        key: "u".into(),
        offers: vec!["sale".into(), "ghost".into()],
        ..CollectionDoc::default()
    };
    assert_eq!(
        codes(check(&c, &Document::Collection(unknown), None)),
        vec![("unknown_offer", "offers[1]".to_owned())]
    );
}

#[test]
fn a_policy_chooses_among_its_collection_holding_content_for_its_placement() {
    let mut c = base();
    let mut tagged = offer("tagged", "hero", json!("t"));
    tagged.tags = vec!["x".into()];
    c.offers.insert("tagged".into(), tagged);
    let mut elsewhere = offer("elsewhere", "card", json!({}));
    elsewhere.tags = vec!["x".into()];
    c.offers.insert("elsewhere".into(), elsewhere);
    c.collections.insert(
        "x".into(),
        CollectionDoc {
            key: "x".into(),
            tags: vec!["x".into()],
            ..CollectionDoc::default()
        },
    );
    let mut policy = PolicyDoc {
        key: "p".into(),
        placement: "hero".into(),
        items: 1,
        ..PolicyDoc::default()
    };
    let keys = |c: &Catalogue, p: &PolicyDoc| {
        c.candidates(p)
            .iter()
            .map(|o| o.key.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(keys(&c, &policy), ["sale", "tagged"]);
    policy.collection = Some("x".into());
    assert_eq!(keys(&c, &policy), ["tagged"]);
    assert_eq!(
        c.placement_by("web://shop.example/home#hero")
            .map(|p| p.key.as_str()),
        Some("hero")
    );
}

#[test]
fn repeated_feedback_is_one_message_and_other_events_are_untouched() {
    fn map(v: Value) -> serde_json::Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }
    let props = map(json!({"proposition": "p1", "offer": "sale", "placement": "hero"}));
    let a = feedback_message_id(OFFER_DISPLAYED, &props).expect("some");
    assert_eq!(
        feedback_message_id(OFFER_DISPLAYED, &props),
        Some(a.clone())
    );
    let clicked = feedback_message_id(OFFER_CLICKED, &props).expect("some");
    assert_ne!(a, clicked);
    let other = map(json!({"proposition": "p2", "offer": "sale"}));
    assert_ne!(
        feedback_message_id(OFFER_DISPLAYED, &other),
        Some(a.clone())
    );
    // Lengths keep ("p1", "2sale") and ("p12", "sale") apart.
    assert_ne!(
        feedback_message_id(
            OFFER_DISPLAYED,
            &map(json!({"proposition": "p1", "offer": "2sale"}))
        ),
        feedback_message_id(
            OFFER_DISPLAYED,
            &map(json!({"proposition": "p12", "offer": "sale"}))
        )
    );
    // Content a journey placed is named by its message id.
    let placed = map(json!({"proposition": "p1", "journey": "j", "message": "m1"}));
    let placed_id = feedback_message_id(OFFER_DISPLAYED, &placed).expect("some");
    assert_eq!(
        feedback_message_id(OFFER_DISPLAYED, &placed),
        Some(placed_id.clone())
    );
    assert_ne!(
        Some(placed_id),
        feedback_message_id(
            OFFER_DISPLAYED,
            &map(json!({"proposition": "p1", "journey": "j", "message": "m2"}))
        )
    );
    assert_eq!(feedback_message_id("Order Completed", &props), None);
    assert_eq!(
        feedback_message_id(OFFER_DISPLAYED, &map(json!({"offer": "sale"}))),
        None
    );
    assert_eq!(
        feedback_of(OFFER_CLICKED, &props),
        Some(Feedback {
            offer: "sale".into(),
            placement: "hero".into(),
            click: true
        })
    );
    assert_eq!(
        feedback_of(
            OFFER_CLICKED,
            &map(json!({"offer": "Not A Key!", "placement": "hero"}))
        ),
        None
    );
}

#[test]
fn documents_read_from_yaml_with_readable_ranking() {
    let text = "key: home\nplacement: hero\nranking:\n  by: learned\n  control: 0.1\n";
    let doc: PolicyDoc =
        crate::journey::parse_document(text, crate::journey::Format::Yaml).expect("some");
    assert_eq!(
        doc.ranking,
        Ranking::Learned {
            exploration: 0.05,
            control: 0.1
        }
    );
    assert_eq!(doc.items, 1);
    let bad = "key: home\nplacement: hero\nranking:\n  by: magic\n";
    assert!(
        crate::journey::parse_document::<PolicyDoc>(bad, crate::journey::Format::Yaml).is_err()
    );
}
