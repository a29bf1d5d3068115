//! The real-time profile: what Waymark knows about one person, folded from their events.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::time::Millis;
use crate::{Event, EventKind, FieldError, Identity};

/// What one person's profile may hold. A write key is public, so without these a client
/// could grow one profile (and every read and write of it) without end. An event that would
/// take a profile past one is refused whole (`profile_limit`); a profile already past one
/// (say, merged from two) still takes events that do not grow it further.
pub mod limits {
    /// Distinct event names counted per person (`event_counts`).
    pub const EVENT_NAMES: usize = 1_000;
    /// Identities of all namespaces (user ids, anonymous ids, addresses, push tokens).
    pub const IDENTITIES: usize = 100;
    /// Traits (top-level keys).
    pub const TRAITS: usize = 1_000;
    /// The traits as JSON.
    pub const TRAIT_BYTES: usize = 256 * 1024;
    /// Removal times kept for removed traits. Such a time only stops an older write that
    /// arrives late from bringing the trait back; past this many the oldest are forgotten.
    pub const REMOVED_TRAITS: usize = 1_000;
    /// Ids of profiles merged into this one kept in `merged_from` (the newest).
    pub const MERGED_FROM: usize = 100;
}

/// The measures of a profile that [`limits`] bound, taken before an event so that the
/// check after it can tell growth from a profile that was already large.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Footprint {
    pub identities: usize,
    pub event_names: usize,
    pub traits: usize,
    /// Measured only when asked for (it serialises the traits).
    pub trait_bytes: Option<usize>,
}

/// Bytes of `value` as compact JSON, counted without building the text.
pub fn json_len(value: &impl Serialize) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // Writing to a counter cannot fail, and a `Map<String, Value>` always serialises.
    let _ = serde_json::to_writer(&mut count, value);
    count.0
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProfileState {
    pub id: String,
    pub partition: u32,
    /// Namespace -> values, each sorted; the identity table is the index over these.
    pub identities: BTreeMap<String, Vec<String>>,
    pub traits: Map<String, Value>,
    /// Event time of the last write to each trait (including removals), so that an older
    /// event arriving late never overwrites a newer value.
    pub trait_times: BTreeMap<String, Millis>,
    pub first_seen: Millis,
    pub last_seen: Millis,
    pub event_count: u64,
    pub event_counts: BTreeMap<String, u64>,
    /// Ids of the profiles folded into this one by identity merges.
    #[serde(default)]
    pub merged_from: Vec<String>,
    pub created_at: Millis,
}

impl ProfileState {
    /// Drops one identity value (a dead push token); the namespace goes when it is empty.
    pub fn forget_identity(&mut self, namespace: &str, value: &str) {
        if let Some(values) = self.identities.get_mut(namespace) {
            values.retain(|v| v != value);
            if values.is_empty() {
                self.identities.remove(namespace);
            }
        }
    }

    pub fn footprint(&self, with_bytes: bool) -> Footprint {
        Footprint {
            identities: self.identities.values().map(Vec::len).sum(),
            event_names: self.event_counts.len(),
            traits: self.traits.len(),
            trait_bytes: with_bytes.then(|| json_len(&self.traits)),
        }
    }

    /// The first of [`limits`] this profile now exceeds having grown past it since
    /// `before`, as a refusal naming the field that grew (`identity_field` names the field
    /// of a new identity; `event_field` that of the event's name).
    pub fn grown_past_limits(
        &self,
        before: &Footprint,
        identity_field: &str,
        event_field: &str,
    ) -> Option<FieldError> {
        let after = self.footprint(before.trait_bytes.is_some());
        let refuse = |field: &str, what: &str, limit: usize| {
            Some(FieldError::new(
                "profile_limit",
                field,
                format!("this person's profile may hold at most {limit} {what}"),
            ))
        };
        if after.identities > limits::IDENTITIES && after.identities > before.identities {
            return refuse(identity_field, "identities", limits::IDENTITIES);
        }
        if after.event_names > limits::EVENT_NAMES && after.event_names > before.event_names {
            return refuse(event_field, "distinct event names", limits::EVENT_NAMES);
        }
        if after.traits > limits::TRAITS && after.traits > before.traits {
            return refuse("traits", "traits", limits::TRAITS);
        }
        if let (Some(now), Some(was)) = (after.trait_bytes, before.trait_bytes)
            && now > limits::TRAIT_BYTES
            && now > was
        {
            return refuse("traits", "bytes of traits (as JSON)", limits::TRAIT_BYTES);
        }
        None
    }

    pub fn new(id: String, partition: u32, now: Millis) -> Self {
        Self {
            id,
            partition,
            identities: BTreeMap::new(),
            traits: Map::new(),
            trait_times: BTreeMap::new(),
            first_seen: Millis::MAX,
            last_seen: Millis::MIN,
            event_count: 0,
            event_counts: BTreeMap::new(),
            merged_from: Vec::new(),
            created_at: now,
        }
    }

    /// The person as expressions and templates see them (`profile.traits.plan`), with
    /// `traits` given separately so a caller can show pending changes.
    pub fn context_json(&self, traits: &Map<String, Value>) -> Value {
        serde_json::json!({"id": self.id, "traits": traits, "identities": self.identities,
            "event_count": self.event_count, "event_counts": self.event_counts,
            "first_seen": self.first_seen, "last_seen": self.last_seen})
    }

    pub fn has_user_id(&self) -> bool {
        self.identities
            .get(crate::Namespace::USER_ID)
            .is_some_and(|v| !v.is_empty())
    }

    pub fn add_identity(&mut self, identity: &Identity) {
        let values = self
            .identities
            .entry(identity.namespace.as_str().to_owned())
            .or_default();
        if let Err(pos) = values.binary_search(&identity.value) {
            values.insert(pos, identity.value.clone());
        }
    }

    pub fn identity_list(&self) -> Vec<Identity> {
        self.identities
            .iter()
            .flat_map(|(ns, values)| {
                values
                    .iter()
                    .filter_map(move |v| Identity::parse(ns, v).ok())
            })
            .collect()
    }

    /// Folds one event into the profile: counters, first/last seen, and for identify calls
    /// the traits, each written only if this event is at least as new as its last write.
    /// A trait set to `null` is removed.
    pub fn apply_event(&mut self, event: &Event) {
        self.first_seen = self.first_seen.min(event.timestamp);
        self.last_seen = self.last_seen.max(event.timestamp);
        self.event_count += 1;
        *self
            .event_counts
            .entry(event.display_name().to_owned())
            .or_default() += 1;
        if event.kind == EventKind::Identify {
            for (key, value) in &event.traits {
                self.write_trait(key, value.clone(), event.timestamp);
            }
        }
    }

    /// Sets and removes traits as of `at` (a journey's `update_profile`), by the same
    /// newest-write-wins rule as identify calls.
    pub fn update_traits<'a>(
        &mut self,
        set: &Map<String, Value>,
        unset: impl IntoIterator<Item = &'a str>,
        at: Millis,
    ) {
        for (key, value) in set {
            self.write_trait(key, value.clone(), at);
        }
        for key in unset {
            self.write_trait(key, Value::Null, at);
        }
    }

    fn write_trait(&mut self, key: &str, value: Value, at: Millis) {
        let newer = self.trait_times.get(key).is_none_or(|&t| at >= t);
        if !newer {
            return;
        }
        self.trait_times.insert(key.to_owned(), at);
        if value.is_null() {
            self.traits.remove(key);
            self.forget_oldest_removals();
        } else {
            self.traits.insert(key.to_owned(), value);
        }
    }

    /// Keeps at most [`limits::REMOVED_TRAITS`] removal times, dropping the oldest.
    fn forget_oldest_removals(&mut self) {
        let removed = self.trait_times.len().saturating_sub(self.traits.len());
        if removed <= limits::REMOVED_TRAITS {
            return;
        }
        let mut removals: Vec<(Millis, String)> = self
            .trait_times
            .iter()
            .filter(|(key, _)| !self.traits.contains_key(key.as_str()))
            .map(|(key, at)| (*at, key.clone()))
            .collect();
        removals.sort_unstable();
        for (_, key) in removals.into_iter().take(removed - limits::REMOVED_TRAITS) {
            self.trait_times.remove(&key);
        }
    }

    /// Folds `other` (a profile found to be the same person) into this one.
    pub fn merge_from(&mut self, other: ProfileState) {
        for (ns, values) in other.identities {
            let mine = self.identities.entry(ns).or_default();
            for v in values {
                if let Err(pos) = mine.binary_search(&v) {
                    mine.insert(pos, v);
                }
            }
        }
        for (key, at) in &other.trait_times {
            let value = other.traits.get(key).cloned().unwrap_or(Value::Null);
            self.write_trait(key, value, *at);
        }
        self.first_seen = self.first_seen.min(other.first_seen);
        self.last_seen = self.last_seen.max(other.last_seen);
        self.event_count += other.event_count;
        for (name, n) in other.event_counts {
            *self.event_counts.entry(name).or_default() += n;
        }
        self.merged_from.push(other.id);
        self.merged_from.extend(other.merged_from);
        let excess = self.merged_from.len().saturating_sub(limits::MERGED_FROM);
        self.merged_from.drain(..excess);
        self.created_at = self.created_at.min(other.created_at);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn identify(ts: Millis, traits: Value) -> Event {
        Event {
            message_id: format!("m{ts}"),
            kind: EventKind::Identify,
            name: None,
            user_id: Some("u1".into()),
            anonymous_id: None,
            previous_id: None,
            group_id: None,
            traits: traits.as_object().cloned().unwrap_or_default(),
            properties: Map::new(),
            context: Map::new(),
            integrations: Map::new(),
            timestamp: ts,
            original_timestamp: Some(ts),
            sent_at: None,
            received_at: ts,
            identities: vec![],
            sender: crate::Sender::Server,
        }
    }

    #[test]
    fn later_event_wins_even_when_it_arrives_first() {
        let mut p = ProfileState::new("p".into(), 0, 0);
        p.apply_event(&identify(200, json!({"plan": "pro"})));
        p.apply_event(&identify(100, json!({"plan": "free", "city": "Oslo"})));
        assert_eq!(p.traits["plan"], json!("pro"));
        assert_eq!(p.traits["city"], json!("Oslo"));
        assert_eq!((p.first_seen, p.last_seen, p.event_count), (100, 200, 2));
    }

    #[test]
    fn null_removes_a_trait_and_older_values_do_not_resurrect_it() {
        let mut p = ProfileState::new("p".into(), 0, 0);
        p.apply_event(&identify(100, json!({"coupon": "X"})));
        p.apply_event(&identify(300, json!({"coupon": null})));
        p.apply_event(&identify(200, json!({"coupon": "Y"})));
        assert!(!p.traits.contains_key("coupon"));
    }

    #[test]
    fn merge_keeps_newest_traits_and_sums_counts() {
        let mut known = ProfileState::new("known".into(), 0, 50);
        known.apply_event(&identify(100, json!({"name": "Ada", "plan": "free"})));
        let mut anon = ProfileState::new("anon".into(), 0, 10);
        anon.add_identity(&Identity::anonymous_id("a1").expect("ok"));
        anon.apply_event(&identify(150, json!({"plan": "pro"})));
        anon.apply_event(&identify(20, json!({"name": "old"})));
        known.merge_from(anon);
        assert_eq!(known.traits["plan"], json!("pro"));
        assert_eq!(known.traits["name"], json!("Ada"));
        assert_eq!(known.event_count, 3);
        assert_eq!(known.first_seen, 20);
        assert_eq!(known.identities["anonymous_id"], vec!["a1".to_string()]);
        assert_eq!(known.merged_from, vec!["anon".to_string()]);
    }

    #[test]
    fn removal_times_are_bounded_and_the_newest_are_kept() {
        let mut p = ProfileState::new("p".into(), 0, 0);
        let n = limits::REMOVED_TRAITS + 500;
        for i in 0..n {
            p.update_traits(&Map::new(), [format!("gone{i}").as_str()], i as Millis);
        }
        p.apply_event(&identify(10_000, json!({"kept": 1})));
        assert_eq!(p.trait_times.len(), limits::REMOVED_TRAITS + 1);
        assert!(p.trait_times.contains_key(&format!("gone{}", n - 1)));
        assert!(!p.trait_times.contains_key("gone0"));
    }

    #[test]
    fn merged_from_keeps_the_newest_ids() {
        let mut known = ProfileState::new("known".into(), 0, 0);
        for i in 0..limits::MERGED_FROM + 20 {
            known.merge_from(ProfileState::new(format!("anon{i}"), 0, 0));
        }
        assert_eq!(known.merged_from.len(), limits::MERGED_FROM);
        assert_eq!(
            known.merged_from.last().map(String::as_str),
            Some("anon119")
        );
    }
}
