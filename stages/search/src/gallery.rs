//! What `collections serve` adds to the API on this machine: the gallery
//! page at `/` and the thumbnails it shows, read from the local bucket, all
//! for one user given on the command line (a development mode: it binds
//! 127.0.0.1 and checks no token).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use runtime::storage::ObjectStore;

use store::items;

use crate::api::{ApiError, Caller, SearchService, router};

/// The gallery: one page, no build step, nothing fetched from elsewhere.
const INDEX_HTML: &str = include_str!("../static/index.html");

/// The largest thumbnail served (thumbnails are 800 px on their longest side).
const MAX_THUMBNAIL_BYTES: u64 = 16 * 1024 * 1024;

struct Local {
    service: Arc<SearchService>,
    store: Arc<dyn ObjectStore>,
    /// Where thumbnails are written, when not in the original's bucket.
    bucket: Option<String>,
}

/// The API, the page and the thumbnails, every request made as `user`.
pub fn local_app(
    service: Arc<SearchService>,
    store: Arc<dyn ObjectStore>,
    bucket: Option<String>,
    user: &str,
) -> Router {
    let local = Arc::new(Local { service: service.clone(), store, bucket });
    Router::new()
        .route("/", get(|| async { Html(INDEX_HTML) }))
        .route("/v1/items/{id}/thumbnail", get(thumbnail))
        .with_state(local)
        .merge(router(service))
        .layer(Extension(Caller(user.to_owned())))
}

async fn thumbnail(State(local): State<Arc<Local>>, caller: Caller, Path(id): Path<String>) -> Response {
    match thumbnail_bytes(&local, &caller, &id).await {
        Ok((bytes, content_type)) => {
            ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "private, max-age=300")], Body::from(bytes))
                .into_response()
        }
        Err(e) => e.into_response(),
    }
}

async fn thumbnail_bytes(local: &Local, caller: &Caller, id: &str) -> Result<(Vec<u8>, &'static str), ApiError> {
    let not_found = || ApiError::new(StatusCode::NOT_FOUND, format!("no thumbnail of item {id}"));
    let id = uuid::Uuid::parse_str(id).map_err(|_| not_found())?;
    let row = items::of_user(&local.service.pool, &caller.0, id)
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "reading an item for its thumbnail failed");
            ApiError::unavailable("the database", None)
        })?
        .ok_or_else(not_found)?;
    let key = row.thumbnail_key.ok_or_else(not_found)?;
    let bucket = local.bucket.as_deref().unwrap_or(&row.bucket);
    let bytes = local.store.get(bucket, &key, MAX_THUMBNAIL_BYTES).await.map_err(|e| {
        tracing::warn!(error = %e, key, "reading a thumbnail failed");
        not_found()
    })?;
    let content_type = if key.to_ascii_lowercase().ends_with(".png") { "image/png" } else { "image/jpeg" };
    Ok((bytes, content_type))
}
