//! The `items` table: one row per original image, with each stage's status
//! and the last error, so failures can be listed and re-run.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::{DbError, StageName};

/// What the thumbnailer learnt about one original, success or failure.
#[derive(Debug, Clone, Default)]
pub struct ThumbnailRecord {
    pub id: Uuid,
    pub user_id: String,
    pub bucket: String,
    pub key: String,
    pub filename: String,
    pub mime_type: Option<String>,
    pub etag: Option<String>,
    pub size_bytes: Option<i64>,
    pub width: Option<i32>,
    pub height: Option<i32>,
    pub thumbnail_key: Option<String>,
    /// `None` when the thumbnail was written.
    pub error: Option<String>,
}

/// Upserts the items of a thumbnail batch in one statement, and returns
/// the ids it wrote. A changed original (another known etag) sends its item
/// through analysis and embedding again. An id that already belongs to
/// another user is left alone and missing from the answer; an id twice in
/// the batch (the same upload delivered twice) is written once, as its
/// last record says.
pub async fn record_thumbnails(pool: &PgPool, records: &[ThumbnailRecord]) -> Result<HashSet<Uuid>, DbError> {
    let mut last: HashMap<Uuid, usize> = HashMap::with_capacity(records.len());
    for (position, r) in records.iter().enumerate() {
        last.insert(r.id, position);
    }
    let records: Vec<&ThumbnailRecord> =
        records.iter().enumerate().filter(|(position, r)| last[&r.id] == *position).map(|(_, r)| r).collect();
    if records.is_empty() {
        return Ok(HashSet::new());
    }
    let column = |f: fn(&ThumbnailRecord) -> Option<String>| records.iter().map(|r| f(r)).collect::<Vec<_>>();
    let ids: Vec<Uuid> = records.iter().map(|r| r.id).collect();
    let sizes: Vec<Option<i64>> = records.iter().map(|r| r.size_bytes).collect();
    let widths: Vec<Option<i32>> = records.iter().map(|r| r.width).collect();
    let heights: Vec<Option<i32>> = records.iter().map(|r| r.height).collect();
    let written: Vec<(Uuid,)> = sqlx::query_as(
        r#"
        INSERT INTO items AS i (id, user_id, bucket, file_path, filename, mime_type, source_etag, size_bytes,
                                width, height, thumbnail_key, thumbnail_status, failed_stage, last_error, attempts)
        SELECT id, user_id, bucket, file_path, filename, mime_type, etag, size_bytes, width, height, thumbnail_key,
               CASE WHEN error IS NULL THEN 'done' ELSE 'failed' END,
               CASE WHEN error IS NULL THEN NULL ELSE 'thumbnail' END,
               error, 1
        FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
                    $8::bigint[], $9::int[], $10::int[], $11::text[], $12::text[])
             AS t(id, user_id, bucket, file_path, filename, mime_type, etag, size_bytes, width, height,
                  thumbnail_key, error)
        ON CONFLICT (id) DO UPDATE SET
            bucket = EXCLUDED.bucket,
            file_path = EXCLUDED.file_path,
            filename = EXCLUDED.filename,
            mime_type = coalesce(EXCLUDED.mime_type, i.mime_type),
            source_etag = coalesce(EXCLUDED.source_etag, i.source_etag),
            size_bytes = coalesce(EXCLUDED.size_bytes, i.size_bytes),
            width = coalesce(EXCLUDED.width, i.width),
            height = coalesce(EXCLUDED.height, i.height),
            thumbnail_key = coalesce(EXCLUDED.thumbnail_key, i.thumbnail_key),
            thumbnail_status = EXCLUDED.thumbnail_status,
            analysis_status = CASE WHEN EXCLUDED.source_etag IS DISTINCT FROM i.source_etag
                                        AND EXCLUDED.source_etag IS NOT NULL
                                   THEN 'pending' ELSE i.analysis_status END,
            embedding_status = CASE WHEN EXCLUDED.source_etag IS DISTINCT FROM i.source_etag
                                         AND EXCLUDED.source_etag IS NOT NULL
                                    THEN 'pending' ELSE i.embedding_status END,
            failed_stage = CASE WHEN EXCLUDED.failed_stage IS NOT NULL THEN EXCLUDED.failed_stage
                                WHEN i.failed_stage = 'thumbnail' THEN NULL ELSE i.failed_stage END,
            last_error = CASE WHEN EXCLUDED.failed_stage IS NOT NULL THEN EXCLUDED.last_error
                              WHEN i.failed_stage = 'thumbnail' THEN NULL ELSE i.last_error END,
            attempts = i.attempts + 1,
            updated_at = now()
        WHERE i.user_id = EXCLUDED.user_id
        RETURNING id
        "#,
    )
    .bind(&ids)
    .bind(column(|r| Some(r.user_id.clone())))
    .bind(column(|r| Some(r.bucket.clone())))
    .bind(column(|r| Some(r.key.clone())))
    .bind(column(|r| Some(r.filename.clone())))
    .bind(column(|r| r.mime_type.clone()))
    .bind(column(|r| r.etag.clone()))
    .bind(&sizes)
    .bind(&widths)
    .bind(&heights)
    .bind(column(|r| r.thumbnail_key.clone()))
    .bind(column(|r| r.error.clone()))
    .fetch_all(pool)
    .await
    .map_err(DbError::during("recording thumbnails"))?;
    Ok(written.into_iter().map(|(id,)| id).collect())
}

/// Sets one stage's status on many items in one statement: done where the
/// error is `None`, failed with the error otherwise. Only rows whose failed
/// stage is this one have their error cleared on success.
pub async fn mark_stage(
    conn: &mut PgConnection,
    stage: StageName,
    results: &[(Uuid, Option<&str>)],
) -> Result<(), DbError> {
    if results.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = results.iter().map(|(id, _)| *id).collect();
    let errors: Vec<Option<&str>> = results.iter().map(|(_, e)| *e).collect();
    let status = stage.status_column();
    let sql = format!(
        r#"
        UPDATE items AS i SET
            {status} = CASE WHEN t.error IS NULL THEN 'done' ELSE 'failed' END,
            failed_stage = CASE WHEN t.error IS NOT NULL THEN $3
                                WHEN i.failed_stage = $3 THEN NULL ELSE i.failed_stage END,
            last_error = CASE WHEN t.error IS NOT NULL THEN t.error
                              WHEN i.failed_stage = $3 THEN NULL ELSE i.last_error END,
            attempts = i.attempts + 1,
            updated_at = now()
        FROM UNNEST($1::uuid[], $2::text[]) AS t(id, error)
        WHERE i.id = t.id
        "#
    );
    sqlx::query(&sql)
        .bind(&ids)
        .bind(&errors)
        .bind(stage.as_str())
        .execute(conn)
        .await
        .map_err(DbError::during("recording stage results"))?;
    Ok(())
}

/// The etags of those `keys` in `bucket` whose items went through every
/// stage; a key absent from the answer still needs work.
pub async fn processed_etags(
    pool: &PgPool,
    bucket: &str,
    keys: &[String],
) -> Result<HashMap<String, Option<String>>, DbError> {
    let rows: Vec<(String, Option<String>)> = sqlx::query_as(
        r#"
        SELECT file_path, source_etag FROM items
        WHERE bucket = $1 AND file_path = ANY($2)
          AND thumbnail_status = 'done' AND analysis_status = 'done' AND embedding_status = 'done'
        "#,
    )
    .bind(bucket)
    .bind(keys)
    .fetch_all(pool)
    .await
    .map_err(DbError::during("looking up processed items"))?;
    Ok(rows.into_iter().collect())
}

/// An item whose last attempt failed.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct FailedItem {
    pub id: Uuid,
    pub user_id: String,
    pub bucket: String,
    pub file_path: String,
    pub thumbnail_key: Option<String>,
    pub failed_stage: String,
    pub last_error: String,
    pub attempts: i32,
    pub updated_at: DateTime<Utc>,
}

/// Failed items, newest first, of one user or of everyone.
pub async fn failures(pool: &PgPool, user_id: Option<&str>, limit: i64) -> Result<Vec<FailedItem>, DbError> {
    sqlx::query_as(
        r#"
        SELECT id, user_id, bucket, file_path, thumbnail_key, failed_stage, last_error, attempts, updated_at
        FROM items
        WHERE failed_stage IS NOT NULL AND ($1::text IS NULL OR user_id = $1)
        ORDER BY updated_at DESC, file_path
        LIMIT $2
        "#,
    )
    .bind(user_id)
    .bind(limit)
    .fetch_all(pool)
    .await
    .map_err(DbError::during("listing failures"))
}
