//! The API as the `search` Lambda serves it behind API Gateway's HTTP API:
//! the caller is the claim (`SEARCH_USER_CLAIM`, default `sub`) of the JWT
//! that the route's authorizer verified, never a request parameter; each
//! caller is held to a rate of their own ([`UserLimit`]).

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::IntoResponse;
use lambda_http::request::RequestContext;

use crate::api::{ApiError, Caller, SearchService, router};
use crate::limit::UserLimit;

/// The API, each request's [`Caller`] read from its verified token, and
/// refused with 429 past the caller's rate.
pub fn app(service: Arc<SearchService>, claim: &str, limit: Arc<UserLimit>) -> Router {
    let claim: Arc<str> = Arc::from(claim);
    router(service).layer(middleware::from_fn(move |mut request: Request, next: Next| {
        let (claim, limit) = (claim.clone(), limit.clone());
        async move {
            // Without the claim there is no Caller, and every route answers 401.
            if let Some(user) = claimed_user(&request, &claim) {
                if let Err(wait) = limit.take(&user, Instant::now()) {
                    let refused = ApiError::new(StatusCode::TOO_MANY_REQUESTS, "too many requests; slow down");
                    return ApiError { retry_after: Some(wait), ..refused }.into_response();
                }
                request.extensions_mut().insert(Caller(user));
            }
            next.run(request).await
        }
    }))
}

/// The user the API Gateway JWT authorizer put in the request's context.
fn claimed_user(request: &Request, claim: &str) -> Option<String> {
    match request.extensions().get::<RequestContext>()? {
        RequestContext::ApiGatewayV2(context) => {
            context.authorizer.as_ref()?.jwt.as_ref()?.claims.get(claim).filter(|user| !user.is_empty()).cloned()
        }
        _ => None,
    }
}
