//! The `items` table: one row per original image, with each stage's status
//! and the last error, so failures can be listed and re-run.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use domain::keys::item_uuid;
use domain::stage::StageName;

use crate::{DbError, each_on_refusal, status};

/// What the thumbnailer learnt about one original. Its status is written
/// by [`crate::status`], not here.
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
    /// SHA-256 of the original's bytes, hex, when it was read.
    pub content_sha256: Option<String>,
    /// The S3 sequencer of the version, in [`domain::events::sequencer_order`] form, when known.
    pub sequencer: Option<String>,
    /// EXIF make and model, and `DateTimeOriginal`, when the original has them.
    pub camera: Option<String>,
    pub taken_at: Option<String>,
}

/// What [`store_thumbnails`] did.
#[derive(Debug, Default)]
pub struct StoredThumbnails {
    /// The items written. An id that belongs to another user is not.
    pub written: HashSet<Uuid>,
    /// Items the database refused, with why.
    pub refused: Vec<(Uuid, String)>,
}

/// Records a thumbnail batch in one transaction: every item's row (see
/// [`record_thumbnails`]; one by one if the database refuses the batch for
/// a data reason, so only the refused rows are left out), then `done` items
/// marked done, with the later stages of `restart` items pending again.
pub async fn store_thumbnails(
    pool: &PgPool,
    records: &[ThumbnailRecord],
    done: &[Uuid],
    restart: &[Uuid],
) -> Result<StoredThumbnails, DbError> {
    let mut tx = pool.begin().await.map_err(DbError::during("starting to record thumbnails"))?;
    let (written, refused) =
        each_on_refusal(&mut tx, records, |conn, rows| Box::pin(record_thumbnails(conn, rows))).await?;
    let written: HashSet<Uuid> = written.into_iter().collect();
    let done: Vec<Uuid> = done.iter().copied().filter(|id| written.contains(id)).collect();
    status::mark_done(&mut tx, StageName::Thumbnail, &done, restart).await?;
    tx.commit().await.map_err(DbError::during("recording thumbnails"))?;
    let refused =
        refused.into_iter().map(|(i, e)| (records[i].id, format!("the database refused the item: {e}"))).collect();
    Ok(StoredThumbnails { written, refused })
}

/// Upserts the items of a thumbnail batch (what is known of each original,
/// success or failure) in one statement, and returns the ids it wrote. An
/// id that already belongs to another user is left alone and missing from
/// the answer; an id twice in the batch (the same upload delivered twice)
/// is written once, as its last record says.
pub async fn record_thumbnails(conn: &mut PgConnection, records: &[ThumbnailRecord]) -> Result<Vec<Uuid>, DbError> {
    let mut last: HashMap<Uuid, usize> = HashMap::with_capacity(records.len());
    for (position, r) in records.iter().enumerate() {
        last.insert(r.id, position);
    }
    let records: Vec<&ThumbnailRecord> =
        records.iter().enumerate().filter(|(position, r)| last[&r.id] == *position).map(|(_, r)| r).collect();
    if records.is_empty() {
        return Ok(Vec::new());
    }
    let column = |f: fn(&ThumbnailRecord) -> Option<String>| records.iter().map(|r| f(r)).collect::<Vec<_>>();
    let ids: Vec<Uuid> = records.iter().map(|r| r.id).collect();
    let sizes: Vec<Option<i64>> = records.iter().map(|r| r.size_bytes).collect();
    let widths: Vec<Option<i32>> = records.iter().map(|r| r.width).collect();
    let heights: Vec<Option<i32>> = records.iter().map(|r| r.height).collect();
    let written: Vec<(Uuid,)> = sqlx::query_as(
        r#"
        INSERT INTO items AS i (id, user_id, bucket, file_path, filename, mime_type, source_etag, size_bytes,
                                width, height, thumbnail_key, content_sha256, source_sequencer, camera, taken_at)
        SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
                             $8::bigint[], $9::int[], $10::int[], $11::text[], $12::text[], $13::text[],
                             $14::text[], $15::text[])
             AS input(id, user_id, bucket, file_path, filename, mime_type, source_etag, size_bytes, width, height,
                      thumbnail_key, content_sha256, source_sequencer, camera, taken_at)
        -- A version the key's deletion came after stays deleted.
        WHERE NOT EXISTS (SELECT 1 FROM deleted_objects t
                          WHERE t.key = input.file_path AND input.source_sequencer IS NOT NULL
                            AND t.sequencer >= input.source_sequencer)
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
            -- New bytes: whose duplicate it is is decided again below.
            duplicate_of = CASE WHEN EXCLUDED.content_sha256 IS DISTINCT FROM i.content_sha256
                                 AND EXCLUDED.content_sha256 IS NOT NULL THEN NULL ELSE i.duplicate_of END,
            content_sha256 = coalesce(EXCLUDED.content_sha256, i.content_sha256),
            source_sequencer = coalesce(EXCLUDED.source_sequencer, i.source_sequencer),
            -- What the EXIF says belongs to the bytes read: written with them.
            camera = CASE WHEN EXCLUDED.content_sha256 IS NULL THEN i.camera ELSE EXCLUDED.camera END,
            taken_at = CASE WHEN EXCLUDED.content_sha256 IS NULL THEN i.taken_at ELSE EXCLUDED.taken_at END,
            updated_at = now()
        -- Another user's id is left alone, and so is a newer version.
        WHERE i.user_id = EXCLUDED.user_id
          AND (EXCLUDED.source_sequencer IS NULL OR i.source_sequencer IS NULL
               OR EXCLUDED.source_sequencer >= i.source_sequencer)
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
    .bind(column(|r| r.content_sha256.clone()))
    .bind(column(|r| r.sequencer.clone()))
    .bind(column(|r| r.camera.clone()))
    .bind(column(|r| r.taken_at.clone()))
    .fetch_all(&mut *conn)
    .await
    .map_err(DbError::during("recording thumbnails"))?;
    let written: Vec<Uuid> = written.into_iter().map(|(id,)| id).collect();
    // A key made again after its deletion is no longer deleted.
    let made_again: Vec<&str> = records.iter().filter(|r| written.contains(&r.id)).map(|r| r.key.as_str()).collect();
    sqlx::query("DELETE FROM deleted_objects WHERE key = ANY($1)")
        .bind(&made_again)
        .execute(&mut *conn)
        .await
        .map_err(DbError::during("clearing deletions"))?;
    // Each written item whose bytes an earlier item of its user has (the
    // earliest that is no duplicate itself) points at that item.
    sqlx::query(
        r#"
        UPDATE items AS i SET duplicate_of = c.id
        FROM items AS c
        WHERE i.id = ANY($1) AND i.content_sha256 IS NOT NULL AND i.duplicate_of IS NULL
          AND c.id = (SELECT o.id FROM items o
                      WHERE o.user_id = i.user_id AND o.content_sha256 = i.content_sha256
                        AND o.duplicate_of IS NULL
                      ORDER BY o.created_at, o.id LIMIT 1)
          AND c.id <> i.id
        "#,
    )
    .bind(&written)
    .execute(conn)
    .await
    .map_err(DbError::during("finding items with the same bytes"))?;
    Ok(written)
}

/// An item [`delete_objects`] removed, with where its thumbnail was.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Removed {
    pub id: Uuid,
    pub file_path: String,
    pub bucket: String,
    pub thumbnail_key: Option<String>,
}

/// An object deleted: its key, and the delete's sequencer (in
/// [`domain::events::sequencer_order`] form) when known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deletion {
    pub key: String,
    pub sequencer: Option<String>,
}

/// Records these deletions and removes their items, unless an item was
/// made from a version newer than the delete; the items' analyses and
/// vectors go with them (ON DELETE CASCADE), and items that shared their
/// bytes go back to pending, to be analysed on their own. Answers what was
/// removed.
pub async fn delete_objects(pool: &PgPool, deletions: &[Deletion]) -> Result<Vec<Removed>, DbError> {
    let keys: Vec<&str> = deletions.iter().map(|d| d.key.as_str()).collect();
    let sequencers: Vec<Option<&str>> = deletions.iter().map(|d| d.sequencer.as_deref()).collect();
    let ids: Vec<Uuid> = keys.iter().map(|k| item_uuid(k)).collect();
    let mut tx = pool.begin().await.map_err(DbError::during("starting to delete items"))?;
    sqlx::query(
        r#"
        INSERT INTO deleted_objects AS t (key, sequencer)
        SELECT DISTINCT ON (key) key, sequencer FROM UNNEST($1::text[], $2::text[]) AS d(key, sequencer)
        ORDER BY key, sequencer DESC NULLS LAST
        ON CONFLICT (key) DO UPDATE SET sequencer = greatest(t.sequencer, EXCLUDED.sequencer), deleted_at = now()
        "#,
    )
    .bind(&keys)
    .bind(&sequencers)
    .execute(&mut *tx)
    .await
    .map_err(DbError::during("recording deletions"))?;
    let sharing: Vec<Uuid> = sqlx::query_scalar("SELECT id FROM items WHERE duplicate_of = ANY($1)")
        .bind(&ids)
        .fetch_all(&mut *tx)
        .await
        .map_err(DbError::during("finding items with the same bytes"))?;
    let removed: Vec<Removed> = sqlx::query_as(
        r#"
        DELETE FROM items AS i
        USING UNNEST($1::uuid[], $2::text[]) AS d(id, sequencer)
        WHERE i.id = d.id
          AND (i.source_sequencer IS NULL OR d.sequencer IS NULL OR i.source_sequencer < d.sequencer)
        RETURNING i.id, i.file_path, i.bucket, i.thumbnail_key
        "#,
    )
    .bind(&ids)
    .bind(&sequencers)
    .fetch_all(&mut *tx)
    .await
    .map_err(DbError::during("deleting items"))?;
    // Items that shared a removed item's analysis (their duplicate_of is now
    // NULL) are analysed on their own.
    status::analyse_again(&mut tx, &sharing).await?;
    tx.commit().await.map_err(DbError::during("deleting items"))?;
    Ok(removed)
}

/// Removes every row of `user`: items (their analyses and vectors with
/// them), record failures and the records of deleted keys. Answers how
/// many items and record failures.
pub async fn erase_user(pool: &PgPool, user: &str) -> Result<(u64, u64), DbError> {
    let mut tx = pool.begin().await.map_err(DbError::during("starting to erase a user"))?;
    let items = sqlx::query("DELETE FROM items WHERE user_id = $1")
        .bind(user)
        .execute(&mut *tx)
        .await
        .map_err(DbError::during("erasing a user's items"))?
        .rows_affected();
    let records = sqlx::query("DELETE FROM record_failures WHERE user_id = $1")
        .bind(user)
        .execute(&mut *tx)
        .await
        .map_err(DbError::during("erasing a user's failures"))?
        .rows_affected();
    sqlx::query("DELETE FROM deleted_objects WHERE starts_with(key, $1 || '/')")
        .bind(user)
        .execute(&mut *tx)
        .await
        .map_err(DbError::during("erasing a user's deleted keys"))?;
    tx.commit().await.map_err(DbError::during("erasing a user"))?;
    Ok((items, records))
}

/// Of these keys, those deleted (with a tombstone in `deleted_objects`).
pub async fn deleted_keys(pool: &PgPool, keys: &[&str]) -> Result<HashSet<String>, DbError> {
    let rows: Vec<(String,)> = sqlx::query_as("SELECT key FROM deleted_objects WHERE key = ANY($1)")
        .bind(keys)
        .fetch_all(pool)
        .await
        .map_err(DbError::during("looking up deletions"))?;
    Ok(rows.into_iter().map(|(key,)| key).collect())
}

/// An item whose bytes an earlier item of its user has.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Duplicate {
    pub id: Uuid,
    pub user_id: String,
    /// The earlier item, analysed and embedded for both.
    pub canonical: Uuid,
    pub canonical_key: String,
    pub canonical_analysis_status: String,
}

/// Of these items, the duplicates, by id.
pub async fn duplicates(pool: &PgPool, ids: &[Uuid]) -> Result<HashMap<Uuid, Duplicate>, DbError> {
    let rows: Vec<Duplicate> = sqlx::query_as(
        r#"
        SELECT i.id, i.user_id, c.id AS canonical, c.file_path AS canonical_key, c.analysis_status AS canonical_analysis_status
        FROM items i JOIN items c ON c.id = i.duplicate_of
        WHERE i.id = ANY($1)
        "#,
    )
    .bind(ids)
    .fetch_all(pool)
    .await
    .map_err(DbError::during("looking up items with the same bytes"))?;
    Ok(rows.into_iter().map(|d| (d.id, d)).collect())
}

/// What the thumbnailer measured of an original, as its item row keeps it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Measured {
    pub id: Uuid,
    pub user_id: String,
    pub width: Option<i32>,
    pub height: Option<i32>,
    pub mime_type: Option<String>,
    pub camera: Option<String>,
    pub taken_at: Option<String>,
}

/// What the thumbnailer measured of the items with these ids that exist.
pub async fn measured(pool: &PgPool, ids: &[Uuid]) -> Result<HashMap<Uuid, Measured>, DbError> {
    let rows: Vec<Measured> =
        sqlx::query_as("SELECT id, user_id, width, height, mime_type, camera, taken_at FROM items WHERE id = ANY($1)")
            .bind(ids)
            .fetch_all(pool)
            .await
            .map_err(DbError::during("looking up what the thumbnailer measured"))?;
    Ok(rows.into_iter().map(|r| (r.id, r)).collect())
}

/// Where an item stands, as a stage sees it before doing any work.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ItemState {
    pub id: Uuid,
    pub user_id: String,
    pub source_etag: Option<String>,
    pub thumbnail_status: String,
    pub analysis_status: String,
    pub embedding_status: String,
}

impl ItemState {
    /// Whether the later stages have nothing left to do.
    pub fn analysed_and_embedded(&self) -> bool {
        self.analysis_status == "done" && self.embedding_status == "done"
    }
}

/// The states of the items with these ids that exist.
pub async fn states(pool: &PgPool, ids: &[Uuid]) -> Result<HashMap<Uuid, ItemState>, DbError> {
    let rows: Vec<ItemState> = sqlx::query_as(
        r#"
        SELECT id, user_id, source_etag, thumbnail_status, analysis_status, embedding_status
        FROM items WHERE id = ANY($1)
        "#,
    )
    .bind(ids)
    .fetch_all(pool)
    .await
    .map_err(DbError::during("looking up items"))?;
    Ok(rows.into_iter().map(|r| (r.id, r)).collect())
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

/// One of a user's items with its latest analysis.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ItemDetail {
    pub id: Uuid,
    pub file_path: String,
    pub bucket: String,
    pub thumbnail_key: Option<String>,
    pub width: Option<i32>,
    pub height: Option<i32>,
    pub mime_type: Option<String>,
    pub thumbnail_status: String,
    pub analysis_status: String,
    pub embedding_status: String,
    pub failed_stage: Option<String>,
    /// What the item's user is told of its failure (not the operator's detail).
    pub public_error: Option<String>,
    pub attempts: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The earlier item with the same bytes, whose analysis this one shares.
    pub duplicate_of: Option<Uuid>,
    pub analysis_id: Option<Uuid>,
    pub version: Option<i32>,
    pub category: Option<String>,
    pub summary: Option<String>,
    pub analysis: Option<sqlx::types::Json<serde_json::Value>>,
    pub provider_used: Option<String>,
    pub model_used: Option<String>,
    pub analysed_at: Option<DateTime<Utc>>,
}

/// Item `id` if it is `user_id`'s.
pub async fn of_user(pool: &PgPool, user_id: &str, id: Uuid) -> Result<Option<ItemDetail>, DbError> {
    sqlx::query_as(
        r#"
        SELECT i.id, i.file_path, i.bucket, i.thumbnail_key, i.width, i.height, i.mime_type,
               i.thumbnail_status, i.analysis_status, i.embedding_status, i.failed_stage, i.public_error,
               i.attempts, i.created_at, i.updated_at, i.duplicate_of,
               a.id AS analysis_id, a.version, a.category, a.summary, a.analysis, a.provider_used,
               a.model_used, a.created_at AS analysed_at
        FROM items i
        LEFT JOIN LATERAL (SELECT * FROM analyses WHERE item_id = coalesce(i.duplicate_of, i.id)
                           ORDER BY version DESC LIMIT 1) a ON true
        WHERE i.id = $1 AND i.user_id = $2
        "#,
    )
    .bind(id)
    .bind(user_id)
    .fetch_optional(pool)
    .await
    .map_err(DbError::during("reading an item"))
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
    /// The operator's detail.
    pub last_error: String,
    /// What the item's user is told.
    pub public_error: Option<String>,
    pub attempts: i32,
    pub updated_at: DateTime<Utc>,
}

/// Failed items, newest first, of one user or of everyone.
pub async fn failures(pool: &PgPool, user_id: Option<&str>, limit: i64) -> Result<Vec<FailedItem>, DbError> {
    sqlx::query_as(
        r#"
        SELECT id, user_id, bucket, file_path, thumbnail_key, failed_stage, last_error, public_error, attempts,
               updated_at
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
