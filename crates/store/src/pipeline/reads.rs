//! Journeys that read an audience (`entry: {audience: lapsed, on: read}`): at the read's time
//! every member enters, in profile id order, a chunk per transaction with the cursor that
//! says how far the read got, so a crash or restart resumes where the last commit left it
//! and nobody is entered twice by the same read. The journey's `entry_rate_limit` paces the
//! read (a chunk takes no more than the second's room), instead of refusing entries.

use std::collections::HashSet;
use waymark_core::ProfileState;

use waymark_core::journey::Journey;
use waymark_core::journey::lifecycle::Status as JourneyStatus;
use waymark_core::time::Millis;
use waymark_engine::run::{ReadIn, Runtime, States, plan_read};

use super::{RunTx, add_versions, catalog, plan_inputs};

/// A journey's reads of its audience: the next one, and the one in progress.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct JourneyRead {
    pub journey: String,
    /// When the next read starts (or the one in progress started); `None`: no read to come.
    pub due_at: Option<Millis>,
    /// The read in progress began at; `None` between reads.
    pub started_at: Option<Millis>,
    /// The last member the read in progress entered (or passed); "" at its start.
    pub after: String,
    /// Members the read in progress has gone through.
    pub read: u64,
    /// Of them, left out as members of an `except` audience.
    pub excluded: u64,
    /// When the last complete read finished, how many members it went through, and how
    /// many of them it left out.
    pub last_finished_at: Option<Millis>,
    pub last_read: u64,
    pub last_excluded: u64,
}

impl JourneyRead {
    /// The reads after `journey` is published at `now`, given those it had (`None`: the row
    /// goes, the version reads no audience). A read in progress goes on (with the new
    /// version); a one-off read happens once per journey, so publishing an edit does not
    /// send it again; a schedule starts again from now.
    pub fn after_publish(existing: Option<Self>, journey: &Journey, now: Millis) -> Option<Self> {
        journey.entry.read_audience()?;
        let mut read = existing.unwrap_or_else(|| JourneyRead {
            journey: journey.key.clone(),
            ..Self::default()
        });
        if read.started_at.is_some() {
            return Some(read);
        }
        let once_done = journey.entry.schedule.is_none() && read.last_finished_at.is_some();
        if !once_done {
            read.due_at = journey.first_read(now);
        }
        Some(read)
    }
}

/// Enters the next chunk (at most `limit` people, fewer if the entry rate limit has less room
/// this second) of the read that is due first; returns how many members it went through.
pub async fn read_audiences<T: RunTx>(
    tx: &T,
    runtime: &Runtime,
    now: Millis,
    limit: u32,
) -> Result<usize, T::Error> {
    let Some(mut read) = tx.due_journey_read(now).await? else {
        return Ok(0);
    };
    let mut journeys = catalog(tx, true).await?;
    let Some((JourneyStatus::Live, Some(version))) = journeys.journeys.get(&read.journey).cloned()
    else {
        // Only live journeys' reads are due; one that is not (a race with a status change)
        // waits for the next turn.
        return Ok(0);
    };
    let room = journeys.entry_room(&read.journey, now).min(limit);
    if room == 0 {
        return Ok(0);
    }
    // The live version as the runtime keeps it compiled: no document read per chunk.
    add_versions(tx, runtime, &mut journeys, &States::default()).await?;
    let compiled = journeys
        .versions
        .get(&(read.journey.clone(), version))
        .cloned();
    let Some((journey, audience)) = compiled
        .as_deref()
        .and_then(|c| Some((&c.doc, c.doc.entry.read_audience()?)))
    else {
        // The live version reads no audience (or does not compile, which compiling
        // logged): the read is dropped.
        read.due_at = None;
        read.started_at = None;
        tx.save_journey_read(&read).await?;
        return Ok(0);
    };
    let started_at = *read.started_at.get_or_insert(now);
    let ids = tx
        .audience_members_after(audience, &read.after, room)
        .await?;
    let id_refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let excluded: HashSet<String> = if journey.entry.except.is_empty() || ids.is_empty() {
        HashSet::new()
    } else {
        tx.memberships(&id_refs)
            .await?
            .into_iter()
            .filter(|(_, audience, _)| journey.entry.except.contains(audience))
            .map(|(profile, _, _)| profile)
            .collect()
    };
    read.excluded += excluded.len() as u64;
    let entering: Vec<&str> = id_refs
        .iter()
        .copied()
        .filter(|id| !excluded.contains(*id))
        .collect();
    if !entering.is_empty() {
        let profiles = tx.lock_profiles(&entering).await?;
        let people: Vec<&ProfileState> =
            entering.iter().filter_map(|id| profiles.get(*id)).collect();
        let keys: Vec<(String, String)> = people
            .iter()
            .map(|p| (p.id.clone(), read.journey.clone()))
            .collect();
        let (catalog, states) = plan_inputs(tx, runtime, &keys, &people, true, now).await?;
        let input = ReadIn {
            journey: &read.journey,
            audience,
            started_at,
        };
        let planned = plan_read(&catalog, states, &people, input, now);
        tx.write(&planned, now).await?;
    }
    read.read += ids.len() as u64;
    match ids.last() {
        Some(last) if ids.len() as u32 >= room => read.after = last.clone(),
        _ => {
            tracing::info!(journey = %read.journey, audience, members = read.read, "audience read finished");
            read.last_finished_at = Some(now);
            read.last_read = read.read;
            read.last_excluded = read.excluded;
            read.read = 0;
            read.excluded = 0;
            read.after.clear();
            read.started_at = None;
            // Runs missed while the server was down are not made up one after another.
            read.due_at = journey.next_read(now.max(started_at));
        }
    }
    tx.save_journey_read(&read).await?;
    Ok(ids.len())
}
