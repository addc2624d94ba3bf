//! The `embeddings` table: one vector per analysis and model, written a
//! batch at a time with binary COPY.

use std::collections::HashSet;

use futures::future::BoxFuture;
use serde_json::Value;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use domain::stage::StageName;

use crate::copy::BinaryCopy;
use crate::models::{self, EmbeddingModel};
use crate::{DbError, Vector, each_on_refusal, status};

/// An embedding ready to store.
#[derive(Debug, Clone)]
pub struct NewEmbedding {
    pub item_id: Uuid,
    pub analysis_id: Uuid,
    pub user_id: String,
    pub vector: Vector,
    pub model: String,
    /// Which analysis fields made the embedded document.
    pub source: Value,
    /// Its share of its request's tokens, when the provider counted them.
    pub tokens: Option<i64>,
}

/// Of these analyses, those that already have an embedding from `model`.
pub async fn existing(pool: &PgPool, analysis_ids: &[Uuid], model: &str) -> Result<HashSet<Uuid>, DbError> {
    let rows: Vec<(Uuid,)> =
        sqlx::query_as("SELECT analysis_id FROM embeddings WHERE analysis_id = ANY($1) AND embedding_model = $2")
            .bind(analysis_ids)
            .bind(model)
            .fetch_all(pool)
            .await
            .map_err(DbError::during("looking up existing embeddings"))?;
    Ok(rows.into_iter().map(|(id,)| id).collect())
}

const COPY_EMBEDDINGS: &str = "COPY embeddings (id, item_id, analysis_id, user_id, vector, embedding_model, \
                               embedding_dimensions, embedding_source, tokens) FROM STDIN (FORMAT binary)";

/// Rows of a binary COPY sent at a time: about 1 MiB of 1024-dimension
/// vectors, so encoding here and parsing on the server overlap.
const COPY_CHUNK_ROWS: usize = 256;

fn copy_row(copy: &mut BinaryCopy, r: &NewEmbedding) {
    copy.row(9)
        .uuid(Uuid::now_v7())
        .uuid(r.item_id)
        .uuid(r.analysis_id)
        .text(&r.user_id)
        .vector(&r.vector)
        .text(&r.model)
        .int4(r.vector.as_slice().len() as i32)
        .jsonb(&r.source)
        .int8(r.tokens);
}

fn row_size(rows: &[NewEmbedding]) -> usize {
    rows.first().map_or(0, |r| crate::vector::binary_len(&r.vector) + 200)
}

/// The rows as one binary COPY body, with fresh ids (what `psql \copy` reads).
pub fn copy_body(rows: &[NewEmbedding]) -> Vec<u8> {
    let mut copy = BinaryCopy::with_capacity(rows.len() * row_size(rows));
    rows.iter().for_each(|r| copy_row(&mut copy, r));
    copy.finish()
}

/// Writes new rows with one binary COPY, streamed in chunks: the fast
/// path. A row whose (analysis, model) is already stored makes the whole
/// COPY fail with a unique violation; [`insert_rows`] is the path that
/// tolerates them.
pub async fn copy_rows(conn: &mut PgConnection, rows: &[NewEmbedding]) -> Result<u64, DbError> {
    if rows.is_empty() {
        return Ok(0);
    }
    let mut sink = conn.copy_in_raw(COPY_EMBEDDINGS).await.map_err(DbError::during("starting COPY of embeddings"))?;
    let mut copy = BinaryCopy::with_capacity(COPY_CHUNK_ROWS * row_size(rows));
    for chunk in rows.chunks(COPY_CHUNK_ROWS) {
        chunk.iter().for_each(|r| copy_row(&mut copy, r));
        if let Err(e) = sink.send(copy.take()).await {
            // Ends the COPY so the connection is usable again.
            let _ = sink.abort("sending failed").await;
            return Err(DbError::during("sending embeddings")(e));
        }
    }
    sink.send(copy.finish()).await.map_err(DbError::during("sending embeddings"))?;
    sink.finish().await.map_err(DbError::during("finishing COPY of embeddings"))
}

/// Inserts rows with one `UNNEST` statement, leaving (analysis, model)
/// pairs that are already stored as they are.
pub async fn insert_rows(conn: &mut PgConnection, rows: &[NewEmbedding]) -> Result<u64, DbError> {
    if rows.is_empty() {
        return Ok(0);
    }
    let ids: Vec<Uuid> = rows.iter().map(|_| Uuid::now_v7()).collect();
    let item_ids: Vec<Uuid> = rows.iter().map(|e| e.item_id).collect();
    let analysis_ids: Vec<Uuid> = rows.iter().map(|e| e.analysis_id).collect();
    let users: Vec<&str> = rows.iter().map(|e| e.user_id.as_str()).collect();
    let vectors: Vec<&Vector> = rows.iter().map(|e| &e.vector).collect();
    let models: Vec<&str> = rows.iter().map(|e| e.model.as_str()).collect();
    let dimensions: Vec<i32> = rows.iter().map(|e| e.vector.as_slice().len() as i32).collect();
    let sources: Vec<sqlx::types::Json<&Value>> = rows.iter().map(|e| sqlx::types::Json(&e.source)).collect();
    let tokens: Vec<Option<i64>> = rows.iter().map(|e| e.tokens).collect();
    let done = sqlx::query(
        r#"
        INSERT INTO embeddings (id, item_id, analysis_id, user_id, vector, embedding_model,
                                embedding_dimensions, embedding_source, tokens)
        SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::vector[], $6::text[],
                             $7::int[], $8::jsonb[], $9::bigint[])
        ON CONFLICT (user_id, analysis_id, embedding_model) DO NOTHING
        "#,
    )
    .bind(&ids)
    .bind(&item_ids)
    .bind(&analysis_ids)
    .bind(&users)
    .bind(&vectors)
    .bind(&models)
    .bind(&dimensions)
    .bind(&sources)
    .bind(&tokens)
    .execute(&mut *conn)
    .await
    .map_err(DbError::during("inserting embeddings"))?;
    Ok(done.rows_affected())
}

/// Inserts one row in its own statement: the row-at-a-time baseline the
/// benchmarks compare the batch path with. The pipeline never uses it.
pub async fn insert_one(conn: &mut PgConnection, row: &NewEmbedding) -> Result<u64, DbError> {
    let done = sqlx::query(
        r#"
        INSERT INTO embeddings (id, item_id, analysis_id, user_id, vector, embedding_model,
                                embedding_dimensions, embedding_source, tokens)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
        ON CONFLICT (user_id, analysis_id, embedding_model) DO NOTHING
        "#,
    )
    .bind(Uuid::now_v7())
    .bind(row.item_id)
    .bind(row.analysis_id)
    .bind(&row.user_id)
    .bind(&row.vector)
    .bind(&row.model)
    .bind(row.vector.as_slice().len() as i32)
    .bind(sqlx::types::Json(&row.source))
    .bind(row.tokens)
    .execute(&mut *conn)
    .await
    .map_err(DbError::during("inserting an embedding"))?;
    Ok(done.rows_affected())
}

/// The embedding stage's results for one batch.
#[derive(Debug, Clone, Default)]
pub struct EmbeddingBatch {
    pub new: Vec<NewEmbedding>,
    /// Items whose analysis already had its embedding (a replay).
    pub unchanged: Vec<Uuid>,
    /// Vectors of a model other than the active one (a re-embed): the
    /// items' embedding statuses, which are the active model's, are left
    /// as they are.
    pub side_model: bool,
}

fn is_unique_violation(e: &DbError) -> bool {
    e.sqlstate().as_deref() == Some("23505")
}

/// The insert that leaves stored rows alone, answering the items of all rows.
fn insert_all<'c>(conn: &'c mut PgConnection, rows: &'c [NewEmbedding]) -> BoxFuture<'c, Result<Vec<Uuid>, DbError>> {
    Box::pin(async move {
        insert_rows(conn, rows).await?;
        Ok(rows.iter().map(|r| r.item_id).collect())
    })
}

/// Stores a batch in one transaction: the new vectors by binary COPY (or,
/// when a concurrent delivery stored some of them first, by the insert that
/// leaves those alone; or, when the database refuses a row, by that insert
/// row by row), then the stored items' embedding status. Each model is
/// registered first; a vector of another size than its model's is refused.
/// Answers the rows refused: (item, analysis, why).
pub async fn store_batch(pool: &PgPool, batch: &EmbeddingBatch) -> Result<Vec<(Uuid, Uuid, String)>, DbError> {
    let unfit = unfit_rows(pool, &batch.new).await?;
    let unchanged: &[Uuid] = if batch.side_model { &[] } else { &batch.unchanged };
    if unfit.is_empty() {
        return store_rows(pool, &batch.new, unchanged, !batch.side_model).await;
    }
    let fit: Vec<NewEmbedding> =
        (0..batch.new.len()).filter(|i| !unfit.iter().any(|(u, _)| u == i)).map(|i| batch.new[i].clone()).collect();
    let mut refused = store_rows(pool, &fit, unchanged, !batch.side_model).await?;
    refused.extend(unfit.into_iter().map(|(i, why)| (batch.new[i].item_id, batch.new[i].analysis_id, why)));
    Ok(refused)
}

/// The rows whose model cannot take them, by position, with why: the
/// model is registered with another size, or its name is refused.
async fn unfit_rows(pool: &PgPool, rows: &[NewEmbedding]) -> Result<Vec<(usize, String)>, DbError> {
    let mut sizes: Vec<(&str, usize)> = rows.iter().map(|r| (r.model.as_str(), r.vector.as_slice().len())).collect();
    sizes.sort_unstable();
    sizes.dedup();
    let mut unfit = Vec::new();
    for (model, dimensions) in sizes {
        let why = match models::register(pool, &EmbeddingModel::new(model, dimensions)).await {
            Ok(registered) if registered as usize == dimensions => continue,
            Ok(registered) => {
                format!("{model} stores {registered}-dimension vectors; this one has {dimensions}")
            }
            Err(e) if e.is_refusal() => format!("the database refused the model name {model:?}: {e}"),
            Err(e) => return Err(e),
        };
        let positions =
            rows.iter().enumerate().filter(|(_, r)| r.model == model && r.vector.as_slice().len() == dimensions);
        unfit.extend(positions.map(|(i, _)| (i, why.clone())));
    }
    Ok(unfit)
}

/// Stores the rows (see [`store_batch`]) and, with `statuses`, marks the
/// stored and `unchanged` items' embedding done.
async fn store_rows(
    pool: &PgPool,
    rows: &[NewEmbedding],
    unchanged: &[Uuid],
    statuses: bool,
) -> Result<Vec<(Uuid, Uuid, String)>, DbError> {
    let mut tx = pool.begin().await.map_err(DbError::during("starting to store embeddings"))?;
    let mut attempt =
        sqlx::Connection::begin(&mut *tx).await.map_err(DbError::during("starting to store embeddings"))?;
    let (stored, refused) = match copy_rows(&mut attempt, rows).await {
        Ok(_) => {
            attempt.commit().await.map_err(DbError::during("storing embeddings"))?;
            (rows.iter().map(|r| r.item_id).collect(), Vec::new())
        }
        Err(e) if is_unique_violation(&e) || e.is_refusal() => {
            attempt.rollback().await.map_err(DbError::during("storing embeddings"))?;
            each_on_refusal(&mut tx, rows, insert_all).await?
        }
        Err(e) => return Err(e),
    };
    if statuses {
        let done: Vec<Uuid> = stored.into_iter().chain(unchanged.iter().copied()).collect();
        status::mark_done(&mut tx, StageName::Embedding, &done, &[]).await?;
    }
    tx.commit().await.map_err(DbError::during("storing embeddings"))?;
    Ok(refused
        .into_iter()
        .map(|(i, e)| {
            let row = &rows[i];
            (row.item_id, row.analysis_id, format!("the database refused the embedding: {e}"))
        })
        .collect())
}

/// Runs one long-running maintenance statement on a session of its own,
/// with no time limits and `maintenance_mib` of memory if given;
/// `CONCURRENTLY` statements need to be outside a transaction, as here.
pub(crate) async fn maintenance(
    pool: &PgPool,
    sql: &str,
    maintenance_mib: Option<u32>,
    doing: &'static str,
) -> Result<(), DbError> {
    let mut conn = pool.acquire().await.map_err(DbError::during(doing))?;
    crate::without_limits(&mut conn).await?;
    if let Some(mib) = maintenance_mib {
        // SET takes no bind parameters; the value is a number we format ourselves.
        sqlx::query(&format!("SET maintenance_work_mem = '{mib}MB'"))
            .execute(&mut *conn)
            .await
            .map_err(DbError::during("configuring the index build"))?;
    }
    let result = sqlx::query(sql).execute(&mut *conn).await.map_err(DbError::during(doing));
    crate::with_limits_back(&mut conn, doing).await?;
    result.map(|_| ())
}

/// An analysis a model has not embedded yet.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Unembedded {
    pub item_id: Uuid,
    pub analysis_id: Uuid,
    pub file_path: String,
}

/// The latest analysis of every item (of `user`, or everyone's) that
/// `model` has not embedded.
pub async fn unembedded(pool: &PgPool, model: &str, user: Option<&str>) -> Result<Vec<Unembedded>, DbError> {
    let latest: Vec<Unembedded> = sqlx::query_as(
        r#"
        SELECT DISTINCT ON (a.item_id) a.item_id, a.id AS analysis_id, i.file_path
        FROM analyses a JOIN items i ON i.id = a.item_id
        WHERE ($1::text IS NULL OR a.user_id = $1)
        ORDER BY a.item_id, a.version DESC
        "#,
    )
    .bind(user)
    .fetch_all(pool)
    .await
    .map_err(DbError::during("finding the latest analyses"))?;
    let analyses: Vec<Uuid> = latest.iter().map(|u| u.analysis_id).collect();
    let embedded = existing(pool, &analyses, model).await?;
    Ok(latest.into_iter().filter(|u| !embedded.contains(&u.analysis_id)).collect())
}

/// When `model` last wrote a vector (of `user`, or anyone's), if it did.
pub async fn last_written(
    pool: &PgPool,
    model: &str,
    user: Option<&str>,
) -> Result<Option<chrono::DateTime<chrono::Utc>>, DbError> {
    sqlx::query_scalar(
        "SELECT max(created_at) FROM embeddings WHERE embedding_model = $1 AND ($2::text IS NULL OR user_id = $2)",
    )
    .bind(model)
    .bind(user)
    .fetch_one(pool)
    .await
    .map_err(DbError::during("finding a model's last vector"))
}

/// Removes `user`'s vectors of `model`. Answers how many.
pub async fn remove_of_user(pool: &PgPool, model: &str, user: &str) -> Result<u64, DbError> {
    let done = sqlx::query("DELETE FROM embeddings WHERE embedding_model = $1 AND user_id = $2")
        .bind(model)
        .bind(user)
        .execute(pool)
        .await
        .map_err(DbError::during("removing a user's vectors of a model"))?;
    Ok(done.rows_affected())
}
