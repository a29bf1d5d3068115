//! Batch evaluation: one audience rule decided for every stored person, read in profile id
//! order in chunks, the id space cut in two ranges per core, each range read
//! and decided on its own. Nothing is written: this answers "how many, and who" before a
//! rule is saved.
//!
//! Where the profile alone can settle the rule (`profile.traits.plan == "pro" && ...` for
//! someone on another plan), a chunk's profiles are read first and events only for the
//! people the profile leaves undecided: reading events is most of the cost. Those are then
//! read in a later snapshot than the profiles, which matters no more than chunks being
//! read at different moments: a batch evaluation under ingest is of a moving population.

use std::time::Instant;

use waymark_core::time::Millis;
use waymark_engine::audience::{CompiledAudience, Person};

use crate::{AudienceStore, ProfilePart, ScanReads, StoreError};

/// People read per chunk: large enough that a chunk's fixed costs (a query, a snapshot)
/// are small beside its rows, small enough to bound memory (a chunk is freed once decided).
const CHUNK: u32 = 2_000;

/// What a rule came to over everyone.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BatchOutcome {
    /// People decided.
    pub decided: u64,
    /// Of them, members.
    pub members: u64,
    /// People for whom the rule failed (not members), and one of the errors.
    pub errors: u64,
    pub first_error: Option<String>,
    /// The first members in profile id order, at most as many as asked.
    pub sample: Vec<String>,
    pub seconds: f64,
}

/// Ranges read at once per core: a range waits on each of its reads in turn (profiles,
/// then events), and with one per core the cores stood idle a fifth of the time.
const RANGES_PER_CORE: u32 = 2;

/// Decides `audience` for every stored person at `now`, using `cores` cores.
pub async fn evaluate_everyone<S: AudienceStore + ?Sized>(
    store: &S,
    audience: &CompiledAudience,
    now: Millis,
    sample: usize,
    cores: u32,
) -> Result<BatchOutcome, StoreError> {
    let ranges = RANGES_PER_CORE * cores.max(1);
    let started = Instant::now();
    let names: Vec<String> = audience.event_names.iter().cloned().collect();
    let (track_names, kinds) = waymark_core::event::stored_names(&names);
    let reads = ScanReads {
        track_names,
        kinds,
        bodies: audience.bodies,
        memberships: !audience.rule.audiences.is_empty(),
        profile: if !audience.rule.reads_profile {
            ProfilePart::Id
        } else if audience.reads_traits_only() {
            ProfilePart::Traits
        } else {
            ProfilePart::Whole
        },
        trait_keys: audience.trait_keys_read(),
    };
    let events_later = audience.may_decide_without_events();
    let splits = store.profile_splits(ranges).await?;
    // (after, until): "" starts before every id; None runs to the end.
    let mut bounds: Vec<(String, Option<String>)> = Vec::new();
    let mut after = String::new();
    for split in splits {
        bounds.push((std::mem::replace(&mut after, split.clone()), Some(split)));
    }
    bounds.push((after, None));
    let parts = bounds.iter().map(|(after, until)| {
        evaluate_range(
            store,
            audience,
            &reads,
            events_later,
            after,
            until.as_deref(),
            now,
            sample,
        )
    });
    let mut total = BatchOutcome::default();
    // Ranges come back in id order, so their samples concatenate in id order.
    for part in futures::future::try_join_all(parts).await? {
        total.decided += part.decided;
        total.members += part.members;
        total.errors += part.errors;
        total.first_error = total.first_error.or(part.first_error);
        let room = sample.saturating_sub(total.sample.len());
        total.sample.extend(part.sample.into_iter().take(room));
    }
    total.seconds = started.elapsed().as_secs_f64();
    Ok(total)
}

/// Decides everyone in (after, until]; with `events_later`, reads events only for the
/// people their profile leaves undecided.
#[allow(clippy::too_many_arguments, reason = "one range of one evaluation")]
async fn evaluate_range<S: AudienceStore + ?Sized>(
    store: &S,
    audience: &CompiledAudience,
    reads: &ScanReads,
    events_later: bool,
    after: &str,
    until: Option<&str>,
    now: Millis,
    sample: usize,
) -> Result<BatchOutcome, StoreError> {
    let profile_reads = ScanReads {
        track_names: Vec::new(),
        kinds: Vec::new(),
        ..reads.clone()
    };
    let mut out = BatchOutcome::default();
    let mut after = after.to_owned();
    loop {
        let mut people = store
            .scan_people(
                &after,
                until,
                CHUNK,
                if events_later { &profile_reads } else { reads },
            )
            .await?;
        let Some(last) = people.last() else {
            return Ok(out);
        };
        after = last.profile.id.clone();
        // Each person's (member, error), where the profile settled it.
        let mut decided: Vec<Option<(bool, Option<String>)>> = if events_later {
            people
                .iter()
                .map(|p| {
                    let member_of = |key: &str| p.members.contains_key(key);
                    audience.decide_without_events(&p.profile, &member_of)
                })
                .collect()
        } else {
            vec![None; people.len()]
        };
        if events_later {
            let undecided: Vec<usize> = (0..people.len())
                .filter(|&i| decided[i].is_none())
                .collect();
            let ids = undecided
                .iter()
                .map(|&i| people[i].profile.id.clone())
                .collect();
            let events = store.people_events(ids, reads).await?;
            for (i, events) in undecided.into_iter().zip(events) {
                people[i].events = events;
            }
        }
        for (person, settled) in people.iter().zip(decided.iter_mut()) {
            let (member, error) = match settled.take() {
                Some(settled) => settled,
                None => {
                    let member_of = |key: &str| person.members.contains_key(key);
                    let who = Person {
                        profile: &person.profile,
                        events: &person.events,
                        member_of: &member_of,
                    };
                    let evaluation = audience.evaluate(&who, now);
                    (evaluation.member, evaluation.error)
                }
            };
            out.decided += 1;
            if let Some(error) = error {
                out.errors += 1;
                out.first_error.get_or_insert(error);
            }
            if member {
                out.members += 1;
                if out.sample.len() < sample {
                    out.sample.push(person.profile.id.clone());
                }
            }
        }
        if people.len() < CHUNK as usize {
            return Ok(out);
        }
    }
}
