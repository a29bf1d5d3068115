//! Audiences on SQLite: documents (every changed one a new version), memberships with a
//! size counter per audience, and one check row per person (when their audiences must be
//! decided again). Decisions are `waymark_store::pipeline`'s; this is their SQL.

use rusqlite::{Connection, OptionalExtension, Transaction, params};
use serde_json::Value;
use waymark_core::time::Millis;
use waymark_core::{Event, ProfileState};
use waymark_engine::audience::{AudiencePlan, BodyPart, HistoryEvent};
use waymark_store::pipeline::{SizeChange, attach_memberships};
use waymark_store::{
    AudienceMember, AudienceRecord, AudienceSave, AudienceStatus, BackfillProgress, ScanReads,
    ScannedPerson, SizeAt, StoreError, body_code,
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

pub fn status(conn: &Connection, key: &str) -> Result<AudienceStatus, StoreError> {
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
    let mut people: Vec<ScannedPerson> = conn
        .prepare_cached(
            "SELECT id, CASE ?4 WHEN 2 THEN state
                 WHEN 1 THEN '{\"traits\":' || coalesce(json_extract(state, '$.traits'), '{}') || '}' END
             FROM profiles WHERE id > ?1 AND (?2 IS NULL OR id <= ?2) ORDER BY id LIMIT ?3",
        )
        .and_then(|mut s| {
            s.query_map(
                params![after, until, i64::from(limit), reads.profile.code()],
                |r| Ok((r.get::<_, String>(0)?, r.get::<_, Option<String>>(1)?)),
            )?
            .collect::<Result<Vec<_>, _>>()
        })
        .map_err(unavailable)?
        .into_iter()
        .map(|(id, state)| {
            Ok(ScannedPerson {
                profile: reads.profile.decode(id, state.as_deref())?,
                events: Vec::new(),
                members: Default::default(),
            })
        })
        .collect::<Result<_, StoreError>>()?;
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

/// The events of these track names and kinds of each of `ids` (in id order: SQLite
/// compares text as bytes, as Rust does), read in one pass over rows in the same order,
/// without an allocation per row beyond the event's own name.
fn events_in_order(
    conn: &Connection,
    ids: &[&str],
    whose: Whose<'_>,
    track_names: &[String],
    kinds: &[&'static str],
    bodies: BodyPart,
) -> Result<Vec<Vec<HistoryEvent>>, StoreError> {
    let filter = names_and_kinds(!track_names.is_empty(), !kinds.is_empty(), "?3", "?4");
    let track = serde_json::to_string(track_names).map_err(corrupt)?;
    let kinds = serde_json::to_string(kinds).map_err(corrupt)?;
    // ?2 goes unused for a list (SQLite binds by index up to the largest one written).
    let (people, first, second) = match whose {
        Whose::Range { after, last } => ("profile_id > ?1 AND profile_id <= ?2", after, last),
        Whose::Listed(json) => ("profile_id IN (SELECT value FROM json_each(?1))", json, ""),
    };
    let sql = [
        "SELECT profile_id, kind, name, timestamp, CASE ?5 WHEN 2 THEN body
             WHEN 1 THEN '{\"properties\":' || coalesce(json_extract(body, '$.properties'), '{}') || '}' END
         FROM events WHERE ",
        people,
        " AND ",
        &filter,
        " ORDER BY profile_id, kind, name, timestamp, seq",
    ]
    .concat();
    let mut stmt = conn.prepare_cached(&sql).map_err(unavailable)?;
    let mut rows = stmt
        .query(params![first, second, track, kinds, body_code(bodies)])
        .map_err(unavailable)?;
    let mut out: Vec<Vec<HistoryEvent>> = vec![Vec::new(); ids.len()];
    let mut i = 0;
    while let Some(row) = rows.next().map_err(unavailable)? {
        let text = |n: usize| -> Result<Option<&str>, StoreError> {
            match row.get_ref(n).map_err(unavailable)? {
                rusqlite::types::ValueRef::Null => Ok(None),
                value => value.as_str().map(Some).map_err(corrupt),
            }
        };
        let profile = text(0)?.unwrap_or_default();
        while i < ids.len() && ids[i] < profile {
            i += 1;
        }
        if ids.get(i) != Some(&profile) {
            continue;
        }
        let kind = waymark_core::EventKind::parse(text(1)?.unwrap_or_default());
        let stored_name = text(2)?;
        let name = kind.map_or("", |k| k.display_name(stored_name));
        let body = match text(4)? {
            Some(body) => serde_json::from_str(body).map_err(corrupt)?,
            None => Value::Null,
        };
        out[i].push(HistoryEvent {
            name: name.to_owned(),
            at: row.get(3).map_err(unavailable)?,
            body,
        });
    }
    Ok(out)
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
