//! The decisioning catalogue, offer counts and a decision's reads in SQL. Saves take one
//! advisory lock for the whole catalogue, so a save is checked against every other save
//! that committed before it.

use deadpool_postgres::GenericClient;
use serde_json::Value;
use waymark_core::decisioning::Kind as Doc;
use waymark_core::time::Millis;
use waymark_core::{FieldError, Identity};
use waymark_engine::audience::BodyPart;
use waymark_engine::decisioning::Placed;
use waymark_store::decisioning::{
    CatalogueCheck, DecisionInputs, MAX_PLACED, OfferCount, assemble,
};
use waymark_store::{StoreError, Versions};

use crate::versioned::{self, Kind, catalogue_table};
use crate::{Abort, db_error, decode_profile};

fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("catalogue: {e}"))
}

/// The newest document of every key of every kind.
pub async fn catalogue(
    client: &impl GenericClient,
) -> Result<waymark_core::decisioning::Catalogue, StoreError> {
    let mut rows = Vec::new();
    for kind in Doc::ALL {
        let sql = format!(
            "SELECT DISTINCT ON (key) document::text FROM {} ORDER BY key, version DESC",
            catalogue_table(kind)
        );
        for r in client.query(&sql, &[]).await.map_err(db_error)? {
            let doc: String = r.get(0);
            rows.push((kind, serde_json::from_str(&doc).map_err(corrupt)?));
        }
    }
    Ok(assemble(rows))
}

pub async fn read_catalogue(
    client: &mut deadpool_postgres::Client,
) -> Result<waymark_core::decisioning::Catalogue, StoreError> {
    let tx = crate::snapshot(client).await?;
    let catalogue = catalogue(&tx).await?;
    tx.commit().await.map_err(db_error)?;
    Ok(catalogue)
}

/// Checks the catalogue the document would join, under the catalogue's lock, then stores
/// it in the same transaction.
pub async fn put(
    client: &mut deadpool_postgres::Client,
    kind: Doc,
    key: &str,
    document: &Value,
    check: CatalogueCheck,
    now: Millis,
) -> Result<Result<(Versions, bool), Vec<FieldError>>, StoreError> {
    let tx = client.transaction().await.map_err(db_error)?;
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended('decisioning catalogue', 0))",
        &[],
    )
    .await
    .map_err(db_error)?;
    if let Err(problems) = check(&catalogue(&tx).await?) {
        return Ok(Err(problems));
    }
    let saved = versioned::put(&tx, Kind::Catalogue(kind), key, document, now).await?;
    tx.commit().await.map_err(db_error)?;
    Ok(Ok(saved))
}

pub async fn documents(
    client: &impl GenericClient,
    kind: Doc,
) -> Result<Vec<(String, Versions)>, StoreError> {
    let mut out = Vec::new();
    for key in versioned::keys(client, Kind::Catalogue(kind)).await? {
        if let Some(v) = versioned::read(client, Kind::Catalogue(kind), &key).await? {
            out.push((key, v));
        }
    }
    Ok(out)
}

/// Rows across the catalogue's tables: only ever grows, by one per new version.
pub async fn stamp(client: &impl GenericClient) -> Result<i64, StoreError> {
    let sql = Doc::ALL
        .iter()
        .map(|k| format!("(SELECT count(*) FROM {})", catalogue_table(*k)))
        .collect::<Vec<_>>()
        .join(" + ");
    let row = client
        .query_one(&format!("SELECT ({sql})::bigint"), &[])
        .await
        .map_err(db_error)?;
    Ok(row.get(0))
}

/// Count rows are spread over shards, one per transaction, as journey counters are.
const COUNT_SHARDS: u32 = 8;
static NEXT_SHARD: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// In the ingest's transaction: counts for offers and placements that exist.
pub async fn add_counts(client: &impl GenericClient, counts: &[OfferCount]) -> Result<(), Abort> {
    if counts.is_empty() {
        return Ok(());
    }
    let shard =
        (NEXT_SHARD.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % COUNT_SHARDS) as i16;
    let offers: Vec<&str> = counts.iter().map(|c| c.offer.as_str()).collect();
    let placements: Vec<&str> = counts.iter().map(|c| c.placement.as_str()).collect();
    let hours: Vec<i64> = counts.iter().map(|c| c.hour).collect();
    let displays: Vec<i64> = counts.iter().map(|c| c.displays).collect();
    let clicks: Vec<i64> = counts.iter().map(|c| c.clicks).collect();
    client
        .execute(
            "INSERT INTO offer_counts (offer, placement, hour, shard, displays, clicks)
             SELECT o, p, h, $6, d, c
             FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::bigint[]) AS q(o, p, h, d, c)
             WHERE EXISTS (SELECT 1 FROM offers WHERE key = o)
               AND EXISTS (SELECT 1 FROM placements WHERE key = p)
             ORDER BY o, p, h
             ON CONFLICT (offer, placement, hour, shard) DO UPDATE
             SET displays = offer_counts.displays + excluded.displays,
                 clicks = offer_counts.clicks + excluded.clicks",
            &[&offers, &placements, &hours, &displays, &clicks, &shard],
        )
        .await?;
    Ok(())
}

pub async fn counts(
    client: &impl GenericClient,
    since_hour: Millis,
) -> Result<Vec<OfferCount>, StoreError> {
    let rows = client
        .query(
            "SELECT offer, placement, hour, sum(displays)::bigint, sum(clicks)::bigint
             FROM offer_counts WHERE hour >= $1
             GROUP BY offer, placement, hour ORDER BY hour, offer, placement",
            &[&since_hour],
        )
        .await
        .map_err(db_error)?;
    Ok(rows
        .iter()
        .map(|r| OfferCount {
            offer: r.get(0),
            placement: r.get(1),
            hour: r.get(2),
            displays: r.get(3),
            clicks: r.get(4),
        })
        .collect())
}

/// The person's profile, then their audiences and events of `names` side by side on the
/// connection (pipelined: two round trips in all rather than a transaction's five; a
/// decision tolerates a membership that changes between the reads).
pub async fn inputs(
    client: &deadpool_postgres::Client,
    identities: &[Identity],
    names: &[String],
    bodies: BodyPart,
    now: Millis,
) -> Result<Option<DecisionInputs>, StoreError> {
    let mut found = None;
    for identity in identities {
        found = client
            .query_opt(
                "SELECT p.id, p.state::text FROM identities i JOIN profiles p ON p.id = i.profile_id
                 WHERE i.namespace = $1 AND i.value = $2",
                &[&identity.namespace.as_str(), &identity.value],
            )
            .await
            .map_err(db_error)?;
        if found.is_some() {
            break;
        }
    }
    let Some(row) = found else {
        return Ok(None);
    };
    let profile_id: String = row.get(0);
    let profile = decode_profile(&row.get::<_, String>(1))?;
    let audiences = async {
        crate::audiences::profile_audiences(client, &profile_id)
            .await
            .map(|rows| {
                rows.into_iter()
                    .map(|(key, _)| key)
                    .collect::<Vec<String>>()
            })
    };
    let events = async {
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let (track, kinds) = waymark_core::event::stored_names(names);
        let mut events = crate::audiences::history(client, &[&profile_id], &track, &kinds, bodies)
            .await
            .map_err(StoreError::from)?
            .pop()
            .unwrap_or_default();
        events.sort_by_key(|e| e.at);
        Ok::<_, StoreError>(events)
    };
    let placed = async {
        let rows = client
            .query(
                "SELECT key, journey_key, instance, surface, priority, placed_at, expires_at, content::text
                   FROM placed_content WHERE profile_id = $1 AND (expires_at IS NULL OR expires_at > $2)
                  ORDER BY priority DESC, placed_at DESC LIMIT $3",
                &[&profile_id, &now, &MAX_PLACED],
            )
            .await
            .map_err(db_error)?;
        rows.iter()
            .map(|r| {
                let key: String = r.get(0);
                Ok(Placed {
                    content: serde_json::from_str(&r.get::<_, String>(7))
                        .map_err(|e| StoreError::Corrupt(format!("placed content {key}: {e}")))?,
                    key,
                    journey: r.get(1),
                    instance: r.get::<_, i32>(2) as u32,
                    surface: r.get(3),
                    priority: r.get(4),
                    placed_at: r.get(5),
                    expires_at: r.get(6),
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()
    };
    let (audiences, events, placed) = tokio::try_join!(audiences, events, placed)?;
    Ok(Some(DecisionInputs {
        profile,
        audiences,
        events,
        placed,
    }))
}
