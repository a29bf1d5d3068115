//! The conformance suite: the behaviour every storage backend must show, written once.
//!
//! A backend's test file calls [`conformance_suite!`](crate::conformance_suite) with an
//! expression that yields a fresh [`Backend`] (an empty database) for each test.

use async_trait::async_trait;
use serde_json::{Value, json};
use waymark_core::segment::{Receipt, parse_batch};
use waymark_core::time::parse_iso8601;
use waymark_core::{Event, Identity, partition_of};
use waymark_engine::Effect;

use crate::{
    Delivery, JourneyAction, JourneyRunStore, JourneyStatus, JourneyStore, MessageEvent,
    OutboxStore, PageRequest, ProfileStore, Store, StoreOptions, SuppressionStore, TemplateStore,
    Transition,
};

/// A place a store can be opened, and opened again (to prove durability).
#[async_trait]
pub trait Backend: Send + Sync {
    type Store: Store;
    async fn open(&self, options: StoreOptions) -> Self::Store;
}

#[macro_export]
macro_rules! conformance_suite {
    ($backend:expr) => {
        $crate::conformance_suite!(@cases $backend;
            profile_round_trip,
            every_identity_finds_the_profile,
            replayed_batch_changes_nothing,
            identify_merges_anonymous_history,
            known_people_sharing_a_device_stay_apart,
            events_page_newest_first,
            erase_removes_profile_identities_and_events,
            count_retention_keeps_newest,
            age_retention_prunes_old_events,
            data_survives_reopen,
            concurrent_ingest_loses_nothing,
            partition_is_hash_of_profile_id,
            journey_drafts_versions_and_lifecycle,
            journeys_are_listed_by_key,
            live_journeys_run_on_ingest_and_timers_fire,
            outbox_claims_leases_and_completes_effects,
            jumps_rate_limits_and_stats_counters,
            templates_keep_every_changed_version,
            governance_caps_across_journeys_and_quiet_hours_hold,
            suppression_list_counts_bounces_and_binds_every_message,
            dead_push_tokens_are_forgotten,
            provider_reports_are_kept_per_message_once_per_status,
            a_long_history_is_read_newest_first_and_bounded,
            finished_messages_are_pruned_after_retention,
        );
    };
    (@cases $backend:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let backend = $backend.await;
                $crate::conformance::$case(&backend).await;
            }
        )*
    };
}

/// Parses a Segment batch the way the server does, received at a fixed instant.
pub fn events(batch: Value) -> Vec<Event> {
    let body = serde_json::to_vec(&json!({ "batch": batch })).expect("json");
    let mut n = 0u64;
    let mut gen_id = || {
        n += 1;
        format!("generated-{n}-{}", std::process::id())
    };
    let received = parse_iso8601("2026-11-29T12:00:00Z").expect("time");
    parse_batch(
        &body,
        &mut Receipt {
            received_at: received,
            new_message_id: &mut gen_id,
        },
    )
    .expect("valid batch")
    .events
}

fn id(ns: &str, value: &str) -> Identity {
    Identity::parse(ns, value).expect("identity")
}

fn page(limit: u32) -> PageRequest {
    PageRequest {
        before: None,
        limit,
    }
}

pub async fn profile_round_trip(b: &impl Backend) {
    let s = b.open(StoreOptions::default()).await;
    let r = s
        .ingest(events(json!([
            {"type": "identify", "messageId": "i1", "userId": "u1", "traits": {"name": "Ada", "plan": "free"}, "timestamp": "2026-11-01T10:00:00Z"},
            {"type": "track", "messageId": "t1", "userId": "u1", "event": "Order Completed", "properties": {"total": 42.5}, "timestamp": "2026-11-02T10:00:00Z"},
            {"type": "identify", "messageId": "i0", "userId": "u1", "traits": {"plan": "trial"}, "timestamp": "2026-10-01T10:00:00Z"},
        ])))
        .await
        .expect("ingest");
    assert_eq!((r.accepted, r.duplicates), (3, 0));
    let p = s
        .profile(&id("user_id", "u1"))
        .await
        .expect("read")
        .expect("profile exists");
    assert_eq!(p.traits["name"], json!("Ada"));
    assert_eq!(
        p.traits["plan"],
        json!("free"),
        "older identify must not overwrite newer trait"
    );
    assert_eq!(p.event_count, 3);
    assert_eq!(p.event_counts["Order Completed"], 1);
    assert_eq!(
        p.first_seen,
        parse_iso8601("2026-10-01T10:00:00Z").expect("t")
    );
    assert_eq!(
        p.last_seen,
        parse_iso8601("2026-11-02T10:00:00Z").expect("t")
    );
    assert!(
        s.profile(&id("user_id", "nobody"))
            .await
            .expect("read")
            .is_none()
    );
    s.close().await;
}

pub async fn every_identity_finds_the_profile(b: &impl Backend) {
    let s = b.open(StoreOptions::default()).await;
    s.ingest(events(json!([{
        "type": "identify", "messageId": "m", "userId": "u2", "anonymousId": "a2",
        "traits": {"email": "Grace@Example.org", "phone": "+44 20 7946 0000"},
        "context": {"externalIds": [{"type": "crm_id", "id": "CRM-2"}]}
    }])))
    .await
    .expect("ingest");
    let want = s
        .profile(&id("user_id", "u2"))
        .await
        .expect("read")
        .expect("exists")
        .id;
    for (ns, value) in [
        ("anonymous_id", "a2"),
        ("email", "grace@example.org"),
        ("phone", "+442079460000"),
        ("crm_id", "CRM-2"),
    ] {
        let got = s.profile(&id(ns, value)).await.expect("read").map(|p| p.id);
        assert_eq!(got.as_ref(), Some(&want), "lookup by {ns}");
    }
    s.close().await;
}

pub async fn replayed_batch_changes_nothing(b: &impl Backend) {
    let s = b.open(StoreOptions::default()).await;
    let batch = events(json!([
        {"type": "track", "messageId": "r1", "userId": "u3", "event": "A"},
        {"type": "track", "messageId": "r2", "userId": "u3", "event": "B"},
        {"type": "track", "messageId": "r1", "userId": "u3", "event": "A"},
    ]));
    let first = s.ingest(batch.clone()).await.expect("ingest");
    assert_eq!((first.accepted, first.duplicates), (2, 1));
    let before = s.profile(&id("user_id", "u3")).await.expect("read");
    let again = s.ingest(batch).await.expect("replay");
    assert_eq!((again.accepted, again.duplicates), (0, 3));
    assert_eq!(s.profile(&id("user_id", "u3")).await.expect("read"), before);
    let listed = s
        .events(&id("user_id", "u3"), page(100))
        .await
        .expect("read")
        .expect("exists");
    assert_eq!(listed.events.len(), 2);
    s.close().await;
}

pub async fn identify_merges_anonymous_history(b: &impl Backend) {
    let s = b.open(StoreOptions::default()).await;
    s.ingest(events(
        json!([{"type": "identify", "messageId": "k1", "userId": "u4", "traits": {"name": "Lin"}}]),
    ))
    .await
    .expect("ingest");
    s.ingest(events(json!([
        {"type": "page", "messageId": "k2", "anonymousId": "anon4", "name": "Pricing"},
        {"type": "identify", "messageId": "k3", "anonymousId": "anon4", "traits": {"utm": "ad"}},
    ])))
    .await
    .expect("ingest");
    let anon = s
        .profile(&id("anonymous_id", "anon4"))
        .await
        .expect("read")
        .expect("anon profile");
    let known = s
        .profile(&id("user_id", "u4"))
        .await
        .expect("read")
        .expect("known profile");
    assert_ne!(anon.id, known.id);
    s.ingest(events(
        json!([{"type": "identify", "messageId": "k4", "userId": "u4", "anonymousId": "anon4"}]),
    ))
    .await
    .expect("ingest");
    let merged = s
        .profile(&id("anonymous_id", "anon4"))
        .await
        .expect("read")
        .expect("merged");
    assert_eq!(merged.id, known.id);
    assert_eq!(merged.traits["name"], json!("Lin"));
    assert_eq!(merged.traits["utm"], json!("ad"));
    assert_eq!(merged.event_count, 4);
    assert!(merged.merged_from.contains(&anon.id));
    let history = s
        .events(&id("user_id", "u4"), page(100))
        .await
        .expect("read")
        .expect("exists");
    let ids: Vec<_> = history
        .events
        .iter()
        .map(|e| e.body["messageId"].as_str().unwrap_or("").to_owned())
        .collect();
    for m in ["k1", "k2", "k3", "k4"] {
        assert!(
            ids.iter().any(|x| x == m),
            "{m} missing from merged history {ids:?}"
        );
    }
    s.close().await;
}

pub async fn known_people_sharing_a_device_stay_apart(b: &impl Backend) {
    let s = b.open(StoreOptions::default()).await;
    s.ingest(events(
        json!([{"type": "identify", "messageId": "d1", "userId": "alice", "anonymousId": "ipad"}]),
    ))
    .await
    .expect("ingest");
    s.ingest(events(
        json!([{"type": "identify", "messageId": "d2", "userId": "bob", "anonymousId": "ipad"}]),
    ))
    .await
    .expect("ingest");
    let alice = s
        .profile(&id("user_id", "alice"))
        .await
        .expect("read")
        .expect("alice");
    let bob = s
        .profile(&id("user_id", "bob"))
        .await
        .expect("read")
        .expect("bob");
    assert_ne!(alice.id, bob.id);
    assert_eq!(bob.event_count, 1);
    assert!(!bob.identities.contains_key("anonymous_id"));
    // A push token is different: it goes to whoever signed in on the device last.
    for (n, user) in [(3, "alice"), (4, "bob")] {
        s.ingest(events(
            json!([{"type": "identify", "messageId": format!("d{n}"), "userId": user,
            "context": {"device": {"type": "android", "token": "fcm-ipad"}}}]),
        ))
        .await
        .expect("ingest");
    }
    let token_owner = s
        .profile(&id("fcm_token", "fcm-ipad"))
        .await
        .expect("read")
        .expect("owner");
    assert_eq!(token_owner.id, bob.id);
    let alice = s
        .profile(&id("user_id", "alice"))
        .await
        .expect("read")
        .expect("alice");
    assert!(
        !alice.identities.contains_key("fcm_token"),
        "{:?}",
        alice.identities
    );
    s.close().await;
}

pub async fn events_page_newest_first(b: &impl Backend) {
    let s = b.open(StoreOptions::default()).await;
    let batch: Vec<Value> = (0..25)
        .map(|i| {
            json!({"type": "track", "messageId": format!("p{i}"), "userId": "u5", "event": "Tick",
            "properties": {"i": i}, "timestamp": format!("2026-11-01T00:00:{i:02}Z")})
        })
        .collect();
    s.ingest(events(Value::Array(batch))).await.expect("ingest");
    let mut seen = Vec::new();
    let mut before = None;
    loop {
        let p = s
            .events(&id("user_id", "u5"), PageRequest { before, limit: 10 })
            .await
            .expect("read")
            .expect("exists");
        assert!(p.events.len() <= 10);
        seen.extend(
            p.events
                .iter()
                .map(|e| e.body["properties"]["i"].as_i64().unwrap_or(-1)),
        );
        match p.next {
            Some(next) => before = Some(next),
            None => break,
        }
    }
    assert_eq!(seen, (0..25).rev().collect::<Vec<_>>());
    assert!(
        s.events(&id("user_id", "ghost"), page(10))
            .await
            .expect("read")
            .is_none()
    );
    s.close().await;
}

pub async fn erase_removes_profile_identities_and_events(b: &impl Backend) {
    let s = b.open(StoreOptions::default()).await;
    s.ingest(events(json!([
        {"type": "identify", "messageId": "e1", "userId": "gone", "anonymousId": "gone-anon", "traits": {"email": "gone@example.com"}},
        {"type": "track", "messageId": "e2", "userId": "gone", "event": "X"},
        {"type": "track", "messageId": "e3", "userId": "stays", "event": "X"},
    ])))
    .await
    .expect("ingest");
    let erased = s
        .erase(&id("email", "gone@example.com"))
        .await
        .expect("erase")
        .expect("existed");
    assert_eq!(erased.events_deleted, 2);
    assert_eq!(erased.identities_deleted, 3);
    for (ns, v) in [
        ("user_id", "gone"),
        ("anonymous_id", "gone-anon"),
        ("email", "gone@example.com"),
    ] {
        assert!(
            s.profile(&id(ns, v)).await.expect("read").is_none(),
            "{ns} still resolves"
        );
    }
    assert!(
        s.events(&id("user_id", "gone"), page(10))
            .await
            .expect("read")
            .is_none()
    );
    assert!(
        s.erase(&id("user_id", "gone"))
            .await
            .expect("erase")
            .is_none()
    );
    assert_eq!(
        s.profile(&id("user_id", "stays"))
            .await
            .expect("read")
            .expect("kept")
            .event_count,
        1
    );
    s.ingest(events(
        json!([{"type": "track", "messageId": "e4", "userId": "gone", "event": "Back"}]),
    ))
    .await
    .expect("ingest");
    let fresh = s
        .profile(&id("user_id", "gone"))
        .await
        .expect("read")
        .expect("new profile");
    assert_eq!(fresh.event_count, 1);
    assert!(fresh.traits.is_empty());
    s.close().await;
}

pub async fn count_retention_keeps_newest(b: &impl Backend) {
    let s = b
        .open(StoreOptions {
            max_events_per_profile: 5,
            ..StoreOptions::default()
        })
        .await;
    for chunk in 0..2 {
        let batch: Vec<Value> = (0..4)
            .map(|i| {
                let n = chunk * 4 + i;
                json!({"type": "track", "messageId": format!("c{n}"), "userId": "u6", "event": "E",
                    "properties": {"n": n}, "timestamp": format!("2026-11-01T00:00:{n:02}Z")})
            })
            .collect();
        s.ingest(events(Value::Array(batch))).await.expect("ingest");
    }
    let p = s
        .events(&id("user_id", "u6"), page(100))
        .await
        .expect("read")
        .expect("exists");
    let ns: Vec<_> = p
        .events
        .iter()
        .map(|e| e.body["properties"]["n"].as_i64().unwrap_or(-1))
        .collect();
    assert_eq!(ns, vec![7, 6, 5, 4, 3]);
    assert_eq!(
        s.profile(&id("user_id", "u6"))
            .await
            .expect("read")
            .expect("p")
            .event_count,
        8,
        "lifetime count survives retention"
    );
    s.close().await;
}

pub async fn age_retention_prunes_old_events(b: &impl Backend) {
    let day = 24 * 3600 * 1000;
    let s = b
        .open(StoreOptions {
            max_event_age_ms: Some(30 * day),
            ..StoreOptions::default()
        })
        .await;
    s.ingest(events(json!([
        {"type": "track", "messageId": "old", "userId": "u7", "event": "Old", "timestamp": "2026-01-01T00:00:00Z"},
        {"type": "track", "messageId": "new", "userId": "u7", "event": "New", "timestamp": "2026-11-28T00:00:00Z"},
    ])))
    .await
    .expect("ingest");
    let now = parse_iso8601("2026-11-29T00:00:00Z").expect("t");
    assert_eq!(s.prune_expired(now).await.expect("prune"), 1);
    let p = s
        .events(&id("user_id", "u7"), page(10))
        .await
        .expect("read")
        .expect("exists");
    assert_eq!(p.events.len(), 1);
    assert_eq!(p.events[0].body["event"], json!("New"));
    assert_eq!(s.prune_expired(now).await.expect("prune"), 0);
    s.close().await;
}

pub async fn data_survives_reopen(b: &impl Backend) {
    let s = b.open(StoreOptions::default()).await;
    s.ingest(events(
        json!([{"type": "identify", "messageId": "s1", "userId": "u8", "traits": {"k": "v"}}]),
    ))
    .await
    .expect("ingest");
    let partitions = s.partitions();
    s.close().await;
    let s = b
        .open(StoreOptions {
            partitions: partitions + 7,
            ..StoreOptions::default()
        })
        .await;
    assert_eq!(
        s.partitions(),
        partitions,
        "partition count is fixed at creation"
    );
    let p = s
        .profile(&id("user_id", "u8"))
        .await
        .expect("read")
        .expect("survived");
    assert_eq!(p.traits["k"], json!("v"));
    let again = s
        .ingest(events(
            json!([{"type": "identify", "messageId": "s1", "userId": "u8"}]),
        ))
        .await
        .expect("ingest");
    assert_eq!(again.duplicates, 1, "dedup survives reopen");
    s.close().await;
}

pub async fn concurrent_ingest_loses_nothing(b: &impl Backend) {
    let s = std::sync::Arc::new(b.open(StoreOptions::default()).await);
    let mut tasks = Vec::new();
    for worker in 0..8 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            for round in 0..20 {
                // Every worker touches the same 10 people, through user ids and a shared
                // anonymous id that identifies them on the first round.
                let batch: Vec<Value> = (0..10)
                    .map(|u| {
                        json!({"type": "identify", "messageId": format!("w{worker}-r{round}-u{u}"),
                            "userId": format!("cu{u}"), "anonymousId": format!("ca{u}"),
                            "traits": {"last_worker": worker}})
                    })
                    .collect();
                s.ingest(events(Value::Array(batch))).await.expect("ingest");
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    for u in 0..10 {
        let p = s
            .profile(&id("user_id", &format!("cu{u}")))
            .await
            .expect("read")
            .expect("exists");
        assert_eq!(p.event_count, 8 * 20, "cu{u}");
        let via_anon = s
            .profile(&id("anonymous_id", &format!("ca{u}")))
            .await
            .expect("read")
            .expect("exists");
        assert_eq!(via_anon.id, p.id);
        let all = s
            .events(&id("user_id", &format!("cu{u}")), page(1000))
            .await
            .expect("read")
            .expect("exists");
        assert_eq!(all.events.len(), 160);
    }
    s.close().await;
}

pub async fn partition_is_hash_of_profile_id(b: &impl Backend) {
    let s = b.open(StoreOptions::default()).await;
    let batch: Vec<Value> = (0..20).map(|i| json!({"type": "track", "messageId": format!("h{i}"), "userId": format!("hu{i}"), "event": "E"})).collect();
    s.ingest(events(Value::Array(batch))).await.expect("ingest");
    let mut partitions = std::collections::HashSet::new();
    for i in 0..20 {
        let p = s
            .profile(&id("user_id", &format!("hu{i}")))
            .await
            .expect("read")
            .expect("exists");
        assert_eq!(p.partition, partition_of(&p.id, s.partitions()));
        partitions.insert(p.partition);
    }
    assert!(
        partitions.len() > 5,
        "20 profiles should spread over partitions: {partitions:?}"
    );
    s.close().await;
}

fn doc(key: &str, template: &str) -> Value {
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

pub async fn outbox_claims_leases_and_completes_effects(b: &impl Backend) {
    let s = b.open(StoreOptions::default()).await;
    let journey = json!({"key": "hooked", "entry": {"event": "Go"}, "nodes": [
        {"id": "hook", "type": "webhook", "url": "http://127.0.0.1:9/hook", "retries": 1, "next": "mark", "on_error": "sorry"},
        {"id": "mark", "type": "update_profile", "set": {"hooked": true}, "next": "done"},
        {"id": "sorry", "type": "message", "channel": "log", "template": "sorry", "next": "done"},
        {"id": "done", "type": "end"}]});
    s.put_journey_draft("hooked", &journey, 1)
        .await
        .expect("put");
    s.publish_journey("hooked", 1).await.expect("publish");
    s.ingest(events(
        json!([{"type": "track", "messageId": "h1", "userId": "ok-user", "event": "Go"}]),
    ))
    .await
    .expect("ingest");
    let now = crate::wall_clock_ms();

    let claimed = s.claim_outbox(now, 10, 30_000).await.expect("claim");
    assert_eq!(
        claimed.iter().map(|i| i.effect.kind()).collect::<Vec<_>>(),
        ["webhook"]
    );
    assert!(
        s.claim_outbox(now, 10, 30_000)
            .await
            .expect("claim")
            .is_empty(),
        "a claimed row is leased"
    );
    let expired = s
        .claim_outbox(now + 30_001, 10, 30_000)
        .await
        .expect("claim");
    assert_eq!(
        expired.iter().map(|i| i.seq).collect::<Vec<_>>(),
        [claimed[0].seq],
        "a lease that ran out lets the row be claimed again"
    );
    // A renewed lease outlasts the one it replaced.
    s.renew_outbox_leases(&[claimed[0].seq], now + 120_000)
        .await
        .expect("renew");
    assert!(
        s.claim_outbox(now + 60_002, 10, 30_000)
            .await
            .expect("claim")
            .is_empty(),
        "a renewed lease holds the row past its first end"
    );
    assert_eq!(s.release_outbox_leases().await.expect("release"), 1);
    assert_eq!(
        s.claim_outbox(now, 10, 30_000).await.expect("claim").len(),
        1,
        "released leases (as at start) make the row due again"
    );
    let hook = claimed[0].clone();
    let Effect::Webhook(call) = &hook.effect else {
        panic!("not a webhook: {hook:?}");
    };
    assert_eq!(call.url, "http://127.0.0.1:9/hook");
    s.complete_outbox(&hook, Delivery::Delivered(json!({"crm_id": 7})), now)
        .await
        .expect("complete");
    s.complete_outbox(&hook, Delivery::Delivered(json!({"crm_id": 8})), now)
        .await
        .expect("completing twice is harmless");
    let states = s
        .profile_journeys(&id("user_id", "ok-user"))
        .await
        .expect("read")
        .expect("profile");
    let instance = &states[0].1.instances[0];
    assert_eq!(
        instance.context["hook"],
        json!({"crm_id": 7}),
        "the first completion wins"
    );
    assert_eq!(instance.status, waymark_engine::Status::Completed);

    let update = s.claim_outbox(now, 10, 30_000).await.expect("claim");
    assert_eq!(
        update.iter().map(|i| i.effect.kind()).collect::<Vec<_>>(),
        ["update_profile"]
    );
    s.complete_outbox(&update[0], Delivery::Delivered(Value::Null), now)
        .await
        .expect("complete");
    let p = s
        .profile(&id("user_id", "ok-user"))
        .await
        .expect("read")
        .expect("profile");
    assert_eq!(p.traits["hooked"], json!(true));

    s.ingest(events(
        json!([{"type": "track", "messageId": "h2", "userId": "sad-user", "event": "Go"}]),
    ))
    .await
    .expect("ingest");
    let now = crate::wall_clock_ms();
    let hook = s
        .claim_outbox(now, 10, 30_000)
        .await
        .expect("claim")
        .remove(0);
    s.complete_outbox(
        &hook,
        Delivery::Retry {
            at: now + 1_000,
            error: "503".into(),
        },
        now,
    )
    .await
    .expect("retry");
    assert!(
        s.claim_outbox(now + 500, 10, 30_000)
            .await
            .expect("claim")
            .is_empty(),
        "not before the retry time"
    );
    let again = s
        .claim_outbox(now + 2_000, 10, 30_000)
        .await
        .expect("claim");
    assert_eq!((again.len(), again[0].attempts), (1, 1));
    assert!(
        again[0].created_at > 0 && again[0].created_at <= now,
        "claims carry when the effect was recorded: {again:?}"
    );
    // Deferred (a throttled channel): due again later, the attempt not counted.
    s.complete_outbox(
        &again[0],
        Delivery::Deferred { at: now + 3_000 },
        now + 2_000,
    )
    .await
    .expect("defer");
    assert!(
        s.claim_outbox(now + 2_500, 10, 30_000)
            .await
            .expect("claim")
            .is_empty(),
        "not before the deferred time"
    );
    let again = s
        .claim_outbox(now + 3_000, 10, 30_000)
        .await
        .expect("claim");
    assert_eq!((again.len(), again[0].attempts), (1, 1), "{again:?}");
    s.complete_outbox(&again[0], Delivery::Failed("503 twice".into()), now + 2_000)
        .await
        .expect("fail");
    let states = s
        .profile_journeys(&id("user_id", "sad-user"))
        .await
        .expect("read")
        .expect("profile");
    let steps: Vec<(&str, &str)> = states[0].1.instances[0]
        .steps
        .iter()
        .map(|st| (st.node.as_str(), st.what.as_str()))
        .collect();
    assert!(
        steps.contains(&("hook", "error")) && steps.contains(&("sorry", "sent")),
        "{steps:?}"
    );

    // Many outcomes at once: each is recorded as if alone, and a row given twice in one
    // batch is completed once (the first outcome wins).
    let batch: Vec<Value> = ["m-ok", "m-bad", "m-later"]
        .iter()
        .map(|u| json!({"type": "track", "messageId": format!("{u}-go"), "userId": u, "event": "Go"}))
        .collect();
    s.ingest(events(Value::Array(batch))).await.expect("ingest");
    let now = crate::wall_clock_ms();
    let claimed = s.claim_outbox(now, 10, 30_000).await.expect("claim");
    assert_eq!(claimed.len(), 3);
    let ok_id = s
        .profile(&id("user_id", "m-ok"))
        .await
        .expect("read")
        .expect("p")
        .id;
    let bad_id = s
        .profile(&id("user_id", "m-bad"))
        .await
        .expect("read")
        .expect("p")
        .id;
    let find = |wanted: &dyn Fn(&str) -> bool| {
        claimed
            .iter()
            .find(|i| wanted(&i.profile_id))
            .cloned()
            .expect("claimed")
    };
    let ok = find(&|p| p == ok_id);
    let bad = find(&|p| p == bad_id);
    let later = find(&|p| p != ok_id && p != bad_id);
    s.complete_outbox_many(
        vec![
            (ok.clone(), Delivery::Delivered(json!({"n": 1}))),
            (bad, Delivery::Failed("HTTP 404".into())),
            (
                later,
                Delivery::Retry {
                    at: now + 1_000,
                    error: "503".into(),
                },
            ),
            (ok, Delivery::Delivered(json!({"n": 2}))),
        ]
        .into(),
        now,
    )
    .await
    .expect("complete many");
    let s_ref = &s;
    let instance = move |u: &'static str| async move {
        s_ref
            .profile_journeys(&id("user_id", u))
            .await
            .expect("read")
            .expect("profile")[0]
            .1
            .instances[0]
            .clone()
    };
    let ok = instance("m-ok").await;
    assert_eq!(
        ok.context["hook"],
        json!({"n": 1}),
        "the first outcome wins"
    );
    let bad = instance("m-bad").await;
    assert!(
        bad.steps.iter().any(|st| st.node == "sorry"),
        "{:?}",
        bad.steps
    );
    let later = instance("m-later").await;
    assert_eq!(
        later.status,
        waymark_engine::Status::Active,
        "a retry leaves it waiting"
    );
    let again = s
        .claim_outbox(now + 2_000, 10, 30_000)
        .await
        .expect("claim");
    assert!(
        again
            .iter()
            .any(|i| i.effect.kind() == "webhook" && i.attempts == 1),
        "the retried row comes due again: {again:?}"
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

fn sms_journey(key: &str, event: &str, category: &str) -> Value {
    json!({"key": key, "entry": {"event": event}, "properties": {"reentry": "always"},
        "templates": {"hi": {"document": {"channel": "sms", "text": "hi from {{journey.entry.event}}"}}},
        "nodes": [
            {"id": "send", "type": "message", "channel": "sms", "template": "hi", "category": category, "next": "done"},
            {"id": "done", "type": "end"}]})
}

/// A live journey `receipt`: a transactional SMS on every `Paid`.
async fn publish_receipts(s: &impl Store) {
    s.put_journey_draft(
        "receipt",
        &sms_journey("receipt", "Paid", "transactional"),
        1,
    )
    .await
    .expect("put");
    s.publish_journey("receipt", 1).await.expect("publish");
}

fn steps_of(states: &[(String, crate::JourneyState)], journey: &str) -> Vec<String> {
    states
        .iter()
        .filter(|(k, _)| k == journey)
        .flat_map(|(_, s)| s.instances.iter().flat_map(|i| i.steps.iter()))
        .map(|st| match &st.detail {
            Some(d) if st.what == "suppressed" || st.what == "held" => {
                format!("{}: {}", st.what, d["reason"].as_str().unwrap_or_default())
            }
            _ => st.what.to_string(),
        })
        .collect()
}

pub async fn governance_caps_across_journeys_and_quiet_hours_hold(b: &impl Backend) {
    use waymark_core::governance::{Cap, Policy, QuietAction, QuietHours};
    let capped = StoreOptions {
        governance: Policy {
            caps: vec![Cap {
                channel: Some("sms".into()),
                max: 1,
                window_ms: 86_400_000,
                window: "1d".into(),
            }],
            quiet_hours: None,
        },
        ..StoreOptions::default()
    };
    let s = b.open(capped).await;
    for (key, category) in [
        ("first", "marketing"),
        ("second", "marketing"),
        ("receipt", "transactional"),
    ] {
        s.put_journey_draft(key, &sms_journey(key, "Go", category), 1)
            .await
            .expect("put");
        s.publish_journey(key, 1).await.expect("publish");
    }
    s.ingest(events(json!([
        {"type": "identify", "messageId": "g-id", "userId": "capped", "traits": {"phone": "+15550101234"}},
        {"type": "track", "messageId": "g-1", "userId": "capped", "event": "Go"},
    ])))
    .await
    .expect("ingest");
    let outbox = s
        .profile_outbox(&id("user_id", "capped"))
        .await
        .expect("read")
        .expect("profile");
    let journeys: Vec<&str> = outbox.iter().map(|o| o.row.journey.as_str()).collect();
    assert_eq!(
        journeys,
        ["first", "receipt"],
        "one marketing sms per day; transactional passes"
    );
    let states = s
        .profile_journeys(&id("user_id", "capped"))
        .await
        .expect("read")
        .expect("profile");
    assert!(
        steps_of(&states, "second")
            .contains(&"suppressed: frequency cap: 1 per 1d on sms".to_string()),
        "{:?}",
        steps_of(&states, "second")
    );
    // A later event, another transaction: the cap still counts the message already sent.
    s.ingest(events(
        json!([{"type": "track", "messageId": "g-2", "userId": "capped", "event": "Go"}]),
    ))
    .await
    .expect("ingest");
    let outbox = s
        .profile_outbox(&id("user_id", "capped"))
        .await
        .expect("read")
        .expect("profile");
    let marketing = outbox.iter().filter(|o| o.row.journey != "receipt").count();
    assert_eq!(marketing, 1, "{outbox:?}");
    assert_eq!(outbox.len(), 3, "the second receipt went out");
    s.close().await;

    // Quiet hours around the current time (UTC: the person has no time zone): held.
    let now = crate::wall_clock_ms();
    let hhmm = |ms: i64| {
        let t = jiff::Timestamp::from_millisecond(ms)
            .expect("time")
            .to_zoned_datetime(jiff::tz::TimeZone::UTC);
        format!("{:02}:{:02}", t.hour(), t.minute())
    };
    let quiet = StoreOptions {
        governance: Policy {
            caps: Vec::new(),
            quiet_hours: Some(QuietHours {
                start: hhmm(now - 3_600_000),
                end: hhmm(now + 3_600_000),
                action: QuietAction::Hold,
            }),
        },
        ..StoreOptions::default()
    };
    // (The same store again, on backends that reopen it: other journeys, another event.)
    let s = b.open(quiet).await;
    s.put_journey_draft("nap", &sms_journey("nap", "Nap", "marketing"), 1)
        .await
        .expect("put");
    s.publish_journey("nap", 1).await.expect("publish");
    s.ingest(events(json!([
        {"type": "identify", "messageId": "q-id", "userId": "sleepy", "traits": {"phone": "+15550101235"}},
        {"type": "track", "messageId": "q-1", "userId": "sleepy", "event": "Nap"},
    ])))
    .await
    .expect("ingest");
    let outbox = s
        .profile_outbox(&id("user_id", "sleepy"))
        .await
        .expect("read")
        .expect("profile");
    assert_eq!(outbox.len(), 1);
    assert!(
        outbox[0].next_attempt_at > now + 3_000_000,
        "held until the quiet hours end: {outbox:?}"
    );
    let sleepy = outbox[0].row.key.clone();
    let claimed_now = s
        .claim_outbox(crate::wall_clock_ms(), 100, 30_000)
        .await
        .expect("claim");
    assert!(
        claimed_now.iter().all(|i| i.key != sleepy),
        "not claimable during quiet hours"
    );
    let claimed_later = s
        .claim_outbox(now + 3 * 3_600_000, 100, 30_000)
        .await
        .expect("claim");
    assert!(
        claimed_later.iter().any(|i| i.key == sleepy),
        "due once they end"
    );
    let states = s
        .profile_journeys(&id("user_id", "sleepy"))
        .await
        .expect("read")
        .expect("profile");
    assert!(
        steps_of(&states, "nap")
            .iter()
            .any(|st| st.starts_with("held: quiet hours"))
    );
    s.close().await;
}

pub async fn suppression_list_counts_bounces_and_binds_every_message(b: &impl Backend) {
    let s = b.open(StoreOptions::default()).await;
    // Soft bounces are counted; the third suppresses.
    for n in 1..=2 {
        let e = s
            .soft_bounce("sms", "+15550101236", "HTTP 503", 3, n)
            .await
            .expect("soft");
        assert_eq!(
            (e.suppressed, e.soft_bounces, e.reason.as_str()),
            (false, n as u32, "")
        );
    }
    let e = s
        .soft_bounce("sms", "+15550101236", "HTTP 503 again", 3, 3)
        .await
        .expect("soft");
    assert_eq!(
        (
            e.suppressed,
            e.soft_bounces,
            e.reason.as_str(),
            e.detail.as_str()
        ),
        (true, 3, "soft_bounces", "HTTP 503 again")
    );
    assert_eq!((e.created_at, e.updated_at), (1, 3));
    // A hard bounce is immediate and its reason is kept through later soft bounces.
    s.suppress("sms", "+15550101237", "hard_bounce", "21211 invalid", 5)
        .await
        .expect("suppress");
    let e = s
        .soft_bounce("sms", "+15550101237", "timeout", 3, 6)
        .await
        .expect("soft");
    assert_eq!((e.reason.as_str(), e.soft_bounces), ("hard_bounce", 1));
    s.suppress("email", "z@example.com", "complaint", "", 7)
        .await
        .expect("suppress");
    let listed = |v: Vec<crate::Suppression>| -> Vec<(String, String)> {
        v.into_iter().map(|e| (e.channel, e.address)).collect()
    };
    assert_eq!(
        listed(s.suppressions(None, None, 10).await.expect("list")),
        [
            ("email".to_string(), "z@example.com".to_string()),
            ("sms".into(), "+15550101236".into()),
            ("sms".into(), "+15550101237".into())
        ]
    );
    assert_eq!(
        listed(
            s.suppressions(Some("sms"), Some(("sms", "+15550101236")), 10)
                .await
                .expect("page")
        ),
        [("sms".to_string(), "+15550101237".to_string())]
    );
    // Journeys: a listed address gets nothing, transactional or not; others are sent.
    publish_receipts(&s).await;
    s.ingest(events(json!([
        {"type": "identify", "messageId": "s-1", "userId": "listed", "traits": {"phone": "+1 (555) 010-1236"}},
        {"type": "track", "messageId": "s-2", "userId": "listed", "event": "Paid"},
        {"type": "identify", "messageId": "s-3", "userId": "fine", "traits": {"phone": "+15550101299"}},
        {"type": "track", "messageId": "s-4", "userId": "fine", "event": "Paid"},
    ])))
    .await
    .expect("ingest");
    let outbox = |user: &'static str| {
        let s = &s;
        async move {
            s.profile_outbox(&id("user_id", user))
                .await
                .expect("read")
                .expect("profile")
        }
    };
    assert!(outbox("listed").await.is_empty());
    assert_eq!(outbox("fine").await.len(), 1);
    let states = s
        .profile_journeys(&id("user_id", "listed"))
        .await
        .expect("read")
        .expect("profile");
    assert!(
        steps_of(&states, "receipt").contains(&"suppressed: suppression list: soft_bounces".into()),
        "{:?}",
        steps_of(&states, "receipt")
    );
    // Taken off the list: the next message goes.
    assert!(
        s.unsuppress("sms", "+15550101236")
            .await
            .expect("unsuppress")
    );
    assert!(!s.unsuppress("sms", "+15550101236").await.expect("again"));
    assert_eq!(
        s.suppression("sms", "+15550101236").await.expect("read"),
        None
    );
    s.ingest(events(json!([
        {"type": "track", "messageId": "s-5", "userId": "listed", "event": "Paid"},
    ])))
    .await
    .expect("ingest");
    assert_eq!(outbox("listed").await.len(), 1);
    s.close().await;
}

pub async fn provider_reports_are_kept_per_message_once_per_status(b: &impl Backend) {
    let s = b.open(StoreOptions::default()).await;
    publish_receipts(&s).await;
    s.ingest(events(json!([
        {"type": "identify", "messageId": "r-1", "userId": "reported", "traits": {"phone": "+15550101300"}},
        {"type": "track", "messageId": "r-2", "userId": "reported", "event": "Paid"},
    ])))
    .await
    .expect("ingest");
    let claimed = s
        .claim_outbox(i64::MAX / 2, 10, 60_000)
        .await
        .expect("claim");
    assert_eq!(claimed.len(), 1);
    let item = claimed[0].clone();
    assert_eq!(
        s.outbox_key(item.seq).await.expect("key"),
        Some(item.key.clone())
    );
    assert_eq!(s.outbox_key(item.seq + 1_000).await.expect("key"), None);
    s.complete_outbox(
        &item,
        Delivery::Delivered(json!({"provider_id": "SM1"})),
        5_000,
    )
    .await
    .expect("complete");
    let event = |status: &str, at| MessageEvent {
        status: status.into(),
        detail: format!("{status} report"),
        at,
    };
    let row = s
        .record_message_event(&item.key, event("delivered", 6_000))
        .await
        .expect("record")
        .expect("the message");
    assert_eq!(
        (
            row.seq,
            row.profile_id.as_str(),
            row.message().and_then(|m| m.to.as_deref())
        ),
        (item.seq, item.profile_id.as_str(), Some("+15550101300"))
    );
    // The provider repeats its callback: kept once, with the first time.
    s.record_message_event(&item.key, event("delivered", 7_000))
        .await
        .expect("again");
    s.record_message_event(&item.key, event("complained", 8_000))
        .await
        .expect("complaint");
    assert_eq!(
        s.record_message_event("no-such-message", event("delivered", 1))
            .await
            .expect("unknown"),
        None
    );
    let outbox = s
        .profile_outbox(&id("user_id", "reported"))
        .await
        .expect("read")
        .expect("profile");
    assert_eq!(outbox.len(), 1);
    assert_eq!(outbox[0].finished_at, Some(5_000));
    assert_eq!(
        outbox[0].events,
        [event("delivered", 6_000), event("complained", 8_000)]
    );
    // Erasing the person takes the reports with the messages.
    s.erase(&id("user_id", "reported")).await.expect("erase");
    assert_eq!(
        s.record_message_event(&item.key, event("bounced", 9_000))
            .await
            .expect("after erase"),
        None
    );
    s.close().await;
}

pub async fn dead_push_tokens_are_forgotten(b: &impl Backend) {
    let s = b.open(StoreOptions::default()).await;
    s.ingest(events(json!([
        {"type": "identify", "messageId": "d-1", "userId": "dev", "context": {"device": {"token": "tok-ios", "type": "ios"}}},
        {"type": "identify", "messageId": "d-2", "userId": "dev", "context": {"device": {"token": "tok-and", "type": "android"}}},
    ])))
    .await
    .expect("ingest");
    let ios = id("apns_token", "tok-ios");
    let profile = s
        .profile(&ios)
        .await
        .expect("read")
        .expect("found by token");
    assert_eq!(profile.identities["fcm_token"], ["tok-and"]);
    assert!(s.forget_identity(&ios, 5).await.expect("forget"));
    assert!(
        !s.forget_identity(&ios, 6).await.expect("again"),
        "already gone"
    );
    assert_eq!(s.profile(&ios).await.expect("read"), None);
    let profile = s
        .profile(&id("user_id", "dev"))
        .await
        .expect("read")
        .expect("profile");
    assert!(
        !profile.identities.contains_key("apns_token"),
        "{profile:?}"
    );
    assert_eq!(profile.identities["fcm_token"], ["tok-and"]);
    s.close().await;
}

/// One request the backend refuses among many committed together must fail alone: 50
/// requests that `poison` makes unstorable race 50 good ones into the same group commits;
/// every good one must commit and be readable. Returns how many poisoned requests failed.
/// Backends call it with whatever their database refuses (it is not a conformance case of
/// its own because what a database refuses differs between backends).
pub async fn refused_requests_fail_alone<S: Store + 'static>(
    s: std::sync::Arc<S>,
    poison: fn(&mut Event),
) -> usize {
    let mut tasks = Vec::new();
    for i in 0..100 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let mut batch = events(json!([{"type": "track", "event": "Clicked",
                "userId": format!("iso{i}"), "messageId": format!("iso-{i}")}]));
            let poisoned = i % 2 == 1;
            if poisoned {
                poison(&mut batch[0]);
            }
            (i, poisoned, s.ingest(batch).await)
        }));
    }
    let mut refused = 0;
    for task in tasks {
        let (i, poisoned, result) = task.await.expect("task");
        match (poisoned, result) {
            (false, Ok(receipt)) => assert_eq!(receipt.accepted, 1, "iso{i}"),
            (false, Err(e)) => panic!("good request iso{i} failed beside a poisoned one: {e}"),
            (true, Err(_)) => refused += 1,
            (true, Ok(_)) => {}
        }
    }
    for i in (0..100).step_by(2) {
        let p = s
            .profile(&id("user_id", &format!("iso{i}")))
            .await
            .expect("read")
            .unwrap_or_else(|| panic!("iso{i} acknowledged but not stored"));
        assert_eq!(p.event_count, 1);
    }
    refused
}

/// A person with more effects than [`crate::MAX_PROFILE_OUTBOX`] reads back the newest ones
/// only, oldest of those first.
pub async fn a_long_history_is_read_newest_first_and_bounded(b: &impl Backend) {
    let s = b.open(StoreOptions::default()).await;
    let journey = json!({"key": "chatty", "entry": {"event": "Go"}, "properties": {"reentry": "always"}, "nodes": [
        {"id": "note", "type": "update_profile", "set": {"noted": true}, "next": "done"},
        {"id": "done", "type": "end"}]});
    s.put_journey_draft("chatty", &journey, 1)
        .await
        .expect("put");
    s.publish_journey("chatty", 1).await.expect("publish");
    let total = crate::MAX_PROFILE_OUTBOX as usize + 5;
    let batch: Vec<Value> = (0..total)
        .map(|i| json!({"type": "track", "messageId": format!("chat-{i}"), "userId": "chatty", "event": "Go"}))
        .collect();
    s.ingest(events(Value::Array(batch))).await.expect("ingest");
    let rows = s
        .profile_outbox(&id("user_id", "chatty"))
        .await
        .expect("read")
        .expect("known");
    let instance = |key: &str| -> u64 {
        key.split(':')
            .nth(2)
            .and_then(|n| n.parse().ok())
            .expect("instance in key")
    };
    assert_eq!(rows.len(), crate::MAX_PROFILE_OUTBOX as usize);
    let instances: Vec<u64> = rows.iter().map(|r| instance(&r.row.key)).collect();
    assert_eq!(instances.first(), Some(&6), "the five oldest are left out");
    assert_eq!(instances.last(), Some(&(total as u64)));
    assert!(instances.windows(2).all(|w| w[0] < w[1]), "oldest first");

    // Pages reach back through all of it, each newest first across pages, none repeated.
    let mut seen = Vec::new();
    let mut before = None;
    loop {
        let page = s
            .profile_outbox_page(
                &id("user_id", "chatty"),
                Some("update_profile"),
                before,
                300,
            )
            .await
            .expect("read")
            .expect("known");
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 300);
        before = page.first().map(|r| r.seq);
        seen.splice(0..0, page.iter().map(|r| instance(&r.row.key)));
    }
    assert_eq!(seen, (1..=total as u64).collect::<Vec<_>>());
    let none = s
        .profile_outbox_page(&id("user_id", "chatty"), Some("message"), None, 10)
        .await
        .expect("read")
        .expect("known");
    assert!(none.is_empty(), "filtered by kind");
}

/// Finished outbox rows go once they are older than the message retention (and the
/// longest cap window, which counts them); pending ones stay however old.
pub async fn finished_messages_are_pruned_after_retention(b: &impl Backend) {
    use waymark_core::governance::{Cap, Policy};
    let day: waymark_core::time::Millis = 24 * 3600 * 1000;
    let s = b
        .open(StoreOptions {
            max_message_age_ms: Some(30 * day),
            governance: Policy {
                caps: vec![Cap {
                    channel: Some("sms".into()),
                    max: 100,
                    window_ms: 45 * day,
                    window: "45d".into(),
                }],
                quiet_hours: None,
            },
            ..StoreOptions::default()
        })
        .await;
    s.put_journey_draft("texts", &sms_journey("texts", "Texted", "marketing"), 1)
        .await
        .expect("put");
    s.publish_journey("texts", 1).await.expect("publish");
    s.ingest(events(json!([
        {"type": "identify", "messageId": "pr-1", "userId": "sent-to", "traits": {"phone": "+15550102001"}},
        {"type": "identify", "messageId": "pr-2", "userId": "waiting", "traits": {"phone": "+15550102002"}},
        {"type": "track", "messageId": "pr-3", "userId": "sent-to", "event": "Texted"},
        {"type": "track", "messageId": "pr-4", "userId": "waiting", "event": "Texted"},
    ])))
    .await
    .expect("ingest");
    let now = crate::wall_clock_ms();
    let claimed = s.claim_outbox(now, 10, 30_000).await.expect("claim");
    assert_eq!(claimed.len(), 2);
    let sent_to = s
        .profile(&id("user_id", "sent-to"))
        .await
        .expect("read")
        .expect("profile")
        .id;
    let sent = claimed
        .iter()
        .find(|i| i.profile_id == sent_to)
        .expect("the sent one");
    s.complete_outbox(sent, Delivery::Delivered(json!({"sid": "SM1"})), now)
        .await
        .expect("complete");
    s.release_outbox_leases().await.expect("release");

    assert_eq!(
        s.prune_expired(now + 31 * day).await.expect("prune"),
        0,
        "a cap window still reads it"
    );
    assert_eq!(s.prune_expired(now + 46 * day).await.expect("prune"), 1);
    let outbox = |who: &'static str| {
        let s = &s;
        async move {
            s.profile_outbox(&id("user_id", who))
                .await
                .expect("read")
                .expect("profile")
        }
    };
    assert!(outbox("sent-to").await.is_empty());
    let waiting = outbox("waiting").await;
    assert_eq!(waiting.len(), 1, "a pending message is never pruned");
    assert_eq!(
        s.claim_outbox(now + 46 * day, 10, 30_000)
            .await
            .expect("claim")
            .len(),
        1
    );
    assert_eq!(s.prune_expired(now + 46 * day).await.expect("prune"), 0);
    s.close().await;
}
