//! Decisioning: catalogue documents saved only when their check passes against the
//! catalogue as it stands, versions, the stamp a server polls, feedback counted once per
//! display in the ingest that stores it (only for offers and placements that exist), and
//! what a decision reads of a person in one call.

use serde_json::json;
use waymark_core::decisioning::{Catalogue, Document, Kind, check};
use waymark_core::time::Millis;
use waymark_engine::audience::BodyPart;

use super::*;
use crate::decisioning::DecisioningStore;

async fn save(
    s: &impl Store,
    kind: Kind,
    doc: Value,
) -> Result<(crate::Versions, bool), Vec<waymark_core::FieldError>> {
    let typed = Document::from_value(kind, doc.clone()).expect("reads");
    let key = typed.key().to_owned();
    s.put_catalogue(
        kind,
        &key,
        &doc,
        Box::new(move |catalogue: &Catalogue| check(catalogue, &typed, None)),
        1_000,
    )
    .await
    .expect("store answers")
}

fn feedback(event: &str, user: &str, proposition: &str, offer: &str, placement: &str) -> Value {
    json!({"type": "track", "event": event, "userId": user,
        "properties": {"proposition": proposition, "offer": offer, "placement": placement}})
}

pub async fn the_decisioning_catalogue_is_checked_whole_and_feedback_counted_once(
    b: &impl Backend,
) {
    let s = b.open(StoreOptions::default()).await;
    let empty = s.catalogue_stamp().await.expect("stamp");
    // An offer for a placement that does not exist yet is refused, nothing stored.
    let offer = json!({"key": "sale", "priority": 3, "content": {"hero": "<b>Sale</b>"}});
    let refused = save(&s, Kind::Offer, offer.clone())
        .await
        .expect_err("refused");
    assert_eq!(refused[0].code, "unknown_placement");
    assert_eq!(s.catalogue_stamp().await.expect("stamp"), empty);
    assert!(
        s.catalogue_document(Kind::Offer, "sale")
            .await
            .expect("read")
            .is_none()
    );

    let hero = json!({"key": "hero", "channel": "web", "surface": "web://shop.example/#hero", "content": "html"});
    let (v, created) = save(&s, Kind::Placement, hero).await.expect("saved");
    assert_eq!((v.version, created), (1, true));
    let (v, _) = save(&s, Kind::Offer, offer.clone()).await.expect("saved");
    assert_eq!(v.version, 1);
    let (v, created) = save(&s, Kind::Offer, offer).await.expect("same");
    assert_eq!((v.version, created), (1, false));
    let changed = json!({"key": "sale", "priority": 4, "content": {"hero": "<b>Sale!</b>"}});
    let (v, created) = save(&s, Kind::Offer, changed.clone()).await.expect("saved");
    assert_eq!((v.version, created), (2, true));
    assert_eq!(v.versions.len(), 2);
    assert_eq!(
        s.catalogue_version(Kind::Offer, "sale", 1)
            .await
            .expect("read")
            .map(|d| d["priority"].clone()),
        Some(json!(3))
    );
    let stamp = s.catalogue_stamp().await.expect("stamp");
    assert_ne!(stamp, empty);
    save(
        &s,
        Kind::Policy,
        json!({"key": "home", "placement": "hero", "fallback": "sale"}),
    )
    .await
    .expect("saved");
    assert_ne!(s.catalogue_stamp().await.expect("stamp"), stamp);
    // The check sees documents saved before it: a second policy for the placement is
    // refused, as is taking the fallback's content away.
    let taken = save(
        &s,
        Kind::Policy,
        json!({"key": "again", "placement": "hero"}),
    )
    .await
    .expect_err("refused");
    assert_eq!(taken[0].code, "placement_taken");
    let catalogue = s.catalogue().await.expect("catalogue");
    assert_eq!(catalogue.offers.len(), 1);
    assert_eq!(catalogue.offers["sale"].priority, 4);
    assert_eq!(catalogue.policies["home"].fallback.as_deref(), Some("sale"));
    let offers = s.catalogue_documents(Kind::Offer).await.expect("list");
    assert_eq!(offers.len(), 1);
    assert_eq!(offers[0].1.document, changed);

    // Feedback: each display once however often reported, clicks apart, unknown offers
    // and placements not counted (their events are still kept).
    let batch = vec![
        feedback("Offer Displayed", "u1", "p1", "sale", "hero"),
        feedback("Offer Displayed", "u1", "p1", "sale", "hero"),
        feedback("Offer Displayed", "u2", "p2", "sale", "hero"),
        feedback("Offer Clicked", "u2", "p2", "sale", "hero"),
        feedback("Offer Displayed", "u2", "p3", "ghost", "hero"),
        feedback("Offer Displayed", "u2", "p4", "sale", "nowhere"),
    ];
    let receipt = s.ingest(events(json!(batch))).await.expect("ingest");
    assert_eq!((receipt.accepted, receipt.duplicates), (5, 1));
    let again = s
        .ingest(events(json!([feedback(
            "Offer Displayed",
            "u2",
            "p2",
            "sale",
            "hero"
        )])))
        .await
        .expect("ingest");
    assert_eq!(again.duplicates, 1);
    let counts = s.offer_counts(0).await.expect("counts");
    let total =
        |f: fn(&crate::decisioning::OfferCount) -> i64| -> i64 { counts.iter().map(f).sum() };
    assert!(
        counts
            .iter()
            .all(|c| c.offer == "sale" && c.placement == "hero"),
        "{counts:?}"
    );
    assert_eq!((total(|c| c.displays), total(|c| c.clicks)), (2, 1));
    let hour: Millis = counts[0].hour;
    assert_eq!(hour % 3_600_000, 0);
    assert!(
        s.offer_counts(hour + 3_600_000)
            .await
            .expect("counts")
            .is_empty()
    );

    // What a decision reads: the first identity someone holds, their audiences and the
    // events of the names asked.
    s.ingest(events(json!([
        {"type": "identify", "userId": "u2", "traits": {"name": "Bo"}},
        {"type": "track", "userId": "u2", "event": "Order Completed", "properties": {"total": 5}},
    ])))
    .await
    .expect("ingest");
    let names = ["Offer Displayed".to_owned(), "Order Completed".to_owned()];
    let inputs = s
        .decision_inputs(
            &[id("user_id", "nobody"), id("user_id", "u2")],
            &names,
            BodyPart::Properties,
            crate::wall_clock_ms(),
        )
        .await
        .expect("read")
        .expect("found");
    assert_eq!(inputs.profile.traits["name"], "Bo");
    // (Same event time: compared as a set.)
    let mut seen: Vec<(String, String)> = inputs
        .events
        .iter()
        .map(|e| {
            (
                e.name.to_string(),
                e.body["properties"]["offer"].to_string(),
            )
        })
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        [
            ("Offer Displayed".to_owned(), "\"ghost\"".to_owned()),
            ("Offer Displayed".to_owned(), "\"sale\"".to_owned()),
            ("Offer Displayed".to_owned(), "\"sale\"".to_owned()),
            ("Order Completed".to_owned(), "null".to_owned()),
        ]
    );
    assert!(inputs.audiences.is_empty() && inputs.placed.is_empty());
    assert!(
        s.decision_inputs(
            &[id("anonymous_id", "never")],
            &names,
            BodyPart::Nothing,
            crate::wall_clock_ms()
        )
        .await
        .expect("read")
        .is_none()
    );
}

/// A journey placing `code_based` content on `hero` for `wait` (its instance's life).
fn placing(key: &str, wait: &str, expires: Option<&str>) -> Value {
    let mut place = json!({"id": "place", "type": "message", "channel": "code_based",
        "template": "banner", "surface": "hero", "next": "stay"});
    if let Some(e) = expires {
        place["expires"] = json!(e);
    }
    json!({"key": key, "entry": {"event": format!("Go {key}")},
        "properties": {"priority": 3},
        "nodes": [place,
            {"id": "stay", "type": "wait", "duration": wait, "next": "done"},
            {"id": "done", "type": "end"}],
        "templates": {"banner": {"document": {"channel": "code_based",
            "html": "<p>Hi {{profile.traits.name}}</p>"}}}})
}

pub async fn content_journeys_place_lasts_while_the_instance_does(b: &impl Backend) {
    let s = b.open(StoreOptions::default()).await;
    for (key, wait, expires) in [
        ("stay", "1h", None),
        ("flash", "1d", Some("10m")),
        ("halt", "1d", None),
    ] {
        s.put_journey_draft(key, &placing(key, wait, expires), 1)
            .await
            .expect("put");
        s.publish_journey(key, 1).await.expect("publish");
    }
    let go = |user: &str, key: &str| {
        json!({"type": "track", "userId": user, "event": format!("Go {key}"),
            "messageId": format!("{user}-{key}")})
    };
    s.ingest(events(json!([
        {"type": "identify", "userId": "u1", "traits": {"name": "Ann"}},
        go("u1", "stay"), go("u1", "flash"), go("u1", "halt"),
    ])))
    .await
    .expect("ingest");
    let now = crate::wall_clock_ms();
    let placed = |at: Millis, who: Identity| {
        let s = &s;
        async move {
            let mut journeys: Vec<String> = s
                .decision_inputs(&[who], &[], BodyPart::Nothing, at)
                .await
                .expect("read")
                .map(|i| i.placed.into_iter().map(|p| p.journey).collect())
                .unwrap_or_default();
            journeys.sort();
            journeys
        }
    };
    let inputs = s
        .decision_inputs(&[id("user_id", "u1")], &[], BodyPart::Nothing, now)
        .await
        .expect("read")
        .expect("found");
    let stay = inputs
        .placed
        .iter()
        .find(|p| p.journey == "stay")
        .expect("placed");
    assert_eq!(
        (stay.surface.as_str(), stay.priority, stay.expires_at),
        ("hero", 3, None)
    );
    assert_eq!(stay.content.fields["html"], "<p>Hi Ann</p>");
    assert_eq!(
        placed(now, id("user_id", "u1")).await,
        ["flash", "halt", "stay"]
    );
    // `expires` takes it down even while the instance waits.
    assert_eq!(
        placed(now + 20 * 60_000, id("user_id", "u1")).await,
        ["halt", "stay"]
    );
    // Stopping a journey takes its content down at once.
    s.change_journey_status("halt", JourneyAction::Stop, now)
        .await
        .expect("stop");
    assert_eq!(placed(now, id("user_id", "u1")).await, ["flash", "stay"]);
    // The instance ending (its wait over) takes it down.
    s.fire_due_timers(now + 2 * 3_600_000, 100)
        .await
        .expect("fire");
    assert_eq!(placed(now, id("user_id", "u1")).await, ["flash"]);
    // Retention removes what expired.
    s.prune_expired(now + 20 * 60_000).await.expect("prune");
    assert!(placed(now, id("user_id", "u1")).await.is_empty());

    // A visitor's content follows them when they sign in (their profile merges).
    s.ingest(events(json!([
        {"type": "track", "anonymousId": "a1", "event": "Go stay", "messageId": "a1-stay"},
    ])))
    .await
    .expect("ingest");
    assert_eq!(placed(now, id("anonymous_id", "a1")).await, ["stay"]);
    s.ingest(events(json!([
        {"type": "identify", "anonymousId": "a1", "userId": "u2", "messageId": "a1-u2"},
    ])))
    .await
    .expect("ingest");
    assert_eq!(placed(now, id("user_id", "u2")).await, ["stay"]);
    // Erasing the person erases it.
    s.erase(&id("user_id", "u2")).await.expect("erase");
    assert!(placed(now, id("user_id", "u2")).await.is_empty());
}
