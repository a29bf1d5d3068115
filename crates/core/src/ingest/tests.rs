use super::*;
use crate::segment::{Receipt, parse_batch};
use serde_json::json;

/// A minimal in-memory model of a store, applying plans the way the real backends do, so
/// these tests exercise `lookups` + `plan` across batches.
#[derive(Default)]
struct Model {
    owners: HashMap<Identity, ProfileId>,
    profiles: HashMap<ProfileId, ProfileState>,
    events: Vec<(String, ProfileId)>,
    next: u32,
}

impl Model {
    fn ingest(&mut self, events: &[Event]) -> IngestPlan {
        self.try_ingest(events).expect("planned")
    }

    /// Plans and applies `events`; a refusal changes nothing.
    fn try_ingest(&mut self, events: &[Event]) -> Result<IngestPlan, Refusal> {
        let look = lookups(events);
        let mut ws = WorkingSet::default();
        for identity in look.identities {
            if let Some(owner) = self.owners.get(&identity) {
                ws.profiles
                    .insert(owner.clone(), self.profiles[owner].clone());
                ws.owners.insert(identity, owner.clone());
            }
        }
        ws.seen_message_ids = look
            .message_ids
            .into_iter()
            .filter(|m| self.events.iter().any(|(id, _)| id == m))
            .collect();
        let mut next = self.next;
        let plan = plan(ws, events, 64, 0, &mut || {
            next += 1;
            format!("p{next}")
        })?;
        self.next = next;
        for m in &plan.merges {
            for owner in self.owners.values_mut() {
                if *owner == m.from {
                    *owner = m.into.clone();
                }
            }
            for (_, owner) in &mut self.events {
                if *owner == m.from {
                    *owner = m.into.clone();
                }
            }
            self.profiles.remove(&m.from);
        }
        for (identity, owner) in &plan.moved_identities {
            assert!(
                self.owners
                    .insert(identity.clone(), owner.clone())
                    .is_some(),
                "identity {identity} moved but not owned before"
            );
        }
        for (identity, owner) in &plan.new_identities {
            assert!(
                self.owners
                    .insert(identity.clone(), owner.clone())
                    .is_none(),
                "identity {identity} inserted twice"
            );
        }
        for (i, owner) in &plan.events {
            self.events
                .push((events[*i].message_id.clone(), owner.clone()));
        }
        for p in &plan.profiles {
            self.profiles.insert(p.id.clone(), p.clone());
        }
        Ok(plan)
    }

    fn owner(&self, ns: &str, value: &str) -> Option<&ProfileState> {
        let id = self
            .owners
            .get(&Identity::parse(ns, value).expect("valid"))?;
        self.profiles.get(id)
    }
}

fn events(batch: serde_json::Value) -> Vec<Event> {
    let body = serde_json::to_vec(&json!({ "batch": batch })).expect("json");
    // Unique across calls, so that tests sending many batches without message ids do not
    // see their later events as duplicates.
    static GENERATED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let mut gen_id = || {
        let n = GENERATED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        format!("gen-{n}")
    };
    let mut receipt = Receipt {
        received_at: 1_000_000,
        new_message_id: &mut gen_id,
    };
    parse_batch(&body, &mut receipt)
        .expect("valid batch")
        .events
}

#[test]
fn anonymous_activity_follows_the_person_after_identify() {
    let mut m = Model::default();
    m.ingest(&events(json!([
        {"type": "track", "messageId": "1", "anonymousId": "a1", "event": "Viewed", "timestamp": "2026-01-01T00:00:00Z"},
        {"type": "identify", "messageId": "2", "anonymousId": "a1", "traits": {"plan": "free"}, "timestamp": "2026-01-01T00:00:01Z"},
    ])));
    assert_eq!(m.profiles.len(), 1);
    m.ingest(&events(json!([
        {"type": "identify", "messageId": "3", "userId": "u1", "anonymousId": "a1", "traits": {"email": "Ada@Example.com"}, "timestamp": "2026-01-01T00:00:02Z"},
    ])));
    let p = m.owner("user_id", "u1").expect("profile for u1");
    assert_eq!(p.event_count, 3);
    assert_eq!(p.traits["plan"], json!("free"));
    assert_eq!(
        m.owner("email", "ada@example.com").map(|p| &p.id),
        Some(&p.id)
    );
    assert_eq!(m.owner("anonymous_id", "a1").map(|p| &p.id), Some(&p.id));
    assert!(m.events.iter().all(|(_, owner)| owner == &p.id));
}

#[test]
fn anonymous_profile_merges_into_existing_known_profile() {
    let mut m = Model::default();
    m.ingest(&events(
        json!([{"type": "identify", "messageId": "1", "userId": "u1", "traits": {"name": "Ada"}}]),
    ));
    m.ingest(&events(
        json!([{"type": "track", "messageId": "2", "anonymousId": "a9", "event": "Browsed"}]),
    ));
    assert_eq!(m.profiles.len(), 2);
    let plan = m.ingest(&events(
        json!([{"type": "identify", "messageId": "3", "userId": "u1", "anonymousId": "a9"}]),
    ));
    assert_eq!(plan.merges.len(), 1);
    assert_eq!(m.profiles.len(), 1);
    let p = m.owner("anonymous_id", "a9").expect("merged");
    assert_eq!(p.identities["user_id"], vec!["u1".to_string()]);
    assert_eq!(p.event_counts["Browsed"], 1);
    assert_eq!(p.traits["name"], json!("Ada"));
}

#[test]
fn two_known_people_sharing_a_device_stay_apart() {
    let mut m = Model::default();
    m.ingest(&events(
        json!([{"type": "identify", "messageId": "1", "userId": "u1", "anonymousId": "shared"}]),
    ));
    let plan = m.ingest(&events(
        json!([{"type": "identify", "messageId": "2", "userId": "u2", "anonymousId": "shared"}]),
    ));
    assert!(plan.merges.is_empty());
    let u1 = m.owner("user_id", "u1").expect("u1").id.clone();
    let u2 = m.owner("user_id", "u2").expect("u2").id.clone();
    assert_ne!(u1, u2);
    assert_eq!(
        m.owner("anonymous_id", "shared").map(|p| p.id.clone()),
        Some(u1)
    );
    assert_eq!(m.profiles[&u2].event_count, 1);
}

#[test]
fn a_push_token_follows_whoever_signed_in_on_the_device_last() {
    let mut m = Model::default();
    let signed_in = |message: &str, user: &str| {
        events(
            json!([{"type": "identify", "messageId": message, "userId": user,
            "context": {"device": {"type": "ios", "token": "tok-1"}}}]),
        )
    };
    m.ingest(&signed_in("1", "u1"));
    let plan = m.ingest(&signed_in("2", "u2"));
    assert!(plan.merges.is_empty(), "two people stay two");
    assert_eq!(plan.moved_identities.len(), 1);
    let u1 = m.owner("user_id", "u1").expect("u1").clone();
    let u2 = m.owner("user_id", "u2").expect("u2").clone();
    assert_eq!(m.owner("apns_token", "tok-1").map(|p| &p.id), Some(&u2.id));
    assert_eq!(u2.identities["apns_token"], ["tok-1".to_string()]);
    assert!(
        !u1.identities.contains_key("apns_token"),
        "{:?}",
        u1.identities
    );
    // Back to the first person: it moves back; the owner seeing it again changes nothing.
    m.ingest(&signed_in("3", "u1"));
    assert_eq!(m.owner("apns_token", "tok-1").map(|p| &p.id), Some(&u1.id));
    let plan = m.ingest(&signed_in("4", "u1"));
    assert!(plan.moved_identities.is_empty());
    // An anonymous event with the token does not take it from its owner.
    m.ingest(&events(
        json!([{"type": "track", "messageId": "5", "anonymousId": "a5", "event": "Opened",
        "context": {"device": {"type": "ios", "token": "tok-1"}}}]),
    ));
    assert_eq!(m.owner("apns_token", "tok-1").map(|p| &p.id), Some(&u1.id));
}

#[test]
fn alias_folds_previous_id_into_user() {
    let mut m = Model::default();
    m.ingest(&events(
        json!([{"type": "page", "messageId": "1", "anonymousId": "old-anon"}]),
    ));
    m.ingest(&events(
        json!([{"type": "alias", "messageId": "2", "userId": "u7", "previousId": "old-anon"}]),
    ));
    assert_eq!(m.profiles.len(), 1);
    let p = m.owner("user_id", "u7").expect("u7");
    assert_eq!(
        m.owner("anonymous_id", "old-anon").map(|x| &x.id),
        Some(&p.id)
    );
    assert_eq!(p.event_count, 2);
}

#[test]
fn replayed_and_repeated_message_ids_change_nothing() {
    let mut m = Model::default();
    let batch = events(json!([
        {"type": "track", "messageId": "m1", "userId": "u1", "event": "A"},
        {"type": "track", "messageId": "m1", "userId": "u1", "event": "A"},
    ]));
    let first = m.ingest(&batch);
    assert_eq!((first.accepted(), first.duplicates()), (1, 1));
    let before = m.profiles.clone();
    let again = m.ingest(&batch);
    assert_eq!((again.accepted(), again.duplicates()), (0, 2));
    assert!(again.profiles.is_empty());
    assert_eq!(m.profiles, before);
    assert_eq!(m.events.len(), 1);
}

#[test]
fn chain_of_merges_within_one_batch_resolves_to_one_profile() {
    let mut m = Model::default();
    let plan = m.ingest(&events(json!([
        {"type": "track", "messageId": "1", "anonymousId": "a1", "event": "X"},
        {"type": "track", "messageId": "2", "anonymousId": "a2", "event": "X"},
        {"type": "identify", "messageId": "3", "anonymousId": "a1", "traits": {"email": "e@x.io"}},
        {"type": "identify", "messageId": "4", "anonymousId": "a2", "traits": {"email": "e@x.io"}},
        {"type": "identify", "messageId": "5", "userId": "u1", "anonymousId": "a2"},
    ])));
    assert_eq!(m.profiles.len(), 1, "{:?}", plan.merges);
    let p = m.owner("user_id", "u1").expect("u1");
    assert_eq!(p.event_count, 5);
    let ids: Vec<_> = plan.events.iter().map(|(_, o)| o).collect();
    assert!(ids.iter().all(|o| **o == p.id));
    assert!(plan.new_identities.iter().all(|(_, o)| *o == p.id));
}

fn from_client(mut events: Vec<Event>, verified_user_id: Option<&str>) -> Vec<Event> {
    for event in &mut events {
        event.sender = Sender::Client {
            verified_user_id: verified_user_id.map(str::to_owned),
        };
    }
    events
}

fn refusal(m: &mut Model, batch: serde_json::Value, client: Option<Option<&str>>) -> Refusal {
    let mut batch = events(batch);
    if let Some(verified) = client {
        batch = from_client(batch, verified);
    }
    let before = (m.profiles.clone(), m.owners.clone(), m.events.len());
    let refusal = m.try_ingest(&batch).expect_err("refused");
    assert_eq!(
        (m.profiles.clone(), m.owners.clone(), m.events.len()),
        before,
        "a refused batch changes nothing"
    );
    refusal
}

#[test]
fn a_profile_counts_a_bounded_number_of_event_names() {
    let mut m = Model::default();
    let names: Vec<_> = (0..crate::profile::limits::EVENT_NAMES)
        .map(|i| json!({"type": "track", "userId": "u1", "event": format!("e{i}")}))
        .collect();
    m.ingest(&events(json!(names)));
    let r = refusal(
        &mut m,
        json!([
            {"type": "track", "userId": "u1", "event": "e0"},
            {"type": "track", "userId": "u1", "event": "one too many"},
        ]),
        None,
    );
    assert_eq!(
        (r.index, r.error.code, r.error.field.as_str()),
        (1, "profile_limit", "event")
    );
    // Names it already counts still count.
    m.ingest(&events(
        json!([{"type": "track", "userId": "u1", "event": "e7"}]),
    ));
    assert_eq!(m.owner("user_id", "u1").expect("u1").event_counts["e7"], 2);
}

#[test]
fn a_write_key_cannot_attach_identities_to_a_person_without_end() {
    let mut m = Model::default();
    let devices: Vec<_> = (1..crate::profile::limits::IDENTITIES)
        .map(|i| json!({"type": "identify", "userId": "u1", "anonymousId": format!("a{i}")}))
        .collect();
    m.ingest(&events(json!(devices)));
    let r = refusal(
        &mut m,
        json!([{"type": "identify", "userId": "u1", "anonymousId": "a-new"}]),
        None,
    );
    assert_eq!(
        (r.error.code, r.error.field.as_str()),
        ("profile_limit", "anonymousId")
    );
    // Merging another profile in is growth too.
    m.ingest(&events(
        json!([{"type": "track", "anonymousId": "lone", "event": "x"}]),
    ));
    let r = refusal(
        &mut m,
        json!([{"type": "identify", "userId": "u1", "anonymousId": "lone"}]),
        None,
    );
    assert_eq!(r.error.code, "profile_limit");
}

#[test]
fn traits_are_bounded_in_number_and_bytes() {
    let mut m = Model::default();
    let many: serde_json::Map<String, serde_json::Value> = (0..crate::profile::limits::TRAITS)
        .map(|i| (format!("t{i}"), json!(1)))
        .collect();
    m.ingest(&events(
        json!([{"type": "identify", "userId": "u1", "traits": many}]),
    ));
    let r = refusal(
        &mut m,
        json!([{"type": "identify", "userId": "u1", "traits": {"one_more": 1}}]),
        None,
    );
    assert_eq!(
        (r.error.code, r.error.field.as_str()),
        ("profile_limit", "traits")
    );
    // Changing a trait it has is not growth.
    m.ingest(&events(
        json!([{"type": "identify", "userId": "u1", "traits": {"t3": 2}}]),
    ));

    let chunk = "x".repeat(30_000);
    let fills = crate::profile::limits::TRAIT_BYTES / 30_000;
    for i in 0..fills {
        m.ingest(&events(
            json!([{"type": "identify", "userId": "u2", "traits": {format!("big{i}"): chunk}}]),
        ));
    }
    let r = refusal(
        &mut m,
        json!([{"type": "identify", "userId": "u2", "traits": {"last": chunk}}]),
        None,
    );
    assert_eq!(
        (r.error.code, r.error.field.as_str()),
        ("profile_limit", "traits")
    );
    // Removing makes room again.
    m.ingest(&events(
        json!([{"type": "identify", "userId": "u2", "traits": {"big0": null}}]),
    ));
    m.ingest(&events(
        json!([{"type": "identify", "userId": "u2", "traits": {"last": chunk}}]),
    ));
}

#[test]
fn a_client_key_needs_the_user_hash_to_route_a_known_persons_messages() {
    let mut m = Model::default();
    m.ingest(&events(json!([
        {"type": "identify", "userId": "victim", "anonymousId": "victim-browser",
         "traits": {"email": "victim@example.com"},
         "context": {"device": {"token": "victim-phone", "type": "ios"}}},
    ])));
    let hash_required = |r: Refusal, field: &str| {
        assert!(r.is_unverified(), "{r}");
        assert_eq!(r.error.field, field);
    };
    // Attaching an email to the person, by user id or through an id they own.
    hash_required(
        refusal(
            &mut m,
            json!([{"type": "identify", "userId": "victim", "traits": {"email": "thief@example.com"}}]),
            Some(None),
        ),
        "traits.email",
    );
    hash_required(
        refusal(
            &mut m,
            json!([{"type": "identify", "anonymousId": "victim-browser", "traits": {"phone": "+15550100"}}]),
            Some(None),
        ),
        "traits.phone",
    );
    // Moving the thief's device token to the victim (their pushes would reach the thief).
    m.ingest(&from_client(
        events(json!([{"type": "identify", "anonymousId": "thief", "context": {"device": {"token": "thief-phone", "type": "ios"}}}])),
        None,
    ));
    hash_required(
        refusal(
            &mut m,
            json!([{"type": "identify", "userId": "victim", "context": {"device": {"token": "thief-phone", "type": "ios"}}}]),
            Some(None),
        ),
        "context.device.token",
    );
    // Merging in an anonymous profile that holds an address.
    m.ingest(&from_client(
        events(json!([{"type": "identify", "anonymousId": "lead", "traits": {"email": "thief@example.com"}}])),
        None,
    ));
    hash_required(
        refusal(
            &mut m,
            json!([{"type": "identify", "userId": "victim", "anonymousId": "lead"}]),
            Some(None),
        ),
        "traits.email",
    );
    // A hash for someone else proves nothing.
    hash_required(
        refusal(
            &mut m,
            json!([{"type": "identify", "userId": "victim", "traits": {"email": "thief@example.com"}}]),
            Some(Some("thief")),
        ),
        "traits.email",
    );
    // Claiming a new user id with an address needs the hash as well.
    hash_required(
        refusal(
            &mut m,
            json!([{"type": "identify", "userId": "not-yet-signed-up", "traits": {"email": "x@example.com"}}]),
            Some(None),
        ),
        "traits.email",
    );

    // What a client may do without it: events, traits, anonymous ids, and addresses on
    // anonymous visitors (a newsletter form).
    m.ingest(&from_client(
        events(json!([
            {"type": "track", "userId": "victim", "anonymousId": "victim-tablet", "event": "Viewed"},
            {"type": "identify", "userId": "victim", "traits": {"theme": "dark", "email": "victim@example.com"}},
            {"type": "identify", "anonymousId": "visitor", "traits": {"email": "visitor@example.com"}},
        ])),
        None,
    ));
    // With the victim's hash (the victim signed in), the change is theirs to make.
    m.ingest(&from_client(
        events(json!([{"type": "identify", "userId": "victim", "anonymousId": "lead", "traits": {"email": "new@example.com"}}])),
        Some("victim"),
    ));
    let victim = m.owner("user_id", "victim").expect("victim");
    assert_eq!(
        victim.identities["email"],
        ["new@example.com", "thief@example.com", "victim@example.com"]
    );
    // A server key may do all of it.
    m.ingest(&events(json!([{"type": "identify", "userId": "victim", "context": {"device": {"token": "thief-phone", "type": "ios"}}}])));
}
