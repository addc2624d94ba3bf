//! The search API as both hosts serve it, on real PostgreSQL + pgvector:
//! the Lambda's app fed API Gateway HTTP API requests (the caller is the JWT
//! claim the authorizer passes on), and `collections serve`'s app over real
//! HTTP (the caller is `--user`), with its bad-input and outage answers.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use domain::settings::Env;
use embedding::EmbeddingProvider;
use runtime::storage::{FolderStore, ObjectStore};
use search::SearchService;
use search::links::{LocalLinks, PresignedLinks, ThumbnailLinks};
use serde_json::{Value, json};
use sqlx::PgPool;
use test_support::providers::{MockProviders, Reply};
use test_support::{FixedSecrets, analysis, images, seed_items};
use tower::ServiceExt;
use uuid::Uuid;

fn local_embedder() -> Arc<dyn EmbeddingProvider> {
    Arc::new(embedding::local::LocalEmbedder::default())
}

fn service(pool: &PgPool, embedding: Arc<dyn EmbeddingProvider>, links: Arc<dyn ThumbnailLinks>) -> Arc<SearchService> {
    Arc::new(SearchService { pool: pool.clone(), embedding, links })
}

/// Alice's three images and Bob's two, embedded by the local model.
async fn alice_and_bob(pool: &PgPool) {
    let cat = || analysis("pets", "A ginger cat asleep on a sofa", &["cat", "sofa"]);
    let alice = vec![
        ("cat", cat()),
        ("beach", analysis("landscape", "A sandy beach with palm trees", &["beach", "palm"])),
        ("pasta", analysis("food", "A plate of pasta with basil", &["pasta", "dinner"])),
    ];
    seed_items(pool, "alice", local_embedder(), alice).await;
    let bob = vec![("cat", cat()), ("boat", analysis("landscape", "A sailing boat at sea", &["boat", "sea"]))];
    seed_items(pool, "bob", local_embedder(), bob).await;
}

async fn ids_of(pool: &PgPool, user: &str) -> Vec<Uuid> {
    sqlx::query_scalar("SELECT id FROM items WHERE user_id = $1 ORDER BY file_path")
        .bind(user)
        .fetch_all(pool)
        .await
        .unwrap()
}

/// A GET as API Gateway's HTTP API (payload 2.0) hands it to the function,
/// with the claims its JWT authorizer verified.
fn gateway_get(path: &str, query: &str, claims: Option<Value>) -> lambda_http::Request {
    let authorizer = claims.map(|claims| json!({ "jwt": { "claims": claims, "scopes": null } }));
    let event = json!({
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": query,
        "headers": { "host": "abc123.execute-api.us-east-1.amazonaws.com", "authorization": "Bearer eyJ.x.y" },
        "requestContext": {
            "accountId": "123456789012", "apiId": "abc123", "authorizer": authorizer,
            "domainName": "abc123.execute-api.us-east-1.amazonaws.com", "domainPrefix": "abc123",
            "http": { "method": "GET", "path": path, "protocol": "HTTP/1.1", "sourceIp": "203.0.113.9",
                      "userAgent": "curl/8" },
            "requestId": "req-1", "routeKey": "$default", "stage": "$default",
            "time": "30/Nov/2026:12:00:00 +0000", "timeEpoch": 1_796_040_000_000_i64
        },
        "isBase64Encoded": false
    });
    let request: lambda_http::request::LambdaRequest = serde_json::from_value(event).expect("an HTTP API event");
    lambda_http::Request::from(request)
}

async fn answer<B>(app: &Router, request: Request<B>) -> (StatusCode, Value)
where
    B: axum::body::HttpBody<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    let response = app.clone().oneshot(request.map(Body::new)).await.unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

fn sub(user: &str) -> Option<Value> {
    Some(json!({ "sub": user, "email": format!("{user}@example.com") }))
}

#[sqlx::test(migrations = "../migrations")]
async fn a_token_for_one_user_never_shows_another_users_items(pool: PgPool) {
    alice_and_bob(&pool).await;
    let aws = aws::load_config().await;
    let links = PresignedLinks::new(aws::s3::S3Store::new(&aws).client().clone(), None, Duration::from_secs(900));
    let app = search::lambda::app(service(&pool, local_embedder(), Arc::new(links)), "sub", generous());

    // Every query Alice can make finds only her items; the thumbnail links
    // are presigned, short-lived and for her thumbnails.
    for q in ["cat", "sofa", "boat", "sea", "pasta"] {
        let (status, body) = answer(&app, gateway_get("/v1/search", &format!("q={q}&limit=100"), sub("alice"))).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(!body.to_string().contains("bob"), "{q}: {body}");
        for hit in body["hits"].as_array().unwrap() {
            assert!(hit["key"].as_str().unwrap().starts_with("alice/"), "{hit}");
            let url = hit["thumbnail_url"].as_str().unwrap();
            assert!(url.contains("alice/thumbnails/"), "{url}");
            assert!(url.contains("X-Amz-Expires=900") && url.contains("X-Amz-Signature="), "{url}");
        }
    }
    let (_, body) = answer(&app, gateway_get("/v1/search", "q=cat", sub("alice"))).await;
    assert_eq!(body["hits"][0]["key"], "alice/cat.jpg");

    // Guessing (or knowing) Bob's item ids gives Alice what a random id gives.
    let (bob, alice) = (ids_of(&pool, "bob").await, ids_of(&pool, "alice").await);
    for id in bob.iter().chain([&Uuid::now_v7()]) {
        let (status, body) = answer(&app, gateway_get(&format!("/v1/items/{id}"), "", sub("alice"))).await;
        assert_eq!((status, body), (StatusCode::NOT_FOUND, json!({ "error": format!("no item {id}") })));
    }
    let (status, body) = answer(&app, gateway_get(&format!("/v1/items/{}", bob[0]), "", sub("bob"))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["key"], "bob/boat.jpg");
    assert_eq!(body["analysis"]["summary"], "A sailing boat at sea");
    assert_eq!(body["status"], json!({ "thumbnail": "done", "analysis": "done", "embedding": "done" }));

    // Failures: each sees their own, in public words; the operator's
    // detail (a provider's error body, a bucket's name) is never sent.
    for (id, public) in [(bob[0], Some("bob's failure")), (alice[0], None)] {
        sqlx::query(
            "UPDATE items SET failed_stage = 'analysis', last_error = 'anthropic answered: sk-ant-... bucket-x', \
             public_error = $2 WHERE id = $1",
        )
        .bind(id)
        .bind(public)
        .execute(&pool)
        .await
        .unwrap();
    }
    let (_, body) = answer(&app, gateway_get("/v1/failures", "", sub("alice"))).await;
    let reasons: Vec<&str> = body["items"].as_array().unwrap().iter().map(|f| f["reason"].as_str().unwrap()).collect();
    assert_eq!(reasons, ["the image could not be analysed"], "a failure from before public reasons: the stage");
    let (_, body) = answer(&app, gateway_get("/v1/failures", "", sub("bob"))).await;
    assert_eq!(body["items"][0]["reason"], "bob's failure");
    let (_, body) = answer(&app, gateway_get(&format!("/v1/items/{}", bob[0]), "", sub("bob"))).await;
    assert_eq!(body["failure"]["reason"], "bob's failure");
    assert!(!body.to_string().contains("bucket-x"), "{body}");

    // No verified user, no answer; the user comes from the configured claim only.
    let (status, body) = answer(&app, gateway_get("/v1/search", "q=cat&user=bob", None)).await;
    assert_eq!((status, body), (StatusCode::UNAUTHORIZED, json!({ "error": "no user" })));
    let by_email = search::lambda::app(service(&pool, local_embedder(), Arc::new(LocalLinks)), "email", generous());
    let (_, body) = answer(&by_email, gateway_get("/v1/search", "q=cat", sub("alice"))).await;
    assert!(body["hits"].as_array().unwrap().is_empty(), "alice@example.com has no items: {body}");
}

#[sqlx::test(migrations = "../migrations")]
async fn similar_items_are_the_callers_own_nearest_first_with_duplicates_folded(pool: PgPool) {
    alice_and_bob(&pool).await;
    let kitten = analysis("pets", "A small ginger kitten asleep on a sofa cushion", &["cat", "kitten", "sofa"]);
    seed_items(&pool, "alice", local_embedder(), vec![("kitten", kitten)]).await;
    // A copy of Alice's cat: the same bytes, analysed and embedded with it.
    let (copy, _) = test_support::seed_analysis(&pool, "alice/cat-copy.jpg", &analysis("pets", "x", &["x"])).await;
    let id_of = |key: &'static str| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, Uuid>("SELECT id FROM items WHERE file_path = $1")
                .bind(key)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    let (cat, kitten, pasta, bobs_cat) = (
        id_of("alice/cat.jpg").await,
        id_of("alice/kitten.jpg").await,
        id_of("alice/pasta.jpg").await,
        id_of("bob/cat.jpg").await,
    );
    sqlx::query("DELETE FROM analyses WHERE item_id = $1").bind(copy).execute(&pool).await.unwrap();
    sqlx::query("UPDATE items SET duplicate_of = $1 WHERE id = $2").bind(cat).bind(copy).execute(&pool).await.unwrap();
    let app = search::lambda::app(service(&pool, local_embedder(), Arc::new(LocalLinks)), "sub", generous());
    let similar = |id: Uuid, query: &'static str| {
        let app = app.clone();
        async move { answer(&app, gateway_get(&format!("/v1/items/{id}/similar"), query, sub("alice"))).await }
    };

    // The kitten is nearest the cat; the cat itself, and Bob's, are not there.
    let (status, body) = similar(cat, "").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let keys: Vec<&str> = body["hits"].as_array().unwrap().iter().map(|h| h["key"].as_str().unwrap()).collect();
    assert_eq!(keys.len(), 3, "{body}");
    assert_eq!(keys[0], "alice/kitten.jpg", "{body}");
    assert!(keys.iter().all(|k| k.starts_with("alice/") && *k != "alice/cat.jpg"), "{keys:?}");
    let scores: Vec<f64> = body["hits"].as_array().unwrap().iter().map(|h| h["score"].as_f64().unwrap()).collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]) && scores[0] <= 1.0, "nearest first: {scores:?}");
    let ranks: Vec<i64> =
        body["hits"].as_array().unwrap().iter().map(|h| h["semantic_rank"].as_i64().unwrap()).collect();
    assert_eq!(ranks, [1, 2, 3]);
    assert_eq!(similar(cat, "limit=1").await.1["hits"].as_array().unwrap().len(), 1);

    // The copy asks with the cat's vector, and the cat carries its key as search does.
    let (_, body) = similar(copy, "").await;
    assert_eq!(body["hits"][0]["key"], "alice/kitten.jpg", "{body}");
    assert!(!body.to_string().contains("\"alice/cat.jpg\""), "the copy's own bytes are not similar to it: {body}");
    let (_, body) = similar(kitten, "").await;
    assert_eq!(body["hits"][0]["key"], "alice/cat.jpg", "{body}");
    assert_eq!(body["hits"][0]["also_keys"], json!(["alice/cat-copy.jpg"]));

    // Bob's item, a random id: the same 404. A malformed id, a bad limit: 400.
    for id in [bobs_cat, Uuid::now_v7()] {
        assert_eq!(similar(id, "").await, (StatusCode::NOT_FOUND, json!({ "error": format!("no item {id}") })));
    }
    let (status, body) = answer(&app, gateway_get("/v1/items/not-an-id/similar", "", sub("alice"))).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("\"not-an-id\" is not an item id (a UUID)"))
    );
    assert_eq!(similar(cat, "limit=0").await.0, StatusCode::BAD_REQUEST);

    // An item without a vector yet says so.
    sqlx::query("DELETE FROM embeddings WHERE item_id = $1").bind(pasta).execute(&pool).await.unwrap();
    let (status, body) = similar(pasta, "").await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(body["error"].as_str().unwrap().contains("not embedded yet"), "{body}");
}

/// Voyage's embeddings at `url`.
async fn voyage(url: &str) -> Arc<dyn EmbeddingProvider> {
    let config = embedder::EmbedderConfig::from_env(&Env::from_pairs([
        ("EMBEDDING_PROVIDER", "voyage"),
        ("VOYAGE_BASE_URL", url),
    ]))
    .unwrap();
    let secrets = FixedSecrets([("VOYAGE_API_KEY".to_owned(), "pa-secret-key-123".to_owned())].into());
    config.active.build(&secrets).await.unwrap()
}

#[sqlx::test(migrations = "../migrations")]
async fn a_repeated_query_does_not_wait_for_the_provider_again(pool: PgPool) {
    alice_and_bob(&pool).await;
    let mock = MockProviders::start().await;
    mock.set_latency(Duration::from_millis(100));
    let cached = Arc::new(search::query::CachedQueries::new(voyage(&mock.voyage_url()).await, 16));
    let app = search::lambda::app(service(&pool, cached, Arc::new(LocalLinks)), "sub", generous());
    let timed = |query: &'static str| {
        let app = app.clone();
        async move {
            let began = std::time::Instant::now();
            let (status, body) = answer(&app, gateway_get("/v1/search", query, sub("alice"))).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            began.elapsed()
        }
    };
    let first = timed("q=red%20boat").await;
    assert!(first >= Duration::from_millis(100), "the first pays the provider's 100 ms: {first:?}");
    let again = timed("q=Red++Boat").await;
    assert!(again < Duration::from_millis(100), "the same query, normalised, does not: {again:?}");
    let requests = mock.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].body["input"], json!(["red boat"]), "what is embedded is the normalised query");
}

/// A per-user limit no test reaches.
fn generous() -> Arc<search::limit::UserLimit> {
    Arc::new(search::limit::UserLimit::new(1000.0, 1000.0))
}

/// One user past their rate is answered 429 with `retry-after`, and the
/// next user is served: a token holder cannot spend everyone's capacity.
#[sqlx::test(migrations = "../migrations")]
async fn a_user_past_their_rate_is_refused_and_others_are_served(pool: PgPool) {
    alice_and_bob(&pool).await;
    let limit = Arc::new(search::limit::UserLimit::new(1.0, 3.0));
    let app = search::lambda::app(service(&pool, local_embedder(), Arc::new(LocalLinks)), "sub", limit);
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(answer(&app, gateway_get("/v1/search", "q=cat", sub("mallory"))).await.0);
    }
    assert_eq!(statuses[..3], [StatusCode::OK; 3]);
    assert_eq!(statuses[3..], [StatusCode::TOO_MANY_REQUESTS; 2]);
    let (status, body) = answer(&app, gateway_get("/v1/search", "q=cat", sub("alice"))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["hits"][0]["key"], "alice/cat.jpg");
}

/// `collections serve`'s app for `user`, on a port of its own: its base URL.
async fn serve_local(service: Arc<SearchService>, store: Arc<dyn ObjectStore>, user: &str) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = search::gallery::local_app(service, store, None, user, addr.port());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

async fn get(url: &str) -> (StatusCode, Option<String>, Value) {
    let response = reqwest::get(url).await.unwrap();
    let status = StatusCode::from_u16(response.status().as_u16()).unwrap();
    let retry_after = response.headers().get("retry-after").map(|v| v.to_str().unwrap().to_owned());
    (status, retry_after, response.json().await.unwrap_or(Value::Null))
}

#[sqlx::test(migrations = "../migrations")]
async fn collections_serve_answers_with_the_users_hits_page_and_thumbnails(pool: PgPool) {
    alice_and_bob(&pool).await;
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(FolderStore::new(dir.path()));
    for user in ["alice", "bob"] {
        let thumbnail = images::jpeg(80, 60, images::BLUE);
        store.put("local", &format!("{user}/thumbnails/cat.jpg"), thumbnail, "image/jpeg", &[]).await.unwrap();
    }
    let base = serve_local(service(&pool, local_embedder(), Arc::new(LocalLinks)), store, "alice").await;

    let page = reqwest::get(format!("{base}/")).await.unwrap();
    assert_eq!(page.headers()["content-type"], "text/html; charset=utf-8");
    let policy = page.headers()["content-security-policy"].to_str().unwrap().to_owned();
    assert!(policy.starts_with("default-src 'none'; script-src 'sha256-"), "{policy}");
    assert!(policy.contains("frame-ancestors 'none'") && !policy.contains("unsafe-inline"), "{policy}");
    assert_eq!(page.headers()["x-content-type-options"], "nosniff");
    assert_eq!(page.headers()["x-frame-options"], "DENY");
    assert_eq!(page.headers()["referrer-policy"], "no-referrer");
    assert!(page.text().await.unwrap().contains("id=\"search\""));

    let (status, _, body) = get(&format!("{base}/v1/search?q=sleeping+cat&limit=2")).await;
    assert_eq!(status, StatusCode::OK);
    let top = &body["hits"][0];
    assert_eq!(top["key"], "alice/cat.jpg");
    let id = top["item_id"].as_str().unwrap();
    assert_eq!(top["thumbnail_url"], format!("/v1/items/{id}/thumbnail"));
    let thumbnail = reqwest::get(format!("{base}/v1/items/{id}/thumbnail")).await.unwrap();
    assert_eq!(thumbnail.headers()["content-type"], "image/jpeg");
    assert_eq!(image::load_from_memory(&thumbnail.bytes().await.unwrap()).unwrap().width(), 80);

    let bob_cat: Uuid =
        sqlx::query_scalar("SELECT id FROM items WHERE file_path = 'bob/cat.jpg'").fetch_one(&pool).await.unwrap();
    let (status, _, _) = get(&format!("{base}/v1/items/{bob_cat}/thumbnail")).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "another user's thumbnail is not served");

    // DNS rebinding: a page of another name that now resolves to 127.0.0.1
    // is refused, whatever it asks for; this machine's names are answered.
    let port = base.rsplit(':').next().unwrap();
    let client = reqwest::Client::new();
    for (host, expected) in [
        (format!("rebind.attacker.example:{port}"), StatusCode::MISDIRECTED_REQUEST),
        ("127.0.0.1:1".to_owned(), StatusCode::MISDIRECTED_REQUEST),
        ("localhost".to_owned(), StatusCode::MISDIRECTED_REQUEST),
        (format!("localhost:{port}"), StatusCode::OK),
        (format!("[::1]:{port}"), StatusCode::OK),
    ] {
        for path in ["/", "/v1/search?q=cat", &format!("/v1/items/{id}/thumbnail"), "/v1/failures"] {
            let response = client.get(format!("{base}{path}")).header("host", &host).send().await.unwrap();
            assert_eq!(response.status().as_u16(), expected.as_u16(), "{host} {path}");
            assert_eq!(response.headers()["x-content-type-options"], "nosniff");
        }
    }

    // A page elsewhere cannot make it search (each search is an embedding call).
    for (site, expected) in [("cross-site", 403), ("same-site", 403), ("same-origin", 200), ("none", 200)] {
        let response =
            client.get(format!("{base}/v1/search?q=cat")).header("sec-fetch-site", site).send().await.unwrap();
        assert_eq!(response.status().as_u16(), expected, "{site}");
    }

    let (_, _, categories) = get(&format!("{base}/v1/categories")).await;
    assert!(categories["categories"].as_array().unwrap().contains(&json!("pets")));

    let long = "a".repeat(1001);
    for (path, error) in [
        ("/v1/search".to_owned(), "q is required: the words to search for".to_owned()),
        (format!("/v1/search?q={long}"), "q is longer than 1000 characters".to_owned()),
        ("/v1/search?q=cat&limit=0".to_owned(), "limit must be a whole number from 1 to 100".to_owned()),
        ("/v1/search?q=cat&limit=101".to_owned(), "limit must be a whole number from 1 to 100".to_owned()),
        ("/v1/items/not-an-id".to_owned(), "\"not-an-id\" is not an item id (a UUID)".to_owned()),
        ("/v1/failures?limit=x".to_owned(), "limit must be a whole number from 1 to 100".to_owned()),
    ] {
        let (status, _, body) = get(&format!("{base}{path}")).await;
        assert_eq!((status, body), (StatusCode::BAD_REQUEST, json!({ "error": error })), "{path}");
    }
    let (status, _, body) = get(&format!("{base}/v1/search?q=cat&category=kittens")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["error"].as_str().unwrap().starts_with("unknown category \"kittens\"; one of: "), "{body}");
}

#[sqlx::test(migrations = "../migrations")]
async fn a_provider_or_database_that_is_down_is_a_503_with_retry_after_and_no_internals(pool: PgPool) {
    alice_and_bob(&pool).await;
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn ObjectStore> = Arc::new(FolderStore::new(dir.path()));
    let mock = MockProviders::start().await;

    // The provider throttles, then nothing listens where it was.
    mock.script([Reply::Status { status: 503, retry_after: Some(7) }]);
    let throttled = service(&pool, voyage(&mock.voyage_url()).await, Arc::new(LocalLinks));
    let base = serve_local(throttled, store.clone(), "alice").await;
    let (status, retry_after, body) = get(&format!("{base}/v1/search?q=cat")).await;
    assert_eq!((status, retry_after.as_deref()), (StatusCode::SERVICE_UNAVAILABLE, Some("7")));
    assert_eq!(body, json!({ "error": "the embedding provider is unavailable; try again in 7 s" }));

    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
    let gone = service(&pool, voyage(&format!("http://{closed}/v1")).await, Arc::new(LocalLinks));
    let base = serve_local(gone, store.clone(), "alice").await;
    let (status, retry_after, body) = get(&format!("{base}/v1/search?q=cat")).await;
    assert_eq!((status, retry_after.as_deref()), (StatusCode::SERVICE_UNAVAILABLE, Some("5")));
    assert_eq!(body, json!({ "error": "the embedding provider is unavailable; try again in 5 s" }));

    // A database nobody answers for.
    let nowhere = sqlx::postgres::PgPoolOptions::new()
        .acquire_timeout(Duration::from_millis(500))
        .connect_lazy(&format!("postgres://postgres:hunter2@{closed}/collections"))
        .unwrap();
    let offline = service(&nowhere, local_embedder(), Arc::new(LocalLinks));
    let base = serve_local(offline, store, "alice").await;
    let id = Uuid::now_v7();
    for path in ["/v1/search?q=cat", &format!("/v1/items/{id}"), &format!("/v1/items/{id}/thumbnail"), "/v1/failures"] {
        let (status, retry_after, body) = get(&format!("{base}{path}")).await;
        assert_eq!((status, retry_after.as_deref()), (StatusCode::SERVICE_UNAVAILABLE, Some("5")), "{path}");
        assert_eq!(body, json!({ "error": "the database is unavailable; try again in 5 s" }), "{path}");
    }
}
