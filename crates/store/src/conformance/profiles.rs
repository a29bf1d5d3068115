//! Profiles: ingest, identities and merges, event history and its retention, durability.

use super::*;

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
