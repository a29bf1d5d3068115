use super::*;
use proptest::prelude::*;
use serde_json::json;

fn parse(body: serde_json::Value) -> Result<Parsed, FieldError> {
    let bytes = serde_json::to_vec(&body).expect("json");
    let mut gen_id = || "generated".to_string();
    let received = parse_iso8601("2026-11-29T12:00:00Z").expect("time");
    parse_batch(
        &bytes,
        &mut Receipt {
            received_at: received,
            new_message_id: &mut gen_id,
        },
    )
}

fn err(body: serde_json::Value) -> FieldError {
    parse(body).expect_err("should be rejected")
}

#[test]
fn corrects_client_clock_skew() {
    // Client clock is 1 hour fast: sentAt and timestamp both read an hour ahead.
    let parsed = parse(json!({
        "sentAt": "2026-11-29T13:00:00Z",
        "batch": [{"type": "track", "event": "A", "userId": "u", "timestamp": "2026-11-29T12:59:00Z"}]
    }))
    .expect("valid");
    let e = &parsed.events[0];
    assert_eq!(
        e.timestamp,
        parse_iso8601("2026-11-29T11:59:00Z").expect("t")
    );
    assert_eq!(e.original_timestamp, parse_iso8601("2026-11-29T12:59:00Z"));
}

#[test]
fn timestamp_without_sent_at_is_taken_as_given_and_missing_means_received() {
    let parsed = parse(json!({"batch": [
        {"type": "track", "event": "A", "userId": "u", "timestamp": "2020-01-01T00:00:00Z"},
        {"type": "track", "event": "B", "userId": "u"}
    ]}))
    .expect("valid");
    assert_eq!(
        parsed.events[0].timestamp,
        parse_iso8601("2020-01-01T00:00:00Z").expect("t")
    );
    assert_eq!(parsed.events[1].timestamp, parsed.events[1].received_at);
}

#[test]
fn errors_name_the_batch_index_and_field() {
    let e = err(json!({"batch": [
        {"type": "track", "event": "A", "userId": "u"},
        {"type": "track", "event": "A", "userId": "u", "properties": [1]}
    ]}));
    assert_eq!(
        (e.code, e.field.as_str()),
        ("invalid_type", "batch[1].properties")
    );
    let e = err(json!({"batch": [{"type": "track", "userId": "u"}]}));
    assert_eq!(
        (e.code, e.field.as_str()),
        ("missing_field", "batch[0].event")
    );
    let e = err(json!({"batch": [{"type": "track", "event": "A"}]}));
    assert_eq!(
        (e.code, e.field.as_str()),
        ("missing_field", "batch[0].userId")
    );
    let e = err(json!({"batch": [{"type": "teleport", "userId": "u"}]}));
    assert_eq!(e.field, "batch[0].type");
    let e = err(json!({"batch": [{"type": "identify", "userId": {"id": 1}}]}));
    assert_eq!(
        (e.code, e.field.as_str()),
        ("invalid_type", "batch[0].userId")
    );
    let e =
        err(json!({"batch": [{"type": "identify", "userId": "u", "timestamp": "last tuesday"}]}));
    assert_eq!(e.field, "batch[0].timestamp");
    let e = err(json!({"batch": [{"type": "alias", "userId": "u"}]}));
    assert_eq!(e.field, "batch[0].previousId");
    let e = err(json!({"batch": [{"type": "group", "userId": "u"}]}));
    assert_eq!(e.field, "batch[0].groupId");
    let e = err(json!({"nope": []}));
    assert_eq!(e.field, "batch");
}

#[test]
fn oversize_event_is_rejected_with_its_index() {
    let big = "x".repeat(MAX_EVENT_BYTES);
    let e = err(json!({"batch": [
        {"type": "track", "event": "A", "userId": "u"},
        {"type": "track", "event": "A", "userId": "u", "properties": {"blob": big}}
    ]}));
    assert_eq!((e.code, e.field.as_str()), ("event_too_large", "batch[1]"));
}

#[test]
fn extracts_identities_in_priority_order() {
    let parsed = parse(json!({"batch": [{
        "type": "identify", "userId": 42, "anonymousId": "a",
        "traits": {"email": "X@Y.io", "phone": "+1 555 0100"},
        "context": {"externalIds": [{"type": "crm_id", "id": "C-9", "collection": "users"}]}
    }]}))
    .expect("valid");
    let ids: Vec<String> = parsed.events[0]
        .identities
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        ids,
        [
            "user_id:42",
            "anonymous_id:a",
            "email:x@y.io",
            "phone:+15550100",
            "crm_id:C-9"
        ]
    );
}

#[test]
fn batch_context_fills_in_but_does_not_override() {
    let parsed = parse(json!({
        "context": {"library": {"name": "batch"}, "ip": "1.2.3.4"},
        "writeKey": "wk",
        "batch": [{"type": "track", "event": "A", "userId": "u", "messageId": "m", "context": {"ip": "5.6.7.8"}}]
    }))
    .expect("valid");
    let c = &parsed.events[0].context;
    assert_eq!(c["ip"], json!("5.6.7.8"));
    assert_eq!(c["library"]["name"], json!("batch"));
    assert_eq!(parsed.write_key.as_deref(), Some("wk"));
    assert_eq!(parsed.events[0].message_id, "m");
}

#[test]
fn single_endpoint_checks_declared_type() {
    let mut gen_id = || "g".to_string();
    let body = br#"{"type": "identify", "userId": "u", "event": "A"}"#;
    let e = parse_single(
        body,
        EventKind::Track,
        &mut Receipt {
            received_at: 0,
            new_message_id: &mut gen_id,
        },
    )
    .expect_err("mismatch");
    assert_eq!(e.field, "type");
    let ok = parse_single(
        br#"{"userId": "u", "event": "A"}"#,
        EventKind::Track,
        &mut Receipt {
            received_at: 0,
            new_message_id: &mut gen_id,
        },
    )
    .expect("valid");
    assert_eq!(ok.events[0].message_id, "g");
}

fn arb_json() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        "[a-zA-Z0-9 ]{0,12}".prop_map(serde_json::Value::from),
        Just(json!("2026-01-01T00:00:00Z")),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("type".to_string()),
                    Just("userId".to_string()),
                    Just("anonymousId".to_string()),
                    Just("event".to_string()),
                    Just("traits".to_string()),
                    Just("properties".to_string()),
                    Just("timestamp".to_string()),
                    Just("sentAt".to_string()),
                    Just("context".to_string()),
                    Just("batch".to_string()),
                    Just("messageId".to_string()),
                    Just("previousId".to_string()),
                    "[a-z]{1,6}"
                ],
                inner,
                0..6
            )
            .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    /// The parser never panics, and whatever it accepts satisfies the API's invariants.
    #[test]
    fn parser_never_panics_and_accepted_events_are_well_formed(doc in arb_json()) {
        if let Ok(parsed) = parse(doc) {
            for e in parsed.events {
                prop_assert!(!e.message_id.is_empty());
                match e.kind {
                    EventKind::Alias => prop_assert!(e.user_id.is_some() && e.previous_id.is_some()),
                    _ => prop_assert!(e.user_id.is_some() || e.anonymous_id.is_some()),
                }
                if e.kind == EventKind::Track {
                    prop_assert!(e.name.as_deref().is_some_and(|n| !n.trim().is_empty()));
                }
            }
        }
    }

    /// Arbitrary bytes never panic the parser; they are either a batch or a located error.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let mut gen_id = || "g".to_string();
        let _ = parse_batch(&bytes, &mut Receipt { received_at: 0, new_message_id: &mut gen_id });
    }

    /// Valid track messages survive a round trip through the stored JSON shape.
    #[test]
    fn valid_track_round_trips(user in "[a-zA-Z0-9]{1,20}", name in "[A-Za-z ]{1,30}", n in any::<i32>()) {
        prop_assume!(!name.trim().is_empty());
        let parsed = parse(json!({"batch": [{"type": "track", "userId": user, "event": name, "properties": {"n": n}}]}));
        let e = &parsed.expect("valid").events[0];
        let stored = e.to_json();
        prop_assert_eq!(&stored["userId"], &json!(user));
        prop_assert_eq!(&stored["event"], &json!(name));
        prop_assert_eq!(&stored["properties"]["n"], &json!(n));
    }
}

fn stored_bytes(e: &Event) -> usize {
    serde_json::to_string(e).expect("serialises").len()
}

#[test]
fn a_shared_context_counts_in_every_message_it_is_merged_into() {
    // 250 KB of batch-level context: each message would be stored with all of it.
    let big = "x".repeat(250 * 1024);
    let e = err(json!({
        "context": {"blob": big},
        "batch": [{"type": "track", "event": "A", "userId": "u"}]
    }));
    assert_eq!((e.code, e.field.as_str()), ("event_too_large", "batch[0]"));
    // A message's own context key wins, so the shared one is not counted for it.
    let parsed = parse(json!({
        "context": {"blob": "x".repeat(20 * 1024)},
        "batch": [{"type": "track", "event": "A", "userId": "u", "context": {"blob": 1}}]
    }))
    .expect("own context key wins, nothing large is merged");
    assert_eq!(parsed.events[0].context["blob"], json!(1));
}

#[test]
fn a_batch_may_not_grow_past_its_merged_limit() {
    // 10 KB of shared context and 200 small messages: 2 MB once merged, from ~20 KB sent.
    let items: Vec<_> = (0..200)
        .map(|i| json!({"type": "track", "event": "A", "userId": format!("u{i}")}))
        .collect();
    let e = err(json!({"context": {"blob": "x".repeat(10 * 1024)}, "batch": items}));
    assert_eq!(e.code, "batch_too_large");
    assert!(e.field.starts_with("batch["), "{}", e.field);
    assert!(e.message.contains("1 MB"), "{}", e.message);
}

#[test]
fn nul_characters_are_refused_with_their_field() {
    for (doc, field) in [
        (
            json!({"type": "track", "event": "x", "userId": "u1", "properties": {"p": "a\u{0}b"}}),
            "batch[0].properties.p",
        ),
        (
            json!({"type": "track", "event": "x", "userId": "u1", "properties": {"list": [{"deep": ["ok", "\u{0}"]}]}}),
            "batch[0].properties.list[0].deep[1]",
        ),
        (
            json!({"type": "identify", "userId": "u1", "traits": {"k\u{0}": 1}}),
            "batch[0].traits.k\u{0}",
        ),
        (
            json!({"type": "track", "event": "x\u{0}", "userId": "u1"}),
            "batch[0].event",
        ),
        (
            json!({"type": "track", "event": "x", "userId": "u\u{0}1"}),
            "batch[0].userId",
        ),
    ] {
        let e = err(json!({"batch": [doc]}));
        assert_eq!((e.code, e.field.as_str()), ("invalid_value", field));
    }
    let e = err(
        json!({"context": {"ip": "\u{0}"}, "batch": [{"type": "track", "event": "x", "userId": "u"}]}),
    );
    assert_eq!(e.field, "batch[0].context.ip");
}

#[test]
fn the_write_key_in_the_body_is_known_before_any_message_is_parsed() {
    // Messages that would fail validation do not stop the envelope from being read.
    let body = br#"{"writeKey": "wk_1", "batch": [{"type": "nope"}, 42]}"#;
    let envelope = Envelope::batch(body).expect("envelope reads");
    assert_eq!(envelope.write_key(), Some("wk_1"));
}

fn arb_batch() -> impl Strategy<Value = serde_json::Value> {
    (0usize..40_000, 0usize..4_000, 1usize..400).prop_map(|(shared, own, count)| {
        let items: Vec<_> = (0..count)
            .map(|i| {
                json!({"type": "track", "event": "A", "userId": format!("u{i}"),
                       "properties": {"p": "y".repeat(own / count.max(1))}})
            })
            .collect();
        json!({"context": {"blob": "x".repeat(shared)}, "integrations": {"All": true}, "batch": items})
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    /// Whatever a batch body holds, what the parser accepts is bounded in absolute terms:
    /// each message as stored within 32 KB and the batch within 1 MB (plus the fields the
    /// parser adds itself: ids, times, identities), however much a shared context multiplies.
    #[test]
    fn accepted_batches_stay_within_their_stored_bounds(doc in arb_batch()) {
        if let Ok(parsed) = parse(doc) {
            const ADDED: usize = 512;
            let mut total = 0;
            for e in &parsed.events {
                let size = stored_bytes(e);
                prop_assert!(size <= MAX_EVENT_BYTES + ADDED, "{size}");
                total += size;
            }
            prop_assert!(total <= MAX_MERGED_BATCH_BYTES + parsed.events.len() * ADDED, "{total}");
        }
    }
}

#[test]
fn repeated_offer_feedback_is_one_message_whatever_id_it_was_sent_with() {
    let props = json!({"proposition": "p1", "offer": "sale", "placement": "hero"});
    let parsed = parse(json!({"batch": [
        {"type": "track", "event": "Offer Displayed", "userId": "u", "messageId": "m1", "properties": props},
        {"type": "track", "event": "Offer Displayed", "userId": "u", "messageId": "m2", "properties": props},
        {"type": "track", "event": "Offer Clicked", "userId": "u", "messageId": "m3", "properties": props},
        {"type": "track", "event": "Order Completed", "userId": "u", "messageId": "m4", "properties": props},
        {"type": "page", "name": "Offer Displayed", "userId": "u", "messageId": "m5", "properties": props},
    ]}))
    .expect("valid");
    let ids: Vec<&str> = parsed
        .events
        .iter()
        .map(|e| e.message_id.as_str())
        .collect();
    assert_eq!(ids[0], ids[1]);
    assert!(ids[0].starts_with("offer-displayed-"), "{}", ids[0]);
    assert!(ids[2].starts_with("offer-clicked-"), "{}", ids[2]);
    assert_eq!(&ids[3..], ["m4", "m5"]);
}
