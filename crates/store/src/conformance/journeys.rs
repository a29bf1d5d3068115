//! Journeys: drafts, versions and lifecycle, runs on ingest and timers, jumps, rate limits, stats, templates.

use std::collections::BTreeMap;

use super::*;

pub(super) fn doc(key: &str, template: &str) -> Value {
    json!({"key": key, "entry": {"event": "Signed Up"}, "nodes": [
        {"id": "hello", "type": "message", "channel": "log", "template": template, "next": "done"},
        {"id": "done", "type": "end"}]})
}

pub async fn journey_drafts_versions_and_lifecycle(b: &impl Backend) {
    let s = b.open(StoreOptions::default()).await;
    let draft = s
        .put_journey_draft("welcome", &doc("welcome", "v1"), 1_000)
        .await
        .expect("put");
    assert_eq!(
        (draft.status, draft.live_version, draft.versions.len()),
        (JourneyStatus::Draft, None, 0)
    );
    let (live, created) = s
        .publish_journey("welcome", 2_000)
        .await
        .expect("publish")
        .expect("exists");
    assert!(created);
    assert_eq!(
        (live.status, live.live_version),
        (JourneyStatus::Live, Some(1))
    );
    let (again, created) = s
        .publish_journey("welcome", 3_000)
        .await
        .expect("publish")
        .expect("exists");
    assert!(!created, "publishing an unchanged draft creates no version");
    assert_eq!(again.versions.len(), 1);

    s.put_journey_draft("welcome", &doc("welcome", "v2"), 4_000)
        .await
        .expect("put");
    let still = s.journey("welcome").await.expect("read").expect("exists");
    assert_eq!(
        (still.status, still.live_version),
        (JourneyStatus::Live, Some(1)),
        "a draft edit does not change what runs"
    );
    let (v2, created) = s
        .publish_journey("welcome", 5_000)
        .await
        .expect("publish")
        .expect("exists");
    assert!(created);
    assert_eq!(v2.live_version, Some(2));
    assert_eq!(
        v2.versions
            .iter()
            .map(|v| (v.version, v.published_at))
            .collect::<Vec<_>>(),
        vec![(1, 2_000), (2, 5_000)]
    );
    let v1_doc = s
        .journey_version("welcome", 1)
        .await
        .expect("read")
        .expect("v1 kept");
    assert_eq!(
        v1_doc["nodes"][0]["template"],
        json!("v1"),
        "versions are immutable"
    );
    assert!(
        s.journey_version("welcome", 3)
            .await
            .expect("read")
            .is_none()
    );

    let s = &s;
    let step = |action| async move {
        s.change_journey_status("welcome", action, 6_000)
            .await
            .expect("change")
            .expect("exists")
    };
    let paused = step(JourneyAction::Pause).await;
    assert!(
        matches!(&paused, Transition::Done(r) if r.status == JourneyStatus::Paused),
        "{paused:?}"
    );
    let refused = step(JourneyAction::Pause).await;
    assert!(
        matches!(
            &refused,
            Transition::Refused {
                status: JourneyStatus::Paused,
                ..
            }
        ),
        "{refused:?}"
    );
    assert!(
        matches!(step(JourneyAction::Resume).await, Transition::Done(r) if r.status == JourneyStatus::Live)
    );
    assert!(
        matches!(step(JourneyAction::Close).await, Transition::Done(r) if r.status == JourneyStatus::Closed)
    );
    assert!(matches!(
        step(JourneyAction::Resume).await,
        Transition::Refused { .. }
    ));
    assert!(
        matches!(step(JourneyAction::Stop).await, Transition::Done(r) if r.status == JourneyStatus::Stopped)
    );

    assert!(
        s.publish_journey("nope", 1)
            .await
            .expect("publish")
            .is_none()
    );
    assert!(
        s.change_journey_status("nope", JourneyAction::Pause, 1)
            .await
            .expect("change")
            .is_none()
    );
    assert!(s.journey("nope").await.expect("read").is_none());

    let before = s.journey("welcome").await.expect("read");
    s.close().await;
    let s = b.open(StoreOptions::default()).await;
    assert_eq!(
        s.journey("welcome").await.expect("read"),
        before,
        "journeys survive a restart"
    );
    s.close().await;
}

pub async fn journeys_are_listed_by_key(b: &impl Backend) {
    let s = b.open(StoreOptions::default()).await;
    for key in ["zeta", "alpha", "mid"] {
        s.put_journey_draft(key, &doc(key, "t"), 1)
            .await
            .expect("put");
    }
    s.publish_journey("mid", 2).await.expect("publish");
    let all = s.journeys().await.expect("list");
    assert_eq!(
        all.iter().map(|j| j.key.as_str()).collect::<Vec<_>>(),
        ["alpha", "mid", "zeta"]
    );
    assert_eq!(all[1].live_version, Some(1));
    s.close().await;
}

pub async fn live_journeys_run_on_ingest_and_timers_fire(b: &impl Backend) {
    let s = b.open(StoreOptions::default()).await;
    let greet = json!({"key": "greet", "entry": {"event": "Go"}, "nodes": [
        {"id": "hello", "type": "message", "channel": "log", "template": "hello", "next": "pause"},
        {"id": "pause", "type": "wait", "duration": "1h", "next": "bye"},
        {"id": "bye", "type": "message", "channel": "log", "template": "bye", "next": "done"},
        {"id": "done", "type": "end"}]});
    s.put_journey_draft("greet", &greet, 1).await.expect("put");
    s.publish_journey("greet", 1).await.expect("publish");
    // A draft that was never published does not run.
    s.put_journey_draft("unpublished", &doc("unpublished", "x"), 1)
        .await
        .expect("put");

    s.ingest(events(
        json!([{"type": "track", "messageId": "go-1", "userId": "runner", "event": "Go"}]),
    ))
    .await
    .expect("ingest");
    let states = s
        .profile_journeys(&id("user_id", "runner"))
        .await
        .expect("read")
        .expect("profile");
    assert_eq!(
        states.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
        ["greet"]
    );
    let instance = &states[0].1.instances[0];
    assert_eq!(instance.status, waymark_engine::Status::Active);
    assert_eq!(instance.node.as_deref(), Some("pause"));
    let outbox = s
        .profile_outbox(&id("user_id", "runner"))
        .await
        .expect("read")
        .expect("profile");
    assert_eq!(outbox.len(), 1);
    assert_eq!(
        (outbox[0].row.effect.kind(), outbox[0].row.status.as_str()),
        ("message", "done")
    );

    let now = crate::wall_clock_ms();
    assert_eq!(
        s.fire_due_timers(now, 100).await.expect("fire"),
        0,
        "the 1h wait is not due yet"
    );
    assert_eq!(
        s.fire_due_timers(now + 2 * 3_600_000, 100)
            .await
            .expect("fire"),
        1
    );
    assert_eq!(
        s.fire_due_timers(now + 2 * 3_600_000, 100)
            .await
            .expect("fire"),
        0,
        "a timer fires once"
    );
    let states = s
        .profile_journeys(&id("user_id", "runner"))
        .await
        .expect("read")
        .expect("profile");
    assert_eq!(
        states[0].1.instances[0].status,
        waymark_engine::Status::Completed
    );
    let outbox = s
        .profile_outbox(&id("user_id", "runner"))
        .await
        .expect("read")
        .expect("profile");
    let templates: Vec<&str> = outbox
        .iter()
        .filter_map(|o| match &o.row.effect {
            Effect::Message(m) => Some(m.template.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(templates, ["hello", "bye"]);
    assert_eq!(
        s.fire_due_timers(now + 100 * 86_400_000, 100)
            .await
            .expect("fire"),
        0,
        "a finished instance leaves no timer behind (not even its deadline)"
    );

    // Replays and re-entry (default: never) start nothing new.
    s.ingest(events(json!([{"type": "track", "messageId": "go-1", "userId": "runner", "event": "Go"},
                           {"type": "track", "messageId": "go-2", "userId": "runner", "event": "Go"}]))).await.expect("ingest");
    let states = s
        .profile_journeys(&id("user_id", "runner"))
        .await
        .expect("read")
        .expect("profile");
    assert_eq!(states[0].1.instances.len(), 1);

    // Journey state follows an identity merge.
    s.ingest(events(json!([{"type": "track", "messageId": "go-3", "anonymousId": "walker-anon", "event": "Go"}]))).await.expect("ingest");
    s.ingest(events(json!([{"type": "identify", "messageId": "id-3", "userId": "walker", "anonymousId": "walker-anon"}]))).await.expect("ingest");
    let states = s
        .profile_journeys(&id("user_id", "walker"))
        .await
        .expect("read")
        .expect("profile");
    assert_eq!(
        states.len(),
        1,
        "the anonymous profile's instance moved with the merge"
    );
    assert_eq!(states[0].1.instances[0].node.as_deref(), Some("pause"));

    // Stop ends every active instance now and drops its timers.
    let stopped = s
        .change_journey_status("greet", JourneyAction::Stop, crate::wall_clock_ms())
        .await
        .expect("stop")
        .expect("exists");
    assert!(matches!(stopped, Transition::Done(_)), "{stopped:?}");
    let states = s
        .profile_journeys(&id("user_id", "walker"))
        .await
        .expect("read")
        .expect("profile");
    let walker = &states[0].1.instances[0];
    assert_eq!(walker.status, waymark_engine::Status::Exited);
    assert_eq!(
        walker.steps.last().map(|st| st.what.as_str()),
        Some("stopped")
    );
    assert_eq!(
        s.fire_due_timers(crate::wall_clock_ms() + 200 * 86_400_000, 100)
            .await
            .expect("fire"),
        0,
        "a stopped journey leaves no timers"
    );

    let stats = s.journey_stats("greet").await.expect("stats");
    assert_eq!(
        (stats.instances, stats.completed, stats.exited, stats.active),
        (2, 1, 1, 0),
        "runner completed; walker (the merged anonymous instance) was stopped: {stats:?}"
    );
    assert_eq!(stats.nodes["pause"].exited, 1);
    assert_eq!(stats.nodes["bye"].passed, 1);

    // Erasure removes journey state and the outbox with the profile.
    s.erase(&id("user_id", "runner")).await.expect("erase");
    assert!(
        s.profile_journeys(&id("user_id", "runner"))
            .await
            .expect("read")
            .is_none()
    );
    s.close().await;
}

pub async fn jumps_rate_limits_and_stats_counters(b: &impl Backend) {
    let s = b.open(StoreOptions::default()).await;
    let target = json!({"key": "target", "entry": {"event": "Never Sent"}, "nodes": [
        {"id": "hold", "type": "wait", "duration": "1d", "next": "done"},
        {"id": "done", "type": "end"}]});
    let source = json!({"key": "source", "entry": {"event": "Go"},
        "properties": {"entry_rate_limit": 2}, "nodes": [
        {"id": "over", "type": "jump", "journey": "target"}]});
    for (key, document) in [("target", &target), ("source", &source)] {
        s.put_journey_draft(key, document, 1).await.expect("put");
        s.publish_journey(key, 1).await.expect("publish");
    }
    // Five people in one batch: the limit lets two in this second.
    let batch: Vec<Value> = (0..5)
        .map(|i| json!({"type": "track", "messageId": format!("go-{i}"), "userId": format!("j{i}"), "event": "Go", "properties": {"n": i}}))
        .collect();
    s.ingest(events(Value::Array(batch))).await.expect("ingest");
    let stats = s.journey_stats("source").await.expect("stats");
    assert_eq!(
        (stats.instances, stats.completed, stats.rate_limited),
        (2, 2, 3),
        "{stats:?}"
    );
    assert_eq!(stats.nodes["over"].entered, 2);
    assert_eq!(
        stats.nodes["over"].passed, 2,
        "a jump node counts as passed"
    );

    // The jumps wait in the outbox; recording their delivery enters the target journey.
    let now = crate::wall_clock_ms();
    let jumps = s.claim_outbox(now, 10, 30_000).await.expect("claim");
    assert_eq!(
        jumps.iter().map(|i| i.effect.kind()).collect::<Vec<_>>(),
        ["jump", "jump"]
    );
    for jump in &jumps {
        s.complete_outbox(jump, Delivery::Delivered(Value::Null), now)
            .await
            .expect("complete");
        s.complete_outbox(jump, Delivery::Delivered(Value::Null), now)
            .await
            .expect("completing twice is harmless");
    }
    let mut in_target_users = Vec::new();
    for i in 0..5 {
        let states = s
            .profile_journeys(&id("user_id", &format!("j{i}")))
            .await
            .expect("read")
            .expect("profile");
        if let Some((_, state)) = states.iter().find(|(k, _)| k == "target") {
            in_target_users.push(format!("j{i}"));
            let instance = &state.instances[0];
            assert_eq!(instance.context["jumped_from"], json!("source"));
            assert_eq!(instance.context["entry"]["properties"]["n"], json!(i));
            assert_eq!(instance.node.as_deref(), Some("hold"));
            assert_eq!(
                state.instances.len(),
                1,
                "one instance per jump, even when completed twice"
            );
        }
    }
    assert_eq!(
        in_target_users.len(),
        2,
        "only the people the rate limit let in: {in_target_users:?}"
    );
    let stats = s.journey_stats("target").await.expect("stats");
    assert_eq!((stats.instances, stats.active), (2, 2));
    assert_eq!(stats.nodes["hold"].waiting, 2);

    // Erasing a person takes them out of the active and waiting counts; what happened
    // before still counts.
    let erased = in_target_users[0].clone();
    s.erase(&id("user_id", &erased)).await.expect("erase");
    let stats = s.journey_stats("target").await.expect("stats");
    assert_eq!((stats.instances, stats.active), (2, 1), "{stats:?}");
    assert_eq!(
        (stats.nodes["hold"].entered, stats.nodes["hold"].waiting),
        (2, 1)
    );
    s.close().await;
}

pub async fn templates_keep_every_changed_version(b: &impl Backend) {
    let s = b.open(StoreOptions::default()).await;
    assert!(s.template("welcome").await.expect("read").is_none());
    let v1 = json!({"channel": "email", "subject": "Hi", "html": "<p>Hi</p>"});
    let (record, created) = s.put_template("welcome", &v1, 10).await.expect("put");
    assert!(created);
    assert_eq!((record.version, record.channel.as_str()), (1, "email"));
    let (record, created) = s.put_template("welcome", &v1, 20).await.expect("put again");
    assert!(!created, "the same document makes no new version");
    assert_eq!(record.version, 1);
    let v2 = json!({"channel": "email", "subject": "Hello", "html": "<p>Hello</p>"});
    let (record, created) = s.put_template("welcome", &v2, 30).await.expect("put v2");
    assert!(created);
    assert_eq!(record.version, 2);
    assert_eq!(record.document, v2);
    assert_eq!((record.created_at, record.updated_at), (10, 30));
    assert_eq!(
        record
            .versions
            .iter()
            .map(|v| v.version)
            .collect::<Vec<_>>(),
        [1, 2]
    );
    assert_eq!(
        s.template_version("welcome", 1).await.expect("read"),
        Some(v1)
    );
    assert_eq!(s.template_version("welcome", 3).await.expect("read"), None);
    s.put_template("footer", &json!({"channel": "partial", "body": "bye"}), 40)
        .await
        .expect("put");
    let keys: Vec<String> = s
        .templates()
        .await
        .expect("list")
        .into_iter()
        .map(|t| t.key)
        .collect();
    assert_eq!(keys, ["footer", "welcome"]);
    s.close().await;
}

/// The path a person's first instance in `journey` took at `node`'s split step.
async fn split_path(s: &impl Store, user: &str, journey: &str, node: &str) -> Option<Value> {
    let states = s
        .profile_journeys(&id("user_id", user))
        .await
        .expect("read")
        .expect("profile");
    let (_, state) = states.iter().find(|(k, _)| k == journey)?;
    state.instances[0]
        .steps
        .iter()
        .find(|st| st.node == node && st.what == waymark_engine::StepKind::Split)
        .and_then(|st| st.detail.clone())
}

pub async fn a_winner_node_sends_the_rest_the_best_path_once(b: &impl Backend) {
    let s = b.open(StoreOptions::default()).await;
    let now = crate::wall_clock_ms();
    let at = now - now.rem_euclid(1000) + 3_600_000;
    let ab = json!({"key": "ab", "entry": {"event": "Signed Up"},
        "properties": {"conversion": {"event": "Order Completed", "within": "7d"}},
        "nodes": [
            {"id": "split", "type": "random_split", "paths": [
                {"percent": 25, "next": "a"}, {"percent": 25, "next": "b"}, {"percent": 50, "next": "pick"}]},
            {"id": "pick", "type": "winner", "paths": ["a", "b"], "metric": "converted",
             "at": waymark_core::time::format_iso8601(at)},
            {"id": "a", "type": "message", "channel": "log", "template": "a", "next": "done"},
            {"id": "b", "type": "message", "channel": "log", "template": "b", "next": "done"},
            {"id": "done", "type": "end"}]});
    s.put_journey_draft("ab", &ab, now).await.expect("put");
    s.publish_journey("ab", now).await.expect("publish");
    let people: Vec<String> = (0..80).map(|n| format!("w{n}")).collect();
    let signups: Vec<Value> = people
        .iter()
        .map(|p| json!({"type": "track", "messageId": format!("s-{p}"), "userId": p, "event": "Signed Up"}))
        .collect();
    s.ingest(events(Value::Array(signups)))
        .await
        .expect("ingest");
    let mut groups: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    for p in &people {
        let path = split_path(&s, p, "ab", "split").await.expect("split");
        groups
            .entry(path["path"].as_u64().expect("path"))
            .or_default()
            .push(p.clone());
    }
    let (tested_a, tested_b, rest) = (
        groups.get(&0).cloned().unwrap_or_default(),
        groups.get(&1).cloned().unwrap_or_default(),
        groups.get(&2).cloned().unwrap_or_default(),
    );
    assert!(!rest.is_empty(), "{groups:?}");
    // Everyone sent b orders; nobody sent a does. (Events are stamped as received on a
    // fixed day; orders must come after the entries, which ran at the wall clock.)
    let ordered_at = waymark_core::time::format_iso8601(crate::wall_clock_ms() + 1000);
    let orders: Vec<Value> = tested_b
        .iter()
        .map(|p| json!({"type": "track", "messageId": format!("o-{p}"), "userId": p, "event": "Order Completed", "timestamp": ordered_at}))
        .collect();
    s.ingest(events(Value::Array(orders)))
        .await
        .expect("ingest");

    // Before its time, the rest waits and nothing is decided.
    while s.fire_due_timers(at - 1, 100).await.expect("fire") > 0 {}
    assert!(s.journey_winners("ab").await.expect("read").is_empty());
    let stats = s.journey_stats("ab").await.expect("stats");
    assert_eq!(stats.nodes["pick"].waiting, rest.len() as u64);

    while s.fire_due_timers(at, 100).await.expect("fire") > 0 {}
    let winners = s.journey_winners("ab").await.expect("read");
    assert_eq!(winners.len(), 1, "{winners:?}");
    let decision = &winners[0].decision;
    assert_eq!(
        (winners[0].node.as_str(), decision.chosen.as_str()),
        ("pick", "b"),
        "{decision:?} {:?}",
        s.journey_stats("ab").await.expect("stats")
    );
    let counted: Vec<(u64, u64)> = decision.tested.iter().map(|t| (t.n, t.hits)).collect();
    assert_eq!(
        counted,
        [
            (tested_a.len() as u64, 0),
            (tested_b.len() as u64, tested_b.len() as u64)
        ]
    );
    // b converts everyone and a nobody: with a few people in each, b wins outright.
    assert_eq!(
        decision.significant,
        tested_a.len() >= 3 && tested_b.len() >= 3,
        "{decision:?}"
    );
    let stats = s.journey_stats("ab").await.expect("stats");
    assert_eq!(stats.nodes["pick"].waiting, 0);
    assert_eq!(
        stats.nodes["b"].entered,
        (tested_b.len() + rest.len()) as u64
    );
    assert_eq!(stats.nodes["a"].entered, tested_a.len() as u64);
    for p in &rest {
        let path = split_path(&s, p, "ab", "pick").await.expect("winner step");
        assert_eq!(path["winner"], "b", "{p}");
    }
    // The hourly series says when: the test's entries and conversions in the hour they
    // ran, the rest's sends in the hour of the winner's time.
    let series = s.journey_series("ab").await.expect("series");
    let at_b = |hour, name: &str| {
        series
            .iter()
            .filter(|(h, node, n, _)| *h == hour && node == "b" && n == name)
            .map(|(_, _, _, v)| *v)
            .sum::<i64>()
    };
    let first_hour = now - now.rem_euclid(3_600_000);
    assert_eq!(
        at_b(first_hour, "entered"),
        tested_b.len() as i64,
        "{series:?}"
    );
    assert_eq!(
        at_b(first_hour, "converted"),
        tested_b.len() as i64,
        "{series:?}"
    );
    assert_eq!(
        at_b(at - at.rem_euclid(3_600_000), "entered"),
        rest.len() as i64,
        "{series:?}"
    );

    // The decision is kept: a reopened store (nothing cached) sends a newcomer the same
    // way, though a's orders now outnumber b's.
    drop(s);
    let s = b.open(StoreOptions::default()).await;
    let late: Vec<Value> = tested_a
        .iter()
        .flat_map(|p| {
            let ordered_at = ordered_at.clone();
            (0..3).map(move |n| json!({"type": "track", "messageId": format!("late-{p}-{n}"), "userId": p, "event": "Order Completed", "timestamp": ordered_at}))
        })
        .collect();
    s.ingest(events(Value::Array(late))).await.expect("ingest");
    let mut newcomers = Vec::new();
    for n in 0..40 {
        let p = format!("late{n}");
        s.ingest(events(json!([{"type": "track", "messageId": format!("s-{p}"), "userId": p, "event": "Signed Up"}])))
            .await
            .expect("ingest");
        newcomers.push(p);
    }
    // Ingest runs at the wall clock, before the winner's time: the newcomers sent to the
    // rest wait like the others, and go b when their timers fire.
    while s.fire_due_timers(at, 100).await.expect("fire") > 0 {}
    let mut picked = 0;
    for p in &newcomers {
        if let Some(path) = split_path(&s, p, "ab", "pick").await {
            assert_eq!(path["winner"], "b", "{p}");
            picked += 1;
        }
    }
    assert!(picked > 0, "some of 40 newcomers go to the rest");
    let again = s.journey_winners("ab").await.expect("read");
    assert_eq!(again, winners, "decided once");
}
