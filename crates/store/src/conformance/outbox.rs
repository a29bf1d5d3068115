//! The outbox: claims, leases and outcomes, provider reports, dead push tokens, history bounds and retention.

use super::*;

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
    // Counted at the node that sent it, each status once however often reported.
    let send = s.journey_stats("receipt").await.expect("stats").nodes["send"].clone();
    assert_eq!(
        (
            send.delivered,
            send.complained,
            send.bounced,
            send.undelivered
        ),
        (1, 1, 0, 0),
        "{send:?}"
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

pub async fn a_paused_journey_holds_its_messages_and_a_stopped_one_sends_nothing_more(
    b: &impl Backend,
) {
    let s = b.open(StoreOptions::default()).await;
    publish_receipts(&s).await;
    let paid = |n: u32| {
        events(json!([
            {"type": "identify", "messageId": format!("h-id-{n}"), "userId": "held", "traits": {"phone": "+15550101301"}},
            {"type": "track", "messageId": format!("h-{n}"), "userId": "held", "event": "Paid"},
        ]))
    };
    // A day ahead: anything due is claimed, a held row is not.
    let far = crate::wall_clock_ms() + 86_400_000;
    s.ingest(paid(1)).await.expect("ingest");
    s.change_journey_status("receipt", JourneyAction::Pause, 10)
        .await
        .expect("pause");
    assert!(
        s.claim_outbox(far, 10, 60_000)
            .await
            .expect("claim")
            .is_empty(),
        "a paused journey's message is held"
    );
    s.change_journey_status("receipt", JourneyAction::Resume, 20)
        .await
        .expect("resume");
    let claimed = s.claim_outbox(far, 10, 60_000).await.expect("claim");
    assert_eq!(claimed.len(), 1, "released at resume");
    let first = claimed[0].clone();
    s.complete_outbox(&first, Delivery::Delivered(json!({})), 30)
        .await
        .expect("complete");

    // Queued, then the journey stops: never sent, failed with why.
    s.ingest(paid(2)).await.expect("ingest");
    s.change_journey_status("receipt", JourneyAction::Stop, 40)
        .await
        .expect("stop");
    assert!(
        s.claim_outbox(far, 10, 60_000)
            .await
            .expect("claim")
            .is_empty()
    );
    let outbox = s
        .profile_outbox(&id("user_id", "held"))
        .await
        .expect("read")
        .expect("profile");
    let statuses: Vec<(&str, Option<&str>)> = outbox
        .iter()
        .map(|e| (e.row.status.as_str(), e.last_error.as_deref()))
        .collect();
    assert_eq!(
        statuses,
        [
            ("done", None),
            ("failed", Some(crate::pipeline::STOPPED_MESSAGE))
        ]
    );
    s.close().await;
}
