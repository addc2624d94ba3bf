//! The `embeddings` table: one vector per analysis and model, written a
//! batch at a time.

use std::collections::HashSet;

use serde_json::Value;
use sqlx::PgPool;
use sqlx::types::Json;
use uuid::Uuid;

use super::{DbError, Vector};

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

/// The embedding stage's results for one batch.
#[derive(Debug, Clone, Default)]
pub struct EmbeddingBatch {
    pub new: Vec<NewEmbedding>,
    /// Items whose analysis already had its embedding (a replay).
    pub unchanged: Vec<Uuid>,
    pub failed: Vec<(Uuid, String)>,
}

/// Stores the batch's embeddings (one already stored is left as it is) and
/// records each item's embedding status, in one statement.
pub async fn store_batch(pool: &PgPool, batch: &EmbeddingBatch) -> Result<(), DbError> {
    let EmbeddingBatch { new: embeddings, unchanged, failed: failures } = batch;
    let ids: Vec<Uuid> = embeddings.iter().map(|_| Uuid::now_v7()).collect();
    let item_ids: Vec<Uuid> = embeddings.iter().map(|e| e.item_id).collect();
    let analysis_ids: Vec<Uuid> = embeddings.iter().map(|e| e.analysis_id).collect();
    let users: Vec<&str> = embeddings.iter().map(|e| e.user_id.as_str()).collect();
    let vectors: Vec<Vector> = embeddings.iter().map(|e| e.vector.clone()).collect();
    let models: Vec<&str> = embeddings.iter().map(|e| e.model.as_str()).collect();
    let dimensions: Vec<i32> = embeddings.iter().map(|e| e.vector.dimensions() as i32).collect();
    let sources: Vec<Json<&Value>> = embeddings.iter().map(|e| Json(&e.source)).collect();
    let failed_ids: Vec<Uuid> = failures.iter().map(|(id, _)| *id).collect();
    let failed_errors: Vec<&str> = failures.iter().map(|(_, e)| e.as_str()).collect();
    sqlx::query(
        r#"
        WITH inserted AS (
            INSERT INTO embeddings (id, item_id, analysis_id, user_id, vector, embedding_model,
                                    embedding_dimensions, embedding_source)
            SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::vector[], $6::text[],
                                 $7::int[], $8::jsonb[])
            ON CONFLICT (analysis_id, embedding_model) DO NOTHING
        ),
        outcomes AS (
            SELECT unnest($2::uuid[] || $11::uuid[]) AS item_id, NULL::text AS error
            UNION ALL
            SELECT * FROM UNNEST($9::uuid[], $10::text[])
        )
        UPDATE items AS i SET
            embedding_status = CASE WHEN o.error IS NULL THEN 'done' ELSE 'failed' END,
            failed_stage = CASE WHEN o.error IS NOT NULL THEN 'embedding'
                                WHEN i.failed_stage = 'embedding' THEN NULL ELSE i.failed_stage END,
            last_error = CASE WHEN o.error IS NOT NULL THEN o.error
                              WHEN i.failed_stage = 'embedding' THEN NULL ELSE i.last_error END,
            attempts = i.attempts + 1,
            updated_at = now()
        FROM outcomes o
        WHERE i.id = o.item_id
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
    .bind(&failed_ids)
    .bind(&failed_errors)
    .bind(unchanged)
    .execute(pool)
    .await
    .map_err(DbError::during("storing embeddings"))?;
    Ok(())
}
