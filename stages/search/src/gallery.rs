//! What `collections serve` adds to the API on this machine: the gallery
//! page at `/` and the thumbnails it shows, read from the local bucket, all
//! for one user given on the command line (a development mode: it binds
//! 127.0.0.1 and checks no token).
//!
//! Binding 127.0.0.1 alone does not keep other web pages out: a page whose
//! name is later made to resolve to 127.0.0.1 (DNS rebinding) is
//! same-origin with the server. So every request must name this server in
//! its `Host` header (`127.0.0.1`, `localhost` or `[::1]`, with the port
//! served), else it is answered 421 before any handler runs; a browser's
//! request that says it comes from another site (`Sec-Fetch-Site`) is
//! answered 403, so no page elsewhere spends embedding calls; and every
//! answer carries a Content-Security-Policy that allows only the page's
//! own script and style (by hash) and same-origin requests.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
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

/// The API, the page and the thumbnails, every request made as `user`,
/// answered only when its `Host` is this machine at `port` (the port the
/// caller listens on).
pub fn local_app(
    service: Arc<SearchService>,
    store: Arc<dyn ObjectStore>,
    bucket: Option<String>,
    user: &str,
    port: u16,
) -> Router {
    let local = Arc::new(Local { service: service.clone(), store, bucket });
    let guard = Arc::new(Guard::new(port));
    Router::new()
        .route("/", get(|| async { Html(INDEX_HTML) }))
        .route("/v1/items/{id}/thumbnail", get(thumbnail))
        .with_state(local)
        .merge(router(service))
        .layer(Extension(Caller(user.to_owned())))
        .layer(middleware::from_fn_with_state(guard, guard_request))
}

/// What every request is checked against, and the headers every answer carries.
struct Guard {
    hosts: [String; 3],
    content_security_policy: HeaderValue,
}

impl Guard {
    fn new(port: u16) -> Self {
        let hosts = [format!("127.0.0.1:{port}"), format!("localhost:{port}"), format!("[::1]:{port}")];
        let policy = format!(
            "default-src 'none'; script-src {}; style-src {}; img-src 'self' data:; connect-src 'self'; \
             form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
            inline_hash(INDEX_HTML, "script"),
            inline_hash(INDEX_HTML, "style"),
        );
        Self { hosts, content_security_policy: HeaderValue::from_str(&policy).expect("the policy is ASCII") }
    }
}

impl Guard {
    /// Whether the request names this server in its `Host`, and whether it
    /// comes from this site: a browser says where a request comes from
    /// (`Sec-Fetch-Site`), and another site's page (an `<img>`, a form) may
    /// not make this server search, which costs a provider's embedding
    /// call. Clients that are no browser send nothing.
    fn admits(&self, request: &Request) -> (bool, bool) {
        let header = |name: &str| request.headers().get(name).and_then(|h| h.to_str().ok()).unwrap_or_default();
        let host = header(header::HOST.as_str());
        let known_host = self.hosts.iter().any(|allowed| allowed.eq_ignore_ascii_case(host));
        (known_host, matches!(header("sec-fetch-site"), "" | "same-origin" | "none"))
    }
}

/// `'sha256-…'` of the page's one inline `<tag>` element, as a
/// Content-Security-Policy source (`'none'` when the page has none).
fn inline_hash(page: &str, tag: &str) -> String {
    use base64::Engine;
    use sha2::{Digest, Sha256};
    let open = format!("<{tag}>");
    let Some(start) = page.find(&open).map(|i| i + open.len()) else { return "'none'".to_owned() };
    let end = page[start..].find(&format!("</{tag}>")).map_or(page.len(), |i| start + i);
    let digest = Sha256::digest(&page.as_bytes()[start..end]);
    format!("'sha256-{}'", base64::engine::general_purpose::STANDARD.encode(digest))
}

async fn guard_request(State(guard): State<Arc<Guard>>, request: Request, next: Next) -> Response {
    let (known_host, same_site) = guard.admits(&request);
    let mut response = if !known_host {
        let message = format!("this server answers only to {}", guard.hosts.join(", "));
        ApiError::new(StatusCode::MISDIRECTED_REQUEST, message).into_response()
    } else if !same_site {
        ApiError::new(StatusCode::FORBIDDEN, "requests from other sites are refused").into_response()
    } else {
        next.run(request).await
    };
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, guard.content_security_policy.clone());
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
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
