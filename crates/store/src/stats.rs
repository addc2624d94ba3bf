//! What the database holds, counted for `collections stats`: items by
//! stage and status, the commonest failure reasons, and the tokens each
//! model used (as stored on every analysis and vector).

use chrono::{DateTime, Utc};
use domain::usage::Usage;
use sqlx::PgPool;

use crate::DbError;

/// Which rows count: of one user, and created since a moment.
#[derive(Debug, Clone, Copy, Default)]
pub struct Filter<'a> {
    pub user: Option<&'a str>,
    pub since: Option<DateTime<Utc>>,
}

/// The tokens one model used, over the rows of one stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelUsage {
    /// `analysis` or `embedding`.
    pub stage: &'static str,
    pub model: String,
    /// The provider that made analyses (`anthropic`, `openai`, `local`);
    /// `None` for embeddings, whose model names say it.
    pub provider: Option<String>,
    pub rows: i64,
    /// Rows whose provider counted no tokens.
    pub uncounted: i64,
    pub used: Usage,
    /// Made through the provider's batch API, billed at its batch price.
    pub batch: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// (stage, status, items).
    pub statuses: Vec<(String, String, i64)>,
    /// (stage, reason, times), commonest first.
    pub failures: Vec<(String, String, i64)>,
    pub models: Vec<ModelUsage>,
    /// Items analysed, the denominator of the cost per 1000 images.
    pub images: i64,
    /// Work waiting for a provider's batch API (`--batch-api`).
    pub batches: BatchWork,
}

/// Requests waiting for a provider batch, of everyone (a batch may hold many users' requests).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, sqlx::FromRow)]
pub struct BatchWork {
    /// In no batch yet.
    pub queued: i64,
    /// In a batch not ingested yet.
    pub submitted: i64,
    /// Batches not ingested yet.
    pub open_batches: i64,
}

/// The tokens of one provider and model's analyses, summed.
#[derive(sqlx::FromRow)]
struct AnalysisTokens {
    provider_used: String,
    model_used: String,
    batch: bool,
    rows: i64,
    uncounted: i64,
    input: i64,
    output: i64,
    cache_read: i64,
    cache_write: i64,
}

/// How many of the failure reasons are listed.
const TOP_FAILURES: i64 = 5;

/// What `filter` selects, counted.
pub async fn gather(pool: &PgPool, filter: Filter<'_>) -> Result<Stats, DbError> {
    let statuses = sqlx::query_as(
        r#"
        SELECT s.stage, s.status, count(*)
        FROM items i,
             LATERAL (VALUES ('thumbnail', i.thumbnail_status), ('analysis', i.analysis_status),
                             ('embedding', i.embedding_status)) AS s(stage, status)
        WHERE ($1::text IS NULL OR i.user_id = $1) AND ($2::timestamptz IS NULL OR i.created_at >= $2)
        GROUP BY 1, 2
        ORDER BY array_position(ARRAY['thumbnail', 'analysis', 'embedding'], s.stage), 2
        "#,
    )
    .bind(filter.user)
    .bind(filter.since)
    .fetch_all(pool)
    .await
    .map_err(DbError::during("counting items by status"))?;
    let failures = sqlx::query_as(
        r#"
        SELECT stage, reason, count(*) FROM (
            SELECT failed_stage AS stage, left(last_error, 160) AS reason FROM items
            WHERE failed_stage IS NOT NULL AND ($1::text IS NULL OR user_id = $1)
              AND ($2::timestamptz IS NULL OR updated_at >= $2)
            UNION ALL
            SELECT stage, left(reason, 160) FROM record_failures
            WHERE ($1::text IS NULL OR user_id = $1) AND ($2::timestamptz IS NULL OR updated_at >= $2)
        ) f
        GROUP BY 1, 2 ORDER BY 3 DESC, 1, 2 LIMIT $3
        "#,
    )
    .bind(filter.user)
    .bind(filter.since)
    .bind(TOP_FAILURES)
    .fetch_all(pool)
    .await
    .map_err(DbError::during("listing failure reasons"))?;
    let analyses: Vec<AnalysisTokens> = sqlx::query_as(
        r#"
        SELECT provider_used, model_used, batch_id IS NOT NULL AS batch, count(*) AS rows,
               count(*) FILTER (WHERE input_tokens IS NULL) AS uncounted,
               coalesce(sum(input_tokens), 0)::bigint AS input,
               coalesce(sum(output_tokens), 0)::bigint AS output,
               coalesce(sum(cache_read_tokens), 0)::bigint AS cache_read,
               coalesce(sum(cache_write_tokens), 0)::bigint AS cache_write
        FROM analyses
        WHERE ($1::text IS NULL OR user_id = $1) AND ($2::timestamptz IS NULL OR created_at >= $2)
        GROUP BY 1, 2, 3 ORDER BY 2, 3
        "#,
    )
    .bind(filter.user)
    .bind(filter.since)
    .fetch_all(pool)
    .await
    .map_err(DbError::during("adding up analysis tokens"))?;
    let embeddings: Vec<(String, i64, i64, i64)> = sqlx::query_as(
        r#"
        SELECT embedding_model, count(*), count(*) FILTER (WHERE tokens IS NULL), coalesce(sum(tokens), 0)::bigint
        FROM embeddings
        WHERE ($1::text IS NULL OR user_id = $1) AND ($2::timestamptz IS NULL OR created_at >= $2)
        GROUP BY 1 ORDER BY 1
        "#,
    )
    .bind(filter.user)
    .bind(filter.since)
    .fetch_all(pool)
    .await
    .map_err(DbError::during("adding up embedding tokens"))?;
    let images: i64 = sqlx::query_scalar(
        "SELECT count(DISTINCT item_id) FROM analyses
         WHERE ($1::text IS NULL OR user_id = $1) AND ($2::timestamptz IS NULL OR created_at >= $2)",
    )
    .bind(filter.user)
    .bind(filter.since)
    .fetch_one(pool)
    .await
    .map_err(DbError::during("counting analysed images"))?;

    let count = |n: i64| u64::try_from(n).unwrap_or(0);
    let mut models: Vec<ModelUsage> = analyses
        .into_iter()
        .map(|a| ModelUsage {
            stage: "analysis",
            provider: Some(a.provider_used),
            model: a.model_used,
            rows: a.rows,
            uncounted: a.uncounted,
            used: Usage {
                input: count(a.input),
                output: count(a.output),
                cache_read: count(a.cache_read),
                cache_write: count(a.cache_write),
            },
            batch: a.batch,
        })
        .collect();
    models.extend(embeddings.into_iter().map(|(model, rows, uncounted, tokens)| ModelUsage {
        stage: "embedding",
        provider: None,
        model,
        rows,
        uncounted,
        used: Usage { input: count(tokens), ..Usage::default() },
        batch: false,
    }));
    let batches = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE batch_id IS NULL) AS queued, count(batch_id) AS submitted, \
                (SELECT count(*) FROM provider_batches WHERE status <> 'ingested') AS open_batches \
         FROM batch_requests",
    )
    .fetch_one(pool)
    .await
    .map_err(DbError::during("counting batch work"))?;
    Ok(Stats { statuses, failures, models, images, batches })
}
