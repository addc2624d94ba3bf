//! The `analyses` table: versioned analyses per item, written a batch at a
//! time, with an idempotency key so a replayed event adds nothing.

use std::collections::HashSet;

use serde_json::Value;
use sqlx::PgPool;
use sqlx::types::Json;
use uuid::Uuid;

use super::DbError;

/// An analysis ready to store.
#[derive(Debug, Clone)]
pub struct NewAnalysis {
    pub item_id: Uuid,
    pub user_id: String,
    pub category: String,
    pub summary: String,
    /// The validated analysis, in the documented schema.
    pub analysis: Value,
    /// The provider's reply as received.
    pub raw_response: Value,
    pub provider_used: String,
    pub model_used: String,
    pub trace_id: Option<String>,
    /// Same image, provider, model and request: same key, same row.
    pub request_key: String,
}

/// Where an analysis of the batch ended up.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct StoredAnalysis {
    pub item_id: Uuid,
    pub request_key: String,
    pub analysis_id: Uuid,
    /// False when the row already existed (a replay).
    pub created: bool,
}

/// Stores the batch's analyses (each the next version of its item, or the
/// existing row when its key was seen before) and records failed items, and
/// items whose analysis was already stored (`reused`, by analysis id: a
/// replay, or a new upload of an image analysed before) as done, in one
/// statement. A reused analysis that is no longer its item's latest (an
/// earlier image put back) becomes the latest version again; of several
/// for one item, the last in `reused`. An item with
/// several results in the batch is recorded failed if any failed. An
/// analysis whose item row is missing, or belongs to another user, is not
/// stored and is absent from the answer.
pub async fn store_batch(
    pool: &PgPool,
    analyses: &[NewAnalysis],
    failures: &[(Uuid, String)],
    reused: &[Uuid],
) -> Result<Vec<StoredAnalysis>, DbError> {
    let mut seen = HashSet::new();
    let analyses: Vec<&NewAnalysis> =
        analyses.iter().filter(|a| seen.insert((a.item_id, a.request_key.as_str()))).collect();
    let ids: Vec<Uuid> = analyses.iter().map(|_| Uuid::now_v7()).collect();
    let item_ids: Vec<Uuid> = analyses.iter().map(|a| a.item_id).collect();
    let failed_ids: Vec<Uuid> = failures.iter().map(|(id, _)| *id).collect();
    let failed_errors: Vec<&str> = failures.iter().map(|(_, e)| e.as_str()).collect();
    // Versions are numbered from what the statement sees; a concurrent
    // writer (a direct backfill beside the Lambdas) may take a number first,
    // and the statement is simply run again.
    let mut attempt = 1;
    loop {
        let result = store_statement(pool, &ids, &item_ids, &analyses, (&failed_ids, &failed_errors), reused).await;
        match result {
            Err(e) if attempt < 3 && is_version_taken(&e) => attempt += 1,
            other => return other,
        }
    }
}

fn is_version_taken(e: &DbError) -> bool {
    e.database_error().and_then(|d| d.constraint()) == Some("analyses_item_version")
}

async fn store_statement(
    pool: &PgPool,
    ids: &[Uuid],
    item_ids: &[Uuid],
    analyses: &[&NewAnalysis],
    (failed_ids, failed_errors): (&[Uuid], &[&str]),
    reused: &[Uuid],
) -> Result<Vec<StoredAnalysis>, DbError> {
    let text = |f: fn(&NewAnalysis) -> Option<String>| analyses.iter().map(|a| f(a)).collect::<Vec<_>>();
    let json = |f: fn(&NewAnalysis) -> &Value| analyses.iter().map(|a| Json(f(a))).collect::<Vec<_>>();
    sqlx::query_as(
        r#"
        WITH input AS (
            SELECT *, row_number() OVER (PARTITION BY item_id ORDER BY ord) AS nth
            FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::jsonb[], $7::jsonb[],
                        $8::text[], $9::text[], $10::text[], $11::text[])
                 WITH ORDINALITY AS t(id, item_id, user_id, category, summary, analysis, raw_response,
                                      provider_used, model_used, trace_id, request_key, ord)
        ),
        inserted AS (
            INSERT INTO analyses (id, item_id, user_id, version, category, summary, analysis, raw_response,
                                  provider_used, model_used, trace_id, request_key)
            SELECT id, item_id, user_id,
                   coalesce((SELECT max(a.version) FROM analyses a WHERE a.item_id = input.item_id), 0) + nth,
                   category, summary, analysis, raw_response, provider_used, model_used, trace_id, request_key
            FROM input
            WHERE EXISTS (SELECT 1 FROM items i WHERE i.id = input.item_id AND i.user_id = input.user_id)
            ON CONFLICT (item_id, request_key) DO NOTHING
            RETURNING id, item_id, request_key
        ),
        picked AS (
            SELECT DISTINCT ON (a.item_id) a.id, a.item_id, a.version
            FROM analyses a JOIN unnest($14::uuid[]) WITH ORDINALITY AS r(id, ord) ON r.id = a.id
            WHERE a.item_id NOT IN (SELECT item_id FROM input)
            ORDER BY a.item_id, r.ord DESC
        ),
        made_current AS (
            UPDATE analyses a SET version = top.version + 1
            FROM picked, (SELECT item_id, max(version) AS version FROM analyses GROUP BY item_id) top
            WHERE a.id = picked.id AND top.item_id = picked.item_id AND picked.version < top.version
        ),
        results AS (
            SELECT input.item_id, NULL::text AS error
            FROM input JOIN items i ON i.id = input.item_id AND i.user_id = input.user_id
            UNION ALL
            SELECT * FROM UNNEST($12::uuid[], $13::text[])
            UNION ALL
            SELECT item_id, NULL::text FROM analyses WHERE id = ANY($14)
        ),
        outcomes AS (
            SELECT DISTINCT ON (item_id) item_id, error FROM results ORDER BY item_id, error IS NULL
        ),
        marked AS (
            UPDATE items AS i SET
                analysis_status = CASE WHEN o.error IS NULL THEN 'done' ELSE 'failed' END,
                embedding_status = CASE WHEN EXISTS (SELECT 1 FROM inserted n WHERE n.item_id = i.id)
                                        THEN 'pending' ELSE i.embedding_status END,
                failed_stage = CASE WHEN o.error IS NOT NULL THEN 'analysis'
                                    WHEN i.failed_stage = 'analysis' THEN NULL ELSE i.failed_stage END,
                last_error = CASE WHEN o.error IS NOT NULL THEN o.error
                                  WHEN i.failed_stage = 'analysis' THEN NULL ELSE i.last_error END,
                attempts = i.attempts + 1,
                updated_at = now()
            FROM outcomes o
            WHERE i.id = o.item_id
        )
        SELECT input.item_id, input.request_key, coalesce(n.id, a.id) AS analysis_id, n.id IS NOT NULL AS created
        FROM input
        LEFT JOIN inserted n ON n.item_id = input.item_id AND n.request_key = input.request_key
        LEFT JOIN analyses a ON a.item_id = input.item_id AND a.request_key = input.request_key
        WHERE coalesce(n.id, a.id) IS NOT NULL
        ORDER BY input.ord
        "#,
    )
    .bind(ids)
    .bind(item_ids)
    .bind(text(|a| Some(a.user_id.clone())))
    .bind(text(|a| Some(a.category.clone())))
    .bind(text(|a| Some(a.summary.clone())))
    .bind(json(|a| &a.analysis))
    .bind(json(|a| &a.raw_response))
    .bind(text(|a| Some(a.provider_used.clone())))
    .bind(text(|a| Some(a.model_used.clone())))
    .bind(text(|a| a.trace_id.clone()))
    .bind(text(|a| Some(a.request_key.clone())))
    .bind(failed_ids)
    .bind(failed_errors)
    .bind(reused)
    .fetch_all(pool)
    .await
    .map_err(DbError::during("storing analyses"))
}

/// A stored analysis, as the embedder reads it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AnalysisRecord {
    pub id: Uuid,
    pub item_id: Uuid,
    pub user_id: String,
    pub version: i32,
    pub category: String,
    pub summary: String,
    pub analysis: Json<Value>,
}

/// The analyses with these ids, in one query; missing ids are simply absent.
pub async fn load(pool: &PgPool, ids: &[Uuid]) -> Result<Vec<AnalysisRecord>, DbError> {
    sqlx::query_as("SELECT id, item_id, user_id, version, category, summary, analysis FROM analyses WHERE id = ANY($1)")
        .bind(ids)
        .fetch_all(pool)
        .await
        .map_err(DbError::during("loading analyses"))
}

/// The latest analysis id of each of these items, for re-running embedding.
pub async fn latest_ids(pool: &PgPool, item_ids: &[Uuid]) -> Result<Vec<(Uuid, Uuid)>, DbError> {
    sqlx::query_as(
        r#"
        SELECT DISTINCT ON (item_id) item_id, id FROM analyses
        WHERE item_id = ANY($1) ORDER BY item_id, version DESC
        "#,
    )
    .bind(item_ids)
    .fetch_all(pool)
    .await
    .map_err(DbError::during("finding latest analyses"))
}

/// The ids of analyses already stored under these (item, request key) pairs.
pub async fn find_by_request(
    pool: &PgPool,
    requests: &[(Uuid, String)],
) -> Result<std::collections::HashMap<(Uuid, String), Uuid>, DbError> {
    let items: Vec<Uuid> = requests.iter().map(|(i, _)| *i).collect();
    let keys: Vec<&str> = requests.iter().map(|(_, k)| k.as_str()).collect();
    let rows: Vec<(Uuid, String, Uuid)> = sqlx::query_as(
        r#"
        SELECT a.item_id, a.request_key, a.id
        FROM analyses a JOIN UNNEST($1::uuid[], $2::text[]) AS r(item_id, request_key)
             ON a.item_id = r.item_id AND a.request_key = r.request_key
        "#,
    )
    .bind(&items)
    .bind(&keys)
    .fetch_all(pool)
    .await
    .map_err(DbError::during("looking up analyses"))?;
    Ok(rows.into_iter().map(|(item, key, id)| ((item, key), id)).collect())
}
