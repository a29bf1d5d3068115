//! Audiences: versions, membership kept on ingest, time-driven exits, backfill and edits,
//! journeys started by entries, erasure.

use super::*;
use crate::{AudienceStore, JourneyRecord};
use waymark_engine::stats::JourneyStats;

const DAY: i64 = 86_400_000;

async fn profile_id(s: &impl Store, user: &str) -> String {
    s.profile(&id("user_id", user))
        .await
        .expect("read")
        .expect("profile")
        .id
}

async fn audiences_of(s: &impl Store, user: &str) -> Vec<String> {
    let pid = profile_id(s, user).await;
    s.profile_audiences(&pid)
        .await
        .expect("read")
        .into_iter()
        .map(|(a, _)| a)
        .collect()
}

/// (audience, entered?) of each audience event in the person's history, oldest first.
async fn audience_events(s: &impl Store, user: &str) -> Vec<(String, bool)> {
    let pid = profile_id(s, user).await;
    let names = ["Audience Entered".to_owned(), "Audience Exited".to_owned()];
    s.profile_history(&pid, &names)
        .await
        .expect("history")
        .into_iter()
        .map(|e| {
            (
                e.body["properties"]["audience"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                &*e.name == "Audience Entered",
            )
        })
        .collect()
}

pub async fn audiences_stay_current_on_ingest_and_as_time_passes(b: &impl Backend) {
    let s = b.open(StoreOptions::default()).await;
    let buyers = json!({"key": "buyers", "rule": r#"events.count("Order Completed", "30d") >= 2"#});
    let vip =
        json!({"key": "vip", "rule": r#"in_audience("buyers") && profile.traits.plan == "pro""#});
    let (record, created) = s.put_audience("buyers", &buyers, 1).await.expect("put");
    assert!(created);
    assert_eq!(record.version, 1);
    s.put_audience("vip", &vip, 2).await.expect("put");
    let (again, created) = s.put_audience("vip", &vip, 3).await.expect("put");
    assert!(!created, "the same document is not a new version");
    assert_eq!(again.version, 1);
    // A journey that starts when someone enters vip.
    let welcome = json!({"key": "welcome-vip",
        "entry": {"event": "Audience Entered", "when": "event.properties.audience == 'vip'"},
        "nodes": [
            {"id": "hello", "type": "message", "channel": "log", "template": "hi", "next": "done"},
            {"id": "done", "type": "end"}]});
    s.put_journey_draft("welcome-vip", &welcome, 1)
        .await
        .expect("put");
    s.publish_journey("welcome-vip", 1).await.expect("publish");

    // Events are received on 2026-11-29 (see `events`).
    let placed = parse_iso8601("2026-11-29T12:00:00Z").expect("time");
    s.ingest(events(json!([
        {"type": "identify", "messageId": "a0", "userId": "ann", "traits": {"plan": "pro"}},
        {"type": "track", "messageId": "a1", "userId": "ann", "event": "Order Completed"},
        {"type": "track", "messageId": "b1", "userId": "bob", "event": "Order Completed"},
    ])))
    .await
    .expect("ingest");
    assert!(
        audiences_of(&s, "ann").await.is_empty(),
        "one order is not two"
    );
    s.ingest(events(json!([
        {"type": "track", "messageId": "a2", "userId": "ann", "event": "Order Completed"},
        {"type": "track", "messageId": "b2", "userId": "bob", "event": "Order Completed"},
    ])))
    .await
    .expect("ingest");
    // In the same transaction as the second order: both audiences, dependency first.
    assert_eq!(audiences_of(&s, "ann").await, ["buyers", "vip"]);
    assert_eq!(audiences_of(&s, "bob").await, ["buyers"], "bob is not pro");
    assert_eq!(
        audience_events(&s, "ann").await,
        [("buyers".to_owned(), true), ("vip".to_owned(), true)]
    );
    let status = s.audience_status("buyers").await.expect("status");
    assert_eq!((status.members, status.pending), (2, 0));
    let members = s.audience_members("buyers", None, 1).await.expect("page");
    let rest = s
        .audience_members("buyers", Some(&members[0].profile_id), 10)
        .await
        .expect("page");
    assert_eq!(
        members.len() + rest.len(),
        2,
        "keyset pages cover everyone once"
    );
    // Entering vip started the journey, in the same transaction.
    let journeys = s
        .profile_journeys(&id("user_id", "ann"))
        .await
        .expect("read")
        .expect("profile");
    assert_eq!(journeys.len(), 1, "{journeys:?}");
    assert_eq!(journeys[0].0, "welcome-vip");
    let bob_journeys = s
        .profile_journeys(&id("user_id", "bob"))
        .await
        .expect("read")
        .expect("profile");
    assert!(bob_journeys.is_empty(), "{bob_journeys:?}");

    // Nothing changes before the first order is 30 days old...
    let before = placed + 30 * DAY - 1;
    s.fire_due_timers(before, 100).await.expect("fire");
    assert_eq!(audiences_of(&s, "ann").await, ["buyers", "vip"]);
    // ...and at that instant both leave: time alone flipped the rule.
    let fired = s
        .fire_due_timers(placed + 30 * DAY, 100)
        .await
        .expect("fire");
    assert_eq!(fired, 2, "one check per person");
    assert!(audiences_of(&s, "ann").await.is_empty());
    assert!(audiences_of(&s, "bob").await.is_empty());
    assert_eq!(
        audience_events(&s, "ann").await,
        [
            ("buyers".to_owned(), true),
            ("vip".to_owned(), true),
            ("buyers".to_owned(), false),
            ("vip".to_owned(), false)
        ]
    );
    let status = s.audience_status("buyers").await.expect("status");
    assert_eq!(status.members, 0);
    assert!(status.last_change.is_some());
    assert_eq!(
        s.fire_due_timers(placed + 400 * DAY, 100)
            .await
            .expect("fire"),
        0,
        "nothing left to age out: no check stays behind"
    );
}

pub async fn a_new_or_edited_audience_is_backfilled_from_stored_events(b: &impl Backend) {
    let s = b.open(StoreOptions::default()).await;
    s.ingest(events(json!([
        {"type": "track", "messageId": "c1", "userId": "cy", "event": "Page Viewed"},
        {"type": "page", "messageId": "c2", "userId": "cy", "name": "Pricing"},
        {"type": "page", "messageId": "c3", "userId": "cy", "name": "Home"},
        {"type": "page", "messageId": "d1", "userId": "di", "name": "Home"},
    ])))
    .await
    .expect("ingest");
    let browsers = json!({"key": "browsers", "rule": r#"events.count("Page Viewed") >= 2"#});
    s.put_audience("browsers", &browsers, 10)
        .await
        .expect("put");
    let status = s.audience_status("browsers").await.expect("status");
    assert_eq!(
        (status.members, status.pending),
        (0, 2),
        "building: two people to decide"
    );
    let now = crate::wall_clock_ms();
    assert_eq!(s.fire_due_timers(now, 100).await.expect("fire"), 2);
    assert_eq!(
        audiences_of(&s, "cy").await,
        ["browsers"],
        "page calls count as Page Viewed, and so does a track event of that name"
    );
    assert!(audiences_of(&s, "di").await.is_empty());
    let status = s.audience_status("browsers").await.expect("status");
    assert_eq!((status.members, status.pending), (1, 0));
    // After an edit, nobody stays a member who no longer matches.
    let stricter = json!({"key": "browsers", "rule": r#"events.count("Page Viewed") >= 4"#});
    let (record, created) = s
        .put_audience("browsers", &stricter, now + 1)
        .await
        .expect("put");
    assert!(created);
    assert_eq!(record.version, 2);
    s.fire_due_timers(now + 1, 100).await.expect("fire");
    assert!(audiences_of(&s, "cy").await.is_empty());
    assert_eq!(
        s.audience_status("browsers").await.expect("status").members,
        0
    );
    // Erasure takes the person out of every audience.
    s.put_audience("browsers", &browsers, now + 2)
        .await
        .expect("put");
    s.fire_due_timers(now + 2, 100).await.expect("fire");
    assert_eq!(
        s.audience_status("browsers").await.expect("status").members,
        1
    );
    s.erase(&id("user_id", "cy")).await.expect("erase");
    assert_eq!(
        s.audience_status("browsers").await.expect("status").members,
        0
    );
    assert_eq!(s.fire_due_timers(now + 3, 100).await.expect("fire"), 0);
}

/// Everyone's decisions for a new version commit in steps with where the backfill stands;
/// an edit part way starts it again from the first person; sizes are kept by the hour.
pub async fn a_backfill_goes_in_steps_and_starts_again_after_an_edit(b: &impl Backend) {
    let s = b.open(StoreOptions::default()).await;
    let mut batch = Vec::new();
    for n in 0..5 {
        let orders = if n < 3 { 2 } else { 1 };
        for o in 0..orders {
            batch.push(json!({"type": "track", "messageId": format!("o{n}-{o}"),
                "userId": format!("u{n}"), "event": "Order Completed"}));
        }
    }
    s.ingest(events(Value::Array(batch))).await.expect("ingest");
    let now = crate::wall_clock_ms();
    let rule = |n: u32| json!({"key": "buyers", "rule": format!(r#"events.count("Order Completed") >= {n}"#)});
    s.put_audience("buyers", &rule(2), now).await.expect("put");
    assert_eq!(s.fire_due_timers(now, 2).await.expect("fire"), 2);
    let status = s.audience_status("buyers").await.expect("status");
    let progress = status.backfill.expect("still building");
    assert_eq!((progress.decided, status.pending), (2, 3), "{status:?}");
    // An edit part way: everyone is decided again, for the new version.
    s.put_audience("buyers", &rule(1), now + 1)
        .await
        .expect("put");
    let status = s.audience_status("buyers").await.expect("status");
    assert_eq!(
        (status.backfill.map(|b| b.decided), status.pending),
        (Some(0), 5)
    );
    let mut fired = Vec::new();
    for _ in 0..4 {
        fired.push(s.fire_due_timers(now + 1, 2).await.expect("fire"));
    }
    assert_eq!(fired, [2, 2, 1, 0], "then done");
    let status = s.audience_status("buyers").await.expect("status");
    assert_eq!((status.members, status.pending), (5, 0));
    assert!(status.backfill.is_none(), "{status:?}");
    // Back to two orders: two leave.
    s.put_audience("buyers", &rule(2), now + 2)
        .await
        .expect("put");
    while s.fire_due_timers(now + 2, 2).await.expect("fire") > 0 {}
    assert_eq!(
        s.audience_status("buyers").await.expect("status").members,
        3
    );
    let hours = s
        .audience_size_history("buyers", now - 3_600_000)
        .await
        .expect("sizes");
    let (members, entered, exited) = hours.iter().fold((0, 0, 0), |(_, e, x), h| {
        (h.members, e + h.entered, x + h.exited)
    });
    assert_eq!(
        (members, entered, exited),
        (3, 5, 2),
        "the last hour's size, and every entry and exit: {hours:?}"
    );
    assert!(
        s.audience_size_history("buyers", now + 3_600_000)
            .await
            .expect("sizes")
            .is_empty()
    );
}

async fn buyers_size(s: &impl Store) -> u64 {
    s.audience_status("buyers").await.expect("status").members
}

/// A snapshot keeps its members between runs: events do not change it; a run on demand
/// or on its schedule decides everyone again, and the next run moves on by the schedule.
/// An uploaded list starts no backfill.
pub async fn snapshot_audiences_change_only_when_they_run(b: &impl Backend) {
    let s = b.open(StoreOptions::default()).await;
    let order = |n: u32| {
        events(json!([{"type": "track", "messageId": format!("o{n}"),
            "userId": format!("u{n}"), "event": "Order Completed"}]))
    };
    s.ingest(order(0)).await.expect("ingest");
    let now = crate::wall_clock_ms();
    let hourly = json!({"key": "buyers", "rule": r#"events.any("Order Completed")"#,
        "refresh": "snapshot", "schedule": {"cron": "0 * * * *"}});
    s.put_audience("buyers", &hourly, now).await.expect("put");
    let next = s
        .audience_next_run("buyers")
        .await
        .expect("read")
        .expect("scheduled");
    assert!(
        next > now && next <= now + 3_600_000 && next % 3_600_000 == 0,
        "{next}"
    );
    while s.fire_due_timers(now, 100).await.expect("fire") > 0 {}
    assert_eq!(buyers_size(&s).await, 1, "decided when saved");
    s.ingest(order(1)).await.expect("ingest");
    while s.fire_due_timers(now + 1, 100).await.expect("fire") > 0 {}
    assert_eq!(buyers_size(&s).await, 1, "events do not change a snapshot");
    assert!(s.run_audience("buyers", now + 2).await.expect("run"));
    while s.fire_due_timers(now + 2, 100).await.expect("fire") > 0 {}
    assert_eq!(buyers_size(&s).await, 2, "run on demand");
    s.ingest(order(2)).await.expect("ingest");
    while s.fire_due_timers(next - 1, 100).await.expect("fire") > 0 {}
    assert_eq!(buyers_size(&s).await, 2, "not before its time");
    while s.fire_due_timers(next, 100).await.expect("fire") > 0 {}
    assert_eq!(buyers_size(&s).await, 3, "run on its schedule");
    assert_eq!(
        s.audience_next_run("buyers").await.expect("read"),
        Some(next + 3_600_000)
    );
    assert!(!s.run_audience("nobody", now).await.expect("run"));
    // An uploaded list has nothing to decide.
    let leads = json!({"key": "leads", "refresh": "upload"});
    s.put_audience("leads", &leads, now).await.expect("put");
    let status = s.audience_status("leads").await.expect("status");
    assert_eq!((status.pending, status.backfill), (0, None));
    assert_eq!(s.audience_next_run("leads").await.expect("read"), None);
}

/// Batch evaluation (ranges read side by side, without locks) agrees with the membership
/// the backfill decided, for windows, all-time counts, page calls and future-dated events,
/// and where traits settle the rule before the events are read (a missing trait included).
pub async fn batch_evaluation_agrees_with_the_backfill(b: &impl Backend) {
    let s = b.open(StoreOptions::default()).await;
    let received = parse_iso8601("2026-11-29T12:00:00Z").expect("time");
    let day_at = |days: i64| waymark_core::time::format_iso8601(received + days * DAY);
    let mut batch = Vec::new();
    for n in 0..30i64 {
        let user = format!("b{n}");
        for ago in [(n * 7) % 45, (n * 3) % 40, (n * 11) % 50] {
            batch.push(
                json!({"type": "track", "userId": user, "event": "Order Completed",
                "timestamp": day_at(-ago)}),
            );
        }
        if n % 4 == 0 {
            batch.push(json!({"type": "page", "userId": user, "name": "Home", "timestamp": day_at(-(n % 20))}));
        }
        if n % 3 != 2 {
            let plan = if n % 3 == 0 { "pro" } else { "free" };
            batch.push(json!({"type": "identify", "userId": user, "traits": {"plan": plan}}));
        }
        if n % 5 == 0 {
            batch.push(
                json!({"type": "track", "userId": user, "event": "Order Completed",
                "timestamp": day_at(3)}),
            );
        }
    }
    s.ingest(events(Value::Array(batch))).await.expect("ingest");
    let now = received + DAY;
    for (key, rule) in [
        ("recent", r#"events.count("Order Completed", "30d") >= 2"#),
        (
            "pages",
            r#"events.any("Page Viewed", "14d") || events.count("Order Completed") >= 4"#,
        ),
        ("paged", r#"events.count("Page Viewed") >= 1"#),
        (
            "pro",
            r#"profile.traits.plan == "pro" && events.count("Order Completed", "30d") >= 2"#,
        ),
        (
            "free",
            r#"profile.traits.plan == "free" || events.count("Order Completed", "30d") >= 3"#,
        ),
    ] {
        let doc = json!({"key": key, "rule": rule});
        s.put_audience(key, &doc, now).await.expect("put");
        while s.fire_due_timers(now, 7).await.expect("fire") > 0 {}
        let mut stored: Vec<String> = s
            .audience_members(key, None, 1000)
            .await
            .expect("members")
            .into_iter()
            .map(|m| m.profile_id)
            .collect();
        stored.sort_unstable();
        let compiled = waymark_engine::audience::CompiledAudience::compile(
            &serde_json::from_value(doc).expect("doc"),
            1,
        )
        .expect("compiles");
        let outcome = crate::batch::evaluate_everyone(&s, &compiled, now, 1000, 2)
            .await
            .expect("batch");
        assert_eq!(outcome.decided, 30);
        assert_eq!(outcome.sample, stored, "{key}");
        assert!(
            !stored.is_empty() && stored.len() < 30,
            "{key}: a real split"
        );
    }
}

/// A calendar rule ("birthday this month") is decided again at the first instant of the
/// next month in each person's own time zone, on the timer service: no sweep.
pub async fn calendar_rules_flip_at_the_persons_midnight(b: &impl Backend) {
    let s = b.open(StoreOptions::default()).await;
    s.ingest(events(json!([
        {"type": "identify", "userId": "kiwi",
         "traits": {"birthday": "1990-12-17", "timezone": "Pacific/Auckland"}},
        {"type": "identify", "userId": "london",
         "traits": {"birthday": "1985-12-02", "timezone": "Europe/London"}},
        {"type": "identify", "userId": "june", "traits": {"birthday": "1990-06-01"}},
    ])))
    .await
    .expect("ingest");
    let at = |text: &str| parse_iso8601(text).expect("time");
    let doc = json!({"key": "birthday-month",
        "rule": "calendar.month(profile.traits.birthday) == calendar.month()"});
    // 23:00 on 30 November in Auckland (UTC+13).
    s.put_audience("birthday-month", &doc, at("2026-11-30T10:00:00Z"))
        .await
        .expect("put");
    while s
        .fire_due_timers(at("2026-11-30T10:00:00Z"), 10)
        .await
        .expect("fire")
        > 0
    {}
    assert!(audiences_of(&s, "kiwi").await.is_empty());
    s.fire_due_timers(at("2026-11-30T10:59:59Z"), 10)
        .await
        .expect("fire");
    assert!(
        audiences_of(&s, "kiwi").await.is_empty(),
        "not before midnight"
    );
    s.fire_due_timers(at("2026-11-30T11:00:00Z"), 10)
        .await
        .expect("fire");
    assert_eq!(audiences_of(&s, "kiwi").await, ["birthday-month"]);
    assert!(
        audiences_of(&s, "london").await.is_empty(),
        "still November in London"
    );
    s.fire_due_timers(at("2026-12-01T00:00:00Z"), 10)
        .await
        .expect("fire");
    assert_eq!(audiences_of(&s, "london").await, ["birthday-month"]);
    assert!(audiences_of(&s, "june").await.is_empty());
    // New Year in Auckland comes 13 hours before London's.
    s.fire_due_timers(at("2026-12-31T11:00:00Z"), 10)
        .await
        .expect("fire");
    assert!(audiences_of(&s, "kiwi").await.is_empty());
    assert_eq!(audiences_of(&s, "london").await, ["birthday-month"]);
    assert_eq!(
        audience_events(&s, "kiwi").await,
        [
            ("birthday-month".to_owned(), true),
            ("birthday-month".to_owned(), false)
        ]
    );
}

/// A journey that reads an audience enters every member, a chunk per transaction paced by
/// its entry rate limit, once; a scheduled one reads again on its schedule; a paused one's
/// read waits.
pub async fn journeys_read_their_audience_in_paced_steps_and_on_schedule(b: &impl Backend) {
    let s = b.open(StoreOptions::default()).await;
    let batch: Vec<Value> = (0..5)
        .map(|n| json!({"type": "track", "messageId": format!("r{n}"), "userId": format!("u{n}"), "event": "Order Completed"}))
        .chain(std::iter::once(json!({"type": "track", "messageId": "x", "userId": "other", "event": "Page Viewed"})))
        .collect();
    s.ingest(events(Value::Array(batch))).await.expect("ingest");
    let now = crate::wall_clock_ms();
    let start = now - now.rem_euclid(1000) + 10_000; // a whole second, ahead of the clock
    let buyers = json!({"key": "buyers", "rule": r#"events.any("Order Completed")"#});
    s.put_audience("buyers", &buyers, start).await.expect("put");
    while s.fire_due_timers(start, 100).await.expect("fire") > 0 {}
    assert_eq!(buyers_size(&s).await, 5);

    // u1 opted out: an uploaded list the read leaves out.
    s.put_audience(
        "optout",
        &json!({"key": "optout", "refresh": "upload"}),
        start,
    )
    .await
    .expect("put");
    let u1 = profile_id(&s, "u1").await;
    s.change_list_members("optout", vec![u1], true, start)
        .await
        .expect("upload");
    let promo = json!({"key": "promo",
        "entry": {"audience": "buyers", "on": "read", "except": ["optout"]},
        "properties": {"entry_rate_limit": 2},
        "nodes": [
            {"id": "offer", "type": "message", "channel": "log", "template": "t", "next": "done"},
            {"id": "done", "type": "end"}]});
    s.put_journey_draft("promo", &promo, start)
        .await
        .expect("put");
    s.publish_journey("promo", start).await.expect("publish");
    let read = |r: Option<JourneyRecord>| *r.expect("journey").read.expect("reads");
    let scheduled = read(s.journey("promo").await.expect("read"));
    assert_eq!(
        (scheduled.due_at, scheduled.started_at),
        (Some(start), None)
    );
    let instances = |st: JourneyStats| st.instances;

    while s.fire_due_timers(start, 100).await.expect("fire") > 0 {}
    let part = read(s.journey("promo").await.expect("read"));
    // Two entries a second; a member left out takes no room.
    assert_eq!(
        (part.started_at, part.read),
        (Some(start), 2 + part.excluded),
        "two a second: {part:?}"
    );
    assert_eq!(instances(s.journey_stats("promo").await.expect("stats")), 2);
    // Paused, the read waits where it is.
    s.change_journey_status("promo", JourneyAction::Pause, start + 1000)
        .await
        .expect("pause");
    while s.fire_due_timers(start + 1000, 100).await.expect("fire") > 0 {}
    assert_eq!(
        read(s.journey("promo").await.expect("read")).read,
        part.read
    );
    s.change_journey_status("promo", JourneyAction::Resume, start + 2000)
        .await
        .expect("resume");
    for second in [2000, 3000, 4000] {
        while s.fire_due_timers(start + second, 100).await.expect("fire") > 0 {}
    }
    let done = read(s.journey("promo").await.expect("read"));
    assert_eq!(
        (
            done.due_at,
            done.started_at,
            done.last_read,
            done.last_excluded,
            done.last_finished_at
        ),
        (None, None, 5, 1, Some(start + 3000)),
        "{done:?}"
    );
    let stats = s.journey_stats("promo").await.expect("stats");
    assert_eq!(
        (stats.instances, stats.completed, stats.rate_limited),
        (4, 4, 0)
    );
    let opted_out = s
        .profile_journeys(&id("user_id", "u1"))
        .await
        .expect("read")
        .expect("profile");
    assert!(opted_out.is_empty(), "left out");
    let other = s
        .profile_journeys(&id("user_id", "other"))
        .await
        .expect("read")
        .expect("profile");
    assert!(other.is_empty(), "not a member, not entered");
    // Publishing an edit does not read the audience again: a one-off read happens once.
    let mut edited = promo.clone();
    edited["name"] = json!("Promo, edited");
    s.put_journey_draft("promo", &edited, start + 5000)
        .await
        .expect("put");
    s.publish_journey("promo", start + 5000)
        .await
        .expect("publish");
    while s.fire_due_timers(start + 6000, 100).await.expect("fire") > 0 {}
    assert_eq!(instances(s.journey_stats("promo").await.expect("stats")), 4);

    // On a schedule, every hour; members may enter again on each read.
    let hourly = json!({"key": "hourly",
        "entry": {"audience": "buyers", "on": "read", "schedule": {"cron": "0 * * * *"}},
        "properties": {"reentry": "always"},
        "nodes": [{"id": "done", "type": "end"}]});
    s.put_journey_draft("hourly", &hourly, start)
        .await
        .expect("put");
    s.publish_journey("hourly", start).await.expect("publish");
    let first = read(s.journey("hourly").await.expect("read"))
        .due_at
        .expect("due");
    assert!(first > start && first % 3_600_000 == 0 && first - start <= 3_600_000);
    while s.fire_due_timers(first - 1, 100).await.expect("fire") > 0 {}
    assert_eq!(
        instances(s.journey_stats("hourly").await.expect("stats")),
        0
    );
    while s.fire_due_timers(first, 100).await.expect("fire") > 0 {}
    assert_eq!(
        instances(s.journey_stats("hourly").await.expect("stats")),
        5
    );
    let after = read(s.journey("hourly").await.expect("read"));
    assert_eq!(after.due_at, Some(first + 3_600_000));
    while s
        .fire_due_timers(first + 3_600_000, 100)
        .await
        .expect("fire")
        > 0
    {}
    assert_eq!(
        instances(s.journey_stats("hourly").await.expect("stats")),
        10
    );
}
