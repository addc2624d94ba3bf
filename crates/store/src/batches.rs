//! The state of work sent through a provider's batch API: the batches
//! submitted (`provider_batches`) and the requests waiting for an answer
//! (`batch_requests`), each queued, then in a batch, then gone once its
//! analysis is stored or its failure recorded. Everything is written before
//! the provider is asked or answered, so a kill loses nothing and sends
//! nothing twice.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgPool;
use sqlx::types::Json;
use uuid::Uuid;

use crate::DbError;

/// A request to queue: the item, its request key, and the event the
/// pipeline goes on with once it is answered.
#[derive(Debug, Clone)]
pub struct NewRequest {
    pub item_id: Uuid,
    pub user_id: String,
    pub request_key: String,
    pub event: Value,
    /// The provider and model it is for: only a batch of theirs takes it.
    pub provider: String,
    pub model: String,
}

/// A request waiting in the database.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Waiting {
    /// Also its `custom_id` in the batch.
    pub id: Uuid,
    pub item_id: Uuid,
    pub user_id: String,
    pub request_key: String,
    pub event: Json<Value>,
    pub submissions: i32,
}

/// A batch of ours, as recorded.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Batch {
    pub id: Uuid,
    pub provider: String,
    pub model: String,
    pub provider_batch_id: Option<String>,
    pub status: String,
    pub requests: i32,
    pub succeeded: i32,
    pub failed: i32,
    pub resubmitted: i32,
    pub submitted_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
    pub ingested_at: Option<DateTime<Utc>>,
}

const BATCH_COLUMNS: &str = "id, provider, model, provider_batch_id, status, requests, succeeded, failed, resubmitted, \
                             submitted_at, expires_at, ended_at, ingested_at";

/// Queues requests (stage `analysis`); answers, of the inputs, those that
/// were already waiting (queued or in a batch): they are not queued twice.
pub async fn queue(pool: &PgPool, requests: &[NewRequest]) -> Result<Vec<(Uuid, String)>, DbError> {
    if requests.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<Uuid> = requests.iter().map(|_| Uuid::now_v7()).collect();
    let items: Vec<Uuid> = requests.iter().map(|r| r.item_id).collect();
    let users: Vec<&str> = requests.iter().map(|r| r.user_id.as_str()).collect();
    let keys: Vec<&str> = requests.iter().map(|r| r.request_key.as_str()).collect();
    let events: Vec<Json<&Value>> = requests.iter().map(|r| Json(&r.event)).collect();
    let providers: Vec<&str> = requests.iter().map(|r| r.provider.as_str()).collect();
    let models: Vec<&str> = requests.iter().map(|r| r.model.as_str()).collect();
    sqlx::query_as(
        r#"
        WITH input AS (
            SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::jsonb[], $6::text[], $7::text[])
                AS t(id, item_id, user_id, request_key, event, provider, model)
        ),
        queued AS (
            INSERT INTO batch_requests (id, item_id, user_id, request_key, event, provider, model)
            SELECT DISTINCT ON (item_id, request_key) * FROM input
            WHERE EXISTS (SELECT 1 FROM items i WHERE i.id = input.item_id AND i.user_id = input.user_id)
            ON CONFLICT (item_id, request_key) DO NOTHING
            RETURNING id
        )
        SELECT input.item_id, input.request_key FROM input
        WHERE input.id NOT IN (SELECT id FROM queued)
        "#,
    )
    .bind(&ids)
    .bind(&items)
    .bind(&users)
    .bind(&keys)
    .bind(&events)
    .bind(&providers)
    .bind(&models)
    .fetch_all(pool)
    .await
    .map_err(DbError::during("queueing batch requests"))
}

/// How many requests are queued for `provider` and `model`, and since
/// when the oldest has waited; of every model, without one.
pub async fn queued(pool: &PgPool, model: Option<(&str, &str)>) -> Result<(i64, Option<DateTime<Utc>>), DbError> {
    let (provider, model) = model.unzip();
    sqlx::query_as(
        "SELECT count(*), min(queued_at) FROM batch_requests WHERE batch_id IS NULL \
         AND ($1::text IS NULL OR (provider = $1 AND model = $2))",
    )
    .bind(provider)
    .bind(model)
    .fetch_one(pool)
    .await
    .map_err(DbError::during("counting queued batch requests"))
}

/// Takes up to `most` queued requests, oldest first, into a new batch of
/// `provider` and `model`, recorded as submitting, in one transaction:
/// two submitters never take the same request. `None` when none is queued.
pub async fn claim(
    pool: &PgPool,
    provider: &str,
    model: &str,
    most: i64,
) -> Result<Option<(Uuid, Vec<Waiting>)>, DbError> {
    let mut tx = pool.begin().await.map_err(DbError::during("claiming batch requests"))?;
    let batch = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO provider_batches (id, stage, provider, model, status, requests) \
         VALUES ($1, 'analysis', $2, $3, 'submitting', 0)",
    )
    .bind(batch)
    .bind(provider)
    .bind(model)
    .execute(&mut *tx)
    .await
    .map_err(DbError::during("recording a batch"))?;
    let claimed: Vec<Waiting> = sqlx::query_as(
        r#"
        WITH taken AS (
            SELECT id FROM batch_requests WHERE batch_id IS NULL AND provider = $3 AND model = $4
            ORDER BY queued_at, id LIMIT $2 FOR UPDATE SKIP LOCKED
        )
        UPDATE batch_requests r SET batch_id = $1, submissions = r.submissions + 1
        FROM taken WHERE r.id = taken.id
        RETURNING r.id, r.item_id, r.user_id, r.request_key, r.event, r.submissions
        "#,
    )
    .bind(batch)
    .bind(most)
    .bind(provider)
    .bind(model)
    .fetch_all(&mut *tx)
    .await
    .map_err(DbError::during("claiming batch requests"))?;
    if claimed.is_empty() {
        tx.rollback().await.map_err(DbError::during("claiming batch requests"))?;
        return Ok(None);
    }
    sqlx::query("UPDATE provider_batches SET requests = $2 WHERE id = $1")
        .bind(batch)
        .bind(claimed.len() as i32)
        .execute(&mut *tx)
        .await
        .map_err(DbError::during("recording a batch"))?;
    tx.commit().await.map_err(DbError::during("claiming batch requests"))?;
    Ok(Some((batch, claimed)))
}

/// Takes requests out of a batch not yet submitted: back to the queue
/// (`requeue`, as if never submitted) or gone (`drop`: failed and recorded,
/// or no longer wanted).
pub async fn release(pool: &PgPool, batch: Uuid, requeue: &[Uuid], drop: &[Uuid]) -> Result<(), DbError> {
    let mut tx = pool.begin().await.map_err(DbError::during("releasing batch requests"))?;
    sqlx::query(
        "UPDATE batch_requests SET batch_id = NULL, submissions = submissions - 1 WHERE batch_id = $1 AND id = ANY($2)",
    )
    .bind(batch)
    .bind(requeue)
    .execute(&mut *tx)
    .await
    .map_err(DbError::during("releasing batch requests"))?;
    sqlx::query("DELETE FROM batch_requests WHERE batch_id = $1 AND id = ANY($2)")
        .bind(batch)
        .bind(drop)
        .execute(&mut *tx)
        .await
        .map_err(DbError::during("releasing batch requests"))?;
    sqlx::query("UPDATE provider_batches SET requests = (SELECT count(*) FROM batch_requests WHERE batch_id = $1) WHERE id = $1")
        .bind(batch)
        .execute(&mut *tx)
        .await
        .map_err(DbError::during("releasing batch requests"))?;
    tx.commit().await.map_err(DbError::during("releasing batch requests"))
}

/// A batch the provider holds: its id, and when it stops working on it.
pub async fn submitted(
    pool: &PgPool,
    batch: Uuid,
    provider_batch_id: &str,
    expires_at: Option<DateTime<Utc>>,
) -> Result<(), DbError> {
    sqlx::query(
        "UPDATE provider_batches SET provider_batch_id = $2, status = 'in_progress', expires_at = $3, polled_at = now() \
         WHERE id = $1",
    )
    .bind(batch)
    .bind(provider_batch_id)
    .bind(expires_at)
    .execute(pool)
    .await
    .map_err(DbError::during("recording a submitted batch"))?;
    Ok(())
}

/// A submission the provider certainly did not take: its requests go back
/// to the queue, and the batch is forgotten.
pub async fn abandon(pool: &PgPool, batch: Uuid) -> Result<(), DbError> {
    let mut tx = pool.begin().await.map_err(DbError::during("abandoning a batch"))?;
    sqlx::query("UPDATE batch_requests SET batch_id = NULL, submissions = submissions - 1 WHERE batch_id = $1")
        .bind(batch)
        .execute(&mut *tx)
        .await
        .map_err(DbError::during("abandoning a batch"))?;
    sqlx::query("DELETE FROM provider_batches WHERE id = $1 AND provider_batch_id IS NULL")
        .bind(batch)
        .execute(&mut *tx)
        .await
        .map_err(DbError::during("abandoning a batch"))?;
    tx.commit().await.map_err(DbError::during("abandoning a batch"))
}

/// The batches of `provider` and `model` not ingested yet (submitting, in
/// progress or ended), oldest first.
pub async fn open(pool: &PgPool, provider: &str, model: &str) -> Result<Vec<Batch>, DbError> {
    sqlx::query_as(&format!(
        "SELECT {BATCH_COLUMNS} FROM provider_batches WHERE status <> 'ingested' AND provider = $1 AND model = $2 \
         ORDER BY submitted_at, id"
    ))
    .bind(provider)
    .bind(model)
    .fetch_all(pool)
    .await
    .map_err(DbError::during("listing open batches"))
}

/// The latest batches, newest first, open ones and up to `ingested` of the others.
pub async fn recent(pool: &PgPool, ingested: i64) -> Result<Vec<Batch>, DbError> {
    sqlx::query_as(&format!(
        "(SELECT {BATCH_COLUMNS} FROM provider_batches WHERE status <> 'ingested') UNION ALL \
         (SELECT {BATCH_COLUMNS} FROM provider_batches WHERE status = 'ingested' ORDER BY submitted_at DESC LIMIT $1) \
         ORDER BY submitted_at DESC"
    ))
    .bind(ingested)
    .fetch_all(pool)
    .await
    .map_err(DbError::during("listing batches"))
}

/// Which of the provider's batch ids are ours already.
pub async fn known(pool: &PgPool, provider_batch_ids: &[String]) -> Result<Vec<String>, DbError> {
    sqlx::query_scalar("SELECT provider_batch_id FROM provider_batches WHERE provider_batch_id = ANY($1)")
        .bind(provider_batch_ids)
        .fetch_all(pool)
        .await
        .map_err(DbError::during("matching batches"))
}

/// The provider has answered every request of the batch (or never will).
pub async fn ended(pool: &PgPool, batch: Uuid) -> Result<(), DbError> {
    sqlx::query("UPDATE provider_batches SET status = 'ended', ended_at = coalesce(ended_at, now()), polled_at = now() WHERE id = $1")
        .bind(batch)
        .execute(pool)
        .await
        .map_err(DbError::during("recording a batch's end"))?;
    Ok(())
}

/// The batch was asked about and is still at work.
pub async fn polled(pool: &PgPool, batch: Uuid) -> Result<(), DbError> {
    sqlx::query("UPDATE provider_batches SET polled_at = now() WHERE id = $1")
        .bind(batch)
        .execute(pool)
        .await
        .map_err(DbError::during("recording a poll"))?;
    Ok(())
}

/// The requests of `batch` among `ids` (custom ids of its results): a
/// request deleted meanwhile, with its item, or submitted again in a later
/// batch, is not among them.
pub async fn waiting_in(pool: &PgPool, batch: Uuid, ids: &[Uuid]) -> Result<Vec<Waiting>, DbError> {
    sqlx::query_as(
        "SELECT id, item_id, user_id, request_key, event, submissions FROM batch_requests \
         WHERE batch_id = $1 AND id = ANY($2)",
    )
    .bind(batch)
    .bind(ids)
    .fetch_all(pool)
    .await
    .map_err(DbError::during("reading batch requests"))
}

/// Settles results of `batch`: `done` (stored, skipped, or failed and
/// recorded) are deleted, `resubmit` go back to the queue with why; the
/// batch's counts grow by as many.
pub async fn settle(
    pool: &PgPool,
    batch: Uuid,
    succeeded: &[Uuid],
    failed: &[Uuid],
    resubmit: &[(Uuid, String)],
) -> Result<(), DbError> {
    let mut tx = pool.begin().await.map_err(DbError::during("settling batch results"))?;
    let done: Vec<Uuid> = succeeded.iter().chain(failed).copied().collect();
    sqlx::query("DELETE FROM batch_requests WHERE batch_id = $1 AND id = ANY($2)")
        .bind(batch)
        .bind(&done)
        .execute(&mut *tx)
        .await
        .map_err(DbError::during("settling batch results"))?;
    let (ids, reasons): (Vec<Uuid>, Vec<&str>) = resubmit.iter().map(|(id, r)| (*id, r.as_str())).unzip();
    sqlx::query(
        "UPDATE batch_requests r SET batch_id = NULL, last_error = t.reason, queued_at = now() \
         FROM UNNEST($2::uuid[], $3::text[]) AS t(id, reason) WHERE r.batch_id = $1 AND r.id = t.id",
    )
    .bind(batch)
    .bind(&ids)
    .bind(&reasons)
    .execute(&mut *tx)
    .await
    .map_err(DbError::during("settling batch results"))?;
    sqlx::query(
        "UPDATE provider_batches SET succeeded = succeeded + $2, failed = failed + $3, resubmitted = resubmitted + $4 \
         WHERE id = $1",
    )
    .bind(batch)
    .bind(succeeded.len() as i32)
    .bind(failed.len() as i32)
    .bind(resubmit.len() as i32)
    .execute(&mut *tx)
    .await
    .map_err(DbError::during("settling batch results"))?;
    tx.commit().await.map_err(DbError::during("settling batch results"))
}

/// Every result of `batch` is settled: it is marked ingested.
pub async fn ingested(pool: &PgPool, batch: Uuid) -> Result<(), DbError> {
    sqlx::query("UPDATE provider_batches SET status = 'ingested', ingested_at = now() WHERE id = $1")
        .bind(batch)
        .execute(pool)
        .await
        .map_err(DbError::during("finishing a batch"))?;
    Ok(())
}

/// The requests still in `batch` (no result line came for them).
pub async fn left_in(pool: &PgPool, batch: Uuid) -> Result<Vec<Waiting>, DbError> {
    sqlx::query_as(
        "SELECT id, item_id, user_id, request_key, event, submissions FROM batch_requests WHERE batch_id = $1",
    )
    .bind(batch)
    .fetch_all(pool)
    .await
    .map_err(DbError::during("reading batch requests"))
}
