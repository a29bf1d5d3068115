//! Audiences on SQLite: documents (every changed one a new version), memberships with a
//! size counter per audience, and one check row per person (when their audiences must be
//! decided again). Decisions are `waymark_store::pipeline`'s; this is their SQL.

use rusqlite::types::ValueRef;
use rusqlite::{Connection, OptionalExtension, Transaction, params};
use serde_json::Value;
use std::sync::Arc;
use waymark_core::time::Millis;
use waymark_core::{Event, ProfileState};
use waymark_engine::audience::{AudiencePlan, BodyPart, HistoryEvent};
use waymark_store::json_part;
use waymark_store::pipeline::{SizeChange, attach_memberships};
use waymark_store::{
    AudienceMember, AudienceRecord, AudienceSave, AudienceStatus, BackfillProgress, ProfilePart,
    ScanReads, ScannedPerson, SizeAt, StoreError,
};

use crate::unavailable;
use crate::versioned::{self, Kind};

fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("audience: {e}"))
}

pub fn read(conn: &Connection, key: &str) -> Result<Option<AudienceRecord>, StoreError> {
    Ok(versioned::read(conn, Kind::Audience, key)?.map(|v| v.into_audience(key)))
}

pub fn list(conn: &Connection) -> Result<Vec<AudienceRecord>, StoreError> {
    let mut out = Vec::new();
    for key in versioned::keys(conn, Kind::Audience)? {
        out.extend(read(conn, &key)?);
    }
    Ok(out)
}

/// Stores a changed document as a new version and, as `save` says, starts (or starts
/// again) its backfill and sets its next scheduled run.
pub fn put(
    tx: &Transaction<'_>,
    key: &str,
    document: &Value,
    save: &AudienceSave,
    now: Millis,
) -> Result<(AudienceRecord, bool), StoreError> {
    let (versions, created) = versioned::put(tx, Kind::Audience, key, document, now)?;
    if created {
        if save.backfill {
            start_backfill(tx, key, now)?;
        }
        set_next_run(tx, key, save.next_run)?;
    }
    Ok((versions.into_audience(key), created))
}

/// Everyone decided for the audience, in profile id order, from the first person (when
/// there is anyone: people who come later are decided as their events arrive).
pub fn start_backfill(tx: &Connection, key: &str, now: Millis) -> Result<(), StoreError> {
    tx.prepare_cached(
        "INSERT INTO audience_backfills (audience_key, after_profile, started_at, decided)
         SELECT ?1, '', ?2, 0 WHERE EXISTS (SELECT 1 FROM profiles)
         ON CONFLICT (audience_key) DO UPDATE SET after_profile = '', started_at = ?2, decided = 0",
    )
    .and_then(|mut s| s.execute(params![key, now]))
    .map_err(unavailable)?;
    Ok(())
}

pub fn set_next_run(tx: &Connection, key: &str, next: Option<Millis>) -> Result<(), StoreError> {
    match next {
        Some(at) => tx
            .prepare_cached(
                "INSERT INTO audience_schedules (audience_key, next_run) VALUES (?1, ?2)
                 ON CONFLICT (audience_key) DO UPDATE SET next_run = ?2",
            )
            .and_then(|mut s| s.execute(params![key, at])),
        None => tx
            .prepare_cached("DELETE FROM audience_schedules WHERE audience_key = ?1")
            .and_then(|mut s| s.execute([key])),
    }
    .map_err(unavailable)?;
    Ok(())
}

pub fn next_run(conn: &Connection, key: &str) -> Result<Option<Millis>, StoreError> {
    conn.prepare_cached("SELECT next_run FROM audience_schedules WHERE audience_key = ?1")
        .and_then(|mut s| s.query_row([key], |r| r.get(0)).optional())
        .map_err(unavailable)
}

pub fn due_runs(conn: &Connection, now: Millis, limit: u32) -> Result<Vec<String>, StoreError> {
    conn.prepare_cached(
        "SELECT audience_key FROM audience_schedules WHERE next_run <= ?1 ORDER BY next_run LIMIT ?2",
    )
    .and_then(|mut s| {
        s.query_map(params![now, i64::from(limit)], |r| r.get(0))?
            .collect()
    })
    .map_err(unavailable)
}

/// Read in one snapshot: apart, a backfill committing between the size and its own row
/// would show an audience `current` with none of its members.
pub fn status(conn: &Connection, key: &str) -> Result<AudienceStatus, StoreError> {
    let snapshot = conn.unchecked_transaction().map_err(unavailable)?;
    let status = status_in(&snapshot, key)?;
    snapshot.finish().map_err(unavailable)?;
    Ok(status)
}

fn status_in(conn: &Connection, key: &str) -> Result<AudienceStatus, StoreError> {
    let (members, last_change): (i64, Option<i64>) = conn
        .prepare_cached("SELECT members, last_change FROM audience_sizes WHERE audience_key = ?1")
        .and_then(|mut s| {
            let mut rows = s.query([key])?;
            match rows.next()? {
                Some(r) => Ok((r.get(0)?, r.get(1)?)),
                None => Ok((0, None)),
            }
        })
        .map_err(unavailable)?;
    let saved: Option<i64> = conn
        .prepare_cached("SELECT max(created_at) FROM audiences WHERE key = ?1")
        .and_then(|mut s| s.query_row([key], |r| r.get(0)))
        .map_err(unavailable)?;
    // Checks due since before the newest version are people still to decide as well.
    let overdue: i64 = match saved {
        Some(saved) => conn
            .prepare_cached("SELECT count(*) FROM audience_checks WHERE due_at <= ?1")
            .and_then(|mut s| s.query_row([saved], |r| r.get(0)))
            .map_err(unavailable)?,
        None => 0,
    };
    let backfill = conn
        .prepare_cached(
            "SELECT after_profile, started_at, decided FROM audience_backfills WHERE audience_key = ?1",
        )
        .and_then(|mut s| {
            s.query_row([key], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?)))
                .optional()
        })
        .map_err(unavailable)?;
    let (remaining, backfill) = match backfill {
        Some((after, started_at, decided)) => {
            let remaining: i64 = conn
                .prepare_cached("SELECT count(*) FROM profiles WHERE id > ?1")
                .and_then(|mut s| s.query_row([after], |r| r.get(0)))
                .map_err(unavailable)?;
            let progress = BackfillProgress {
                started_at,
                decided: decided.max(0) as u64,
            };
            (remaining, Some(progress))
        }
        None => (0, None),
    };
    Ok(AudienceStatus {
        members: members.max(0) as u64,
        last_change,
        pending: (overdue + remaining).max(0) as u64,
        backfill,
    })
}

pub fn members(
    conn: &Connection,
    key: &str,
    after: Option<&str>,
    limit: u32,
) -> Result<Vec<AudienceMember>, StoreError> {
    conn.prepare_cached(
        "SELECT profile_id, since FROM audience_members WHERE audience_key = ?1 AND profile_id > ?2
         ORDER BY profile_id LIMIT ?3",
    )
    .and_then(|mut s| {
        s.query_map(params![key, after.unwrap_or(""), i64::from(limit)], |r| {
            Ok(AudienceMember {
                profile_id: r.get(0)?,
                since: r.get(1)?,
            })
        })?
        .collect()
    })
    .map_err(unavailable)
}

pub fn profile_audiences(
    conn: &Connection,
    profile_id: &str,
) -> Result<Vec<(String, Millis)>, StoreError> {
    conn.prepare_cached(
        "SELECT audience_key, since FROM audience_members WHERE profile_id = ?1 ORDER BY audience_key",
    )
    .and_then(|mut s| {
        s.query_map([profile_id], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect()
    })
    .map_err(unavailable)
}

/// One profile's kept events of these display names, oldest first.
pub fn profile_history(
    conn: &Connection,
    profile_id: &str,
    names: &[String],
) -> Result<Vec<HistoryEvent>, StoreError> {
    let (track, kinds) = waymark_core::event::stored_names(names);
    let mut events = history(conn, &[profile_id], &track, &kinds, BodyPart::Whole)?
        .pop()
        .unwrap_or_default();
    events.sort_by_key(|e| e.at);
    Ok(events)
}

pub fn version(conn: &Connection, key: &str, version: u32) -> Result<Option<Value>, StoreError> {
    versioned::version(conn, Kind::Audience, key, version)
}

pub fn newest_versions(conn: &Connection) -> Result<Vec<(String, u32)>, StoreError> {
    versioned::newest(conn, Kind::Audience)
}

pub fn history(
    conn: &Connection,
    profile_ids: &[&str],
    track_names: &[String],
    kinds: &[&'static str],
    bodies: BodyPart,
) -> Result<Vec<Vec<HistoryEvent>>, StoreError> {
    // Read in id order (one statement for all of them, their ids as a JSON array), then
    // handed back in the order asked.
    let mut order: Vec<usize> = (0..profile_ids.len()).collect();
    order.sort_by_key(|&i| profile_ids[i]);
    let sorted: Vec<&str> = order.iter().map(|&i| profile_ids[i]).collect();
    let json = serde_json::to_string(&sorted).map_err(corrupt)?;
    let read = events_in_order(
        conn,
        &sorted,
        Whose::Listed(&json),
        track_names,
        kinds,
        bodies,
    )?;
    let mut out: Vec<Vec<HistoryEvent>> = vec![Vec::new(); profile_ids.len()];
    for (i, events) in order.into_iter().zip(read) {
        out[i] = events;
    }
    Ok(out)
}

/// The condition on events of the track names in the JSON array `names` and of the kinds
/// in `kinds`, for whichever are asked. Written apart because the planner cannot seek
/// (profile, kind, name) in `events_by_name` through an `OR`: with both, it reads every
/// event of each person (2.5 times the rows for a rule on one name).
fn names_and_kinds(track_names: bool, kinds: bool, names: &str, kinds_param: &str) -> String {
    let by_name = format!("kind = 'track' AND name IN (SELECT value FROM json_each({names}))");
    let by_kind = format!("kind IN (SELECT value FROM json_each({kinds_param}))");
    match (track_names, kinds) {
        (true, true) => format!("(({by_name}) OR {by_kind})"),
        (true, false) => by_name,
        (false, true) => by_kind,
        (false, false) => "0".to_owned(),
    }
}

pub fn memberships(
    conn: &Connection,
    profile_ids: &[&str],
) -> Result<Vec<(String, String, Millis)>, StoreError> {
    let ids = serde_json::to_string(profile_ids).map_err(corrupt)?;
    conn.prepare_cached(
        "SELECT profile_id, audience_key, since FROM audience_members
         WHERE profile_id IN (SELECT value FROM json_each(?1))",
    )
    .and_then(|mut s| {
        s.query_map([ids], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect()
    })
    .map_err(unavailable)
}

pub fn write(
    tx: &Transaction<'_>,
    plan: &AudiencePlan,
    events: &[(&str, &Event)],
    now: Millis,
) -> Result<(), StoreError> {
    {
        let mut enter = tx
            .prepare_cached(
                "INSERT INTO audience_members (audience_key, profile_id, since) VALUES (?1, ?2, ?3)
                 ON CONFLICT DO NOTHING",
            )
            .map_err(unavailable)?;
        let mut leave = tx
            .prepare_cached(
                "DELETE FROM audience_members WHERE audience_key = ?1 AND profile_id = ?2",
            )
            .map_err(unavailable)?;
        // Entries and exits really made (a row inserted or deleted) per audience, written
        // once per audience with its size and its hour of size history.
        let mut sizes: std::collections::BTreeMap<&str, SizeChange> = Default::default();
        for change in &plan.changes {
            let changed = if change.entered {
                enter.execute(params![change.audience, change.profile_id, change.at])
            } else {
                leave.execute(params![change.audience, change.profile_id])
            }
            .map_err(unavailable)?;
            if changed > 0 {
                sizes
                    .entry(&change.audience)
                    .or_default()
                    .add(change.entered, change.at);
            }
        }
        for (audience, change) in sizes {
            record_size(tx, audience, &change)?;
        }
    }
    {
        let mut record = tx
            .prepare_cached(
                "INSERT INTO events (message_id, profile_id, kind, name, timestamp, received_at, body)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (message_id) DO NOTHING",
            )
            .map_err(unavailable)?;
        for (profile_id, e) in events {
            record
                .execute(params![
                    e.message_id,
                    profile_id,
                    e.kind.as_str(),
                    e.name,
                    e.timestamp,
                    now,
                    e.to_json().to_string()
                ])
                .map_err(unavailable)?;
        }
    }
    // A check that would not change is not rewritten (most events leave it where it was).
    let mut replace = tx
        .prepare_cached(
            "INSERT INTO audience_checks (profile_id, due_at) VALUES (?1, ?2)
             ON CONFLICT (profile_id) DO UPDATE SET due_at = excluded.due_at
             WHERE excluded.due_at != audience_checks.due_at",
        )
        .map_err(unavailable)?;
    let mut sooner = tx
        .prepare_cached(
            "INSERT INTO audience_checks (profile_id, due_at) VALUES (?1, ?2)
             ON CONFLICT (profile_id) DO UPDATE SET due_at = excluded.due_at
             WHERE excluded.due_at < audience_checks.due_at",
        )
        .map_err(unavailable)?;
    let mut clear = tx
        .prepare_cached("DELETE FROM audience_checks WHERE profile_id = ?1")
        .map_err(unavailable)?;
    for check in &plan.checks {
        match (check.due, check.exact) {
            (Some(due), true) => replace.execute(params![check.profile_id, due]),
            (Some(due), false) => sooner.execute(params![check.profile_id, due]),
            (None, true) => clear.execute([&check.profile_id]),
            (None, false) => Ok(0),
        }
        .map_err(unavailable)?;
    }
    Ok(())
}

pub fn due_checks(conn: &Connection, now: Millis, limit: u32) -> Result<Vec<String>, StoreError> {
    conn.prepare_cached(
        "SELECT profile_id FROM audience_checks WHERE due_at <= ?1 ORDER BY due_at LIMIT ?2",
    )
    .and_then(|mut s| {
        s.query_map(params![now, i64::from(limit)], |r| r.get(0))?
            .collect()
    })
    .map_err(unavailable)
}

pub fn forget(
    tx: &Transaction<'_>,
    profile_id: &str,
    recheck: Option<&str>,
    now: Millis,
) -> Result<(), StoreError> {
    let left: Vec<String> = tx
        .prepare_cached("DELETE FROM audience_members WHERE profile_id = ?1 RETURNING audience_key")
        .and_then(|mut s| s.query_map([profile_id], |r| r.get(0))?.collect())
        .map_err(unavailable)?;
    for audience in left {
        let mut change = SizeChange::default();
        change.add(false, now);
        record_size(tx, &audience, &change)?;
    }
    tx.execute(
        "DELETE FROM audience_checks WHERE profile_id = ?1",
        [profile_id],
    )
    .map_err(unavailable)?;
    if let Some(into) = recheck {
        tx.execute(
            "INSERT INTO audience_checks (profile_id, due_at) VALUES (?1, ?2)
             ON CONFLICT (profile_id) DO UPDATE SET due_at = min(due_at, excluded.due_at)",
            params![into, now],
        )
        .map_err(unavailable)?;
    }
    Ok(())
}

pub fn backfills(conn: &Connection) -> Result<Vec<(String, String)>, StoreError> {
    conn.prepare_cached(
        "SELECT audience_key, after_profile FROM audience_backfills ORDER BY after_profile, audience_key",
    )
        .and_then(|mut s| s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect())
        .map_err(unavailable)
}

pub fn profiles_after(
    conn: &Connection,
    after: &str,
    limit: u32,
) -> Result<Vec<String>, StoreError> {
    conn.prepare_cached("SELECT id FROM profiles WHERE id > ?1 ORDER BY id LIMIT ?2")
        .and_then(|mut s| {
            s.query_map(params![after, i64::from(limit)], |r| r.get(0))?
                .collect()
        })
        .map_err(unavailable)
}

pub fn advance_backfills(
    tx: &Connection,
    keys: &[String],
    to: Option<&str>,
    decided: u64,
) -> Result<(), StoreError> {
    let mut advance = tx
        .prepare_cached(
            "UPDATE audience_backfills SET after_profile = max(after_profile, ?2),
                 decided = decided + ?3 WHERE audience_key = ?1",
        )
        .map_err(unavailable)?;
    let mut end = tx
        .prepare_cached("DELETE FROM audience_backfills WHERE audience_key = ?1")
        .map_err(unavailable)?;
    for key in keys {
        match to {
            Some(to) => advance.execute(params![key, to, decided as i64]),
            None => end.execute([key]),
        }
        .map_err(unavailable)?;
    }
    Ok(())
}

/// Size by the hour, oldest first, for the hours since `since` in which it changed.
pub fn size_history(
    conn: &Connection,
    key: &str,
    since: Millis,
) -> Result<Vec<SizeAt>, StoreError> {
    conn.prepare_cached(
        "SELECT hour, members, entered, exited FROM audience_size_history
         WHERE audience_key = ?1 AND hour >= ?2 ORDER BY hour",
    )
    .and_then(|mut s| {
        s.query_map(params![key, since], |r| {
            Ok(SizeAt {
                hour: r.get(0)?,
                members: r.get::<_, i64>(1)?.max(0) as u64,
                entered: r.get::<_, i64>(2)?.max(0) as u64,
                exited: r.get::<_, i64>(3)?.max(0) as u64,
            })
        })?
        .collect()
    })
    .map_err(unavailable)
}

/// Adds entries and exits to an audience's size and to its hour of size history.
fn record_size(tx: &Connection, audience: &str, change: &SizeChange) -> Result<(), StoreError> {
    let members: i64 = tx
        .prepare_cached(
            "INSERT INTO audience_sizes (audience_key, members, last_change) VALUES (?1, ?2, ?3)
             ON CONFLICT (audience_key) DO UPDATE SET members = members + excluded.members,
                 last_change = max(last_change, excluded.last_change)
             RETURNING members",
        )
        .and_then(|mut s| s.query_row(params![audience, change.delta(), change.at], |r| r.get(0)))
        .map_err(unavailable)?;
    tx.prepare_cached(
        "INSERT INTO audience_size_history (audience_key, hour, members, entered, exited)
         VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (audience_key, hour) DO UPDATE SET members = excluded.members,
             entered = entered + excluded.entered, exited = exited + excluded.exited",
    )
    .and_then(|mut s| {
        s.execute(params![
            audience,
            change.hour(),
            members,
            change.entered as i64,
            change.exited as i64
        ])
    })
    .map_err(unavailable)?;
    Ok(())
}

/// People in (after, until] for batch evaluation, read in one snapshot.
pub fn scan_people(
    conn: &Connection,
    after: &str,
    until: Option<&str>,
    limit: u32,
    reads: &ScanReads,
) -> Result<Vec<ScannedPerson>, StoreError> {
    conn.execute_batch("BEGIN").map_err(unavailable)?;
    let scanned = scan_in_snapshot(conn, after, until, limit, reads);
    conn.execute_batch("COMMIT").map_err(unavailable)?;
    scanned
}

fn scan_in_snapshot(
    conn: &Connection,
    after: &str,
    until: Option<&str>,
    limit: u32,
    reads: &ScanReads,
) -> Result<Vec<ScannedPerson>, StoreError> {
    let mut people = scan_profiles(conn, after, until, limit, reads)?;
    let Some(last) = people.last().map(|p| p.profile.id.clone()) else {
        return Ok(people);
    };
    if !(reads.track_names.is_empty() && reads.kinds.is_empty()) {
        let ids: Vec<&str> = people.iter().map(|p| p.profile.id.as_str()).collect();
        let events = events_in_order(
            conn,
            &ids,
            Whose::Range { after, last: &last },
            &reads.track_names,
            &reads.kinds,
            reads.bodies,
        )?;
        for (person, events) in people.iter_mut().zip(events) {
            person.events = events;
        }
    }
    let memberships = if reads.memberships {
        conn.prepare_cached(
            "SELECT profile_id, audience_key, since FROM audience_members
             WHERE profile_id > ?1 AND profile_id <= ?2",
        )
        .and_then(|mut s| {
            s.query_map(params![after, last], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })?
            .collect()
        })
        .map_err(unavailable)?
    } else {
        Vec::new()
    };
    attach_memberships(&mut people, memberships);
    Ok(people)
}

/// Profiles in (after, until], in id order, at most `limit`, decoded as far as `reads`
/// asks.
fn scan_profiles(
    conn: &Connection,
    after: &str,
    until: Option<&str>,
    limit: u32,
    reads: &ScanReads,
) -> Result<Vec<ScannedPerson>, StoreError> {
    // The whole state even for traits alone: serde skipping the rest is three times
    // faster than SQLite's json_extract, which builds a binary form of all of it first
    // (12% of a batch evaluation in perf). The column is named, not chosen by a `CASE`,
    // which copied every state before handing it over.
    let state = match reads.profile {
        ProfilePart::Id => "NULL",
        ProfilePart::Traits | ProfilePart::Whole => "state",
    };
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT id, {state} FROM profiles WHERE id > ?1 AND (?2 IS NULL OR id <= ?2)
             ORDER BY id LIMIT ?3"
        ))
        .map_err(unavailable)?;
    let mut rows = stmt
        .query(params![after, until, i64::from(limit)])
        .map_err(unavailable)?;
    let mut people: Vec<ScannedPerson> = Vec::with_capacity(limit as usize);
    // Decoded from SQLite's own copy of the state, not a copy of it.
    while let Some(row) = rows.next().map_err(unavailable)? {
        let id: String = row.get(0).map_err(unavailable)?;
        let state = match row.get_ref(1).map_err(unavailable)? {
            ValueRef::Null => None,
            value => Some(value.as_str().map_err(corrupt)?),
        };
        people.push(ScannedPerson {
            profile: reads.decode_profile(id, state)?,
            events: Vec::new(),
            members: Default::default(),
        });
    }
    Ok(people)
}

/// Kept events of these people (one statement: one snapshot).
pub fn people_events(
    conn: &Connection,
    ids: &[String],
    reads: &ScanReads,
) -> Result<Vec<Vec<HistoryEvent>>, StoreError> {
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    history(conn, &ids, &reads.track_names, &reads.kinds, reads.bodies)
}

/// Whose events a read takes.
enum Whose<'a> {
    /// Ids in (after, last].
    Range { after: &'a str, last: &'a str },
    /// The ids of a JSON array.
    Listed(&'a str),
}

/// The events of these track names and kinds of each of `ids` (ascending: SQLite compares
/// text as bytes, as Rust does), each person's in (time, seq) order within a name.
///
/// The query has no `ORDER BY`: over a range of people the planner sorted every row in a
/// temporary b-tree to honour one (three times the time of the read itself, for rows the
/// covering index already yields in that order). Rows are placed here instead, by
/// binary search where they arrive out of person order, and a person's events sorted only
/// if they did not come in index order.
fn events_in_order(
    conn: &Connection,
    ids: &[&str],
    whose: Whose<'_>,
    track_names: &[String],
    kinds: &[&'static str],
    bodies: BodyPart,
) -> Result<Vec<Vec<HistoryEvent>>, StoreError> {
    let kinds_asked = !kinds.is_empty();
    let filter = names_and_kinds(!track_names.is_empty(), kinds_asked, "?3", "?4");
    let track = serde_json::to_string(track_names).map_err(corrupt)?;
    let kinds = serde_json::to_string(kinds).map_err(corrupt)?;
    // ?2 goes unused for a list (SQLite binds by index up to the largest one written).
    let (people, first, second) = match whose {
        Whose::Range { after, last } => ("profile_id > ?1 AND profile_id <= ?2", after, last),
        Whose::Listed(json) => ("profile_id IN (SELECT value FROM json_each(?1))", json, ""),
    };
    // Only the columns this read needs: each one a row carries costs three calls into
    // SQLite on the way out, more than SQLite takes to find the row.
    let kind_column = if kinds_asked { ", kind" } else { "" };
    // Properties are taken out of the body in `history_body`.
    let body_column = match bodies {
        BodyPart::Nothing => "",
        BodyPart::Properties | BodyPart::Whole => ", body",
    };
    let sql = [
        "SELECT profile_id, timestamp, seq, name",
        kind_column,
        body_column,
        " FROM events WHERE ",
        people,
        " AND ",
        &filter,
    ]
    .concat();
    let mut stmt = conn.prepare_cached(&sql).map_err(unavailable)?;
    // The statement takes ?1 up to the highest it names (?2 unused for a list, ?4 without
    // kinds).
    let all: [&dyn rusqlite::ToSql; 4] = [&first, &second, &track, &kinds];
    let bound = &all[..stmt.parameter_count().min(all.len())];
    let mut rows = stmt.query(bound).map_err(unavailable)?;
    let body_at = if kinds_asked { 5 } else { 4 };
    // Every row as (whose, seq, event) in one vector, handed out below with one
    // allocation per person instead of a vector grown row by row for each.
    let mut read: Vec<(usize, i64, HistoryEvent)> = Vec::new();
    // The few (kind, name) pairs a read meets, each display name made once and shared by
    // its events: per row, the ids and names are compared as bytes, not validated as text
    // and copied (that was a fifth of a batch evaluation's time).
    let mut names: Vec<(Vec<u8>, Vec<u8>, Arc<str>)> = Vec::new();
    let mut i = 0;
    while let Some(row) = rows.next().map_err(unavailable)? {
        let bytes = |n: usize| -> Result<&[u8], StoreError> {
            match row.get_ref(n).map_err(unavailable)? {
                ValueRef::Null => Ok(b""),
                value => value.as_bytes().map_err(corrupt),
            }
        };
        let profile = bytes(0)?;
        if ids.get(i).map(|id| id.as_bytes()) != Some(profile) {
            match ids.binary_search_by(|id| id.as_bytes().cmp(profile)) {
                Ok(found) => i = found,
                Err(_) => continue,
            }
        }
        let stored_name = bytes(3)?;
        let kind = if kinds_asked { bytes(4)? } else { b"track" };
        let name = match names.iter().find(|(k, n, _)| k == kind && n == stored_name) {
            Some((_, _, name)) => name.clone(),
            None => {
                let stored_name = std::str::from_utf8(stored_name).map_err(corrupt)?;
                let kind_text = std::str::from_utf8(kind).map_err(corrupt)?;
                let display = waymark_core::EventKind::parse(kind_text)
                    .map_or("", |k| k.display_name(Some(stored_name)));
                let name: Arc<str> = Arc::from(display);
                names.push((kind.to_vec(), stored_name.as_bytes().to_vec(), name.clone()));
                name
            }
        };
        let body = if bodies == BodyPart::Nothing {
            Value::Null
        } else {
            match row.get_ref(body_at).map_err(unavailable)? {
                ValueRef::Null => Value::Null,
                body => history_body(bodies, body.as_str().map_err(corrupt)?)?,
            }
        };
        let event = HistoryEvent {
            name,
            at: row.get(1).map_err(unavailable)?,
            body,
        };
        read.push((i, row.get(2).map_err(unavailable)?, event));
    }
    Ok(per_person(ids.len(), read))
}

/// A history event's body from the stored one, as far as `bodies` asks: `{"properties":
/// ...}` (taken out by serde; `json_extract` builds a binary form of the whole body
/// first, then text again for serde to parse) or all of it.
fn history_body(bodies: BodyPart, stored: &str) -> Result<Value, StoreError> {
    Ok(match bodies {
        BodyPart::Nothing => Value::Null,
        BodyPart::Properties => {
            let properties =
                json_part::object_under(stored, "properties", None).map_err(corrupt)?;
            serde_json::json!({ "properties": properties })
        }
        BodyPart::Whole => serde_json::from_str(stored).map_err(corrupt)?,
    })
}

/// Rows read as (whose, seq, event), of any order, as each of `people` people's events in
/// (name, time, seq) order: sorted only if they did not come so, and handed out with one
/// allocation per person.
fn per_person(people: usize, mut read: Vec<(usize, i64, HistoryEvent)>) -> Vec<Vec<HistoryEvent>> {
    type Read = (usize, i64, HistoryEvent);
    let order = |(i, seq, e): &Read, (j, other_seq, other): &Read| {
        (i, &*e.name, e.at, seq).cmp(&(j, &*other.name, other.at, other_seq))
    };
    if !read.is_sorted_by(|a, b| order(a, b).is_le()) {
        read.sort_by(order);
    }
    let mut counts = vec![0usize; people];
    for (i, _, _) in &read {
        counts[*i] += 1;
    }
    let mut out: Vec<Vec<HistoryEvent>> = counts.into_iter().map(Vec::with_capacity).collect();
    for (i, _, event) in read {
        out[i].push(event);
    }
    out
}

pub fn profile_splits(conn: &Connection, parts: u32) -> Result<Vec<String>, StoreError> {
    let count: i64 = conn
        .query_row("SELECT count(*) FROM profiles", [], |r| r.get(0))
        .map_err(unavailable)?;
    let mut out = Vec::new();
    for part in 1..i64::from(parts.max(1)) {
        let offset = count * part / i64::from(parts);
        let id: Option<String> = conn
            .prepare_cached("SELECT id FROM profiles ORDER BY id LIMIT 1 OFFSET ?1")
            .and_then(|mut s| s.query_row([offset], |r| r.get(0)).optional())
            .map_err(unavailable)?;
        out.extend(id.filter(|id| out.last() != Some(id)));
    }
    Ok(out)
}

pub fn profile_ids_of(
    conn: &Connection,
    identities: &[waymark_core::Identity],
) -> Result<Vec<Option<String>>, StoreError> {
    let pairs: Vec<(&str, &str)> = identities
        .iter()
        .map(|i| (i.namespace.as_str(), i.value.as_str()))
        .collect();
    let asked = serde_json::to_string(&pairs).map_err(corrupt)?;
    let found: std::collections::HashMap<(String, String), String> = conn
        .prepare_cached(
            "SELECT i.namespace, i.value, i.profile_id FROM identities i
             JOIN (SELECT json_extract(value, '$[0]') AS ns, json_extract(value, '$[1]') AS v
                   FROM json_each(?1)) q ON i.namespace = q.ns AND i.value = q.v",
        )
        .and_then(|mut s| {
            s.query_map([asked], |r| Ok(((r.get(0)?, r.get(1)?), r.get(2)?)))?
                .collect()
        })
        .map_err(unavailable)?;
    Ok(pairs
        .iter()
        .map(|(ns, v)| found.get(&((*ns).to_owned(), (*v).to_owned())).cloned())
        .collect())
}

pub fn member_profiles(
    conn: &Connection,
    key: &str,
    after: &str,
    limit: u32,
) -> Result<Vec<(AudienceMember, ProfileState)>, StoreError> {
    let rows: Vec<(String, i64, String)> = conn
        .prepare_cached(
            "SELECT m.profile_id, m.since, p.state FROM audience_members m
             JOIN profiles p ON p.id = m.profile_id
             WHERE m.audience_key = ?1 AND m.profile_id > ?2 ORDER BY m.profile_id LIMIT ?3",
        )
        .and_then(|mut s| {
            s.query_map(params![key, after, i64::from(limit)], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })?
            .collect()
        })
        .map_err(unavailable)?;
    rows.into_iter()
        .map(|(profile_id, since, state)| {
            Ok((
                AudienceMember { profile_id, since },
                crate::decode_profile(&state)?,
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_of_any_order_come_out_per_person_by_name_time_and_seq() {
        let event = |name: &str, at: Millis| HistoryEvent {
            name: name.into(),
            at,
            body: Value::Null,
        };
        // Person 1's two events at the same time keep their seq order; person 0's names
        // are grouped; person 2 has none.
        let read = vec![
            (1, 9, event("B", 5)),
            (0, 4, event("B", 1)),
            (1, 7, event("B", 5)),
            (0, 3, event("A", 2)),
            (0, 1, event("B", 3)),
        ];
        let out = per_person(3, read);
        let seen: Vec<Vec<(&str, Millis)>> = out
            .iter()
            .map(|events| events.iter().map(|e| (&*e.name, e.at)).collect())
            .collect();
        assert_eq!(
            seen,
            vec![
                vec![("A", 2), ("B", 1), ("B", 3)],
                vec![("B", 5), ("B", 5)],
                vec![]
            ]
        );
        // Which of person 1's same-time events is which: the seq 7 one first.
        let mut read = vec![(0, 9, event("B", 5)), (0, 7, event("B", 5))];
        read[0].2.body = Value::from(9);
        read[1].2.body = Value::from(7);
        let out = per_person(1, read);
        assert_eq!(
            out[0].iter().map(|e| e.body.clone()).collect::<Vec<_>>(),
            vec![Value::from(7), Value::from(9)]
        );
    }
}
