//! Audiences on PostgreSQL: documents (every changed one a new version), memberships with a
//! size counter per audience, and one check row per person (when their audiences must be
//! decided again). Decisions are `waymark_store::pipeline`'s; this is their SQL. A put
//! holds an advisory lock on the key, so concurrent puts number versions without gaps.

use deadpool_postgres::GenericClient;
use serde_json::Value;
use waymark_core::time::Millis;
use waymark_core::{Event, ProfileState};
use waymark_engine::audience::{AudiencePlan, BodyPart, HistoryEvent};
use waymark_store::pipeline::{SizeChange, attach_memberships};
use waymark_store::{
    AudienceMember, AudienceRecord, AudienceSave, AudienceStatus, BackfillProgress, ScanReads,
    ScannedPerson, SizeAt, StoreError, body_code,
};

use crate::versioned::{self, Kind};
use crate::{Abort, db_error};

fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("audience: {e}"))
}

pub async fn read(
    client: &impl GenericClient,
    key: &str,
) -> Result<Option<AudienceRecord>, StoreError> {
    Ok(versioned::read(client, Kind::Audience, key)
        .await?
        .map(|v| v.into_audience(key)))
}

pub async fn list(client: &impl GenericClient) -> Result<Vec<AudienceRecord>, StoreError> {
    let mut out = Vec::new();
    for key in versioned::keys(client, Kind::Audience).await? {
        out.extend(read(client, &key).await?);
    }
    Ok(out)
}

/// Stores a changed document as a new version and, as `save` says, starts (or starts
/// again) its backfill and sets its next scheduled run.
pub async fn put(
    client: &mut deadpool_postgres::Client,
    key: &str,
    document: &Value,
    save: &AudienceSave,
    now: Millis,
) -> Result<(AudienceRecord, bool), StoreError> {
    let tx = client.transaction().await.map_err(db_error)?;
    let (versions, created) = versioned::put(&tx, Kind::Audience, key, document, now).await?;
    if created {
        if save.backfill {
            start_backfill(&tx, key, now).await?;
        }
        set_next_run(&tx, key, save.next_run).await?;
    }
    tx.commit().await.map_err(db_error)?;
    Ok((versions.into_audience(key), created))
}

/// Everyone decided for the audience, in profile id order, from the first person (when
/// there is anyone: people who come later are decided as their events arrive).
pub async fn start_backfill(
    client: &impl GenericClient,
    key: &str,
    now: Millis,
) -> Result<(), Abort> {
    client
        .execute(
            "INSERT INTO audience_backfills (audience_key, after_profile, started_at, decided)
             SELECT $1, '', $2, 0 WHERE EXISTS (SELECT 1 FROM profiles)
             ON CONFLICT (audience_key) DO UPDATE SET after_profile = '', started_at = $2, decided = 0",
            &[&key, &now],
        )
        .await?;
    Ok(())
}

pub async fn set_next_run(
    client: &impl GenericClient,
    key: &str,
    next: Option<Millis>,
) -> Result<(), Abort> {
    match next {
        Some(at) => {
            client
                .execute(
                    "INSERT INTO audience_schedules (audience_key, next_run) VALUES ($1, $2)
                     ON CONFLICT (audience_key) DO UPDATE SET next_run = $2",
                    &[&key, &at],
                )
                .await?
        }
        None => {
            client
                .execute(
                    "DELETE FROM audience_schedules WHERE audience_key = $1",
                    &[&key],
                )
                .await?
        }
    };
    Ok(())
}

pub async fn next_run(
    client: &impl GenericClient,
    key: &str,
) -> Result<Option<Millis>, StoreError> {
    Ok(client
        .query_opt(
            "SELECT next_run FROM audience_schedules WHERE audience_key = $1",
            &[&key],
        )
        .await
        .map_err(db_error)?
        .map(|r| r.get(0)))
}

pub async fn due_runs(
    client: &impl GenericClient,
    now: Millis,
    limit: u32,
) -> Result<Vec<String>, Abort> {
    let rows = client
        .query(
            "SELECT audience_key FROM audience_schedules WHERE next_run <= $1
             ORDER BY next_run LIMIT $2 FOR UPDATE SKIP LOCKED",
            &[&now, &i64::from(limit)],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

pub async fn status(client: &impl GenericClient, key: &str) -> Result<AudienceStatus, StoreError> {
    let size = client
        .query_opt(
            "SELECT members, last_change FROM audience_sizes WHERE audience_key = $1",
            &[&key],
        )
        .await
        .map_err(db_error)?;
    let (members, last_change) = size.map_or((0, None), |r| (r.get::<_, i64>(0), r.get(1)));
    // Checks due since before the newest version are people still to decide as well.
    let overdue: i64 = client
        .query_one(
            "SELECT count(*) FROM audience_checks
             WHERE due_at <= (SELECT max(created_at) FROM audiences WHERE key = $1)",
            &[&key],
        )
        .await
        .map_err(db_error)?
        .get(0);
    let backfill = client
        .query_opt(
            "SELECT b.started_at, b.decided, (SELECT count(*) FROM profiles WHERE id > b.after_profile)
             FROM audience_backfills b WHERE audience_key = $1",
            &[&key],
        )
        .await
        .map_err(db_error)?;
    let (remaining, backfill) = match backfill {
        Some(r) => {
            let progress = BackfillProgress {
                started_at: r.get(0),
                decided: r.get::<_, i64>(1).max(0) as u64,
            };
            (r.get::<_, i64>(2), Some(progress))
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

pub async fn members(
    client: &impl GenericClient,
    key: &str,
    after: Option<&str>,
    limit: u32,
) -> Result<Vec<AudienceMember>, StoreError> {
    let rows = client
        .query(
            "SELECT profile_id, since FROM audience_members WHERE audience_key = $1 AND profile_id > $2
             ORDER BY profile_id LIMIT $3",
            &[&key, &after.unwrap_or(""), &i64::from(limit)],
        )
        .await
        .map_err(db_error)?;
    Ok(rows
        .iter()
        .map(|r| AudienceMember {
            profile_id: r.get(0),
            since: r.get(1),
        })
        .collect())
}

pub async fn profile_audiences(
    client: &impl GenericClient,
    profile_id: &str,
) -> Result<Vec<(String, Millis)>, StoreError> {
    let rows = client
        .query(
            "SELECT audience_key, since FROM audience_members WHERE profile_id = $1 ORDER BY audience_key",
            &[&profile_id],
        )
        .await
        .map_err(db_error)?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

pub async fn profile_history(
    client: &impl GenericClient,
    profile_id: &str,
    names: &[String],
) -> Result<Vec<HistoryEvent>, StoreError> {
    let (track, kinds) = waymark_core::event::stored_names(names);
    let mut events = history(client, &[profile_id], &track, &kinds, BodyPart::Whole)
        .await?
        .pop()
        .unwrap_or_default();
    events.sort_by_key(|e| e.at);
    Ok(events)
}

pub async fn version(
    client: &impl GenericClient,
    key: &str,
    version: u32,
) -> Result<Option<Value>, Abort> {
    Ok(versioned::version(client, Kind::Audience, key, version).await?)
}

pub async fn newest_versions(client: &impl GenericClient) -> Result<Vec<(String, u32)>, Abort> {
    Ok(versioned::newest(client, Kind::Audience).await?)
}

pub async fn history(
    client: &impl GenericClient,
    profile_ids: &[&str],
    track_names: &[String],
    kinds: &[&'static str],
    bodies: BodyPart,
) -> Result<Vec<Vec<HistoryEvent>>, Abort> {
    let rows = event_rows(
        client,
        Whose::Listed(profile_ids),
        track_names,
        kinds,
        bodies,
    )
    .await?;
    Ok(group_events(profile_ids, rows))
}

/// A stored event as audience runs read it: (profile id, kind, name, event time, body).
type HistoryRow = (String, String, Option<String>, Millis, Value);

/// Stored events (rows of any order) as behaviour calls see them (by display name), each
/// person's in the order of `ids`; rows of anyone else are left out.
fn group_events(ids: &[&str], rows: Vec<HistoryRow>) -> Vec<Vec<HistoryEvent>> {
    let mut index: std::collections::HashMap<&str, usize> =
        std::collections::HashMap::with_capacity(ids.len());
    for (i, id) in ids.iter().enumerate() {
        index.entry(id).or_insert(i);
    }
    let mut out: Vec<Vec<HistoryEvent>> = vec![Vec::new(); ids.len()];
    for (profile, kind, name, at, body) in rows {
        if let Some(&i) = index.get(profile.as_str()) {
            let name = waymark_core::event::display_name(&kind, name.as_deref());
            out[i].push(HistoryEvent {
                name: name.into(),
                at,
                body,
            });
        }
    }
    out
}

/// Whose events a read takes.
enum Whose<'a> {
    Listed(&'a [&'a str]),
    /// Ids in (after, last].
    Range {
        after: &'a str,
        last: &'a str,
    },
}

/// Kept events of these track names and kinds, as rows.
async fn event_rows(
    client: &impl GenericClient,
    whose: Whose<'_>,
    track_names: &[String],
    kinds: &[&'static str],
    bodies: BodyPart,
) -> Result<Vec<HistoryRow>, Abort> {
    let kinds: Vec<&str> = kinds.to_vec();
    let code = body_code(bodies);
    let columns = "SELECT profile_id, kind, name, timestamp, CASE $1::bigint WHEN 2 THEN body::text
             WHEN 1 THEN jsonb_build_object('properties', coalesce(body->'properties', '{}'::jsonb))::text END
         FROM events WHERE ((kind = 'track' AND name = ANY($2)) OR kind = ANY($3)) AND ";
    let order = " ORDER BY profile_id, kind, name, timestamp, seq";
    let rows = match whose {
        Whose::Listed(ids) => {
            let sql = [columns, "profile_id = ANY($4)", order].concat();
            client
                .query(&sql, &[&code, &track_names, &kinds, &ids])
                .await?
        }
        Whose::Range { after, last } => {
            let sql = [columns, "profile_id > $4 AND profile_id <= $5", order].concat();
            client
                .query(&sql, &[&code, &track_names, &kinds, &after, &last])
                .await?
        }
    };
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let body: Value = match r.get::<_, Option<String>>(4) {
            Some(body) => serde_json::from_str(&body).map_err(corrupt)?,
            None => Value::Null,
        };
        out.push((r.get(0), r.get(1), r.get(2), r.get(3), body));
    }
    Ok(out)
}

pub async fn memberships(
    client: &impl GenericClient,
    profile_ids: &[&str],
) -> Result<Vec<(String, String, Millis)>, Abort> {
    let rows = client
        .query(
            "SELECT profile_id, audience_key, since FROM audience_members WHERE profile_id = ANY($1)",
            &[&profile_ids],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect())
}

/// Writes a membership plan with a statement per kind of row (arrays through `unnest`), so
/// a batch of a thousand people costs a handful of round trips, not thousands.
pub async fn write(
    client: &impl GenericClient,
    plan: &AudiencePlan,
    events: &[(&str, &Event)],
    now: Millis,
) -> Result<(), Abort> {
    // Entries and exits really made (a row inserted or deleted) per audience.
    let mut sizes: std::collections::BTreeMap<String, SizeChange> = Default::default();
    let (entered, exited): (Vec<_>, Vec<_>) = plan.changes.iter().partition(|c| c.entered);
    if !entered.is_empty() {
        let audiences: Vec<&str> = entered.iter().map(|c| c.audience.as_str()).collect();
        let people: Vec<&str> = entered.iter().map(|c| c.profile_id.as_str()).collect();
        let since: Vec<i64> = entered.iter().map(|c| c.at).collect();
        let rows = client
            .query(
                "INSERT INTO audience_members (audience_key, profile_id, since)
                 SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[])
                 ON CONFLICT DO NOTHING RETURNING audience_key, since",
                &[&audiences, &people, &since],
            )
            .await?;
        for r in rows {
            sizes.entry(r.get(0)).or_default().add(true, r.get(1));
        }
    }
    if !exited.is_empty() {
        let audiences: Vec<&str> = exited.iter().map(|c| c.audience.as_str()).collect();
        let people: Vec<&str> = exited.iter().map(|c| c.profile_id.as_str()).collect();
        let rows = client
            .query(
                "DELETE FROM audience_members m USING unnest($1::text[], $2::text[]) AS gone (a, p)
                 WHERE m.audience_key = gone.a AND m.profile_id = gone.p RETURNING m.audience_key",
                &[&audiences, &people],
            )
            .await?;
        for r in rows {
            sizes.entry(r.get(0)).or_default().add(false, now);
        }
    }
    for (audience, change) in &sizes {
        record_size(client, audience, change).await?;
    }
    if !events.is_empty() {
        let ids: Vec<&str> = events.iter().map(|(_, e)| e.message_id.as_str()).collect();
        let owners: Vec<&str> = events.iter().map(|(p, _)| *p).collect();
        let kinds: Vec<&str> = events.iter().map(|(_, e)| e.kind.as_str()).collect();
        let names: Vec<Option<&str>> = events.iter().map(|(_, e)| e.name.as_deref()).collect();
        let times: Vec<i64> = events.iter().map(|(_, e)| e.timestamp).collect();
        let bodies: Vec<String> = events
            .iter()
            .map(|(_, e)| e.to_json().to_string())
            .collect();
        client
            .execute(
                "INSERT INTO events (message_id, profile_id, kind, name, timestamp, received_at, body)
                 SELECT m, p, k, n, t, $6, b::jsonb
                 FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], $7::text[])
                   WITH ORDINALITY AS u(m, p, k, n, t, b, o)
                 ORDER BY o
                 ON CONFLICT (message_id) DO NOTHING",
                &[&ids, &owners, &kinds, &names, &times, &now, &bodies],
            )
            .await?;
    }
    let mut replace: (Vec<&str>, Vec<i64>) = Default::default();
    let mut sooner: (Vec<&str>, Vec<i64>) = Default::default();
    let mut clear: Vec<&str> = Vec::new();
    for check in &plan.checks {
        match (check.due, check.exact) {
            (Some(due), true) => {
                replace.0.push(&check.profile_id);
                replace.1.push(due);
            }
            (Some(due), false) => {
                sooner.0.push(&check.profile_id);
                sooner.1.push(due);
            }
            (None, true) => clear.push(&check.profile_id),
            (None, false) => {}
        }
    }
    if !replace.0.is_empty() {
        client
            .execute(
                "INSERT INTO audience_checks (profile_id, due_at)
                 SELECT * FROM unnest($1::text[], $2::bigint[])
                 ON CONFLICT (profile_id) DO UPDATE SET due_at = excluded.due_at
                 WHERE excluded.due_at != audience_checks.due_at",
                &[&replace.0, &replace.1],
            )
            .await?;
    }
    if !sooner.0.is_empty() {
        client
            .execute(
                "INSERT INTO audience_checks (profile_id, due_at)
                 SELECT * FROM unnest($1::text[], $2::bigint[])
                 ON CONFLICT (profile_id) DO UPDATE SET due_at = excluded.due_at
                 WHERE excluded.due_at < audience_checks.due_at",
                &[&sooner.0, &sooner.1],
            )
            .await?;
    }
    if !clear.is_empty() {
        client
            .execute(
                "DELETE FROM audience_checks WHERE profile_id = ANY($1)",
                &[&clear],
            )
            .await?;
    }
    Ok(())
}

pub async fn due_checks(
    client: &impl GenericClient,
    now: Millis,
    limit: u32,
) -> Result<Vec<String>, Abort> {
    let rows = client
        .query(
            "SELECT profile_id FROM audience_checks WHERE due_at <= $1
             ORDER BY due_at LIMIT $2 FOR UPDATE SKIP LOCKED",
            &[&now, &i64::from(limit)],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

pub async fn forget(
    client: &impl GenericClient,
    profile_id: &str,
    recheck: Option<&str>,
    now: Millis,
) -> Result<(), Abort> {
    let left = client
        .query(
            "DELETE FROM audience_members WHERE profile_id = $1 RETURNING audience_key",
            &[&profile_id],
        )
        .await?;
    for row in left {
        let mut change = SizeChange::default();
        change.add(false, now);
        record_size(client, row.get(0), &change).await?;
    }
    client
        .execute(
            "DELETE FROM audience_checks WHERE profile_id = $1",
            &[&profile_id],
        )
        .await?;
    if let Some(into) = recheck {
        client
            .execute(
                "INSERT INTO audience_checks (profile_id, due_at) VALUES ($1, $2)
                 ON CONFLICT (profile_id) DO UPDATE SET due_at = least(audience_checks.due_at, excluded.due_at)",
                &[&into, &now],
            )
            .await?;
    }
    Ok(())
}

/// Adds entries and exits to an audience's size and to its hour of size history.
async fn record_size(
    client: &impl GenericClient,
    audience: &str,
    change: &SizeChange,
) -> Result<(), Abort> {
    client
        .execute(
            "WITH size AS (
                 INSERT INTO audience_sizes (audience_key, members, last_change) VALUES ($1, $2, $3)
                 ON CONFLICT (audience_key) DO UPDATE SET members = audience_sizes.members + excluded.members,
                     last_change = greatest(audience_sizes.last_change, excluded.last_change)
                 RETURNING members)
             INSERT INTO audience_size_history (audience_key, hour, members, entered, exited)
             SELECT $1, $4, members, $5, $6 FROM size
             ON CONFLICT (audience_key, hour) DO UPDATE SET members = excluded.members,
                 entered = audience_size_history.entered + excluded.entered,
                 exited = audience_size_history.exited + excluded.exited",
            &[
                &audience,
                &change.delta(),
                &change.at,
                &change.hour(),
                &(change.entered as i64),
                &(change.exited as i64),
            ],
        )
        .await?;
    Ok(())
}

/// The backfills in progress, furthest behind first (in the order `profiles_after`
/// reads), locked: a step and a new version of the same audience (which starts its
/// backfill again) take turns.
pub async fn backfills(client: &impl GenericClient) -> Result<Vec<(String, String)>, Abort> {
    let rows = client
        .query(
            "SELECT audience_key, after_profile FROM audience_backfills ORDER BY after_profile, audience_key FOR UPDATE",
            &[],
        )
        .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

pub async fn profiles_after(
    client: &impl GenericClient,
    after: &str,
    limit: u32,
) -> Result<Vec<String>, Abort> {
    let rows = client
        .query(
            "SELECT id FROM profiles WHERE id > $1 ORDER BY id LIMIT $2",
            &[&after, &i64::from(limit)],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

pub async fn advance_backfills(
    client: &impl GenericClient,
    keys: &[String],
    to: Option<&str>,
    decided: u64,
) -> Result<(), Abort> {
    match to {
        Some(to) => {
            client
                .execute(
                    "UPDATE audience_backfills SET after_profile = greatest(after_profile, $2),
                         decided = decided + $3 WHERE audience_key = ANY($1)",
                    &[&keys, &to, &(decided as i64)],
                )
                .await?
        }
        None => {
            client
                .execute(
                    "DELETE FROM audience_backfills WHERE audience_key = ANY($1)",
                    &[&keys],
                )
                .await?
        }
    };
    Ok(())
}

/// Size by the hour, oldest first, for the hours since `since` in which it changed.
pub async fn size_history(
    client: &impl GenericClient,
    key: &str,
    since: Millis,
) -> Result<Vec<SizeAt>, StoreError> {
    let rows = client
        .query(
            "SELECT hour, members, entered, exited FROM audience_size_history
             WHERE audience_key = $1 AND hour >= $2 ORDER BY hour",
            &[&key, &since],
        )
        .await
        .map_err(db_error)?;
    Ok(rows
        .iter()
        .map(|r| SizeAt {
            hour: r.get(0),
            members: r.get::<_, i64>(1).max(0) as u64,
            entered: r.get::<_, i64>(2).max(0) as u64,
            exited: r.get::<_, i64>(3).max(0) as u64,
        })
        .collect())
}

/// People in (after, until] for batch evaluation, read in one snapshot.
pub async fn scan_people(
    client: &mut deadpool_postgres::Client,
    after: &str,
    until: Option<&str>,
    limit: u32,
    reads: &ScanReads,
) -> Result<Vec<ScannedPerson>, StoreError> {
    let tx = crate::snapshot(client).await?;
    let rows = tx
        .query(
            "SELECT id, CASE $4::bigint WHEN 2 THEN state::text
                 WHEN 1 THEN jsonb_build_object('traits', coalesce(state->'traits', '{}'::jsonb))::text END
             FROM profiles WHERE id > $1 AND ($2::text IS NULL OR id <= $2) ORDER BY id LIMIT $3",
            &[&after, &until, &i64::from(limit), &reads.profile.code()],
        )
        .await
        .map_err(db_error)?;
    let mut people = Vec::with_capacity(rows.len());
    // The last in the database's order bounds the reads below.
    let mut last: Option<String> = None;
    for r in rows {
        let profile = reads.decode_profile(r.get(0), r.get(1))?;
        last = Some(profile.id.clone());
        people.push(ScannedPerson {
            profile,
            events: Vec::new(),
            members: Default::default(),
        });
    }
    let Some(last) = last else {
        return Ok(people);
    };
    if !(reads.track_names.is_empty() && reads.kinds.is_empty()) {
        let rows = event_rows(
            &tx,
            Whose::Range { after, last: &last },
            &reads.track_names,
            &reads.kinds,
            reads.bodies,
        )
        .await?;
        let ids: Vec<&str> = people.iter().map(|p| p.profile.id.as_str()).collect();
        let events = group_events(&ids, rows);
        for (person, events) in people.iter_mut().zip(events) {
            person.events = events;
        }
    }
    let memberships = if reads.memberships {
        tx.query(
            "SELECT profile_id, audience_key, since FROM audience_members
             WHERE profile_id > $1 AND profile_id <= $2",
            &[&after, &last],
        )
        .await
        .map_err(db_error)?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
    } else {
        Vec::new()
    };
    tx.commit().await.map_err(db_error)?;
    attach_memberships(&mut people, memberships);
    Ok(people)
}

/// Kept events of these people (one statement: one snapshot).
pub async fn people_events(
    client: &impl GenericClient,
    ids: &[String],
    reads: &ScanReads,
) -> Result<Vec<Vec<HistoryEvent>>, StoreError> {
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    Ok(history(client, &ids, &reads.track_names, &reads.kinds, reads.bodies).await?)
}

pub async fn profile_splits(
    client: &impl GenericClient,
    parts: u32,
) -> Result<Vec<String>, StoreError> {
    let rows = client
        .query(
            "SELECT DISTINCT percentile_disc(f) WITHIN GROUP (ORDER BY id)
             FROM profiles, unnest($1::float8[]) AS f GROUP BY f ORDER BY 1",
            &[&(1..parts.max(1))
                .map(|p| f64::from(p) / f64::from(parts))
                .collect::<Vec<f64>>()],
        )
        .await
        .map_err(db_error)?;
    Ok(rows.iter().filter_map(|r| r.get(0)).collect())
}

pub async fn profile_ids_of(
    client: &impl GenericClient,
    identities: &[waymark_core::Identity],
) -> Result<Vec<Option<String>>, StoreError> {
    let namespaces: Vec<&str> = identities.iter().map(|i| i.namespace.as_str()).collect();
    let values: Vec<&str> = identities.iter().map(|i| i.value.as_str()).collect();
    let rows = client
        .query(
            "SELECT i.namespace, i.value, i.profile_id FROM identities i
             JOIN unnest($1::text[], $2::text[]) AS q (ns, v) ON i.namespace = q.ns AND i.value = q.v",
            &[&namespaces, &values],
        )
        .await
        .map_err(db_error)?;
    let found: std::collections::HashMap<(String, String), String> = rows
        .iter()
        .map(|r| ((r.get(0), r.get(1)), r.get(2)))
        .collect();
    Ok(namespaces
        .iter()
        .zip(&values)
        .map(|(ns, v)| found.get(&((*ns).to_owned(), (*v).to_owned())).cloned())
        .collect())
}

pub async fn member_profiles(
    client: &impl GenericClient,
    key: &str,
    after: &str,
    limit: u32,
) -> Result<Vec<(AudienceMember, ProfileState)>, StoreError> {
    let rows = client
        .query(
            "SELECT m.profile_id, m.since, p.state::text FROM audience_members m
             JOIN profiles p ON p.id = m.profile_id
             WHERE m.audience_key = $1 AND m.profile_id > $2 ORDER BY m.profile_id LIMIT $3",
            &[&key, &after, &i64::from(limit)],
        )
        .await
        .map_err(db_error)?;
    rows.iter()
        .map(|r| {
            Ok((
                AudienceMember {
                    profile_id: r.get(0),
                    since: r.get(1),
                },
                crate::decode_profile(r.get(2))?,
            ))
        })
        .collect()
}
