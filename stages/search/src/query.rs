//! A search by text: the query embedded (as a query) by the active model,
//! then ranked by the database (`store::search`), which never calls a
//! provider itself. The search API and `collections search` both use it.

use embedding::{EmbeddingError, EmbeddingProvider, InputType};
use store::search::{SearchHit, SearchQuery, search};
use store::{DbError, Vector};

/// Why a search failed.
#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    #[error("embedding the query failed: {0}")]
    Embedding(#[from] EmbeddingError),
    #[error("the embedding provider returned no vector for the query")]
    NoVector,
    #[error(transparent)]
    Db(#[from] DbError),
}

/// Searches `user_id`'s items for `text`: the query is embedded by
/// `provider` (as a query), then ranked by [`search`].
pub async fn search_text(
    pool: &sqlx::PgPool,
    provider: &dyn EmbeddingProvider,
    user_id: &str,
    text: &str,
    limit: i64,
    category: Option<&str>,
) -> Result<Vec<SearchHit>, SearchError> {
    let vector =
        provider.embed(&[text.to_owned()], InputType::Query).await?.vectors.pop().ok_or(SearchError::NoVector)?;
    let vector = Vector::from(vector);
    let query = SearchQuery { user_id, text, vector: &vector, model: provider.model(), limit, category };
    Ok(search(pool, &query).await?)
}
