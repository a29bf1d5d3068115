//! Versioned migrations, applied in order at start under an advisory lock, so several nodes
//! starting together migrate once.

use deadpool_postgres::Client;
use tokio_postgres::Error;
use waymark_store::StoreError;

/// Arbitrary constant: the advisory lock key that serialises migrations.
const MIGRATION_LOCK: i64 = 0x5741_594d_4152_4b31;

const MIGRATIONS: &[(i32, &str)] = &[
    (
        1,
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
     CREATE TABLE profiles (
         id TEXT PRIMARY KEY,
         partition INTEGER NOT NULL,
         state JSONB NOT NULL,
         updated_at BIGINT NOT NULL
     );
     CREATE TABLE identities (
         namespace TEXT NOT NULL,
         value TEXT NOT NULL,
         profile_id TEXT NOT NULL,
         PRIMARY KEY (namespace, value)
     );
     CREATE INDEX identities_by_profile ON identities (profile_id);
     CREATE TABLE events (
         seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
         message_id TEXT NOT NULL UNIQUE,
         profile_id TEXT NOT NULL,
         kind TEXT NOT NULL,
         name TEXT,
         timestamp BIGINT NOT NULL,
         received_at BIGINT NOT NULL,
         body JSONB NOT NULL
     );
     CREATE INDEX events_by_profile ON events (profile_id, timestamp, seq);
     CREATE INDEX events_by_time ON events (timestamp);
     CREATE TABLE merges (from_id TEXT NOT NULL, into_id TEXT NOT NULL, at BIGINT NOT NULL);
     CREATE INDEX merges_into ON merges (into_id);",
    ),
    (
        2,
        "CREATE TABLE journeys (
             key TEXT PRIMARY KEY,
             status TEXT NOT NULL,
             draft JSONB NOT NULL,
             draft_updated_at BIGINT NOT NULL,
             live_version INTEGER,
             created_at BIGINT NOT NULL,
             updated_at BIGINT NOT NULL
         );
         CREATE TABLE journey_versions (
             key TEXT NOT NULL,
             version INTEGER NOT NULL,
             document JSONB NOT NULL,
             published_at BIGINT NOT NULL,
             PRIMARY KEY (key, version)
         );",
    ),
    (
        3,
        "CREATE TABLE journey_states (
             profile_id TEXT NOT NULL,
             journey_key TEXT NOT NULL,
             state JSONB NOT NULL,
             updated_at BIGINT NOT NULL,
             PRIMARY KEY (profile_id, journey_key)
         );
         CREATE TABLE journey_timers (
             seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
             due BIGINT NOT NULL,
             profile_id TEXT NOT NULL,
             journey_key TEXT NOT NULL,
             instance INTEGER NOT NULL,
             timer BIGINT NOT NULL
         );
         CREATE INDEX journey_timers_due ON journey_timers (due, seq);
         CREATE INDEX journey_timers_profile ON journey_timers (profile_id);
         CREATE TABLE journey_outbox (
             seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
             key TEXT NOT NULL UNIQUE,
             profile_id TEXT NOT NULL,
             journey_key TEXT NOT NULL,
             kind TEXT NOT NULL,
             effect JSONB NOT NULL,
             status TEXT NOT NULL,
             attempts INTEGER NOT NULL DEFAULT 0,
             next_attempt_at BIGINT NOT NULL,
             created_at BIGINT NOT NULL
         );
         CREATE INDEX journey_outbox_pending ON journey_outbox (status, next_attempt_at);
         CREATE INDEX journey_outbox_profile ON journey_outbox (profile_id, seq);",
    ),
    (
        4,
        "ALTER TABLE journey_outbox ADD COLUMN last_error TEXT;
         ALTER TABLE journey_outbox ADD COLUMN result JSONB;",
    ),
    (
        5,
        "ALTER TABLE journey_outbox ADD COLUMN leased_until BIGINT;",
    ),
    // Stats as counters (filled from existing states by `runs::backfill`), spread over
    // shards so concurrent transactions rarely wait on one row; and the live version's entry
    // rate limit with its current window.
    (
        6,
        "CREATE TABLE journey_counters (
             journey_key TEXT NOT NULL,
             node TEXT NOT NULL,
             name TEXT NOT NULL,
             shard SMALLINT NOT NULL,
             value BIGINT NOT NULL,
             PRIMARY KEY (journey_key, node, name, shard)
         );
         ALTER TABLE journeys ADD COLUMN entry_rate_limit INTEGER;
         ALTER TABLE journeys ADD COLUMN rate_window BIGINT NOT NULL DEFAULT 0;
         ALTER TABLE journeys ADD COLUMN rate_used INTEGER NOT NULL DEFAULT 0;",
    ),
    (
        7,
        "CREATE TABLE templates (
             key TEXT NOT NULL,
             version INTEGER NOT NULL,
             channel TEXT NOT NULL,
             document JSONB NOT NULL,
             created_at BIGINT NOT NULL,
             PRIMARY KEY (key, version)
         );",
    ),
    (
        8,
        "CREATE TABLE suppressions (
             channel TEXT NOT NULL,
             address TEXT NOT NULL,
             suppressed BOOLEAN NOT NULL,
             reason TEXT NOT NULL,
             detail TEXT NOT NULL,
             soft_bounces INTEGER NOT NULL,
             created_at BIGINT NOT NULL,
             updated_at BIGINT NOT NULL,
             PRIMARY KEY (channel, address)
         );",
    ),
    (
        9,
        "CREATE TABLE inbox_marks (
             key TEXT PRIMARY KEY,
             profile_id TEXT NOT NULL,
             read_at BIGINT,
             dismissed_at BIGINT
         );
         CREATE INDEX inbox_marks_profile ON inbox_marks (profile_id);",
    ),
    // When a message was sent or given up, and what its provider reported afterwards
    // (delivery receipts, asynchronous bounces, complaints), once per status.
    (
        10,
        "ALTER TABLE journey_outbox ADD COLUMN finished_at BIGINT;
         CREATE TABLE message_events (
             key TEXT NOT NULL,
             status TEXT NOT NULL,
             detail TEXT NOT NULL,
             at BIGINT NOT NULL,
             PRIMARY KEY (key, status)
         );",
    ),
    // Throttled channels' pace, shared by every process on this database: the theoretical
    // arrival time (ms) of the next send on each channel.
    (
        11,
        "CREATE TABLE send_pace (
             channel TEXT PRIMARY KEY,
             tat DOUBLE PRECISION NOT NULL
         );",
    ),
    // Who holds an outbox lease (`StoreOptions::lease_owner`), so a starting process takes
    // back only the leases of its own earlier run, never those of other live processes.
    (12, "ALTER TABLE journey_outbox ADD COLUMN leased_by TEXT;"),
    // Finished outbox rows are pruned by when they finished (`StoreOptions::message_cutoff`);
    // rows finished at planning (skipped by consent or governance) and rows finished before
    // `finished_at` existed get their creation time.
    (
        13,
        "UPDATE journey_outbox SET finished_at = created_at WHERE status != 'pending' AND finished_at IS NULL;
         CREATE INDEX journey_outbox_finished ON journey_outbox (finished_at) WHERE finished_at IS NOT NULL;
         CREATE INDEX merges_at ON merges (at);",
    ),
    // Audiences: documents by version, members (with a size counter per audience), and
    // when each person's audiences must next be decided (time flips a rule, a backfill).
    (
        14,
        "CREATE TABLE audiences (
             key TEXT NOT NULL,
             version INTEGER NOT NULL,
             document JSONB NOT NULL,
             created_at BIGINT NOT NULL,
             PRIMARY KEY (key, version)
         );
         CREATE TABLE audience_members (
             audience_key TEXT NOT NULL,
             profile_id TEXT NOT NULL,
             since BIGINT NOT NULL,
             PRIMARY KEY (audience_key, profile_id)
         );
         CREATE INDEX audience_members_by_profile ON audience_members (profile_id);
         CREATE TABLE audience_sizes (
             audience_key TEXT PRIMARY KEY,
             members BIGINT NOT NULL,
             last_change BIGINT
         );
         CREATE TABLE audience_checks (
             profile_id TEXT PRIMARY KEY,
             due_at BIGINT NOT NULL
         );
         CREATE INDEX audience_checks_due ON audience_checks (due_at);",
    ),
    // Audience decisions read a person's events of some names without their bodies: an
    // index that answers that alone. Backfills as a pass over profile ids that commits
    // where it stands (checks a backfill scheduled before are still fired as checks);
    // sizes by the hour.
    (
        15,
        "CREATE INDEX events_by_name ON events (profile_id, kind, name, timestamp, seq);
         CREATE TABLE audience_backfills (
             audience_key TEXT PRIMARY KEY,
             after_profile TEXT NOT NULL,
             started_at BIGINT NOT NULL,
             decided BIGINT NOT NULL
         );
         CREATE TABLE audience_size_history (
             audience_key TEXT NOT NULL,
             hour BIGINT NOT NULL,
             members BIGINT NOT NULL,
             entered BIGINT NOT NULL,
             exited BIGINT NOT NULL,
             PRIMARY KEY (audience_key, hour)
         );",
    ),
    // When each scheduled snapshot audience runs next.
    (
        16,
        "CREATE TABLE audience_schedules (
             audience_key TEXT PRIMARY KEY,
             next_run BIGINT NOT NULL
         );
         CREATE INDEX audience_schedules_due ON audience_schedules (next_run);",
    ),
    // Journeys that read an audience: when the next read runs, and how far the one in
    // progress has got (its cursor commits with the entries it made).
    (
        17,
        "CREATE TABLE journey_reads (
             journey_key TEXT PRIMARY KEY,
             due_at BIGINT,
             started_at BIGINT,
             after_profile TEXT NOT NULL,
             members_read BIGINT NOT NULL,
             excluded BIGINT NOT NULL,
             last_finished_at BIGINT,
             last_read BIGINT NOT NULL,
             last_excluded BIGINT NOT NULL
         );
         CREATE INDEX journey_reads_due ON journey_reads (due_at) WHERE due_at IS NOT NULL;",
    ),
    // Winner nodes' decisions (A/B tests that send the best path to the rest): written once.
    (
        18,
        "CREATE TABLE journey_winners (
             journey_key TEXT NOT NULL,
             node TEXT NOT NULL,
             chosen TEXT NOT NULL,
             decision TEXT NOT NULL,
             decided_at BIGINT NOT NULL,
             PRIMARY KEY (journey_key, node)
         );",
    ),
    // Node counters per hour (a journey's and a campaign's time series): only increases of
    // counters that count things happening (`waymark_engine::stats::SERIES`).
    (
        19,
        "CREATE TABLE journey_counter_hours (
             journey_key TEXT NOT NULL,
             node TEXT NOT NULL,
             name TEXT NOT NULL,
             hour BIGINT NOT NULL,
             shard SMALLINT NOT NULL,
             value BIGINT NOT NULL,
             PRIMARY KEY (journey_key, node, name, hour, shard)
         );",
    ),
    // The decisioning catalogue (each document kept as versions, like audiences) and
    // displays and clicks of each offer on each placement by the hour, from feedback events
    // (sharded like the counters, so concurrent ingests do not queue on one row).
    (
        20,
        "CREATE TABLE offers (
             key TEXT NOT NULL,
             version INTEGER NOT NULL,
             document JSONB NOT NULL,
             created_at BIGINT NOT NULL,
             PRIMARY KEY (key, version)
         );
         CREATE TABLE placements (
             key TEXT NOT NULL,
             version INTEGER NOT NULL,
             document JSONB NOT NULL,
             created_at BIGINT NOT NULL,
             PRIMARY KEY (key, version)
         );
         CREATE TABLE collections (
             key TEXT NOT NULL,
             version INTEGER NOT NULL,
             document JSONB NOT NULL,
             created_at BIGINT NOT NULL,
             PRIMARY KEY (key, version)
         );
         CREATE TABLE decision_policies (
             key TEXT NOT NULL,
             version INTEGER NOT NULL,
             document JSONB NOT NULL,
             created_at BIGINT NOT NULL,
             PRIMARY KEY (key, version)
         );
         CREATE TABLE offer_counts (
             offer TEXT NOT NULL,
             placement TEXT NOT NULL,
             hour BIGINT NOT NULL,
             shard SMALLINT NOT NULL,
             displays BIGINT NOT NULL,
             clicks BIGINT NOT NULL,
             PRIMARY KEY (offer, placement, hour, shard)
         );",
    ),
    // Content journeys placed on a surface for a person (`code_based` messages), kept while
    // the instance that placed it lasts; what decisions read ahead of offers.
    (
        21,
        "CREATE TABLE placed_content (
             key TEXT PRIMARY KEY,
             profile_id TEXT NOT NULL,
             journey_key TEXT NOT NULL,
             instance INTEGER NOT NULL,
             surface TEXT NOT NULL,
             priority BIGINT NOT NULL,
             placed_at BIGINT NOT NULL,
             expires_at BIGINT,
             content JSONB NOT NULL
         );
         CREATE INDEX placed_content_by_profile ON placed_content (profile_id, journey_key, instance);
         CREATE INDEX placed_content_by_journey ON placed_content (journey_key);
         CREATE INDEX placed_content_expiry ON placed_content (expires_at) WHERE expires_at IS NOT NULL;",
    ),
];

pub async fn migrate(client: &mut Client) -> Result<(), StoreError> {
    let e = crate::db_error;
    let tx = client.transaction().await.map_err(e)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(e)?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
    )
    .await
    .map_err(e)?;
    for (version, sql) in MIGRATIONS {
        let applied = tx
            .query_opt(
                "SELECT 1 FROM schema_migrations WHERE version = $1",
                &[version],
            )
            .await
            .map_err(e)?;
        if applied.is_some() {
            continue;
        }
        tx.batch_execute(sql).await.map_err(e)?;
        if *version == 6 {
            crate::runs::backfill(&tx).await?;
        }
        tx.execute(
            "INSERT INTO schema_migrations (version) VALUES ($1)",
            &[version],
        )
        .await
        .map_err(e)?;
        tracing::info!(version, "applied postgres migration");
    }
    tx.commit().await.map_err(e)
}

pub async fn partitions(client: &Client, wanted: u32) -> Result<u32, Error> {
    client
        .execute(
            "INSERT INTO meta (key, value) VALUES ('partitions', $1) ON CONFLICT (key) DO NOTHING",
            &[&wanted.to_string()],
        )
        .await?;
    let row = client
        .query_one("SELECT value FROM meta WHERE key = 'partitions'", &[])
        .await?;
    let value: String = row.get(0);
    Ok(value.parse().unwrap_or(wanted))
}
