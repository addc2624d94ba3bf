//! The routes, their input checks, and what an error tells the caller.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use domain::analysis::CATEGORIES;
use domain::retry::Retriable;
use domain::stage::StageName;
use embedding::{EmbeddingError, EmbeddingProvider};
use serde::Serialize;
use serde_json::{Value, json};
use sqlx::PgPool;
use store::search::{self, SearchHit, Similar};
use store::{DbError, items, status};
use uuid::Uuid;

use crate::links::{Thumbnail, ThumbnailLinks};
use crate::query::{SearchError, search_text};

/// Longest query, in characters.
pub const MAX_QUERY_CHARS: usize = 1000;
/// Hits a search returns unless told otherwise, and the most it may return.
pub const DEFAULT_LIMIT: i64 = 20;
pub const MAX_LIMIT: i64 = 100;
/// What a client is told to wait when a dependency is down and said nothing.
const RETRY_AFTER: Duration = Duration::from_secs(5);

/// What the routes run on.
pub struct SearchService {
    pub pool: PgPool,
    /// Embeds queries, with the model the stored vectors were made by.
    pub embedding: Arc<dyn EmbeddingProvider>,
    pub links: Arc<dyn ThumbnailLinks>,
}

/// Whose items a request may see. The host puts it in the request's
/// extensions (from the verified token on AWS, from `--user` locally); no
/// request parameter can name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller(pub String);

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        parts.extensions.get::<Caller>().cloned().ok_or_else(|| ApiError::new(StatusCode::UNAUTHORIZED, "no user"))
    }
}

/// The API's routes; the host adds the [`Caller`].
pub fn router(service: Arc<SearchService>) -> Router {
    Router::new()
        .route("/v1/search", get(search))
        .route("/v1/items/{id}", get(item))
        .route("/v1/items/{id}/similar", get(similar))
        .route("/v1/failures", get(failures))
        .route("/v1/categories", get(categories))
        .with_state(service)
}

/// An error as the caller sees it: a status, one clear sentence, and when
/// to come back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub retry_after: Option<Duration>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self { status, message: message.into(), retry_after: None }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub(crate) fn unavailable(what: &str, retry_after: Option<Duration>) -> Self {
        let wait = retry_after.unwrap_or(RETRY_AFTER).max(Duration::from_secs(1));
        Self {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: format!("{what} is unavailable; try again in {} s", wait.as_secs()),
            retry_after: Some(wait),
        }
    }

    /// A database error: logged in full, told as unavailable (retriable) or
    /// as an internal error, without its text.
    fn of_db(e: &DbError) -> Self {
        if e.is_retriable() {
            tracing::warn!(error = %e, "the database is unavailable");
            Self::unavailable("the database", None)
        } else {
            tracing::error!(error = %e, "a database request failed");
            Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(json!({ "error": self.message }))).into_response();
        if let Some(wait) = self.retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(wait.as_secs().max(1)));
        }
        response
    }
}

impl From<SearchError> for ApiError {
    fn from(e: SearchError) -> Self {
        match e {
            SearchError::Embedding(e) => {
                tracing::warn!(error = %e, "embedding the query failed");
                let retry_after = match &e {
                    EmbeddingError::Api(api) => api.retry_after(),
                    _ => None,
                };
                Self::unavailable("the embedding provider", retry_after)
            }
            SearchError::NoVector => {
                tracing::warn!("the embedding provider returned no vector for a query");
                Self::unavailable("the embedding provider", None)
            }
            SearchError::Db(e) => Self::of_db(&e),
        }
    }
}

type Params = Query<HashMap<String, String>>;

/// The checked parameters of a search.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchParams {
    pub q: String,
    pub limit: i64,
    pub category: Option<String>,
}

impl SearchParams {
    pub fn parse(params: &HashMap<String, String>) -> Result<Self, ApiError> {
        let q = params.get("q").map(|q| q.trim()).unwrap_or_default();
        if q.is_empty() {
            return Err(ApiError::bad_request("q is required: the words to search for"));
        }
        if q.chars().count() > MAX_QUERY_CHARS {
            return Err(ApiError::bad_request(format!("q is longer than {MAX_QUERY_CHARS} characters")));
        }
        let limit = limit(params, DEFAULT_LIMIT)?;
        let category = match params.get("category").map(|c| c.trim()).filter(|c| !c.is_empty()) {
            None => None,
            Some(c) if CATEGORIES.contains(&c) => Some(c.to_owned()),
            Some(c) => {
                let c: String = c.chars().take(40).collect();
                return Err(ApiError::bad_request(format!(
                    "unknown category {c:?}; one of: {}",
                    CATEGORIES.join(", ")
                )));
            }
        };
        Ok(Self { q: q.to_owned(), limit, category })
    }
}

/// The `limit` parameter: from 1 to [`MAX_LIMIT`], `default` when absent.
fn limit(params: &HashMap<String, String>, default: i64) -> Result<i64, ApiError> {
    match params.get("limit") {
        None => Ok(default),
        Some(text) => text
            .parse()
            .ok()
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or_else(|| ApiError::bad_request(format!("limit must be a whole number from 1 to {MAX_LIMIT}"))),
    }
}

fn item_id(text: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(text).map_err(|_| {
        let shown: String = text.chars().take(40).collect();
        ApiError::bad_request(format!("{shown:?} is not an item id (a UUID)"))
    })
}

#[derive(Debug, Serialize)]
struct Hit {
    item_id: Uuid,
    key: String,
    thumbnail_url: Option<String>,
    category: String,
    summary: String,
    score: f64,
    semantic_rank: Option<i64>,
    lexical_rank: Option<i64>,
    also_keys: Vec<String>,
}

async fn search(
    State(s): State<Arc<SearchService>>,
    caller: Caller,
    Query(params): Params,
) -> Result<Response, ApiError> {
    let params = SearchParams::parse(&params)?;
    let hits =
        search_text(&s.pool, s.embedding.as_ref(), &caller.0, &params.q, params.limit, params.category.as_deref())
            .await?;
    Ok(Json(json!({ "query": params.q, "hits": s.hits(hits).await })).into_response())
}

/// "More like this": the caller's items nearest to this one's stored
/// vector, with no provider call.
async fn similar(
    State(s): State<Arc<SearchService>>,
    caller: Caller,
    Path(id): Path<String>,
    Query(params): Params,
) -> Result<Response, ApiError> {
    let id = item_id(&id)?;
    let limit = limit(&params, DEFAULT_LIMIT)?;
    let found =
        search::similar(&s.pool, &caller.0, id, s.embedding.model(), limit).await.map_err(|e| ApiError::of_db(&e))?;
    match found {
        // Another user's item is as absent as one that does not exist.
        Similar::NoItem => Err(ApiError::new(StatusCode::NOT_FOUND, format!("no item {id}"))),
        Similar::NotEmbedded => Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("item {id} is not embedded yet; its similar items can be asked for once it is"),
        )),
        Similar::Hits(hits) => Ok(Json(json!({ "item_id": id, "hits": s.hits(hits).await })).into_response()),
    }
}

impl SearchService {
    async fn hits(&self, hits: Vec<SearchHit>) -> Vec<Hit> {
        let mut out = Vec::with_capacity(hits.len());
        for hit in hits {
            out.push(self.hit(hit).await);
        }
        out
    }

    async fn hit(&self, hit: SearchHit) -> Hit {
        let thumbnail_url = match &hit.thumbnail_key {
            Some(key) => self.links.url(Thumbnail { item_id: hit.item_id, bucket: &hit.bucket, key }).await,
            None => None,
        };
        Hit {
            item_id: hit.item_id,
            key: hit.key,
            thumbnail_url,
            category: hit.category,
            summary: hit.summary,
            score: hit.score,
            semantic_rank: hit.semantic_rank,
            lexical_rank: hit.lexical_rank,
            also_keys: hit.also_keys,
        }
    }
}

async fn item(
    State(s): State<Arc<SearchService>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = item_id(&id)?;
    // Another user's item is as absent as one that does not exist.
    let row = items::of_user(&s.pool, &caller.0, id)
        .await
        .map_err(|e| ApiError::of_db(&e))?
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no item {id}")))?;
    let thumbnail_url = match &row.thumbnail_key {
        Some(key) => s.links.url(Thumbnail { item_id: row.id, bucket: &row.bucket, key }).await,
        None => None,
    };
    let failure = row.failed_stage.as_ref().map(|stage| {
        json!({ "stage": stage, "reason": public_reason(stage, row.public_error.as_deref()), "attempts": row.attempts })
    });
    let analysis = row.analysis_id.map(|analysis_id| {
        json!({
            "analysis_id": analysis_id,
            "version": row.version,
            "category": row.category,
            "summary": row.summary,
            "provider": row.provider_used,
            "model": row.model_used,
            "created_at": row.analysed_at,
            "analysis": row.analysis.as_ref().map(|a| &a.0),
        })
    });
    Ok(Json(json!({
        "item_id": row.id,
        "key": row.file_path,
        "thumbnail_url": thumbnail_url,
        "width": row.width,
        "height": row.height,
        "mime_type": row.mime_type,
        "created_at": row.created_at,
        "updated_at": row.updated_at,
        "status": {
            "thumbnail": row.thumbnail_status,
            "analysis": row.analysis_status,
            "embedding": row.embedding_status,
        },
        "failure": failure,
        "same_bytes_as": row.duplicate_of,
        "analysis": analysis,
    }))
    .into_response())
}

async fn failures(
    State(s): State<Arc<SearchService>>,
    caller: Caller,
    Query(params): Params,
) -> Result<Response, ApiError> {
    let limit = limit(&params, MAX_LIMIT)?;
    let failed = items::failures(&s.pool, Some(&caller.0), limit).await.map_err(|e| ApiError::of_db(&e))?;
    let records = status::public_record_failures(&s.pool, &caller.0, limit).await.map_err(|e| ApiError::of_db(&e))?;
    let items: Vec<Value> = failed
        .into_iter()
        .map(|f| {
            json!({ "item_id": f.id, "key": f.file_path, "stage": f.failed_stage,
                    "reason": public_reason(&f.failed_stage, f.public_error.as_deref()),
                    "attempts": f.attempts, "updated_at": f.updated_at })
        })
        .collect();
    let records: Vec<Value> = records
        .into_iter()
        .map(|r| {
            json!({ "id": r.id, "item_id": r.item_id, "key": r.object_key, "stage": r.stage,
                    "reason": public_reason(&r.stage, r.public_reason.as_deref()),
                    "attempts": r.attempts, "updated_at": r.updated_at })
        })
        .collect();
    Ok(Json(json!({ "items": items, "records": records })).into_response())
}

/// What a tenant is told of a failure at `stage`: the public text stored
/// with it, or (for failures recorded before there was one) which stage
/// failed. Never the operator's detail.
fn public_reason<'a>(stage: &str, public: Option<&'a str>) -> &'a str {
    public.unwrap_or_else(|| {
        StageName::parse(stage).map_or("the image could not be processed", StageName::public_failure)
    })
}

async fn categories() -> Json<Value> {
    Json(json!({ "categories": CATEGORIES }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn search_parameters_are_checked_with_a_clear_message() {
        let ok = SearchParams::parse(&params(&[("q", " beach "), ("limit", "5"), ("category", "nature")])).unwrap();
        assert_eq!(ok, SearchParams { q: "beach".into(), limit: 5, category: Some("nature".into()) });
        assert_eq!(SearchParams::parse(&params(&[("q", "x")])).unwrap().limit, DEFAULT_LIMIT);
        let message = |pairs: &[(&str, &str)]| SearchParams::parse(&params(pairs)).unwrap_err().message;
        assert_eq!(message(&[]), "q is required: the words to search for");
        assert_eq!(message(&[("q", "   ")]), "q is required: the words to search for");
        assert_eq!(message(&[("q", &"a".repeat(1001))]), "q is longer than 1000 characters");
        assert!(SearchParams::parse(&params(&[("q", &"é".repeat(1000))])).is_ok(), "characters, not bytes");
        for limit in ["0", "101", "-1", "ten", "1.5"] {
            assert_eq!(message(&[("q", "x"), ("limit", limit)]), "limit must be a whole number from 1 to 100");
        }
        assert!(message(&[("q", "x"), ("category", "kittens")]).starts_with("unknown category \"kittens\"; one of: "));
    }

    #[test]
    fn a_malformed_id_is_named_in_the_error() {
        assert_eq!(item_id("abc").unwrap_err().message, "\"abc\" is not an item id (a UUID)");
    }
}
