//! Audience membership against a store, written once above the backends: what a decision
//! reads (the audience catalog, the people's kept events of the names rules read, their
//! memberships), the engine's plan, and what it writes (entries and exits, the events that
//! record them, each person's next check), in the transaction of what changed it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use waymark_core::time::Millis;
use waymark_core::{Event, ProfileState};
use waymark_engine::audience::{
    AudienceCatalog, AudiencePlan, BodyPart, Change, Check, CompiledAudience, HistoryEvent,
    PersonInput, Trigger, plan,
};
use waymark_engine::run::Runtime;

use super::{RunTx, run_journeys};

/// The audiences as compiled for the newest versions, built once per change of versions.
async fn catalog<T: RunTx>(tx: &T, runtime: &Runtime) -> Result<Arc<AudienceCatalog>, T::Error> {
    let versions = tx.audience_versions().await?;
    if let Some(catalog) = runtime.audience_catalog(&versions) {
        return Ok(catalog);
    }
    let mut compiled = Vec::with_capacity(versions.len());
    for (key, version) in &versions {
        let Some(document) = tx.audience_document(key, *version).await? else {
            continue;
        };
        let doc = match serde_json::from_value(document) {
            Ok(doc) => doc,
            Err(e) => {
                tracing::error!(audience = %key, version, error = %e, "stored audience does not parse; skipped");
                continue;
            }
        };
        match CompiledAudience::compile(&doc, *version) {
            Ok(audience) => compiled.push(Arc::new(audience)),
            Err(problems) => {
                tracing::error!(audience = %key, version, ?problems, "stored audience does not compile; skipped");
            }
        }
    }
    let catalog = Arc::new(AudienceCatalog::new(compiled));
    runtime.keep_audience_catalog(versions, catalog.clone());
    Ok(catalog)
}

/// The event names (and how much of their bodies) the decisions of a call can read.
type Reads = (BTreeSet<String>, BodyPart);

fn everything_read(catalog: &AudienceCatalog) -> Reads {
    (catalog.event_names(), catalog.bodies())
}

/// The people's kept events of the names the decisions can read, and their memberships.
async fn people_inputs<'p, T: RunTx>(
    tx: &T,
    (names, bodies): Reads,
    people: Vec<(&'p ProfileState, Trigger)>,
) -> Result<Vec<PersonInput<'p>>, T::Error> {
    let ids: Vec<&str> = people.iter().map(|(p, _)| p.id.as_str()).collect();
    let names: Vec<String> = names.into_iter().collect();
    let events: Vec<Vec<HistoryEvent>> = if names.is_empty() {
        vec![Vec::new(); ids.len()]
    } else {
        let (track, kinds) = waymark_core::event::stored_names(&names);
        tx.history(&ids, &track, &kinds, bodies).await?
    };
    let mut members: HashMap<String, BTreeMap<String, Millis>> = HashMap::new();
    for (profile, audience, since) in tx.memberships(&ids).await? {
        members.entry(profile).or_default().insert(audience, since);
    }
    Ok(people
        .into_iter()
        .zip(events)
        .map(|((profile, trigger), events)| PersonInput {
            events,
            members: members.remove(&profile.id).unwrap_or_default(),
            profile,
            trigger,
        })
        .collect())
}

/// Decides, for each person, the audiences their new events can change; writes the result
/// and returns the `Audience Entered` / `Audience Exited` events it recorded, for journeys.
pub(super) async fn on_events<'p, T: RunTx>(
    tx: &T,
    runtime: &Runtime,
    events: &[(&Event, &'p ProfileState)],
    now: Millis,
) -> Result<Vec<(Event, &'p ProfileState)>, T::Error> {
    let catalog = catalog(tx, runtime).await?;
    if catalog.is_empty() {
        return Ok(Vec::new());
    }
    // One input per person, with the names of the events they sent that can matter.
    let mut people: Vec<(&'p ProfileState, Trigger)> = Vec::new();
    let mut index: HashMap<&str, usize> = HashMap::new();
    for (event, profile) in events {
        let name = event.display_name();
        if !catalog.affected_by(name) {
            continue;
        }
        match index.get(profile.id.as_str()) {
            Some(&i) => {
                let (p, trigger) = &mut people[i];
                // The profile as it stands after all of this person's events.
                *p = profile;
                if let Trigger::Events(names) = trigger
                    && !names.iter().any(|n| n == name)
                {
                    names.push(name.to_owned());
                }
            }
            None => {
                index.insert(profile.id.as_str(), people.len());
                people.push((profile, Trigger::Events(vec![name.to_owned()])));
            }
        }
    }
    if people.is_empty() {
        return Ok(Vec::new());
    }
    let reads = everything_read(&catalog);
    decide(tx, &catalog, reads, people, Vec::new(), now).await
}

/// Decides and writes; returns the events recorded with their people.
/// `cleared`: people whose check goes without a decision (erased meanwhile), written in
/// the same statement as the plan's checks.
async fn decide<'p, T: RunTx>(
    tx: &T,
    catalog: &AudienceCatalog,
    reads: Reads,
    people: Vec<(&'p ProfileState, Trigger)>,
    cleared: Vec<Check>,
    now: Millis,
) -> Result<Vec<(Event, &'p ProfileState)>, T::Error> {
    let profiles: HashMap<&str, &'p ProfileState> =
        people.iter().map(|(p, _)| (p.id.as_str(), *p)).collect();
    let inputs = people_inputs(tx, reads, people).await?;
    let mut planned = plan(catalog, &inputs, now);
    planned.checks.extend(cleared);
    // Counted once per audience per transaction: a rule that fails for everyone (a trait few
    // people have) must not cost a metric update per person.
    let mut errors: HashMap<&str, u64> = HashMap::new();
    for (audience, profile, error) in &planned.errors {
        *errors.entry(audience.as_str()).or_default() += 1;
        tracing::trace!(%audience, %profile, %error, "audience rule failed for a person");
    }
    for (audience, n) in errors {
        metrics::counter!("waymark_audience_errors_total", "audience" => audience.to_owned())
            .increment(n);
    }
    metrics::counter!("waymark_audience_evaluations_total").increment(planned.evaluated);
    let recorded: Vec<(Event, &'p ProfileState)> = planned
        .changes
        .iter()
        .filter_map(|c| Some((c.event(), *profiles.get(c.profile_id.as_str())?)))
        .collect();
    let owned: Vec<(&str, &Event)> = recorded.iter().map(|(e, p)| (p.id.as_str(), e)).collect();
    tx.write_audiences(&planned, &owned, now).await?;
    Ok(recorded)
}

/// Decides every audience for up to `limit` people whose check is due, then runs journeys
/// on the entries and exits; returns how many people were decided.
pub(super) async fn fire_checks<T: RunTx>(
    tx: &T,
    runtime: &Runtime,
    now: Millis,
    limit: u32,
) -> Result<usize, T::Error> {
    let due = tx.due_audience_checks(now, limit).await?;
    if due.is_empty() {
        return Ok(0);
    }
    let mut ids: Vec<&str> = due.iter().map(String::as_str).collect();
    ids.sort_unstable();
    let profiles = tx.lock_profiles(&ids).await?;
    let catalog = catalog(tx, runtime).await?;
    let people: Vec<(&ProfileState, Trigger)> = ids
        .iter()
        .filter_map(|id| profiles.get(*id))
        .map(|p| (p, Trigger::Everything))
        .collect();
    // People erased meanwhile still have their check taken off.
    let gone: Vec<Check> = ids
        .iter()
        .filter(|id| !profiles.contains_key(**id))
        .map(|id| Check {
            profile_id: (*id).to_owned(),
            due: None,
            exact: true,
        })
        .collect();
    let reads = everything_read(&catalog);
    let recorded = decide(tx, &catalog, reads, people, gone, now).await?;
    let inputs: Vec<(&Event, &ProfileState)> = recorded.iter().map(|(e, p)| (e, *p)).collect();
    run_journeys(tx, runtime, &inputs, now).await?;
    Ok(due.len())
}

/// Decides the next `limit` people (in profile id order) for every audience being
/// backfilled, then runs journeys on the entries and exits; returns how many people were
/// decided. Each backfill's progress commits with its decisions, so a restart resumes it.
/// Backfills that started at different times share the same pass: the one furthest behind
/// sets where the pass goes on, and deciding an audience again for people its own backfill
/// already passed changes nothing.
pub(super) async fn backfill<T: RunTx>(
    tx: &T,
    runtime: &Runtime,
    now: Millis,
    limit: u32,
) -> Result<usize, T::Error> {
    let backfills = tx.audience_backfills().await?;
    let Some(after) = backfills.first().map(|(_, cursor)| cursor.as_str()) else {
        return Ok(0);
    };
    let keys: Vec<String> = backfills.iter().map(|(key, _)| key.clone()).collect();
    let ids = tx.profiles_after(after, limit).await?;
    let Some(last) = ids.last() else {
        tx.advance_backfills(&keys, None, 0).await?;
        return Ok(0);
    };
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    let profiles = tx.lock_profiles(&ids).await?;
    let catalog = catalog(tx, runtime).await?;
    let backfilled: BTreeSet<String> = keys.iter().cloned().collect();
    let reads = catalog.reads_of(&backfilled);
    let trigger = Trigger::Audiences(backfilled);
    let people: Vec<(&ProfileState, Trigger)> = ids
        .iter()
        .filter_map(|id| profiles.get(*id))
        .map(|p| (p, trigger.clone()))
        .collect();
    let recorded = decide(tx, &catalog, reads, people, Vec::new(), now).await?;
    let inputs: Vec<(&Event, &ProfileState)> = recorded.iter().map(|(e, p)| (e, *p)).collect();
    run_journeys(tx, runtime, &inputs, now).await?;
    let decided = ids.len() as u64;
    let to = (ids.len() as u32 >= limit).then_some(last.as_str());
    tx.advance_backfills(&keys, to, decided).await?;
    Ok(ids.len())
}

/// Starts the runs of scheduled snapshot audiences that are due (each a backfill from the
/// first person) and sets each one's next run; returns how many were started.
pub(super) async fn start_scheduled_runs<T: RunTx>(
    tx: &T,
    now: Millis,
    limit: u32,
) -> Result<usize, T::Error> {
    let due = tx.due_audience_runs(now, limit).await?;
    if due.is_empty() {
        return Ok(0);
    }
    let versions: HashMap<String, u32> = tx.audience_versions().await?.into_iter().collect();
    for key in &due {
        let document = match versions.get(key) {
            Some(version) => tx.audience_document(key, *version).await?,
            None => None,
        };
        // After now, so a run that took long does not start again at once.
        let next = document.and_then(|d| crate::AudienceSave::of(&d, now).next_run);
        tx.start_audience_run(key, next, now).await?;
        tracing::info!(audience = %key, next_run = ?next, "scheduled audience run started");
    }
    Ok(due.len())
}

/// Adds people to (or takes them off) an uploaded list, in one transaction: each entry or
/// exit recorded as an event, the audiences that read the list decided again for them,
/// and journeys run on all of it. People who do not exist (erased meanwhile) are skipped.
/// Returns how many entered or left the list.
pub async fn change_list_members<T: RunTx>(
    tx: &T,
    runtime: &Runtime,
    key: &str,
    profile_ids: &[String],
    enter: bool,
    now: Millis,
) -> Result<u64, T::Error> {
    let mut ids: Vec<&str> = profile_ids.iter().map(String::as_str).collect();
    ids.sort_unstable();
    ids.dedup();
    let profiles = tx.lock_profiles(&ids).await?;
    let catalog = catalog(tx, runtime).await?;
    let version = catalog
        .audiences()
        .iter()
        .find(|a| a.key == key)
        .map_or(0, |a| a.version);
    let members: BTreeSet<String> = tx
        .memberships(&ids)
        .await?
        .into_iter()
        .filter(|(_, audience, _)| audience == key)
        .map(|(profile, _, _)| profile)
        .collect();
    let changes: Vec<Change> = ids
        .iter()
        .filter(|id| profiles.contains_key(**id) && members.contains(**id) != enter)
        .map(|id| Change {
            audience: key.to_owned(),
            version,
            profile_id: (*id).to_owned(),
            entered: enter,
            at: now,
        })
        .collect();
    if changes.is_empty() {
        return Ok(0);
    }
    let mut recorded: Vec<(Event, &ProfileState)> = changes
        .iter()
        .filter_map(|c| Some((c.event(), profiles.get(&c.profile_id)?)))
        .collect();
    let owned: Vec<(&str, &Event)> = recorded.iter().map(|(e, p)| (p.id.as_str(), e)).collect();
    let listed = AudiencePlan {
        changes,
        ..AudiencePlan::default()
    };
    tx.write_audiences(&listed, &owned, now).await?;
    let readers = catalog.readers_of(key);
    if !readers.is_empty() {
        let reads = catalog.reads_of(&readers);
        let trigger = Trigger::Audiences(readers);
        let people: Vec<(&ProfileState, Trigger)> = listed
            .changes
            .iter()
            .filter_map(|c| profiles.get(&c.profile_id))
            .map(|p| (p, trigger.clone()))
            .collect();
        recorded.extend(decide(tx, &catalog, reads, people, Vec::new(), now).await?);
    }
    let inputs: Vec<(&Event, &ProfileState)> = recorded.iter().map(|(e, p)| (e, *p)).collect();
    run_journeys(tx, runtime, &inputs, now).await?;
    Ok(listed.changes.len() as u64)
}
