//! Journeys that read an audience on PostgreSQL: the row of each one's reads (the next,
//! and the one in progress with its cursor). What a read does is `waymark_store::pipeline`'s.

use deadpool_postgres::GenericClient;
use serde_json::Value;
use waymark_core::journey::Journey;
use waymark_core::time::Millis;
use waymark_store::StoreError;
use waymark_store::pipeline::JourneyRead;

use crate::db_error;

const READ_COLUMNS: &str = "journey_key, due_at, started_at, after_profile, members_read, excluded, last_finished_at, last_read, last_excluded";

fn read_row(r: &tokio_postgres::Row) -> JourneyRead {
    JourneyRead {
        journey: r.get(0),
        due_at: r.get(1),
        started_at: r.get(2),
        after: r.get(3),
        read: r.get::<_, i64>(4).max(0) as u64,
        excluded: r.get::<_, i64>(5).max(0) as u64,
        last_finished_at: r.get(6),
        last_read: r.get::<_, i64>(7).max(0) as u64,
        last_excluded: r.get::<_, i64>(8).max(0) as u64,
    }
}

/// A journey's audience reads, if it has any; with `lock`, the row stays locked.
pub async fn journey_read(
    client: &impl GenericClient,
    key: &str,
    lock: bool,
) -> Result<Option<JourneyRead>, tokio_postgres::Error> {
    let lock = if lock { " FOR UPDATE" } else { "" };
    let sql = format!("SELECT {READ_COLUMNS} FROM journey_reads WHERE journey_key = $1{lock}");
    Ok(client
        .query_opt(&sql, &[&key])
        .await?
        .as_ref()
        .map(read_row))
}

/// The read due first among live journeys', locked; one another transaction holds is
/// skipped.
pub async fn due_journey_read(
    client: &impl GenericClient,
    now: Millis,
) -> Result<Option<JourneyRead>, tokio_postgres::Error> {
    let sql = format!(
        "SELECT {READ_COLUMNS} FROM journey_reads r
         WHERE due_at <= $1 AND EXISTS (SELECT 1 FROM journeys j WHERE j.key = r.journey_key AND j.status = 'live')
         ORDER BY due_at LIMIT 1 FOR UPDATE SKIP LOCKED"
    );
    Ok(client
        .query_opt(&sql, &[&now])
        .await?
        .as_ref()
        .map(read_row))
}

pub async fn save_journey_read(
    client: &impl GenericClient,
    read: &JourneyRead,
) -> Result<(), tokio_postgres::Error> {
    let sql = format!(
        "INSERT INTO journey_reads ({READ_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
         ON CONFLICT (journey_key) DO UPDATE SET due_at = excluded.due_at,
             started_at = excluded.started_at, after_profile = excluded.after_profile,
             members_read = excluded.members_read, excluded = excluded.excluded,
             last_finished_at = excluded.last_finished_at, last_read = excluded.last_read,
             last_excluded = excluded.last_excluded"
    );
    client
        .execute(
            &sql,
            &[
                &read.journey,
                &read.due_at,
                &read.started_at,
                &read.after,
                &(read.read as i64),
                &(read.excluded as i64),
                &read.last_finished_at,
                &(read.last_read as i64),
                &(read.last_excluded as i64),
            ],
        )
        .await?;
    Ok(())
}

/// Publishing decides the journey's reads (`JourneyRead::after_publish`).
pub async fn after_publish(
    client: &impl GenericClient,
    key: &str,
    draft: &Value,
    now: Millis,
) -> Result<(), StoreError> {
    let reads = match serde_json::from_value::<Journey>(draft.clone()) {
        Ok(journey) => {
            let existing = journey_read(client, key, true).await.map_err(db_error)?;
            JourneyRead::after_publish(existing, &journey, now)
        }
        Err(_) => None,
    };
    match reads {
        Some(read) => save_journey_read(client, &read).await.map_err(db_error),
        None => client
            .execute("DELETE FROM journey_reads WHERE journey_key = $1", &[&key])
            .await
            .map(|_| ())
            .map_err(db_error),
    }
}
