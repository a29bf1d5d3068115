//! Governance: frequency caps, quiet hours and the suppression list, on every message.

use super::*;

pub(super) fn sms_journey(key: &str, event: &str, category: &str) -> Value {
    json!({"key": key, "entry": {"event": event}, "properties": {"reentry": "always"},
        "templates": {"hi": {"document": {"channel": "sms", "text": "hi from {{journey.entry.event}}"}}},
        "nodes": [
            {"id": "send", "type": "message", "channel": "sms", "template": "hi", "category": category, "next": "done"},
            {"id": "done", "type": "end"}]})
}

/// A live journey `receipt`: a transactional SMS on every `Paid`.
pub(super) async fn publish_receipts(s: &impl Store) {
    s.put_journey_draft(
        "receipt",
        &sms_journey("receipt", "Paid", "transactional"),
        1,
    )
    .await
    .expect("put");
    s.publish_journey("receipt", 1).await.expect("publish");
}

pub(super) fn steps_of(states: &[(String, crate::JourneyState)], journey: &str) -> Vec<String> {
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
