//! The one writer of the items' status columns (`*_status`, `failed_stage`,
//! `last_error`, `attempts`), and of the failures that have no item row to
//! sit on (`record_failures`).
//!
//! The rules: a stage's success clears the error only when that stage is
//! the one that failed; a failure never hides an earlier stage's failure
//! (the earliest failed stage is the one `collections retry` must run).

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use domain::stage::StageName;
use domain::subject::Subject;
use domain::text::{clean, clean_json};

use crate::{DbError, status_column};

/// One failure to keep where `collections failures` finds it.
#[derive(Debug, Clone, PartialEq)]
pub struct FailedInput {
    pub subject: Subject,
    /// The operator's detail (logs, `collections failures`).
    pub reason: String,
    /// What the item's user may read (the search API).
    pub public: String,
    /// The input as the stage takes it (to run it again), when it could be read.
    pub input: Option<serde_json::Value>,
    /// The record as received, when it could not be read.
    pub raw: Option<String>,
    /// Where the record came from (a Kinesis sequence number, a key).
    pub source: String,
}

/// The longest reason, and record excerpt, kept.
const MAX_TEXT_CHARS: usize = 4000;

/// Marks `done` items done at `stage`; for those also in `restart`, every
/// later stage goes back to pending (their input changed). After the
/// thumbnail, an item's duplicates (`duplicate_of`) follow it.
pub async fn mark_done(
    conn: &mut PgConnection,
    stage: StageName,
    done: &[Uuid],
    restart: &[Uuid],
) -> Result<(), DbError> {
    if done.is_empty() {
        return Ok(());
    }
    let status = status_column(stage);
    // Each has its own thumbnail; the analysis and vector are shared.
    let own = if stage == StageName::Thumbnail { "i.id" } else { "coalesce(i.duplicate_of, i.id)" };
    let later: String = StageName::ALL
        .into_iter()
        .filter(|s| *s > stage)
        .map(|s| {
            let column = status_column(s);
            format!(", {column} = CASE WHEN {own} = ANY($2) THEN 'pending' ELSE i.{column} END")
        })
        .collect();
    let sql = format!(
        r#"
        UPDATE items AS i SET
            {status} = 'done'{later},
            failed_stage = CASE WHEN i.failed_stage = $3 THEN NULL ELSE i.failed_stage END,
            last_error = CASE WHEN i.failed_stage = $3 THEN NULL ELSE i.last_error END,
            attempts = i.attempts + 1,
            updated_at = now()
        WHERE {own} = ANY($1) OR i.id = ANY($1)
        "#
    );
    sqlx::query(&sql)
        .bind(done)
        .bind(restart)
        .bind(stage.as_str())
        .execute(conn)
        .await
        .map_err(DbError::during("recording stage results"))?;
    Ok(())
}

/// Marks each duplicate's analysis and embedding done where its earlier
/// item's (the one analysed and embedded for both) are done. It only ever
/// raises a status: what sends a duplicate back to pending is
/// [`mark_done`]'s restart, which moves an item and its duplicates together.
/// (Copying the earlier item's status as read here could write back a
/// `pending` that a concurrent embedder had just turned `done`.)
pub async fn follow_canonical(pool: &PgPool, duplicates: &[Uuid]) -> Result<(), DbError> {
    if duplicates.is_empty() {
        return Ok(());
    }
    sqlx::query(
        r#"
        UPDATE items AS d SET
            analysis_status = CASE WHEN c.analysis_status = 'done' THEN 'done' ELSE d.analysis_status END,
            embedding_status = CASE WHEN c.embedding_status = 'done' THEN 'done' ELSE d.embedding_status END,
            failed_stage = CASE WHEN d.failed_stage IN ('analysis', 'embedding') THEN NULL ELSE d.failed_stage END,
            last_error = CASE WHEN d.failed_stage IN ('analysis', 'embedding') THEN NULL ELSE d.last_error END,
            updated_at = now()
        FROM items AS c
        WHERE c.id = d.duplicate_of AND d.id = ANY($1)
        "#,
    )
    .bind(duplicates)
    .execute(pool)
    .await
    .map_err(DbError::during("recording duplicates' statuses"))?;
    Ok(())
}

/// Sends these items, no longer anyone's duplicates (the item whose
/// analysis they shared was deleted), back to pending for analysis and
/// embedding of their own.
pub async fn analyse_again(conn: &mut PgConnection, ids: &[Uuid]) -> Result<(), DbError> {
    sqlx::query(
        "UPDATE items SET analysis_status = 'pending', embedding_status = 'pending', updated_at = now()
         WHERE id = ANY($1) AND duplicate_of IS NULL",
    )
    .bind(ids)
    .execute(conn)
    .await
    .map_err(DbError::during("sending items of the same bytes back to pending"))?;
    Ok(())
}

fn cut(text: &str) -> String {
    clean(&text.chars().take(MAX_TEXT_CHARS).collect::<String>())
}

/// Same stage, same record (its input, or else its raw text and source): same row.
fn fingerprint(stage: StageName, f: &FailedInput) -> String {
    let mut hash = Sha256::new();
    hash.update(stage.as_str());
    match (&f.input, &f.raw) {
        (Some(input), _) => hash.update(input.to_string()),
        (None, Some(raw)) => hash.update(raw),
        (None, None) => hash.update(&f.source),
    }
    hex::encode(&hash.finalize()[..16])
}

/// Records failures of `stage` in one statement: each on its item's row
/// when the item exists and is its user's (the last failure of an item in
/// the list wins), the others in `record_failures`.
pub async fn record_failures(pool: &PgPool, stage: StageName, failures: &[FailedInput]) -> Result<(), DbError> {
    if failures.is_empty() {
        return Ok(());
    }
    let items: Vec<Option<Uuid>> = failures.iter().map(|f| f.subject.item_id).collect();
    let users: Vec<Option<String>> = failures.iter().map(|f| f.subject.user_id.as_deref().map(cut)).collect();
    let keys: Vec<Option<String>> = failures.iter().map(|f| f.subject.key.as_deref().map(cut)).collect();
    let reasons: Vec<String> = failures.iter().map(|f| cut(&f.reason)).collect();
    let publics: Vec<String> = failures.iter().map(|f| cut(&f.public)).collect();
    let inputs: Vec<Option<sqlx::types::Json<serde_json::Value>>> = failures
        .iter()
        .map(|f| {
            f.input.clone().map(|mut v| {
                clean_json(&mut v);
                sqlx::types::Json(v)
            })
        })
        .collect();
    let raws: Vec<Option<String>> = failures.iter().map(|f| f.raw.as_deref().map(cut)).collect();
    let sources: Vec<String> = failures.iter().map(|f| cut(&f.source)).collect();
    let fingerprints: Vec<String> = failures.iter().map(|f| fingerprint(stage, f)).collect();
    let ids: Vec<Uuid> = failures.iter().map(|_| Uuid::now_v7()).collect();
    let status = status_column(stage);
    let sql = format!(
        r#"
        WITH f AS (
            SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::jsonb[],
                                 $7::text[], $8::text[], $9::text[], $12::text[])
                 WITH ORDINALITY AS t(id, item_id, user_id, object_key, reason, input, raw, source, fingerprint,
                                      public_reason, ord)
        ),
        last AS (
            SELECT DISTINCT ON (item_id) * FROM f WHERE item_id IS NOT NULL ORDER BY item_id, ord DESC
        ),
        updated AS (
            UPDATE items AS i SET
                {status} = 'failed',
                failed_stage = CASE
                    WHEN array_position($11::text[], i.failed_stage) < array_position($11::text[], $10)
                    THEN i.failed_stage ELSE $10 END,
                last_error = CASE
                    WHEN array_position($11::text[], i.failed_stage) < array_position($11::text[], $10)
                    THEN i.last_error ELSE last.reason END,
                public_error = CASE
                    WHEN array_position($11::text[], i.failed_stage) < array_position($11::text[], $10)
                    THEN i.public_error ELSE last.public_reason END,
                attempts = i.attempts + 1,
                updated_at = now()
            FROM last
            WHERE i.id = last.item_id AND i.user_id = last.user_id
            RETURNING i.id
        )
        INSERT INTO record_failures AS r (id, stage, user_id, item_id, object_key, reason, input, raw, source,
                                          fingerprint, public_reason)
        SELECT DISTINCT ON (fingerprint) id, $10, user_id, item_id, object_key, reason, input, raw, source,
               fingerprint, public_reason
        FROM f
        WHERE item_id IS NULL OR item_id NOT IN (SELECT id FROM updated)
        ORDER BY fingerprint, ord DESC
        ON CONFLICT (fingerprint) DO UPDATE SET
            reason = EXCLUDED.reason,
            public_reason = EXCLUDED.public_reason,
            source = EXCLUDED.source,
            attempts = r.attempts + 1,
            updated_at = now()
        "#
    );
    sqlx::query(&sql)
        .bind(&ids)
        .bind(&items)
        .bind(&users)
        .bind(&keys)
        .bind(&reasons)
        .bind(&inputs)
        .bind(&raws)
        .bind(&sources)
        .bind(&fingerprints)
        .bind(stage.as_str())
        .bind(StageName::ALL.map(StageName::as_str))
        .bind(&publics)
        .execute(pool)
        .await
        .map_err(DbError::during("recording failures"))?;
    Ok(())
}

/// A failure with no item row: see [`record_failures`].
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RecordFailure {
    pub id: Uuid,
    pub stage: String,
    pub user_id: Option<String>,
    pub item_id: Option<Uuid>,
    pub object_key: Option<String>,
    pub reason: String,
    pub input: Option<sqlx::types::Json<serde_json::Value>>,
    pub source: String,
    pub attempts: i32,
    pub updated_at: DateTime<Utc>,
}

/// A record failure as its user may see it: no operator's detail, no input.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PublicRecordFailure {
    pub id: Uuid,
    pub stage: String,
    pub item_id: Option<Uuid>,
    pub object_key: Option<String>,
    pub public_reason: Option<String>,
    pub attempts: i32,
    pub updated_at: DateTime<Utc>,
}

/// `user_id`'s record failures, newest first, reading only the columns the
/// search API's role may read.
pub async fn public_record_failures(
    pool: &PgPool,
    user_id: &str,
    limit: i64,
) -> Result<Vec<PublicRecordFailure>, DbError> {
    sqlx::query_as(
        r#"
        SELECT id, stage, item_id, object_key, public_reason, attempts, updated_at
        FROM record_failures
        WHERE user_id = $1
        ORDER BY updated_at DESC, id
        LIMIT $2
        "#,
    )
    .bind(user_id)
    .bind(limit)
    .fetch_all(pool)
    .await
    .map_err(DbError::during("listing record failures"))
}

/// Record failures, newest first, of one user or of everyone.
pub async fn record_failure_list(
    pool: &PgPool,
    user_id: Option<&str>,
    limit: i64,
) -> Result<Vec<RecordFailure>, DbError> {
    sqlx::query_as(
        r#"
        SELECT id, stage, user_id, item_id, object_key, reason, input, source, attempts, updated_at
        FROM record_failures
        WHERE $1::text IS NULL OR user_id = $1
        ORDER BY updated_at DESC, id
        LIMIT $2
        "#,
    )
    .bind(user_id)
    .bind(limit)
    .fetch_all(pool)
    .await
    .map_err(DbError::during("listing record failures"))
}

/// Forgets a record failure (before it is sent again: if it fails again,
/// it is recorded again).
pub async fn forget_record_failure(pool: &PgPool, id: Uuid) -> Result<(), DbError> {
    sqlx::query("DELETE FROM record_failures WHERE id = $1")
        .bind(id)
        .execute(pool)
        .await
        .map_err(DbError::during("forgetting a record failure"))?;
    Ok(())
}
