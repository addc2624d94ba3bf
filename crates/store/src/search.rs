//! Hybrid search over one user's items: pgvector cosine distance and
//! full-text rank, fused by reciprocal rank. Both read rows kept for them
//! beside each item's latest analysis (migration
//! `20261204000005_search_rows_of_latest_analyses.sql`): the vectors flagged
//! `is_latest`, and the narrow `search_documents`.

use sqlx::PgPool;
use uuid::Uuid;

use crate::models::EmbeddingModel;
use crate::{DbError, Vector};

/// The constant of reciprocal rank fusion: score = Σ 1 / (RRF_K + rank).
/// 60 is the value of the original paper (Cormack et al., 2009); it keeps one
/// list's top hit from drowning agreement between the lists.
pub const RRF_K: f64 = 60.0;

#[derive(Debug, Clone)]
pub struct SearchQuery<'a> {
    pub user_id: &'a str,
    pub text: &'a str,
    /// The query embedded with the same model as the rows it is compared to.
    pub vector: &'a Vector,
    pub model: &'a str,
    pub limit: i64,
    pub category: Option<&'a str>,
}

#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct SearchHit {
    pub item_id: Uuid,
    pub key: String,
    /// The original's bucket.
    pub bucket: String,
    pub thumbnail_key: Option<String>,
    pub category: String,
    pub summary: String,
    pub score: f64,
    /// Rank among the nearest vectors, when the item was among them.
    pub semantic_rank: Option<i64>,
    /// Rank among the full-text matches, when it matched.
    pub lexical_rank: Option<i64>,
    /// The keys of the user's other items with the same bytes (analysed
    /// and embedded once, as this one).
    pub also_keys: Vec<String>,
}

/// The words of the query, without websearch's operators.
fn query_words(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty())
}

/// The words of the query joined by `or`: full text also finds items that
/// share only some of them.
fn any_word_query(text: &str) -> String {
    query_words(text).collect::<Vec<_>>().join(" or ")
}

/// The words of the query, every one required (as `plainto_tsquery`
/// reads them: "or" is a word, and a stop word): the items ranked first.
fn every_word_query(text: &str) -> String {
    query_words(text).collect::<Vec<_>>().join(" ")
}

/// Users with at most this many vectors of the model are searched exactly
/// (every vector compared: recall 1, about 4 ms at 1 000 rows); larger ones
/// through the HNSW index, whose filtered scans missed neighbours of small
/// users (recall@10 0.64 below ~150 rows on 50 000 vectors). The choice is made here, from a bounded count,
/// not left to the planner's statistics: with a generic plan it estimates
/// the same rows for every user.
pub const EXACT_SEARCH_MAX_ROWS: i64 = 1000;

/// HNSW candidates examined per step (pgvector's default is 40, which can
/// settle in the wrong neighbourhood of the graph).
const HNSW_EF_SEARCH: u32 = 100;

/// The vectors of each item's latest analysis (`is_latest`, kept by
/// triggers on the vector's own row: no join per candidate), of the
/// category if one is asked for.
const LATEST_OF_CATEGORY: &str = "e.is_latest AND ($6::text IS NULL OR EXISTS (
        SELECT 1 FROM analyses a WHERE a.id = e.analysis_id AND a.user_id = $1 AND a.category = $6))";

/// The nearest vectors of the user, by comparing every one of them. `+ 0`
/// keeps the HNSW index out of the plan.
fn exact_nearest() -> String {
    format!(
        r#"
    SELECT e.item_id, e.vector <=> $2 AS distance
    FROM embeddings e
    WHERE e.user_id = $1 AND e.embedding_model = $3 AND e.embedding_dimensions = $4
      AND {LATEST_OF_CATEGORY}
    ORDER BY (e.vector <=> $2) + 0
    LIMIT $7
"#
    )
}

/// The nearest vectors of the user through the model's HNSW index: the
/// model and the cast are written as the partial index's are (a bound
/// parameter could not prove its predicate). The index finds the candidates
/// by half-precision distance; they are ranked by the full one. The filters
/// are part of the scan, so (with iterative scans) a rare category still
/// fills the candidates.
fn indexed_nearest(model: &EmbeddingModel) -> String {
    let indexed = model.indexed_distance("e.vector", "$2");
    format!(
        r#"
    SELECT e.item_id, e.vector <=> $2 AS distance
    FROM embeddings e
    WHERE e.user_id = $1 AND e.embedding_model = {model} AND e.embedding_model = $3 AND e.embedding_dimensions = $4
      AND {LATEST_OF_CATEGORY}
    ORDER BY {indexed}
    LIMIT $7
"#,
        model = model.literal()
    )
}

/// The ranking of the query, after `WITH nearest AS MATERIALIZED (...)`:
/// the hits in `top`.
const RANK_AND_FUSE: &str = r#"
    semantic AS (
        -- `+ 0`: sorted here. A relaxed-order index scan returns rows only
        -- nearly in distance order, and the planner would take the CTE's
        -- order as sorted.
        SELECT n.item_id, row_number() OVER (ORDER BY n.distance + 0, n.item_id) AS rank
        FROM nearest n
    ),
    -- Full text in two tiers: the items with every word of the query,
    -- then, only if they are fewer than the candidates, those with some.
    -- Each tier is ranked by ts_rank (word frequency and weight; not
    -- ts_rank_cd, cover density: half the CPU) in a top-N sort. A common
    -- word matches a large share of a user's items; the second tier's
    -- scan of them is skipped when the first fills the list.
    every_word AS MATERIALIZED (
        SELECT d.item_id, ts_rank(d.search_vector, q) AS r
        FROM search_documents d, plainto_tsquery('english', $10) q
        WHERE d.user_id = $1 AND d.search_vector @@ q AND ($6::text IS NULL OR d.category = $6)
        ORDER BY r DESC, d.item_id
        LIMIT $7
    ),
    some_words AS (
        SELECT d.item_id, ts_rank(d.search_vector, q) AS r
        FROM search_documents d, websearch_to_tsquery('english', $5) q, plainto_tsquery('english', $10) every
        WHERE (SELECT count(*) FROM every_word) < $7
          AND d.user_id = $1 AND d.search_vector @@ q AND NOT d.search_vector @@ every
          AND ($6::text IS NULL OR d.category = $6)
        ORDER BY r DESC, d.item_id
        LIMIT $7
    ),
    lexical AS (
        SELECT t.item_id, row_number() OVER (ORDER BY t.tier, t.r DESC, t.item_id) AS rank
        FROM (SELECT item_id, 1 AS tier, r FROM every_word
              UNION ALL
              SELECT item_id, 2, r FROM some_words) t
        ORDER BY rank
        LIMIT $7
    ),
    fused AS (
        SELECT item_id,
               sum(1.0 / ($8 + rank))::float8 AS score,
               min(rank) FILTER (WHERE list = 's') AS semantic_rank,
               min(rank) FILTER (WHERE list = 'l') AS lexical_rank
        FROM (SELECT item_id, rank, 's' AS list FROM semantic
              UNION ALL
              SELECT item_id, rank, 'l' FROM lexical) ranked
        GROUP BY item_id
    ),
    -- The hits, and any tied with the last, before their rows are read.
    top AS (
        SELECT * FROM fused ORDER BY score DESC, semantic_rank NULLS LAST FETCH FIRST $9 ROWS WITH TIES
    )
"#;

/// What a hit shows of its item, for ranked rows `r` of the user `$1`: the
/// columns, and the joins that read them (the item, its latest analysis).
const HIT_COLUMNS: &str = "i.file_path AS key, i.bucket, i.thumbnail_key, a.category, a.summary,
           ARRAY(SELECT d.file_path FROM items d WHERE d.duplicate_of = r.item_id AND d.user_id = $1
                 ORDER BY d.file_path) AS also_keys";
const HIT_JOINS: &str = "JOIN items i ON i.id = r.item_id AND i.user_id = $1
    JOIN analyses a ON a.item_id = r.item_id AND a.is_latest";

/// The whole query, from its `nearest` part ([`exact_nearest`] or
/// [`indexed_nearest`]).
fn search_sql(nearest: &str) -> String {
    format!(
        "WITH nearest AS MATERIALIZED ({nearest}), {RANK_AND_FUSE}
    SELECT r.item_id, r.score, r.semantic_rank, r.lexical_rank, {HIT_COLUMNS}
    FROM top r {HIT_JOINS}
    ORDER BY r.score DESC, r.semantic_rank NULLS LAST, i.file_path
    LIMIT $9"
    )
}

/// The query of each path for `model`, exact and through the index (for
/// tests that read their plans).
pub fn search_queries(model: &EmbeddingModel) -> [String; 2] {
    [search_sql(&exact_nearest()), search_sql(&indexed_nearest(model))]
}

/// Runs a hybrid search. Only rows embedded by `query.model` with the query's
/// dimensions are compared with its vector, and only the latest analysis of
/// each item counts. A user of at most [`EXACT_SEARCH_MAX_ROWS`] vectors is
/// searched exactly, a larger one through the HNSW index.
pub async fn search(pool: &PgPool, query: &SearchQuery<'_>) -> Result<Vec<SearchHit>, DbError> {
    let candidates = (query.limit * 4).clamp(20, 400);
    let mut tx = pool.begin().await.map_err(DbError::during("starting search"))?;
    let nearest = nearest_path(&mut tx, query.user_id, query.model, query.vector, Plan::Once).await?;
    let sql = search_sql(&nearest);
    let hits = sqlx::query_as(&sql)
        .bind(query.user_id)
        .bind(query.vector)
        .bind(query.model)
        .bind(query.vector.as_slice().len() as i32)
        .bind(any_word_query(query.text))
        .bind(query.category)
        .bind(candidates)
        .bind(RRF_K)
        .bind(query.limit)
        .bind(every_word_query(query.text))
        .fetch_all(&mut *tx)
        .await
        .map_err(DbError::during("searching"))?;
    tx.commit().await.map_err(DbError::during("finishing search"))?;
    Ok(hits)
}

/// When the statement of the indexed path is planned. (The exact path's plan
/// is the same for every user: always planned once.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Plan {
    /// Once per connection: a prepared statement's generic plan. The search
    /// statement's planning cost more than a third of its database CPU
    /// (0.6 of 2.5 ms at 5 000 vectors), its generic plan executes as fast.
    Once,
    /// For each search, knowing its values: "more like this", whose generic
    /// plan, not knowing its nearest list is short, hash-joins every item of
    /// the user (2.2 against 0.7 ms).
    EachTime,
}

/// The `nearest` part of a query for this user and model: exact for a user
/// of at most [`EXACT_SEARCH_MAX_ROWS`] vectors, else through the HNSW
/// index (with the transaction's settings that path needs).
async fn nearest_path(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    user_id: &str,
    model: &str,
    vector: &Vector,
    indexed_plan: Plan,
) -> Result<String, DbError> {
    // One round trip: the user's size, counted up to the exact path's
    // limit, and the transaction's settings for the path it picks.
    // * The exact path's plan is the same for every user: always planned
    //   once per connection (planning was about a third of the database CPU
    //   of a small user's search).
    // * On the indexed path, iterative scans go on past ef_search rows until
    //   the user's rows fill the candidates, and `enable_sort = off` keeps
    //   the planner on the index: costed on a partition's statistics, it
    //   would sort the whole partition instead (the sorts the query needs
    //   still run). The HNSW settings do nothing on the exact path.
    let indexed_plan_cache_mode = match indexed_plan {
        Plan::Once => "force_generic_plan",
        Plan::EachTime => "force_custom_plan",
    };
    let rows: i64 = sqlx::query_scalar(
        "SELECT c.n,
                set_config('plan_cache_mode', CASE WHEN c.n <= $3 THEN 'force_generic_plan' ELSE $4 END, true),
                set_config('enable_sort', CASE WHEN c.n <= $3 THEN current_setting('enable_sort') ELSE 'off' END, true),
                set_config('hnsw.iterative_scan', 'relaxed_order', true),
                set_config('hnsw.ef_search', $5, true)
         FROM (SELECT count(*) AS n
               FROM (SELECT 1 FROM embeddings WHERE user_id = $1 AND embedding_model = $2 LIMIT $3 + 1) s) c",
    )
    .bind(user_id)
    .bind(model)
    .bind(EXACT_SEARCH_MAX_ROWS)
    .bind(indexed_plan_cache_mode)
    .bind(HNSW_EF_SEARCH.to_string())
    .fetch_one(&mut **tx)
    .await
    .map_err(DbError::during("sizing the search"))?;
    if rows <= EXACT_SEARCH_MAX_ROWS {
        return Ok(exact_nearest());
    }
    Ok(indexed_nearest(&EmbeddingModel::new(model, vector.as_slice().len())))
}

/// What "more like this" answers for an item.
#[derive(Debug, Clone, PartialEq)]
pub enum Similar {
    /// The user has no such item (or it is another user's).
    NoItem,
    /// The item (or the item whose bytes it shares) has no vector of the
    /// model for its latest analysis yet.
    NotEmbedded,
    /// The user's other items, nearest first; `score` is the cosine
    /// similarity (1 − distance) and `semantic_rank` the rank.
    Hits(Vec<SearchHit>),
}

/// The vector of an item's latest analysis by `model`: of the item whose
/// bytes it shares, if it is a duplicate (analysed and embedded with it).
/// `None` inside: the item is the user's but not embedded yet.
const ITEM_VECTOR: &str = r#"
    SELECT (
        SELECT e.vector FROM embeddings e
        WHERE e.item_id = coalesce(i.duplicate_of, i.id) AND e.user_id = $1 AND e.embedding_model = $3
          AND e.is_latest
    ) AS vector, coalesce(i.duplicate_of, i.id) AS canonical
    FROM items i WHERE i.user_id = $1 AND i.id = $2
"#;

/// "More like this" from its `nearest` part: the item itself (`$5`, its
/// canonical item) left out, duplicates folded as search folds them.
fn similar_sql(nearest: &str) -> String {
    format!(
        "WITH nearest AS MATERIALIZED ({nearest})
    SELECT r.item_id, (1 - r.distance)::float8 AS score,
           row_number() OVER (ORDER BY r.distance, r.item_id) AS semantic_rank, NULL::int8 AS lexical_rank,
           {HIT_COLUMNS}
    FROM nearest r {HIT_JOINS}
    WHERE r.item_id <> $5
    ORDER BY r.distance, r.item_id
    LIMIT $8"
    )
}

/// "More like this": the user's items nearest to the vector `model` made of
/// `item_id`'s latest analysis, by the same exact or indexed path as
/// [`search`], without a provider call. Another user's item is as absent
/// as one that does not exist.
pub async fn similar(pool: &PgPool, user_id: &str, item_id: Uuid, model: &str, limit: i64) -> Result<Similar, DbError> {
    let mut tx = pool.begin().await.map_err(DbError::during("starting a similar-items search"))?;
    let found: Option<(Option<Vector>, Uuid)> = sqlx::query_as(ITEM_VECTOR)
        .bind(user_id)
        .bind(item_id)
        .bind(model)
        .fetch_optional(&mut *tx)
        .await
        .map_err(DbError::during("reading the item's vector"))?;
    let (vector, canonical) = match found {
        None => return Ok(Similar::NoItem),
        Some((None, _)) => return Ok(Similar::NotEmbedded),
        Some((Some(vector), canonical)) => (vector, canonical),
    };
    let nearest = nearest_path(&mut tx, user_id, model, &vector, Plan::EachTime).await?;
    let sql = similar_sql(&nearest);
    let hits = sqlx::query_as(&sql)
        .bind(user_id)
        .bind(&vector)
        .bind(model)
        .bind(vector.as_slice().len() as i32)
        .bind(canonical)
        .bind(None::<&str>)
        .bind(limit + 1)
        .bind(limit)
        .fetch_all(&mut *tx)
        .await
        .map_err(DbError::during("searching similar items"))?;
    tx.commit().await.map_err(DbError::during("finishing a similar-items search"))?;
    Ok(Similar::Hits(hits))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_words_are_alternatives_and_operators_are_dropped() {
        assert_eq!(any_word_query("blue sky"), "blue or sky");
        assert_eq!(any_word_query("-cat \"dog\" & (x)"), "cat or dog or x");
        assert_eq!(any_word_query("  "), "");
        assert_eq!(every_word_query("-cat \"dog\" & (x)"), "cat dog x");
    }
}
