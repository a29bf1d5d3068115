//! Membership as a plan: which audiences an input can change for a person, their decisions
//! in dependency order, the entries and exits that result (each an `Audience Entered` or
//! `Audience Exited` event in the person's history), and when each person must be decided
//! again because time alone changes an answer. The store reads what the plan needs and
//! writes what it returns, in the transaction of the input.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use serde_json::{Map, json};
use waymark_core::audience::Refresh;
use waymark_core::time::Millis;
use waymark_core::{Event, EventKind, ProfileState};

use super::{BodyPart, CompiledAudience, HistoryEvent, Person};

pub use waymark_core::audience::{ENTERED, EXITED};

/// Every audience, compiled, with indexes from what changes to the audiences that read it.
#[derive(Debug, Default)]
pub struct AudienceCatalog {
    /// Dependencies first (`in_audience` references decided before their readers).
    audiences: Vec<Arc<CompiledAudience>>,
    /// Event name → audiences whose calls read it.
    by_event: HashMap<String, Vec<usize>>,
    /// Audiences whose rule reads `profile` (any event can change it).
    by_profile: Vec<usize>,
    /// Audience key → audiences that read it with `in_audience`.
    readers: HashMap<String, Vec<usize>>,
}

impl AudienceCatalog {
    /// `audiences` in any order; those in a reference cycle (refused at save) are left out.
    pub fn new(audiences: Vec<Arc<CompiledAudience>>) -> Self {
        let graph: waymark_core::audience::Catalog = audiences
            .iter()
            .map(|a| (a.key.clone(), a.rule.audiences.clone()))
            .collect();
        let order = waymark_core::audience::evaluation_order(&graph);
        let mut by_key: HashMap<String, Arc<CompiledAudience>> =
            audiences.into_iter().map(|a| (a.key.clone(), a)).collect();
        let audiences: Vec<Arc<CompiledAudience>> =
            order.iter().filter_map(|k| by_key.remove(k)).collect();
        let mut catalog = AudienceCatalog {
            audiences,
            ..AudienceCatalog::default()
        };
        // Only streaming audiences are decided on events and when what they read changes;
        // snapshots and uploads keep their members until their next run or upload.
        for (i, a) in catalog.audiences.iter().enumerate() {
            if !a.refresh.is_streaming() {
                continue;
            }
            for name in &a.event_names {
                catalog.by_event.entry(name.clone()).or_default().push(i);
            }
            if a.rule.reads_profile {
                catalog.by_profile.push(i);
            }
            for read in &a.rule.audiences {
                catalog.readers.entry(read.clone()).or_default().push(i);
            }
        }
        catalog
    }

    pub fn is_empty(&self) -> bool {
        self.audiences.is_empty()
    }

    pub fn audiences(&self) -> &[Arc<CompiledAudience>] {
        &self.audiences
    }

    /// How much of each event some audience reads (nothing: the store reads names and
    /// times only).
    pub fn bodies(&self) -> BodyPart {
        self.audiences
            .iter()
            .map(|a| a.bodies)
            .max()
            .unwrap_or_default()
    }

    /// The streaming audiences that read this one with `in_audience`.
    pub fn readers_of(&self, key: &str) -> BTreeSet<String> {
        self.readers
            .get(key)
            .into_iter()
            .flatten()
            .map(|i| self.audiences[*i].key.clone())
            .collect()
    }

    /// Every event name some audience reads.
    pub fn event_names(&self) -> BTreeSet<String> {
        self.by_event.keys().cloned().collect()
    }

    /// The event names, and whether bodies, that deciding these audiences can read: theirs
    /// and those of every audience that reads them (decided again when they change).
    pub fn reads_of(&self, keys: &BTreeSet<String>) -> (BTreeSet<String>, BodyPart) {
        let mut due: Vec<usize> = (0..self.audiences.len())
            .filter(|i| keys.contains(&self.audiences[*i].key))
            .collect();
        let mut seen: BTreeSet<usize> = due.iter().copied().collect();
        let (mut names, mut bodies) = (BTreeSet::new(), BodyPart::Nothing);
        while let Some(i) = due.pop() {
            let audience = &self.audiences[i];
            names.extend(audience.event_names.iter().cloned());
            bodies = bodies.max(audience.bodies);
            for r in self.readers.get(&audience.key).into_iter().flatten() {
                if seen.insert(*r) {
                    due.push(*r);
                }
            }
        }
        (names, bodies)
    }

    /// Whether an event of this name can change some audience (it does if any rule reads
    /// `profile`, which every event changes).
    pub fn affected_by(&self, name: &str) -> bool {
        !self.by_profile.is_empty() || self.by_event.contains_key(name)
    }
}

/// What made a person's audiences worth deciding.
#[derive(Debug, Clone, PartialEq)]
pub enum Trigger {
    /// Events of these names arrived (and the profile changed with them).
    Events(Vec<String>),
    /// Everything: a due check (time may have flipped a rule) or a merge.
    Everything,
    /// These audiences (and those that read them): a backfill of new versions. A key not in
    /// the catalog ends its memberships.
    Audiences(BTreeSet<String>),
}

/// One person as the plan sees them.
#[derive(Debug)]
pub struct PersonInput<'a> {
    pub profile: &'a ProfileState,
    /// Their kept events of the names the catalog reads.
    pub events: Vec<HistoryEvent>,
    /// Audiences they are a member of now, with since when.
    pub members: BTreeMap<String, Millis>,
    pub trigger: Trigger,
}

/// When a person's audiences must be decided again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub profile_id: String,
    pub due: Option<Millis>,
    /// Every audience was decided: `due` replaces what was there (none: delete). Otherwise
    /// only some were: the earlier of the two is kept.
    pub exact: bool,
}

/// An entry or exit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub audience: String,
    pub version: u32,
    pub profile_id: String,
    pub entered: bool,
    pub at: Millis,
}

impl Change {
    /// The event the person's history records for it; its id is stable, so a replayed
    /// plan cannot record it twice.
    pub fn event(&self) -> Event {
        let name = if self.entered { ENTERED } else { EXITED };
        let mut properties = Map::new();
        properties.insert("audience".into(), json!(self.audience));
        properties.insert("version".into(), json!(self.version));
        Event {
            message_id: format!(
                "audience:{}:{}:{}:{}",
                self.audience,
                if self.entered { "entered" } else { "exited" },
                self.profile_id,
                self.at
            ),
            kind: EventKind::Track,
            name: Some(name.to_owned()),
            user_id: None,
            anonymous_id: None,
            previous_id: None,
            group_id: None,
            traits: Map::new(),
            properties,
            context: Map::new(),
            integrations: Map::new(),
            timestamp: self.at,
            original_timestamp: None,
            sent_at: None,
            received_at: self.at,
            identities: Vec::new(),
            sender: Default::default(),
        }
    }
}

/// What a plan writes.
#[derive(Debug, Default, PartialEq)]
pub struct AudiencePlan {
    pub changes: Vec<Change>,
    pub checks: Vec<Check>,
    /// Rules that could not be decided for a person (they count as not members), as
    /// (audience, profile id, why).
    pub errors: Vec<(String, String, String)>,
    /// How many (person, audience) decisions were made.
    pub evaluated: u64,
}

/// Decides the audiences the inputs can change, for each person.
pub fn plan(catalog: &AudienceCatalog, people: &[PersonInput<'_>], now: Millis) -> AudiencePlan {
    let mut out = AudiencePlan::default();
    for person in people {
        decide_person(catalog, person, now, &mut out);
    }
    out
}

fn decide_person(
    catalog: &AudienceCatalog,
    person: &PersonInput<'_>,
    now: Millis,
    out: &mut AudiencePlan,
) {
    let profile_id = &person.profile.id;
    let n = catalog.audiences.len();
    let mut due = vec![false; n];
    let everything = person.trigger == Trigger::Everything;
    match &person.trigger {
        Trigger::Everything => {
            for (i, audience) in catalog.audiences.iter().enumerate() {
                due[i] = audience.refresh.is_streaming();
            }
        }
        Trigger::Audiences(keys) => {
            for (i, audience) in catalog.audiences.iter().enumerate() {
                due[i] = keys.contains(&audience.key) && audience.refresh != Refresh::Upload;
            }
        }
        Trigger::Events(names) => {
            for i in &catalog.by_profile {
                due[*i] = true;
            }
            for name in names {
                for i in catalog.by_event.get(name).into_iter().flatten() {
                    due[*i] = true;
                }
            }
        }
    }
    // Membership as decided so far in this plan (starts as stored).
    let mut member: BTreeMap<&str, bool> =
        person.members.keys().map(|k| (k.as_str(), true)).collect();
    let mut next_check: Option<Millis> = None;
    for (i, audience) in catalog.audiences.iter().enumerate() {
        if !due[i] {
            continue;
        }
        let member_of = |key: &str| member.get(key).copied().unwrap_or(false);
        let evaluation = audience.evaluate(
            &Person {
                profile: person.profile,
                events: &person.events,
                member_of: &member_of,
            },
            now,
        );
        out.evaluated += 1;
        if let Some(error) = evaluation.error {
            out.errors
                .push((audience.key.clone(), profile_id.clone(), error));
        }
        if let Some(at) = evaluation.next_change
            && audience.refresh.is_streaming()
        {
            next_check = Some(next_check.map_or(at, |c| c.min(at)));
        }
        let was = person.members.contains_key(&audience.key);
        let is = evaluation.member;
        member.insert(audience.key.as_str(), is);
        if was != is {
            out.changes.push(Change {
                audience: audience.key.clone(),
                version: audience.version,
                profile_id: profile_id.clone(),
                entered: is,
                at: now,
            });
            // Audiences that read this one are decided again (they come later in order).
            for r in catalog.readers.get(&audience.key).into_iter().flatten() {
                due[*r] = true;
            }
        }
    }
    // Memberships of audiences that no longer exist end with a full decision, or with the
    // backfill of that audience.
    let gone = |key: &String| match &person.trigger {
        Trigger::Everything => true,
        Trigger::Audiences(keys) => keys.contains(key),
        Trigger::Events(_) => false,
    };
    if everything || matches!(person.trigger, Trigger::Audiences(_)) {
        for key in person.members.keys().filter(|k| gone(k)) {
            if !catalog.audiences.iter().any(|a| a.key == *key) {
                out.changes.push(Change {
                    audience: key.clone(),
                    version: 0,
                    profile_id: profile_id.clone(),
                    entered: false,
                    at: now,
                });
            }
        }
    }
    if everything || next_check.is_some() {
        out.checks.push(Check {
            profile_id: profile_id.clone(),
            due: next_check,
            exact: everything,
        });
    }
}

#[cfg(test)]
mod tests;
