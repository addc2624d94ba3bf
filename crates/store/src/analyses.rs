//! The `analyses` table: versioned analyses per item, written a batch at a
//! time, with an idempotency key so a replayed event adds nothing.

use std::collections::HashSet;

use serde_json::Value;
use sqlx::types::Json;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use domain::stage::StageName;
use domain::usage::Usage;

use crate::{DbError, each_on_refusal, status};

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
    /// The tokens the provider counted for it, when it did.
    pub usage: Option<Usage>,
    /// The provider batch that answered it (`store::batches`), priced at the
    /// batch price; `None`: a synchronous call.
    pub batch_id: Option<Uuid>,
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

/// What [`store_batch`] did.
#[derive(Debug, Default)]
pub struct StoredBatch {
    /// The analyses stored (or found stored), by item and request key. An
    /// analysis whose item row is missing, or belongs to another user, is
    /// not stored and is absent.
    pub stored: Vec<StoredAnalysis>,
    /// Analyses the database refused, by item and request key, with why.
    pub refused: Vec<(Uuid, String, String)>,
}

/// Stores the batch's analyses (each the next version of its item, or the
/// existing row when its key was seen before) and marks their items, and
/// the items of `reused` analyses (by id: a replay, or a new upload of an
/// image analysed before), done, in one transaction. A reused analysis that
/// is no longer its item's latest (an earlier image put back) becomes the
/// latest version again; of several for one item, the last in `reused`.
/// The analyses go in one statement; if the database refuses it for a data
/// reason, one by one, so only the refused ones are left out.
pub async fn store_batch(pool: &PgPool, analyses: &[NewAnalysis], reused: &[Uuid]) -> Result<StoredBatch, DbError> {
    let mut seen = HashSet::new();
    let analyses: Vec<NewAnalysis> =
        analyses.iter().filter(|a| seen.insert((a.item_id, a.request_key.clone()))).cloned().collect();
    // Versions are numbered from what the statement sees; a concurrent
    // writer (a direct backfill beside the Lambdas) may take a number first,
    // and the transaction is simply run again.
    let mut attempt = 1;
    loop {
        match store_transaction(pool, &analyses, reused).await {
            Err(e) if attempt < 3 && is_version_taken(&e) => attempt += 1,
            other => return other,
        }
    }
}

fn is_version_taken(e: &DbError) -> bool {
    e.database_error().and_then(|d| d.constraint()) == Some("analyses_item_version")
}

async fn store_transaction(pool: &PgPool, analyses: &[NewAnalysis], reused: &[Uuid]) -> Result<StoredBatch, DbError> {
    let mut tx = pool.begin().await.map_err(DbError::during("starting to store analyses"))?;
    let (stored, refused) = each_on_refusal(&mut tx, analyses, |conn, rows| Box::pin(insert(conn, rows))).await?;
    let input_items: Vec<Uuid> = analyses.iter().map(|a| a.item_id).collect();
    let reused_items = make_current(&mut tx, reused, &input_items).await?;
    answer_waiting(&mut tx, &stored).await?;
    let done: Vec<Uuid> = stored.iter().map(|s| s.item_id).chain(reused_items).collect();
    let restart: Vec<Uuid> = stored.iter().filter(|s| s.created).map(|s| s.item_id).collect();
    status::mark_done(&mut tx, StageName::Analysis, &done, &restart).await?;
    tx.commit().await.map_err(DbError::during("storing analyses"))?;
    let refused = refused
        .into_iter()
        .map(|(i, e)| (analyses[i].item_id, analyses[i].request_key.clone(), format!("the database refused it: {e}")))
        .collect();
    Ok(StoredBatch { stored, refused })
}

/// Inserts analyses, each the next version of its item, unless its item
/// row is missing or another user's; answers every input analysis stored,
/// new or found.
async fn insert(conn: &mut PgConnection, analyses: &[NewAnalysis]) -> Result<Vec<StoredAnalysis>, DbError> {
    let ids: Vec<Uuid> = analyses.iter().map(|_| Uuid::now_v7()).collect();
    let item_ids: Vec<Uuid> = analyses.iter().map(|a| a.item_id).collect();
    let text = |f: fn(&NewAnalysis) -> Option<&str>| analyses.iter().map(f).collect::<Vec<_>>();
    let json = |f: fn(&NewAnalysis) -> &Value| analyses.iter().map(|a| Json(f(a))).collect::<Vec<_>>();
    let tokens = |f: fn(&Usage) -> u64| {
        analyses.iter().map(|a| a.usage.as_ref().map(|u| i64::try_from(f(u)).unwrap_or(i64::MAX))).collect::<Vec<_>>()
    };
    sqlx::query_as(
        r#"
        WITH input AS (
            SELECT *, row_number() OVER (PARTITION BY item_id ORDER BY ord) AS nth
            FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::jsonb[], $7::jsonb[],
                        $8::text[], $9::text[], $10::text[], $11::text[], $12::bigint[], $13::bigint[],
                        $14::bigint[], $15::bigint[], $16::uuid[])
                 WITH ORDINALITY AS t(id, item_id, user_id, category, summary, analysis, raw_response,
                                      provider_used, model_used, trace_id, request_key, input_tokens,
                                      output_tokens, cache_read_tokens, cache_write_tokens, batch_id, ord)
        ),
        inserted AS (
            INSERT INTO analyses (id, item_id, user_id, version, category, summary, analysis, raw_response,
                                  provider_used, model_used, trace_id, request_key, input_tokens,
                                  output_tokens, cache_read_tokens, cache_write_tokens, batch_id)
            SELECT id, item_id, user_id,
                   coalesce((SELECT max(a.version) FROM analyses a WHERE a.item_id = input.item_id), 0) + nth,
                   category, summary, analysis, raw_response, provider_used, model_used, trace_id, request_key,
                   input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, batch_id
            FROM input
            WHERE EXISTS (SELECT 1 FROM items i WHERE i.id = input.item_id AND i.user_id = input.user_id)
            ON CONFLICT (item_id, request_key) DO NOTHING
            RETURNING id, item_id, request_key
        )
        SELECT input.item_id, input.request_key, coalesce(n.id, a.id) AS analysis_id, n.id IS NOT NULL AS created
        FROM input
        LEFT JOIN inserted n ON n.item_id = input.item_id AND n.request_key = input.request_key
        LEFT JOIN analyses a ON a.item_id = input.item_id AND a.request_key = input.request_key
        WHERE coalesce(n.id, a.id) IS NOT NULL
        ORDER BY input.ord
        "#,
    )
    .bind(&ids)
    .bind(&item_ids)
    .bind(text(|a| Some(&a.user_id)))
    .bind(text(|a| Some(&a.category)))
    .bind(text(|a| Some(&a.summary)))
    .bind(json(|a| &a.analysis))
    .bind(json(|a| &a.raw_response))
    .bind(text(|a| Some(&a.provider_used)))
    .bind(text(|a| Some(&a.model_used)))
    .bind(text(|a| a.trace_id.as_deref()))
    .bind(text(|a| Some(&a.request_key)))
    .bind(tokens(|u| u.input))
    .bind(tokens(|u| u.output))
    .bind(tokens(|u| u.cache_read))
    .bind(tokens(|u| u.cache_write))
    .bind(analyses.iter().map(|a| a.batch_id).collect::<Vec<_>>())
    .fetch_all(conn)
    .await
    .map_err(DbError::during("storing analyses"))
}

/// A request waiting for a provider batch's answer (`store::batches`) is
/// answered by an analysis stored for it, whichever path stored it.
async fn answer_waiting(conn: &mut PgConnection, stored: &[StoredAnalysis]) -> Result<(), DbError> {
    if stored.is_empty() {
        return Ok(());
    }
    let items: Vec<Uuid> = stored.iter().map(|s| s.item_id).collect();
    let keys: Vec<&str> = stored.iter().map(|s| s.request_key.as_str()).collect();
    sqlx::query(
        "DELETE FROM batch_requests r USING UNNEST($1::uuid[], $2::text[]) AS t(item_id, request_key) \
         WHERE r.item_id = t.item_id AND r.request_key = t.request_key",
    )
    .bind(&items)
    .bind(&keys)
    .execute(conn)
    .await
    .map_err(DbError::during("answering batch requests"))?;
    Ok(())
}

/// Makes each reused analysis its item's latest version again (of several
/// for one item, the last); items also among `skip` (which got a new
/// analysis in this batch) are left alone. Answers the reused analyses' items.
async fn make_current(conn: &mut PgConnection, reused: &[Uuid], skip: &[Uuid]) -> Result<Vec<Uuid>, DbError> {
    if reused.is_empty() {
        return Ok(Vec::new());
    }
    sqlx::query_scalar(
        r#"
        WITH picked AS (
            SELECT DISTINCT ON (a.item_id) a.id, a.item_id, a.version
            FROM analyses a JOIN unnest($1::uuid[]) WITH ORDINALITY AS r(id, ord) ON r.id = a.id
            WHERE a.item_id <> ALL($2)
            ORDER BY a.item_id, r.ord DESC
        ),
        made_current AS (
            UPDATE analyses a SET version = top.version + 1
            FROM picked, (SELECT item_id, max(version) AS version FROM analyses GROUP BY item_id) top
            WHERE a.id = picked.id AND top.item_id = picked.item_id AND picked.version < top.version
        )
        SELECT DISTINCT item_id FROM analyses WHERE id = ANY($1)
        "#,
    )
    .bind(reused)
    .bind(skip)
    .fetch_all(conn)
    .await
    .map_err(DbError::during("reusing analyses"))
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
    /// The highest version of its item: the one searches use.
    pub latest_version: i32,
}

/// The analyses with these ids, in one query; missing ids are simply absent.
pub async fn load(pool: &PgPool, ids: &[Uuid]) -> Result<Vec<AnalysisRecord>, DbError> {
    sqlx::query_as(
        r#"
        SELECT a.id, a.item_id, a.user_id, a.version, a.category, a.summary, a.analysis,
               (SELECT max(l.version) FROM analyses l WHERE l.item_id = a.item_id) AS latest_version
        FROM analyses a WHERE a.id = ANY($1)
        "#,
    )
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

/// An analysis already stored for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExistingAnalysis {
    pub id: Uuid,
    /// It is its item's latest analysis, and the item is analysed and
    /// embedded: a replay has nothing left to do.
    pub settled: bool,
}

/// The analyses already stored under these (item, request key) pairs.
pub async fn find_by_request(
    pool: &PgPool,
    requests: &[(Uuid, String)],
) -> Result<std::collections::HashMap<(Uuid, String), ExistingAnalysis>, DbError> {
    let items: Vec<Uuid> = requests.iter().map(|(i, _)| *i).collect();
    let keys: Vec<&str> = requests.iter().map(|(_, k)| k.as_str()).collect();
    let rows: Vec<(Uuid, String, Uuid, bool)> = sqlx::query_as(
        r#"
        SELECT a.item_id, a.request_key, a.id,
               i.analysis_status = 'done' AND i.embedding_status = 'done'
               AND a.version = (SELECT max(version) FROM analyses l WHERE l.item_id = a.item_id)
        FROM analyses a JOIN UNNEST($1::uuid[], $2::text[]) AS r(item_id, request_key)
             ON a.item_id = r.item_id AND a.request_key = r.request_key
             JOIN items i ON i.id = a.item_id
        "#,
    )
    .bind(&items)
    .bind(&keys)
    .fetch_all(pool)
    .await
    .map_err(DbError::during("looking up analyses"))?;
    Ok(rows.into_iter().map(|(item, key, id, settled)| ((item, key), ExistingAnalysis { id, settled })).collect())
}

/// A thumbnailed item to analyse again.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ToReanalyse {
    pub id: Uuid,
    pub bucket: String,
    pub file_path: String,
    pub thumbnail_key: Option<String>,
}

/// The thumbnailed items of `user` (or everyone's), those whose latest
/// analysis has `category` if given, by key; duplicates follow their
/// earlier item, and are not analysed.
///
/// With `not_waiting`, items with a request already waiting for a provider
/// batch are left out: a re-analysis killed after it was submitted, run
/// again, does not submit those images twice (the one in flight is stored
/// when its batch ends).
pub async fn to_reanalyse(
    pool: &PgPool,
    user: Option<&str>,
    category: Option<&str>,
    not_waiting: bool,
) -> Result<Vec<ToReanalyse>, DbError> {
    sqlx::query_as(
        r#"
        SELECT i.id, i.bucket, i.file_path, i.thumbnail_key
        FROM items i
        WHERE i.thumbnail_status = 'done' AND i.duplicate_of IS NULL
          AND ($1::text IS NULL OR i.user_id = $1)
          AND ($2::text IS NULL OR (SELECT a.category FROM analyses a WHERE a.item_id = i.id
                                    ORDER BY a.version DESC LIMIT 1) = $2)
          AND NOT ($3 AND EXISTS (SELECT 1 FROM batch_requests r WHERE r.item_id = i.id))
        ORDER BY i.file_path
        "#,
    )
    .bind(user)
    .bind(category)
    .bind(not_waiting)
    .fetch_all(pool)
    .await
    .map_err(DbError::during("selecting items to analyse again"))
}

/// Removes the analyses that a newer version of their item supersedes,
/// of `user` or everyone's, once that newer version has a vector of
/// `model` (the active one: no item drops out of semantic search); their
/// vectors go with them. Answers how many.
pub async fn prune_superseded(pool: &PgPool, model: &str, user: Option<&str>) -> Result<u64, DbError> {
    let done = sqlx::query(
        "DELETE FROM analyses a WHERE ($1::text IS NULL OR a.user_id = $1)
           AND EXISTS (SELECT 1 FROM analyses b JOIN embeddings e ON e.analysis_id = b.id
                       WHERE b.item_id = a.item_id AND b.version > a.version AND e.embedding_model = $2)",
    )
    .bind(user)
    .bind(model)
    .execute(pool)
    .await
    .map_err(DbError::during("pruning superseded analyses"))?;
    Ok(done.rows_affected())
}

/// Removes every analysis of these items but the latest (their vectors go
/// with them). Answers how many.
pub async fn prune_older_versions(pool: &PgPool, items: &[Uuid]) -> Result<u64, DbError> {
    let done = sqlx::query(
        "DELETE FROM analyses a WHERE a.item_id = ANY($1)
           AND EXISTS (SELECT 1 FROM analyses b WHERE b.item_id = a.item_id AND b.version > a.version)",
    )
    .bind(items)
    .execute(pool)
    .await
    .map_err(DbError::during("pruning older analysis versions"))?;
    Ok(done.rows_affected())
}
