//! A search by text: the query embedded (as a query) by the active model,
//! then ranked by the database (`store::search`), which never calls a
//! provider itself. The search API and `collections search` both use it.
//! [`CachedQueries`] keeps the vectors of recent queries, so a repeated
//! query costs no provider call.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use domain::settings::Setting;
use embedding::{BatchLimits, Embedded, EmbeddingError, EmbeddingProvider, InputType};
use store::search::{SearchHit, SearchQuery, search};
use store::{DbError, Vector};

pub const QUERY_CACHE_ENTRIES: Setting = Setting::new(
    "SEARCH_QUERY_CACHE_ENTRIES",
    "1024",
    "query vectors kept per search process (least recently used out first; 0: none), so a repeated query \
     costs no embedding call",
);

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

/// The same text as a query key and as what is embedded: words separated
/// by one space, lower case.
pub fn normalised(query: &str) -> String {
    query.split_whitespace().map(str::to_lowercase).collect::<Vec<_>>().join(" ")
}

/// An embedding provider that embeds each query once: a query (one text,
/// [`InputType::Query`]) is normalised, and its vector kept, up to
/// `capacity` of them, the least recently used dropped first. Documents
/// pass through untouched. The cache is per process, per model (it wraps
/// one provider).
pub struct CachedQueries {
    inner: Arc<dyn EmbeddingProvider>,
    capacity: usize,
    cache: Mutex<Recent>,
}

/// The kept vectors, each with when it was last used.
#[derive(Default)]
struct Recent {
    clock: u64,
    vectors: HashMap<String, (Arc<Vec<f32>>, u64)>,
}

impl CachedQueries {
    pub fn new(inner: Arc<dyn EmbeddingProvider>, capacity: usize) -> Self {
        Self { inner, capacity, cache: Mutex::default() }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Recent> {
        self.cache.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn get(&self, key: &str) -> Option<Arc<Vec<f32>>> {
        let mut recent = self.lock();
        recent.clock += 1;
        let now = recent.clock;
        recent.vectors.get_mut(key).map(|(vector, used)| {
            *used = now;
            vector.clone()
        })
    }

    fn put(&self, key: String, vector: Vec<f32>) {
        if self.capacity == 0 {
            return;
        }
        let mut recent = self.lock();
        if recent.vectors.len() >= self.capacity && !recent.vectors.contains_key(&key) {
            // A linear scan, at most `capacity` entries, only when a new
            // query comes: small beside the provider call it follows.
            let oldest = recent.vectors.iter().min_by_key(|(_, (_, used))| *used).map(|(k, _)| k.clone());
            if let Some(oldest) = oldest {
                recent.vectors.remove(&oldest);
            }
        }
        recent.clock += 1;
        let now = recent.clock;
        recent.vectors.insert(key, (Arc::new(vector), now));
    }
}

#[async_trait]
impl EmbeddingProvider for CachedQueries {
    fn provider(&self) -> &'static str {
        self.inner.provider()
    }

    fn model(&self) -> &str {
        self.inner.model()
    }

    fn dimensions(&self) -> usize {
        self.inner.dimensions()
    }

    fn limits(&self) -> BatchLimits {
        self.inner.limits()
    }

    async fn embed(&self, texts: &[String], input_type: InputType) -> Result<Embedded, EmbeddingError> {
        let [text] = texts else { return self.inner.embed(texts, input_type).await };
        if input_type != InputType::Query {
            return self.inner.embed(texts, input_type).await;
        }
        let key = normalised(text);
        if let Some(vector) = self.get(&key) {
            return Ok(Embedded { vectors: vec![vector.as_ref().clone()], usage: None });
        }
        let embedded = self.inner.embed(std::slice::from_ref(&key), input_type).await?;
        if let [vector] = embedded.vectors.as_slice() {
            self.put(key, vector.clone());
        }
        Ok(embedded)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// Embeds a text as its length, counting the calls.
    #[derive(Default)]
    struct Counting(AtomicUsize);

    #[async_trait]
    impl EmbeddingProvider for Counting {
        fn provider(&self) -> &'static str {
            "local"
        }
        fn model(&self) -> &str {
            "m"
        }
        fn dimensions(&self) -> usize {
            1
        }
        fn limits(&self) -> BatchLimits {
            BatchLimits { max_texts: 8, max_tokens: 1000 }
        }
        async fn embed(&self, texts: &[String], _: InputType) -> Result<Embedded, EmbeddingError> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Ok(Embedded { vectors: texts.iter().map(|t| vec![t.len() as f32]).collect(), usage: None })
        }
    }

    #[tokio::test]
    async fn a_repeated_query_is_embedded_once_and_the_least_recently_used_goes_first() {
        let counting = Arc::new(Counting::default());
        let cached = CachedQueries::new(counting.clone(), 2);
        let query = |text: &str| {
            let cached = &cached;
            let text = text.to_owned();
            async move { cached.embed(&[text], InputType::Query).await.unwrap().vectors[0][0] }
        };
        assert_eq!(query("Red  boat").await, 8.0, "embedded as \"red boat\"");
        assert_eq!(query(" red boat ").await, 8.0);
        assert_eq!(counting.0.load(Ordering::SeqCst), 1, "the same query, normalised: one call");
        query("cat").await;
        query("red boat").await; // used again: "cat" is now the oldest
        query("sea").await; // drops "cat"
        assert_eq!(counting.0.load(Ordering::SeqCst), 3);
        query("red boat").await;
        assert_eq!(counting.0.load(Ordering::SeqCst), 3, "kept");
        query("cat").await;
        assert_eq!(counting.0.load(Ordering::SeqCst), 4, "dropped, so embedded again");
        // Documents are not cached.
        cached.embed(&["cat".to_owned()], InputType::Document).await.unwrap();
        cached.embed(&["cat".to_owned()], InputType::Document).await.unwrap();
        assert_eq!(counting.0.load(Ordering::SeqCst), 6);
        let none = CachedQueries::new(counting.clone(), 0);
        none.embed(&["x".to_owned()], InputType::Query).await.unwrap();
        none.embed(&["x".to_owned()], InputType::Query).await.unwrap();
        assert_eq!(counting.0.load(Ordering::SeqCst), 8, "capacity 0: no cache");
    }
}
