//! The `embedding_models` registry and each model's HNSW index.
//!
//! `embeddings.vector` is an untyped `vector`, so models of any size share
//! the table. A model is registered with its size before its first vector
//! is stored (every vector references its model's row), and gets a partial
//! HNSW index on a cast to a `halfvec` of that size, `WHERE embedding_model
//! = 'M'`. On the
//! partitioned table that is one graph per partition; a search routed to
//! the index path names the model and the cast literally, as the index does
//! (see `db::search`). Model names are plain (the registry's CHECK), so
//! they are safe as literals.

use std::time::Instant;

use sha2::{Digest, Sha256};
use sqlx::PgPool;

use crate::DbError;
use crate::embeddings::maintenance;

/// pgvector's HNSW limit: 4 000 dimensions for `halfvec`. Larger models
/// are searched exactly (no index).
const HNSW_HALFVEC_MAX: i32 = 4_000;

/// The graph's links per node and build-time candidates. m 32 found every
/// neighbour where m 16 let some queries settle in the wrong cluster, at no
/// extra size for 1024-d vectors (benches/README.md).
const HNSW_OPTIONS: &str = "WITH (m = 32, ef_construction = 128)";

/// A registered model.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct EmbeddingModel {
    pub model: String,
    pub dimensions: i32,
}

/// The state of a model's index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VectorIndex {
    Absent,
    /// Every partition's graph is built.
    Valid,
    /// Some partitions' graphs are missing (a build was interrupted):
    /// searches scan those partitions until `vector-index build` ends it.
    Partial,
    /// The model is larger than HNSW indexes; its searches are exact.
    Unindexable,
}

impl EmbeddingModel {
    pub fn new(model: &str, dimensions: usize) -> Self {
        Self { model: model.to_owned(), dimensions: dimensions as i32 }
    }

    /// The index's name: a digest of the model name (which may hold
    /// characters an identifier cannot) and of the indexed cast, so an index
    /// on another cast is never taken for this one. (A change of
    /// [`HNSW_OPTIONS`] alone keeps the name: drop and build to apply it.)
    pub fn index_name(&self) -> String {
        let cast = self.indexed().map(|(cast, _)| cast).unwrap_or_default();
        let digest = Sha256::digest(format!("{}\0{cast}", self.model).as_bytes());
        let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        format!("embeddings_hnsw_{hex}")
    }

    /// The model name as an SQL literal.
    pub fn literal(&self) -> String {
        format!("'{}'", self.model.replace('\'', "''"))
    }

    /// The indexed expression and its operator class: the vector as a
    /// `halfvec` of the model's size; `None` for models larger than HNSW
    /// indexes. Half precision measured a third of the index's size (2.7 KB
    /// against 8.2 KB a 1024-d vector) at the same recall@10, and faster
    /// searches for all but a user filling a partition
    /// (benches/README.md); the table keeps full precision, and the
    /// candidates are ranked by it.
    fn indexed(&self) -> Option<(String, &'static str)> {
        match self.dimensions {
            d if d <= HNSW_HALFVEC_MAX => Some((format!("halfvec({d})"), "halfvec_cosine_ops")),
            _ => None,
        }
    }

    /// The cosine distance between `column` and the bound `param`, written
    /// as the model's index is, so the planner can use it.
    pub fn indexed_distance(&self, column: &str, param: &str) -> String {
        match self.indexed() {
            Some((cast, _)) => format!("({column}::{cast} <=> {param}::{cast})"),
            None => format!("({column} <=> {param})"),
        }
    }

    /// The statement that builds the index on `table` (`ONLY embeddings`
    /// for the partitioned parent, or one partition).
    fn create_index(&self, name: &str, on: &str, concurrently: bool) -> Option<String> {
        let (cast, opclass) = self.indexed()?;
        let concurrently = if concurrently { "CONCURRENTLY " } else { "" };
        Some(format!(
            "CREATE INDEX {concurrently}IF NOT EXISTS {name} ON {on} USING hnsw ((vector::{cast}) {opclass}) \
             {HNSW_OPTIONS} WHERE embedding_model = {}",
            self.literal()
        ))
    }
}

/// Registers `model` with its size, unless it is registered; answers the
/// size it is registered with. The database refuses a name outside the
/// registry's alphabet (a refusal, see [`DbError::is_refusal`]).
pub async fn register(pool: &PgPool, model: &EmbeddingModel) -> Result<i32, DbError> {
    // Two first registrations at once: the one that lost the insert reads
    // nothing in its statement's snapshot, and reads again.
    for _ in 0..3 {
        let registered: Option<i32> = sqlx::query_scalar(
            r#"
            WITH added AS (
                INSERT INTO embedding_models (model, dimensions) VALUES ($1, $2)
                ON CONFLICT (model) DO NOTHING
                RETURNING dimensions
            )
            SELECT dimensions FROM added
            UNION ALL
            SELECT dimensions FROM embedding_models WHERE model = $1
            LIMIT 1
            "#,
        )
        .bind(&model.model)
        .bind(model.dimensions)
        .fetch_optional(pool)
        .await
        .map_err(DbError::during("registering the embedding model"))?;
        if let Some(dimensions) = registered {
            return Ok(dimensions);
        }
    }
    Err(DbError::during("registering the embedding model")(sqlx::Error::RowNotFound))
}

/// Every registered model.
pub async fn registered(pool: &PgPool) -> Result<Vec<EmbeddingModel>, DbError> {
    sqlx::query_as("SELECT model, dimensions FROM embedding_models ORDER BY model")
        .fetch_all(pool)
        .await
        .map_err(DbError::during("listing embedding models"))
}

/// `model`'s registration, if it has one.
pub async fn find(pool: &PgPool, model: &str) -> Result<Option<EmbeddingModel>, DbError> {
    sqlx::query_as("SELECT model, dimensions FROM embedding_models WHERE model = $1")
        .bind(model)
        .fetch_optional(pool)
        .await
        .map_err(DbError::during("looking up an embedding model"))
}

/// The partitions of `embeddings`, by name.
async fn partitions(pool: &PgPool) -> Result<Vec<String>, DbError> {
    sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
         WHERE i.inhparent = 'embeddings'::regclass ORDER BY 1",
    )
    .fetch_all(pool)
    .await
    .map_err(DbError::during("listing the partitions of embeddings"))
}

/// Whether an index is there, and whether it is valid.
async fn index_valid(pool: &PgPool, name: &str) -> Result<Option<bool>, DbError> {
    sqlx::query_scalar(
        "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE c.relname = $1",
    )
    .bind(name)
    .fetch_optional(pool)
    .await
    .map_err(DbError::during("looking up a vector index"))
}

/// The state of `model`'s index.
pub async fn index_state(pool: &PgPool, model: &EmbeddingModel) -> Result<VectorIndex, DbError> {
    if model.indexed().is_none() {
        return Ok(VectorIndex::Unindexable);
    }
    Ok(match index_valid(pool, &model.index_name()).await? {
        None => VectorIndex::Absent,
        Some(true) => VectorIndex::Valid,
        Some(false) => VectorIndex::Partial,
    })
}

/// Builds `model`'s index, or what is missing of it, without blocking
/// writers for long: the partitioned index is declared on the parent alone
/// (a brief lock), then each partition's graph is built concurrently and
/// attached (the parent is valid once all are). An interrupted build
/// resumes here; a partition's graph left invalid by a failed build is
/// dropped and built again. Stops between partitions once `deadline` has
/// passed; answers whether the index is whole (searches use the graphs
/// that are there and scan the other partitions).
pub async fn build_index(
    pool: &PgPool,
    model: &EmbeddingModel,
    maintenance_mib: u32,
    deadline: Option<Instant>,
) -> Result<bool, DbError> {
    let name = model.index_name();
    let Some(parent) = model.create_index(&name, "ONLY embeddings", false) else {
        return Ok(true);
    };
    if index_valid(pool, &name).await? == Some(true) {
        return Ok(true);
    }
    maintenance(pool, &parent, None, "declaring the vector index").await?;
    for partition in partitions(pool).await? {
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Ok(false);
        }
        let child = format!("{name}_{}", partition.trim_start_matches("embeddings_"));
        match index_valid(pool, &child).await? {
            Some(true) => {}
            Some(false) => {
                let drop = format!("DROP INDEX CONCURRENTLY {child}");
                maintenance(pool, &drop, None, "dropping a failed index build").await?;
            }
            None => {}
        }
        let build = model.create_index(&child, &partition, true).expect("indexable: checked above");
        maintenance(pool, &build, Some(maintenance_mib), "building the vector index").await?;
        let attach = format!("ALTER INDEX {name} ATTACH PARTITION {child}");
        maintenance(pool, &attach, None, "attaching the vector index").await?;
    }
    Ok(true)
}

/// How long dropping an index waits for the table's lock: it needs the
/// whole table for a moment, and must not queue every search and write
/// behind a long transaction.
const DROP_LOCK_TIMEOUT: &str = "10s";

/// Drops `model`'s index (every partition's graph). Searches still work
/// without it, by scanning. Fails, retriably, when the table's lock is not
/// granted within [`DROP_LOCK_TIMEOUT`].
pub async fn drop_index(pool: &PgPool, model: &EmbeddingModel) -> Result<(), DbError> {
    let name = model.index_name();
    let mut tx = pool.begin().await.map_err(DbError::during("dropping the vector index"))?;
    for statement in [format!("SET LOCAL lock_timeout = '{DROP_LOCK_TIMEOUT}'"), format!("DROP INDEX IF EXISTS {name}")]
    {
        sqlx::query(&statement).execute(&mut *tx).await.map_err(DbError::during("dropping the vector index"))?;
    }
    tx.commit().await.map_err(DbError::during("dropping the vector index"))?;
    // Graphs of an interrupted build that were never attached.
    for partition in partitions(pool).await? {
        let child = format!("{name}_{}", partition.trim_start_matches("embeddings_"));
        let drop = format!("DROP INDEX CONCURRENTLY IF EXISTS {child}");
        maintenance(pool, &drop, None, "dropping the vector index").await?;
    }
    Ok(())
}

/// Builds what is missing of every registered model's index.
pub async fn build_indexes(pool: &PgPool, maintenance_mib: u32) -> Result<(), DbError> {
    for model in registered(pool).await? {
        build_index(pool, &model, maintenance_mib, None).await?;
    }
    Ok(())
}

/// Drops every registered model's index (for bulk loads: drop, load, build).
pub async fn drop_indexes(pool: &PgPool) -> Result<(), DbError> {
    for model in registered(pool).await? {
        drop_index(pool, &model).await?;
    }
    Ok(())
}

/// Registers `model` (refusing a model registered at another size) and,
/// given `maintenance_mib`, builds its index until `deadline`: what a
/// process that will write or search with it does first (as the table's
/// owner: the stages' own role may register but not build). Answers
/// whether the index is whole.
pub async fn prepare(
    pool: &PgPool,
    model: &EmbeddingModel,
    maintenance_mib: Option<u32>,
    deadline: Option<Instant>,
) -> Result<bool, PrepareError> {
    let dimensions = register(pool, model).await?;
    if dimensions != model.dimensions {
        return Err(PrepareError::OtherSize {
            model: model.model.clone(),
            registered: dimensions,
            configured: model.dimensions,
        });
    }
    match maintenance_mib {
        Some(mib) => Ok(build_index(pool, model, mib, deadline).await?),
        None => Ok(false),
    }
}

/// Removes a model: its index, its vectors and its registration. Whatever
/// still writes the model must have stopped (the registration is refused
/// while a vector of it is left). Answers the vectors removed.
pub async fn remove(pool: &PgPool, model: &str) -> Result<u64, DbError> {
    let Some(registered) = find(pool, model).await? else {
        return Ok(0);
    };
    drop_index(pool, &registered).await?;
    // A partition at a time: one scan of each, and no transaction holds
    // the whole table's rows.
    let mut removed = 0;
    for partition in partitions(pool).await? {
        let done = sqlx::query(&format!("DELETE FROM {partition} WHERE embedding_model = $1"))
            .bind(model)
            .execute(pool)
            .await
            .map_err(DbError::during("removing a model's vectors"))?;
        removed += done.rows_affected();
    }
    sqlx::query("DELETE FROM embedding_models WHERE model = $1")
        .bind(model)
        .execute(pool)
        .await
        .map_err(DbError::during("removing a model's registration"))?;
    Ok(removed)
}

#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    #[error(
        "{model} is stored with {registered} dimensions, and configured for {configured}: another size is \
         another model (EMBEDDING_DIMENSIONS changes the stored name unless it is 1024)"
    )]
    OtherSize { model: String, registered: i32, configured: i32 },
    #[error(transparent)]
    Db(#[from] DbError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_index_and_the_search_write_the_same_expression() {
        let m = EmbeddingModel::new("voyage-3.5", 1024);
        let ddl = m.create_index("ix", "ONLY embeddings", false).unwrap();
        assert!(ddl.contains("((vector::halfvec(1024)) halfvec_cosine_ops)"), "{ddl}");
        assert!(ddl.ends_with("WHERE embedding_model = 'voyage-3.5'"), "{ddl}");
        assert_eq!(m.indexed_distance("e.vector", "$2"), "(e.vector::halfvec(1024) <=> $2::halfvec(1024))");
        let large = EmbeddingModel::new("text-embedding-3-large", 3072);
        assert!(large.create_index("ix", "p", true).unwrap().contains("(vector::halfvec(3072)) halfvec_cosine_ops"));
        let huge = EmbeddingModel::new("x", 8000);
        assert_eq!(huge.create_index("ix", "p", true), None);
        assert_eq!(huge.indexed_distance("e.vector", "$2"), "(e.vector <=> $2)");
    }

    #[test]
    fn index_names_are_identifiers_whatever_the_model_is_called() {
        let name = EmbeddingModel::new("amazon.titan-embed-text-v2:0", 1024).index_name();
        assert!(name.len() < 63 - 4 && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'), "{name}");
        assert_ne!(name, EmbeddingModel::new("amazon.titan-embed-text-v2:1", 1024).index_name());
        assert_eq!(EmbeddingModel::new("it's", 3).literal(), "'it''s'");
    }
}
