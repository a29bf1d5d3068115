//! Versioned migrations, applied in order at start; each runs once, in its own transaction.

use rusqlite::{Connection, OptionalExtension, params};

const MIGRATIONS: &[(i64, &str)] = &[
    (
        1,
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
     CREATE TABLE profiles (
         id TEXT PRIMARY KEY,
         partition INTEGER NOT NULL,
         state TEXT NOT NULL,
         updated_at INTEGER NOT NULL
     );
     CREATE TABLE identities (
         namespace TEXT NOT NULL,
         value TEXT NOT NULL,
         profile_id TEXT NOT NULL,
         PRIMARY KEY (namespace, value)
     ) WITHOUT ROWID;
     CREATE INDEX identities_by_profile ON identities (profile_id);
     CREATE TABLE events (
         seq INTEGER PRIMARY KEY,
         message_id TEXT NOT NULL UNIQUE,
         profile_id TEXT NOT NULL,
         kind TEXT NOT NULL,
         name TEXT,
         timestamp INTEGER NOT NULL,
         received_at INTEGER NOT NULL,
         body TEXT NOT NULL
     );
     CREATE INDEX events_by_profile ON events (profile_id, timestamp, seq);
     CREATE INDEX events_by_time ON events (timestamp);
     CREATE TABLE merges (from_id TEXT NOT NULL, into_id TEXT NOT NULL, at INTEGER NOT NULL);
     CREATE INDEX merges_into ON merges (into_id);",
    ),
    (
        2,
        "CREATE TABLE journeys (
             key TEXT PRIMARY KEY,
             status TEXT NOT NULL,
             draft TEXT NOT NULL,
             draft_updated_at INTEGER NOT NULL,
             live_version INTEGER,
             created_at INTEGER NOT NULL,
             updated_at INTEGER NOT NULL
         );
         CREATE TABLE journey_versions (
             key TEXT NOT NULL,
             version INTEGER NOT NULL,
             document TEXT NOT NULL,
             published_at INTEGER NOT NULL,
             PRIMARY KEY (key, version)
         ) WITHOUT ROWID;",
    ),
    (
        3,
        "CREATE TABLE journey_states (
             profile_id TEXT NOT NULL,
             journey_key TEXT NOT NULL,
             state TEXT NOT NULL,
             updated_at INTEGER NOT NULL,
             PRIMARY KEY (profile_id, journey_key)
         ) WITHOUT ROWID;
         CREATE TABLE journey_timers (
             seq INTEGER PRIMARY KEY,
             due INTEGER NOT NULL,
             profile_id TEXT NOT NULL,
             journey_key TEXT NOT NULL,
             instance INTEGER NOT NULL,
             timer INTEGER NOT NULL
         );
         CREATE INDEX journey_timers_due ON journey_timers (due, seq);
         CREATE INDEX journey_timers_profile ON journey_timers (profile_id);
         CREATE TABLE journey_outbox (
             seq INTEGER PRIMARY KEY,
             key TEXT NOT NULL UNIQUE,
             profile_id TEXT NOT NULL,
             journey_key TEXT NOT NULL,
             kind TEXT NOT NULL,
             effect TEXT NOT NULL,
             status TEXT NOT NULL,
             attempts INTEGER NOT NULL DEFAULT 0,
             next_attempt_at INTEGER NOT NULL,
             created_at INTEGER NOT NULL
         );
         CREATE INDEX journey_outbox_pending ON journey_outbox (status, next_attempt_at);
         CREATE INDEX journey_outbox_profile ON journey_outbox (profile_id, seq);",
    ),
    (
        4,
        "ALTER TABLE journey_outbox ADD COLUMN last_error TEXT;
         ALTER TABLE journey_outbox ADD COLUMN result TEXT;",
    ),
    (
        5,
        "ALTER TABLE journey_outbox ADD COLUMN leased_until INTEGER;",
    ),
    // Stats as counters (filled from existing states by `runs::backfill_counters`), and
    // the live version's entry rate limit with its current window.
    (
        6,
        "CREATE TABLE journey_counters (
             journey_key TEXT NOT NULL,
             node TEXT NOT NULL,
             name TEXT NOT NULL,
             value INTEGER NOT NULL,
             PRIMARY KEY (journey_key, node, name)
         ) WITHOUT ROWID;
         ALTER TABLE journeys ADD COLUMN entry_rate_limit INTEGER;
         ALTER TABLE journeys ADD COLUMN rate_window INTEGER NOT NULL DEFAULT 0;
         ALTER TABLE journeys ADD COLUMN rate_used INTEGER NOT NULL DEFAULT 0;",
    ),
    (
        7,
        "CREATE TABLE templates (
             key TEXT NOT NULL,
             version INTEGER NOT NULL,
             channel TEXT NOT NULL,
             document TEXT NOT NULL,
             created_at INTEGER NOT NULL,
             PRIMARY KEY (key, version)
         );",
    ),
    // Keyed by address first: plans look up a person's addresses on every channel.
    (
        8,
        "CREATE TABLE suppressions (
             address TEXT NOT NULL,
             channel TEXT NOT NULL,
             suppressed INTEGER NOT NULL,
             reason TEXT NOT NULL,
             detail TEXT NOT NULL,
             soft_bounces INTEGER NOT NULL,
             created_at INTEGER NOT NULL,
             updated_at INTEGER NOT NULL,
             PRIMARY KEY (address, channel)
         ) WITHOUT ROWID;
         CREATE INDEX suppressions_by_channel ON suppressions (channel, address);",
    ),
    (
        9,
        "CREATE TABLE inbox_marks (
             key TEXT PRIMARY KEY,
             profile_id TEXT NOT NULL,
             read_at INTEGER,
             dismissed_at INTEGER
         ) WITHOUT ROWID;
         CREATE INDEX inbox_marks_profile ON inbox_marks (profile_id);",
    ),
    // Journey states move from a WITHOUT ROWID table to a rowid table with a unique index.
    // A WITHOUT ROWID row lives in an index b-tree, which keeps at most ~1,000 bytes of a
    // row on its leaf page (4 KiB pages); a state with its step history is a little more,
    // so every state spilled onto an overflow page of its own: ~5 KB on disk and two pages
    // written per state change. A table b-tree keeps rows up to ~4,000 bytes on the leaf.
    (
        10,
        "CREATE TABLE journey_states_by_rowid (
             profile_id TEXT NOT NULL,
             journey_key TEXT NOT NULL,
             state TEXT NOT NULL,
             updated_at INTEGER NOT NULL
         );
         INSERT INTO journey_states_by_rowid (profile_id, journey_key, state, updated_at)
             SELECT profile_id, journey_key, state, updated_at FROM journey_states;
         DROP TABLE journey_states;
         ALTER TABLE journey_states_by_rowid RENAME TO journey_states;
         CREATE UNIQUE INDEX journey_states_key ON journey_states (profile_id, journey_key);",
    ),
    // When a message was sent or given up, and what its provider reported afterwards
    // (delivery receipts, asynchronous bounces, complaints), once per status.
    (
        11,
        "ALTER TABLE journey_outbox ADD COLUMN finished_at INTEGER;
         CREATE TABLE message_events (
             key TEXT NOT NULL,
             status TEXT NOT NULL,
             detail TEXT NOT NULL,
             at INTEGER NOT NULL,
             PRIMARY KEY (key, status)
         ) WITHOUT ROWID;",
    ),
    // Finished outbox rows are pruned by when they finished (`StoreOptions::message_cutoff`);
    // rows finished at planning (skipped by consent or governance) and rows finished before
    // `finished_at` existed get their creation time.
    (
        12,
        "UPDATE journey_outbox SET finished_at = created_at WHERE status != 'pending' AND finished_at IS NULL;
         CREATE INDEX journey_outbox_finished ON journey_outbox (finished_at) WHERE finished_at IS NOT NULL;
         CREATE INDEX merges_at ON merges (at);",
    ),
    // Audiences: documents by version, members (with a size counter per audience), and
    // when each person's audiences must next be decided (time flips a rule, a backfill).
    (
        13,
        "CREATE TABLE audiences (
             key TEXT NOT NULL,
             version INTEGER NOT NULL,
             document TEXT NOT NULL,
             created_at INTEGER NOT NULL,
             PRIMARY KEY (key, version)
         ) WITHOUT ROWID;
         CREATE TABLE audience_members (
             audience_key TEXT NOT NULL,
             profile_id TEXT NOT NULL,
             since INTEGER NOT NULL,
             PRIMARY KEY (audience_key, profile_id)
         ) WITHOUT ROWID;
         CREATE INDEX audience_members_by_profile ON audience_members (profile_id);
         CREATE TABLE audience_sizes (
             audience_key TEXT PRIMARY KEY,
             members INTEGER NOT NULL,
             last_change INTEGER
         ) WITHOUT ROWID;
         CREATE TABLE audience_checks (
             profile_id TEXT PRIMARY KEY,
             due_at INTEGER NOT NULL
         ) WITHOUT ROWID;
         CREATE INDEX audience_checks_due ON audience_checks (due_at);",
    ),
    // Audience decisions read a person's events of some names without their bodies: an
    // index that answers that alone. Backfills as a pass over profile ids that commits
    // where it stands (checks a backfill scheduled before are still fired as checks);
    // sizes by the hour.
    (
        14,
        "CREATE INDEX events_by_name ON events (profile_id, kind, name, timestamp, seq);
         CREATE TABLE audience_backfills (
             audience_key TEXT PRIMARY KEY,
             after_profile TEXT NOT NULL,
             started_at INTEGER NOT NULL,
             decided INTEGER NOT NULL
         ) WITHOUT ROWID;
         CREATE TABLE audience_size_history (
             audience_key TEXT NOT NULL,
             hour INTEGER NOT NULL,
             members INTEGER NOT NULL,
             entered INTEGER NOT NULL,
             exited INTEGER NOT NULL,
             PRIMARY KEY (audience_key, hour)
         ) WITHOUT ROWID;",
    ),
    // When each scheduled snapshot audience runs next.
    (
        15,
        "CREATE TABLE audience_schedules (
             audience_key TEXT PRIMARY KEY,
             next_run INTEGER NOT NULL
         ) WITHOUT ROWID;
         CREATE INDEX audience_schedules_due ON audience_schedules (next_run);",
    ),
    // Journeys that read an audience: when the next read runs, and how far the one in
    // progress has got (its cursor commits with the entries it made).
    (
        16,
        "CREATE TABLE journey_reads (
             journey_key TEXT PRIMARY KEY,
             due_at INTEGER,
             started_at INTEGER,
             after_profile TEXT NOT NULL,
             members_read INTEGER NOT NULL,
             excluded INTEGER NOT NULL,
             last_finished_at INTEGER,
             last_read INTEGER NOT NULL,
             last_excluded INTEGER NOT NULL
         ) WITHOUT ROWID;
         CREATE INDEX journey_reads_due ON journey_reads (due_at) WHERE due_at IS NOT NULL;",
    ),
    // Winner nodes' decisions (A/B tests that send the best path to the rest): written once.
    (
        17,
        "CREATE TABLE journey_winners (
             journey_key TEXT NOT NULL,
             node TEXT NOT NULL,
             chosen TEXT NOT NULL,
             decision TEXT NOT NULL,
             decided_at INTEGER NOT NULL,
             PRIMARY KEY (journey_key, node)
         ) WITHOUT ROWID;",
    ),
    // Node counters per hour (a journey's and a campaign's time series): only increases of
    // counters that count things happening (`waymark_engine::stats::SERIES`).
    (
        18,
        "CREATE TABLE journey_counter_hours (
             journey_key TEXT NOT NULL,
             node TEXT NOT NULL,
             name TEXT NOT NULL,
             hour INTEGER NOT NULL,
             value INTEGER NOT NULL,
             PRIMARY KEY (journey_key, node, name, hour)
         ) WITHOUT ROWID;",
    ),
    // The decisioning catalogue (each document kept as versions, like audiences) and
    // displays and clicks of each offer on each placement by the hour, from feedback events.
    (
        19,
        "CREATE TABLE offers (
             key TEXT NOT NULL,
             version INTEGER NOT NULL,
             document TEXT NOT NULL,
             created_at INTEGER NOT NULL,
             PRIMARY KEY (key, version)
         ) WITHOUT ROWID;
         CREATE TABLE placements (
             key TEXT NOT NULL,
             version INTEGER NOT NULL,
             document TEXT NOT NULL,
             created_at INTEGER NOT NULL,
             PRIMARY KEY (key, version)
         ) WITHOUT ROWID;
         CREATE TABLE collections (
             key TEXT NOT NULL,
             version INTEGER NOT NULL,
             document TEXT NOT NULL,
             created_at INTEGER NOT NULL,
             PRIMARY KEY (key, version)
         ) WITHOUT ROWID;
         CREATE TABLE decision_policies (
             key TEXT NOT NULL,
             version INTEGER NOT NULL,
             document TEXT NOT NULL,
             created_at INTEGER NOT NULL,
             PRIMARY KEY (key, version)
         ) WITHOUT ROWID;
         CREATE TABLE offer_counts (
             offer TEXT NOT NULL,
             placement TEXT NOT NULL,
             hour INTEGER NOT NULL,
             displays INTEGER NOT NULL,
             clicks INTEGER NOT NULL,
             PRIMARY KEY (offer, placement, hour)
         ) WITHOUT ROWID;",
    ),
    // Content journeys placed on a surface for a person (`code_based` messages), kept while
    // the instance that placed it lasts; what decisions read ahead of offers.
    (
        20,
        "CREATE TABLE placed_content (
             key TEXT PRIMARY KEY,
             profile_id TEXT NOT NULL,
             journey_key TEXT NOT NULL,
             instance INTEGER NOT NULL,
             surface TEXT NOT NULL,
             priority INTEGER NOT NULL,
             placed_at INTEGER NOT NULL,
             expires_at INTEGER,
             content TEXT NOT NULL
         ) WITHOUT ROWID;
         CREATE INDEX placed_content_by_profile ON placed_content (profile_id, journey_key, instance);
         CREATE INDEX placed_content_by_journey ON placed_content (journey_key);
         CREATE INDEX placed_content_expiry ON placed_content (expires_at) WHERE expires_at IS NOT NULL;",
    ),
];

pub fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)",
    )?;
    for (version, sql) in MIGRATIONS {
        let applied: Option<i64> = conn
            .query_row(
                "SELECT version FROM schema_migrations WHERE version = ?1",
                [version],
                |r| r.get(0),
            )
            .optional()?;
        if applied.is_some() {
            continue;
        }
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        if *version == 6 {
            crate::runs::backfill(&tx).map_err(|e| {
                rusqlite::Error::ToSqlConversionFailure(format!("migration 6: {e}").into())
            })?;
        }
        tx.execute(
            "INSERT INTO schema_migrations (version, applied_at) VALUES (?1, unixepoch())",
            [version],
        )?;
        tx.commit()?;
        tracing::info!(version, "applied sqlite migration");
    }
    Ok(())
}

/// The store's partition count: recorded on first open, read back ever after.
pub fn partitions(conn: &Connection, wanted: u32) -> rusqlite::Result<u32> {
    conn.execute(
        "INSERT OR IGNORE INTO meta (key, value) VALUES ('partitions', ?1)",
        params![wanted.to_string()],
    )?;
    let value: String =
        conn.query_row("SELECT value FROM meta WHERE key = 'partitions'", [], |r| {
            r.get(0)
        })?;
    value.parse().map_err(|_| {
        rusqlite::Error::InvalidColumnType(0, "partitions".into(), rusqlite::types::Type::Text)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journey_states_keep_their_rows_and_key_across_migration_10() {
        let mut conn = Connection::open_in_memory().expect("open");
        conn.execute_batch(
            "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)",
        )
        .expect("create");
        for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v < 10) {
            conn.execute_batch(sql).expect("old migration");
            conn.execute(
                "INSERT INTO schema_migrations (version, applied_at) VALUES (?1, 0)",
                [version],
            )
            .expect("record");
        }
        conn.execute(
            "INSERT INTO journey_states (profile_id, journey_key, state, updated_at) VALUES ('p1', 'j', '{\"instances\":[]}', 7)",
            [],
        )
        .expect("old row");

        migrate(&mut conn).expect("migrate");

        let (state, at): (String, i64) = conn
            .query_row(
                "SELECT state, updated_at FROM journey_states WHERE profile_id = 'p1' AND journey_key = 'j'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .expect("row kept");
        assert_eq!((state.as_str(), at), ("{\"instances\":[]}", 7));
        let sql: String = conn
            .query_row(
                "SELECT sql FROM sqlite_master WHERE name = 'journey_states'",
                [],
                |r| r.get(0),
            )
            .expect("table");
        assert!(!sql.contains("WITHOUT ROWID"), "{sql}");
        // The upsert the runtime uses still finds the row by its key.
        conn.execute(
            "INSERT INTO journey_states (profile_id, journey_key, state, updated_at) VALUES ('p1', 'j', 'new', 8)
             ON CONFLICT (profile_id, journey_key) DO UPDATE SET state = excluded.state",
            [],
        )
        .expect("upsert");
        let rows: i64 = conn
            .query_row("SELECT count(*) FROM journey_states", [], |r| r.get(0))
            .expect("count");
        assert_eq!(rows, 1);
    }
}
