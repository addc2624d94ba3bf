//! The seed's console test events (`events/*-seed.json`, verbatim from its
//! "Test Events" section) invoked straight on each stage's handler, as the
//! Lambda console would: an S3 notification with only bucket and key, and
//! EventBridge-shaped `{"detail": …}` events without a thumbnail key.

use std::sync::Arc;
use std::time::Duration;

use analyzer::Analyzer;
use aws::lambda::Handler;
use domain::events::{ANALYSIS_COMPLETE, IMAGE_PROCESSED};
use embedder::Embedder;
use runtime::bus::LocalBus;
use runtime::storage::ObjectStore;
use serde_json::Value;
use sqlx::PgPool;
use test_support::aws::invoke;
use test_support::components;
use test_support::images::{self, BLUE};
use thumbnailer::Thumbnailer;

const TIMEOUT: Duration = Duration::from_secs(60);

fn seed(name: &str) -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../events").join(name);
    serde_json::from_str(&std::fs::read_to_string(path).expect("the event file")).expect("JSON")
}

#[sqlx::test(migrations = "../migrations")]
async fn each_stage_takes_its_seed_test_event_invoked_directly(pool: PgPool) {
    let dir = tempfile::tempdir().unwrap();
    let c = components(pool.clone(), &dir.path().join("data"), &[]).await;
    c.store.put("test-bucket", "user123/item456.jpg", images::jpeg(640, 480, BLUE), "image/jpeg", &[]).await.unwrap();
    // The next stages' streams, read by nobody here.
    let (processed, _processed_rx) = tokio::sync::mpsc::channel(4);
    let (analyzed, _analyzed_rx) = tokio::sync::mpsc::channel(4);
    let bus = Arc::new(LocalBus::new().route(IMAGE_PROCESSED, processed).route(ANALYSIS_COMPLETE, analyzed));

    let thumbnailer = Thumbnailer::new(c.store.clone(), bus.clone(), pool.clone(), c.thumbnail.clone()).unwrap();
    let answer =
        invoke(&Handler::new(&thumbnailer, &pool, TIMEOUT), seed("thumbnailer-seed.json"), "console-1").await.unwrap();
    assert_eq!(answer["done"], 1, "{answer}");
    assert!(c.store.path_of("test-bucket", "user123/thumbnails/item456.jpg").unwrap().exists());

    let analyzer = Analyzer::new(c.store.clone(), bus, pool.clone(), c.vision.clone(), c.analyzer.clone());
    let answer =
        invoke(&Handler::new(&analyzer, &pool, TIMEOUT), seed("analyzer-seed.json"), "console-2").await.unwrap();
    assert_eq!(answer["done"], 1, "the thumbnail key is derived by the seed's rule: {answer}");

    // The seed's embedder event names `analysis789`, which is no analysis
    // here (ids are UUIDs): it fails alone, recorded, and is not retried.
    // Its claims cannot be checked, so the failure is the record's, with no
    // user or item (the operator's to see).
    let embedder = Embedder::new(pool.clone(), c.embedding.clone(), c.embedder.clone());
    let answer =
        invoke(&Handler::new(&embedder, &pool, TIMEOUT), seed("embedder-seed.json"), "console-3").await.unwrap();
    assert_eq!((answer["done"].as_u64(), answer["failed"].as_u64()), (Some(0), Some(1)), "{answer}");
    let reason: String =
        sqlx::query_scalar("SELECT reason FROM record_failures WHERE user_id IS NULL").fetch_one(&pool).await.unwrap();
    assert_eq!(reason, "analysis_id \"analysis789\" is not a UUID");

    // The same event with the analysis the analyzer stored is embedded.
    let id: uuid::Uuid = sqlx::query_scalar("SELECT id FROM analyses").fetch_one(&pool).await.unwrap();
    let mut event = seed("embedder-seed.json");
    event["detail"]["analysis_id"] = Value::String(id.to_string());
    let answer = invoke(&Handler::new(&embedder, &pool, TIMEOUT), event, "console-4").await.unwrap();
    assert_eq!(answer["done"], 1, "{answer}");
}
