//! Identity resolution and profile folding for a batch of events, as a pure function.
//!
//! A store runs ingest in three steps inside one transaction:
//! 1. look up what [`lookups`] asks for (identity owners, their profiles, seen message ids)
//!    into a [`WorkingSet`];
//! 2. call [`plan`], which decides everything and performs no I/O;
//! 3. write the returned [`IngestPlan`] in the order its fields are documented.
//!
//! Because every backend calls the same `plan`, identity merges behave identically on all of them.
//!
//! Merge rules:
//! - an event's profile is the one owning its `user_id`; failing that the first profile found
//!   through its other identities (in priority order: anonymous id, email, phone, custom),
//!   preferring one that already has a user id when the event has none; failing that, a new one;
//! - every other profile the event's identities point at is merged into it, unless that
//!   profile has a different user id (two known people who share a device or an email stay
//!   two people); `alias` merges unconditionally, since it is an explicit instruction;
//! - identities not yet known are attached to the event's profile;
//! - a push token (an app install) seen for a known person who does not own it moves to
//!   them: whoever signed in on a device last gets its notifications, and the previous
//!   person stops getting them there.
//!
//! Refusals (the whole request fails, nothing of it is stored):
//! - an event that would grow its profile past one of `profile::limits` (`profile_limit`);
//! - an event from a client (`Sender::Client`) that would attach, move or merge an address
//!   (email, phone, push token) onto a person with a user id, without a user hash proving it
//!   is that person (`user_hash_required`): otherwise anyone holding the public write key
//!   could route someone else's messages to themselves.

use std::collections::{HashMap, HashSet};

use crate::identity::Namespace;
use crate::segment::identity_field;
use crate::time::Millis;
use crate::{Event, EventKind, FieldError, Identity, ProfileState, Sender, partition_of};

/// The code of a refusal for want of a user hash (answered 403, not 400).
pub const USER_HASH_REQUIRED: &str = "user_hash_required";

/// Why a batch cannot be planned: the event at `index` (of the slice given to [`plan`])
/// may not be stored. `error.field` is relative to that event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub index: usize,
    pub error: FieldError,
}

impl Refusal {
    /// The sender lacked proof of who the person is, rather than sent too much.
    pub fn is_unverified(&self) -> bool {
        self.error.code == USER_HASH_REQUIRED
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "event {}: {}", self.index, self.error)
    }
}

pub type ProfileId = String;

#[derive(Debug, Default)]
pub struct WorkingSet {
    /// Current owner of each looked-up identity that exists.
    pub owners: HashMap<Identity, ProfileId>,
    /// The profiles those owners point at.
    pub profiles: HashMap<ProfileId, ProfileState>,
    /// Message ids among the batch's that are already stored.
    pub seen_message_ids: HashSet<String>,
}

/// What a store must read before planning a batch.
#[derive(Debug, Default, PartialEq)]
pub struct Lookups {
    pub identities: Vec<Identity>,
    pub message_ids: Vec<String>,
}

/// The identities an alias's `previousId` may already be known under.
fn previous_candidates(previous: &str) -> Vec<Identity> {
    [
        Identity::user_id(previous),
        Identity::anonymous_id(previous),
    ]
    .into_iter()
    .filter_map(Result::ok)
    .collect()
}

pub fn lookups<'a>(events: impl IntoIterator<Item = &'a Event>) -> Lookups {
    let mut identities = HashSet::new();
    let mut message_ids = Vec::new();
    for event in events {
        message_ids.push(event.message_id.clone());
        identities.extend(event.identities.iter().cloned());
        if event.kind == EventKind::Alias
            && let Some(prev) = &event.previous_id
        {
            identities.extend(previous_candidates(prev));
        }
    }
    let mut identities: Vec<_> = identities.into_iter().collect();
    identities.sort();
    Lookups {
        identities,
        message_ids,
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Accepted { profile_id: ProfileId },
    Duplicate,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Merge {
    pub from: ProfileId,
    pub into: ProfileId,
}

/// Everything one batch changes. A store applies it in field order:
/// `merges` (repoint identities and events of `from` to `into`, delete `from`),
/// then repoint `moved_identities`, then insert `new_identities`, then insert `events`,
/// then upsert `profiles`.
#[derive(Debug, Default)]
pub struct IngestPlan {
    /// One per input event, in input order.
    pub outcomes: Vec<Outcome>,
    pub merges: Vec<Merge>,
    /// Existing identities (push tokens) that change owner, each with its final owner.
    pub moved_identities: Vec<(Identity, ProfileId)>,
    /// Identities to insert, each with its final owner.
    pub new_identities: Vec<(Identity, ProfileId)>,
    /// Indexes of input events to store, each with its final profile.
    pub events: Vec<(usize, ProfileId)>,
    /// Final state of every profile the batch created or changed.
    pub profiles: Vec<ProfileState>,
}

impl IngestPlan {
    pub fn accepted(&self) -> usize {
        self.events.len()
    }

    pub fn duplicates(&self) -> usize {
        self.outcomes.len() - self.events.len()
    }
}

struct Planner<'a> {
    ws: WorkingSet,
    redirects: HashMap<ProfileId, ProfileId>,
    touched: Vec<ProfileId>,
    /// The same ids, for membership: a group commit touches thousands of profiles, and a
    /// scan of the list per event made planning quadratic in the group's size.
    touched_set: std::collections::HashSet<ProfileId>,
    partitions: u32,
    now: Millis,
    new_id: &'a mut dyn FnMut() -> ProfileId,
    plan: IngestPlan,
}

impl Planner<'_> {
    fn current(&self, id: &ProfileId) -> ProfileId {
        let mut id = id;
        while let Some(next) = self.redirects.get(id) {
            id = next;
        }
        id.clone()
    }

    fn owner(&self, identity: &Identity) -> Option<ProfileId> {
        self.ws.owners.get(identity).map(|p| self.current(p))
    }

    fn has_user_id(&self, id: &ProfileId) -> bool {
        self.ws
            .profiles
            .get(id)
            .is_some_and(ProfileState::has_user_id)
    }

    fn touch(&mut self, id: &ProfileId) {
        if self.touched_set.insert(id.clone()) {
            self.touched.push(id.clone());
        }
    }

    fn create(&mut self) -> ProfileId {
        let id = (self.new_id)();
        let state = ProfileState::new(id.clone(), partition_of(&id, self.partitions), self.now);
        self.ws.profiles.insert(id.clone(), state);
        self.touch(&id);
        id
    }

    fn attach(&mut self, identity: Identity, profile: &ProfileId) {
        if let Some(state) = self.ws.profiles.get_mut(profile) {
            state.add_identity(&identity);
        }
        self.ws.owners.insert(identity.clone(), profile.clone());
        self.plan.new_identities.push((identity, profile.clone()));
        self.touch(profile);
    }

    /// Moves an identity another known person owns to `to`.
    fn take_over(&mut self, identity: &Identity, from: &ProfileId, to: &ProfileId) {
        if let Some(state) = self.ws.profiles.get_mut(from) {
            state.forget_identity(identity.namespace.as_str(), &identity.value);
        }
        if let Some(state) = self.ws.profiles.get_mut(to) {
            state.add_identity(identity);
        }
        self.ws.owners.insert(identity.clone(), to.clone());
        self.plan
            .moved_identities
            .push((identity.clone(), to.clone()));
        self.touch(from);
        self.touch(to);
    }

    fn merge(&mut self, from: &ProfileId, into: &ProfileId) {
        let Some(absorbed) = self.ws.profiles.remove(from) else {
            return;
        };
        for identity in absorbed.identity_list() {
            self.ws.owners.insert(identity, into.clone());
        }
        if let Some(target) = self.ws.profiles.get_mut(into) {
            target.merge_from(absorbed);
        }
        self.redirects.insert(from.clone(), into.clone());
        self.plan.merges.push(Merge {
            from: from.clone(),
            into: into.clone(),
        });
        self.touch(into);
    }

    /// The address identities `profile` holds, for telling which ones an event adds.
    fn addresses(&self, profile: &ProfileId) -> HashSet<Identity> {
        self.ws
            .profiles
            .get(profile)
            .map_or_else(HashSet::new, |p| {
                p.identity_list()
                    .into_iter()
                    .filter(Identity::is_address)
                    .collect()
            })
    }

    fn apply(&mut self, index: usize, event: &Event) -> Result<(), Refusal> {
        let mut found: Vec<ProfileId> = Vec::new();
        let mut unknown: Vec<Identity> = Vec::new();
        for identity in &event.identities {
            match self.owner(identity) {
                Some(p) if !found.contains(&p) => found.push(p),
                Some(_) => {}
                None => unknown.push(identity.clone()),
            }
        }
        let alias = event.kind == EventKind::Alias;
        if alias && let Some(prev) = &event.previous_id {
            let candidates = previous_candidates(prev);
            match candidates.iter().find_map(|c| self.owner(c)) {
                Some(p) if !found.contains(&p) => found.push(p),
                Some(_) => {}
                None => unknown.extend(
                    candidates
                        .into_iter()
                        .filter(|c| c.namespace.as_str() == Namespace::ANONYMOUS_ID),
                ),
            }
        }

        let user_identity = event.identities.iter().find(|i| i.is_user_id());
        let target = match user_identity {
            Some(uid) => match self.owner(uid) {
                Some(p) => p,
                None => match found.iter().find(|p| !self.has_user_id(p)).cloned() {
                    Some(p) => p,
                    None => self.create(),
                },
            },
            None => match found
                .iter()
                .find(|p| self.has_user_id(p))
                .or(found.first())
                .cloned()
            {
                Some(p) => p,
                None => self.create(),
            },
        };

        let merges = found.iter().any(|p| *p != target);
        let has_traits = event.kind == EventKind::Identify && !event.traits.is_empty();
        let before = self
            .ws
            .profiles
            .get(&target)
            .map(|p| p.footprint(has_traits || merges))
            .unwrap_or_default();
        let client = matches!(event.sender, Sender::Client { .. });
        let addresses_before = if client {
            self.addresses(&target)
        } else {
            HashSet::new()
        };
        let new_identity_field = unknown
            .first()
            .map_or("userId", |i| identity_field(i.namespace.as_str()));

        for other in found {
            if other != target && (alias || !self.has_user_id(&other)) {
                self.merge(&other, &target);
            }
        }
        if user_identity.is_some() {
            for token in event.identities.iter().filter(|i| i.is_push_token()) {
                if let Some(owner) = self.owner(token)
                    && owner != target
                {
                    self.take_over(token, &owner, &target);
                }
            }
        }
        for identity in unknown {
            self.attach(identity, &target);
        }
        if let Some(state) = self.ws.profiles.get_mut(&target) {
            state.apply_event(event);
        }
        if let Some(state) = self.ws.profiles.get(&target) {
            let event_field = match event.kind {
                EventKind::Track => "event",
                EventKind::Page | EventKind::Screen => "name",
                _ => "type",
            };
            if let Some(error) = state.grown_past_limits(&before, new_identity_field, event_field) {
                return Err(Refusal { index, error });
            }
            if let Sender::Client { verified_user_id } = &event.sender
                && state.has_user_id()
                && let Some(added) = self
                    .addresses(&target)
                    .into_iter()
                    .find(|a| !addresses_before.contains(a))
            {
                let proven = verified_user_id.as_ref().is_some_and(|user| {
                    state
                        .identities
                        .get(Namespace::USER_ID)
                        .is_some_and(|ids| ids.contains(user))
                });
                if !proven {
                    let field = identity_field(added.namespace.as_str());
                    return Err(Refusal {
                        index,
                        error: FieldError::new(
                            USER_HASH_REQUIRED,
                            field,
                            format!(
                                "a client key may attach {} to a signed-in person only with \
                                 their user hash (context.userHash or X-Waymark-User-Hash); \
                                 send it from your backend with a server write key otherwise",
                                added.namespace.as_str()
                            ),
                        ),
                    });
                }
            }
        }
        self.touch(&target);
        self.plan.events.push((index, target.clone()));
        self.plan
            .outcomes
            .push(Outcome::Accepted { profile_id: target });
        Ok(())
    }

    /// Identities with the profile each belongs to once every merge of the batch is done.
    fn with_final_owners(&self, v: Vec<(Identity, ProfileId)>) -> Vec<(Identity, ProfileId)> {
        v.into_iter().map(|(i, p)| (i, self.current(&p))).collect()
    }

    fn finish(mut self) -> IngestPlan {
        let moved = std::mem::take(&mut self.plan.moved_identities);
        self.plan.moved_identities = self.with_final_owners(moved);
        let new_identities = std::mem::take(&mut self.plan.new_identities);
        self.plan.new_identities = self.with_final_owners(new_identities);
        let events = std::mem::take(&mut self.plan.events);
        self.plan.events = events
            .into_iter()
            .map(|(i, p)| (i, self.current(&p)))
            .collect();
        let outcomes = std::mem::take(&mut self.plan.outcomes);
        self.plan.outcomes = outcomes
            .into_iter()
            .map(|o| match o {
                Outcome::Accepted { profile_id } => Outcome::Accepted {
                    profile_id: self.current(&profile_id),
                },
                Outcome::Duplicate => Outcome::Duplicate,
            })
            .collect();
        for id in std::mem::take(&mut self.touched) {
            if self.redirects.contains_key(&id) {
                continue;
            }
            if let Some(state) = self.ws.profiles.remove(&id) {
                self.plan.profiles.push(state);
            }
        }
        self.plan
    }
}

/// Decides what a batch does to the identity graph and the profiles. Events are applied in
/// input order; a message id already stored, or repeated within the batch, is a duplicate and
/// changes nothing. One refused event refuses the whole slice.
pub fn plan(
    ws: WorkingSet,
    events: &[Event],
    partitions: u32,
    now: Millis,
    new_id: &mut dyn FnMut() -> ProfileId,
) -> Result<IngestPlan, Refusal> {
    let mut seen = HashSet::new();
    let mut planner = Planner {
        ws,
        redirects: HashMap::new(),
        touched: Vec::new(),
        touched_set: Default::default(),
        partitions,
        now,
        new_id,
        plan: IngestPlan::default(),
    };
    for (index, event) in events.iter().enumerate() {
        if planner.ws.seen_message_ids.contains(&event.message_id)
            || !seen.insert(event.message_id.as_str())
        {
            planner.plan.outcomes.push(Outcome::Duplicate);
            continue;
        }
        planner.apply(index, event)?;
    }
    Ok(planner.finish())
}

#[cfg(test)]
mod tests;
