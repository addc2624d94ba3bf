//! One bad item never takes its batch down. For each stage, a batch of
//! good items and one that a provider or the database spoils ends with the
//! good ones stored and sent on, exactly the bad one failed, recorded with
//! one clear reason and listed by `collections failures`, and a Lambda
//! response that names no record (a permanent failure is recorded, not
//! delivered again).

use std::sync::Arc;
use std::time::Duration;

use analyzer::Analyzer;
use aws::lambda::Handler;
use collections::components::Components;
use collections::ingest::{retry_failures, run_folder};
use domain::events::{ANALYSIS_COMPLETE, IMAGE_PROCESSED, ImageProcessed, ObjectRef, PipelineEvent};
use domain::keys::ImageKey;
use embedder::Embedder;
use runtime::batch::BatchContext;
use runtime::bus::LocalBus;
use runtime::runner::{self, Entry};
use runtime::storage::ObjectStore;
use sqlx::PgPool;
use store::{items, status};
use test_support::aws::invoke;
use test_support::images::{self, BLUE, GREEN, ORANGE};
use test_support::providers::{MockProviders, Reply};
use test_support::{analysed, components, eventbridge, kinesis_batch, processed, redelivered};
use thumbnailer::Thumbnailer;

const TIMEOUT: Duration = Duration::from_secs(60);

/// Four photos, `a` to `d`, in a folder of their own.
fn photos(dir: &std::path::Path) -> std::path::PathBuf {
    let photos = dir.join("photos");
    for (name, colour) in [("a", BLUE), ("b", GREEN), ("c", ORANGE), ("d", [90, 90, 90])] {
        images::write(&photos, &format!("{name}.jpg"), &images::jpeg(320, 240, colour));
    }
    photos
}

/// Components on the mock providers: Anthropic for analyses, Voyage for
/// embeddings, one call at a time so scripted replies meet items in order.
async fn on_mock(pool: &PgPool, dir: &std::path::Path, mock: &MockProviders, extra: &[(&str, &str)]) -> Components {
    let (anthropic, voyage) = (mock.anthropic_url(), mock.voyage_url());
    let mut vars = vec![
        ("ANALYZER_PROVIDER", "anthropic"),
        ("ANTHROPIC_BASE_URL", anthropic.as_str()),
        ("ANTHROPIC_API_KEY", "sk-ant-test"),
        ("ANALYZER_CONCURRENCY", "1"),
        ("ANALYZER_RETRY_BASE_MS", "20"),
        ("EMBEDDING_PROVIDER", "voyage"),
        ("VOYAGE_BASE_URL", voyage.as_str()),
        ("VOYAGE_API_KEY", "pa-test"),
    ];
    vars.extend_from_slice(extra);
    components(pool.clone(), &dir.join("data"), &vars).await
}

/// `(key, failed stage, reason)` of every failed item of user `u`.
async fn failed_items(pool: &PgPool) -> Vec<(String, String, String)> {
    let mut failed: Vec<_> = items::failures(pool, Some("u"), 100)
        .await
        .unwrap()
        .into_iter()
        .map(|f| (f.file_path, f.failed_stage, f.last_error))
        .collect();
    failed.sort();
    failed
}

#[sqlx::test(migrations = "../migrations")]
async fn a_reply_with_characters_postgres_refuses_is_cleaned_and_the_whole_batch_stored(pool: PgPool) {
    let dir = tempfile::tempdir().unwrap();
    let mock = MockProviders::start().await;
    let c = on_mock(&pool, dir.path(), &mock, &[("EMBEDDING_PROVIDER", "local")]).await;
    // The second reply carries a NUL and an unpaired surrogate, as JSON
    // escapes: valid JSON text that jsonb and Rust strings cannot hold.
    let spoilt = ("A mountain lake".to_owned(), "A mountain\\u0000 lake\\ud800".to_owned());
    mock.script([Reply::Ok, Reply::Tampered(vec![spoilt]), Reply::Ok, Reply::Ok]);
    let report = run_folder(&c, &photos(dir.path()), "u", false).await.unwrap();
    assert_eq!((report.processed.len(), report.failed.len()), (4, 0), "{report:?}");
    let summaries: Vec<String> =
        sqlx::query_scalar("SELECT summary FROM analyses ORDER BY summary").fetch_all(&pool).await.unwrap();
    assert_eq!(summaries.len(), 4);
    assert!(summaries.iter().any(|s| s.starts_with("A mountain lake\u{FFFD} at dawn")), "{summaries:?}");
    assert!(summaries.iter().all(|s| !s.contains('\0')));
    let raw: i64 = sqlx::query_scalar("SELECT count(*) FROM analyses WHERE raw_response::text LIKE '%\u{FFFD}%'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(raw, 1, "the reply is kept, cleaned");
}

#[sqlx::test(migrations = "../migrations")]
async fn an_analysis_the_database_refuses_fails_alone_and_the_lambda_reports_no_record(pool: PgPool) {
    let dir = tempfile::tempdir().unwrap();
    let mock = MockProviders::start().await;
    let c = on_mock(&pool, dir.path(), &mock, &[("EMBEDDING_PROVIDER", "local")]).await;
    run_folder(&c, &photos(dir.path()), "u", false).await.unwrap();
    // A rule of the database that validation knows nothing of.
    sqlx::query("ALTER TABLE analyses ADD CONSTRAINT refuse_marked CHECK (summary NOT LIKE '%REFUSE-ME%')")
        .execute(&pool)
        .await
        .unwrap();
    let marked = serde_json::json!({"category": "nature", "summary": "REFUSE-ME: a lake", "description": "",
        "tags": [], "objects": [], "colors": [], "text": [], "scene": "lake", "style": "photo", "people_count": 0});
    mock.script([Reply::Ok, Reply::Ok, Reply::Analysis(marked)]);

    let again = |key: &str| ImageProcessed { reanalysis: Some("again".into()), ..processed(key) };
    // Mallory's thumbnail exists, but she has no item `a`.
    let thumbnail = std::fs::read(c.store.path_of("local", "u/thumbnails/a.jpg").unwrap()).unwrap();
    c.store.put("local", "mallory/thumbnails/a.jpg", thumbnail, "image/jpeg", &[]).await.unwrap();
    let stranger = processed("mallory/a.jpg");
    // Eve names another user's thumbnail as her item's.
    let thief = ImageProcessed { thumbnail_key: "u/thumbnails/c.jpg".into(), ..processed("eve/x.jpg") };
    // An id that is not its key's: the analysis would land on another row.
    let forged_id = uuid::Uuid::now_v7();
    let forged = ImageProcessed { item_uuid: Some(forged_id), ..processed("u/b.jpg") };
    let batch = kinesis_batch(&[
        eventbridge(IMAGE_PROCESSED, &again("u/a.jpg")),
        eventbridge(IMAGE_PROCESSED, &again("u/b.jpg")),
        eventbridge(IMAGE_PROCESSED, &again("u/c.jpg")),
        // Unreadable (no bucket, no thumbnail key), but it names its item.
        eventbridge(IMAGE_PROCESSED, &serde_json::json!({"item_id": "d", "user_id": "u", "original_key": "u/d.jpg"})),
        // Names an item its user does not have.
        eventbridge(IMAGE_PROCESSED, &stranger),
        eventbridge(IMAGE_PROCESSED, &thief),
        eventbridge(IMAGE_PROCESSED, &forged),
    ]);
    let (tx, mut rx) = tokio::sync::mpsc::channel(16);
    let bus = Arc::new(LocalBus::new().route(ANALYSIS_COMPLETE, tx));
    let stage = Analyzer::new(c.store.clone(), bus, pool.clone(), c.vision.clone(), c.analyzer.clone());
    let response = invoke(&Handler::new(&stage, &pool, TIMEOUT), serde_json::to_value(batch).unwrap(), "req-isolation")
        .await
        .unwrap();
    assert_eq!(redelivered(&response), Vec::<String>::new(), "permanent failures are recorded, not redelivered");

    let latest: Vec<(String, i32)> = sqlx::query_as(
        "SELECT i.file_path, max(a.version) FROM items i JOIN analyses a ON a.item_id = i.id GROUP BY 1 ORDER BY 1",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let expected: Vec<(String, i32)> =
        [("u/a.jpg", 2), ("u/b.jpg", 2), ("u/c.jpg", 1), ("u/d.jpg", 1)].map(|(k, v)| (k.to_owned(), v)).into();
    assert_eq!(latest, expected, "the good ones stored");
    let mut published = Vec::new();
    while let Ok(PipelineEvent::AnalysisComplete(e)) = rx.try_recv() {
        published.push(e.item_id);
    }
    assert_eq!(published, ["a", "b"], "and sent on");

    let failed = failed_items(&pool).await;
    assert_eq!(failed.len(), 1, "only the item the stage verified is marked failed: {failed:?}");
    assert_eq!((failed[0].0.as_str(), failed[0].1.as_str()), ("u/c.jpg", "analysis"));
    assert_eq!(
        failed[0].2,
        "the database refused it: storing analyses failed: error returned from database: new row for relation \
         \"analyses\" violates check constraint \"refuse_marked\"",
        "one clear reason, said once"
    );
    let statuses: Vec<(String, String)> = sqlx::query_as(
        "SELECT file_path, analysis_status FROM items WHERE file_path IN ('u/b.jpg', 'u/d.jpg') ORDER BY 1",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(statuses, [("u/b.jpg".into(), "done".into()), ("u/d.jpg".into(), "done".into())]);

    let records = status::record_failure_list(&pool, Some("mallory"), 10).await.unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!((records[0].object_key.as_deref(), records[0].stage.as_str()), (Some("mallory/a.jpg"), "analysis"));
    assert!(records[0].reason.contains("mallory has no item a"), "{}", records[0].reason);
    assert_eq!(records[0].source, "seq-4");
    // What the event claims and the stage refuted is the record's alone: no
    // user sees it (the claimed ids stay in its input), the operator does.
    for user in ["eve", "u"] {
        assert!(status::record_failure_list(&pool, Some(user), 10).await.unwrap().is_empty(), "{user}");
    }
    let mut refused: Vec<_> = status::record_failure_list(&pool, None, 10)
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.user_id.is_none())
        .map(|r| {
            assert_eq!(r.item_id, None);
            (r.source, r.object_key, r.reason)
        })
        .collect();
    refused.sort();
    assert_eq!(refused.len(), 3, "{refused:?}");
    assert_eq!((refused[0].0.as_str(), refused[0].1.as_deref()), ("seq-3", Some("u/d.jpg")));
    assert!(refused[0].2.contains("missing field"), "{}", refused[0].2);
    assert_eq!(
        refused[1].2,
        "thumbnail_key \"u/thumbnails/c.jpg\" is not the thumbnail of \"eve/x.jpg\" (expected \"eve/thumbnails/x.jpg\")"
    );
    assert_eq!(
        refused[2].2,
        format!("item_uuid {forged_id} is not the id of \"u/b.jpg\" ({})", domain::keys::item_uuid("u/b.jpg"))
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn a_vector_out_of_range_fails_its_item_alone(pool: PgPool) {
    let dir = tempfile::tempdir().unwrap();
    let mock = MockProviders::start().await;
    let c = on_mock(&pool, dir.path(), &mock, &[("ANALYZER_PROVIDER", "local")]).await;
    mock.script([Reply::Overflow(1)]);
    let report = run_folder(&c, &photos(dir.path()), "u", false).await.unwrap();
    assert_eq!(report.processed.len(), 3, "{report:?}");
    assert_eq!(report.failed.len(), 1);
    assert_eq!(mock.requests().len(), 1, "one request carried the batch");
    let failed = failed_items(&pool).await;
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].1, "embedding");
    assert_eq!(
        failed[0].2,
        "embedding with voyage-3.5 failed after 1 attempt(s): voyage-3.5 returned a vector with a value that is \
         not a finite 32-bit number (NaN, infinite, or out of range)"
    );
    let vectors: i64 = sqlx::query_scalar("SELECT count(*) FROM embeddings").fetch_one(&pool).await.unwrap();
    assert_eq!(vectors, 3);
}

#[sqlx::test(migrations = "../migrations")]
async fn an_embedding_the_database_refuses_fails_alone_and_the_lambda_reports_no_record(pool: PgPool) {
    let dir = tempfile::tempdir().unwrap();
    let c = components(pool.clone(), &dir.path().join("data"), &[]).await;
    let refused = ImageKey::parse("u/c.jpg").unwrap().item_uuid();
    sqlx::query(&format!("ALTER TABLE embeddings ADD CONSTRAINT refuse_one CHECK (item_id <> '{refused}')"))
        .execute(&pool)
        .await
        .unwrap();
    let report = run_folder(&c, &photos(dir.path()), "u", false).await.unwrap();
    assert_eq!(report.processed, ["u/a.jpg", "u/b.jpg", "u/d.jpg"], "{report:?}");
    let failed = failed_items(&pool).await;
    assert_eq!(failed.len(), 1);
    assert_eq!((failed[0].0.as_str(), failed[0].1.as_str()), ("u/c.jpg", "embedding"));
    assert!(
        failed[0].2.starts_with("the database refused the embedding: ")
            && failed[0].2.contains("violates check constraint \"refuse_one\""),
        "{}",
        failed[0].2
    );

    // The same four again through the Lambda handler: the stored three are
    // skipped, the refused one fails again, and no record is redelivered.
    let analyses: Vec<(String, uuid::Uuid)> = sqlx::query_as(
        "SELECT i.file_path, a.id FROM items i JOIN analyses a ON a.item_id = i.id ORDER BY i.file_path",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let events: Vec<Vec<u8>> =
        analyses.iter().map(|(key, id)| eventbridge(ANALYSIS_COMPLETE, &analysed(key, *id))).collect();
    let stage = Embedder::new(pool.clone(), c.embedding.clone(), c.embedder.clone());
    let response = invoke(
        &Handler::new(&stage, &pool, TIMEOUT),
        serde_json::to_value(kinesis_batch(&events)).unwrap(),
        "req-embed",
    )
    .await
    .unwrap();
    assert_eq!(redelivered(&response), Vec::<String>::new());
    assert_eq!(failed_items(&pool).await.len(), 1);
}

#[sqlx::test(migrations = "../migrations")]
async fn an_item_row_the_database_refuses_is_kept_as_a_record_failure_and_retried(pool: PgPool) {
    let dir = tempfile::tempdir().unwrap();
    let c = components(pool.clone(), &dir.path().join("data"), &[]).await;
    let mut payloads = Vec::new();
    for (name, colour) in [("a", BLUE), ("b", GREEN), ("refused-c", ORANGE), ("d", [90, 90, 90])] {
        let key = format!("u/{name}.jpg");
        let bytes = images::jpeg(320, 240, colour);
        runtime::storage::ObjectStore::put(c.store.as_ref(), "local", &key, bytes, "image/jpeg", &[]).await.unwrap();
        let detail = serde_json::json!({"bucket": {"name": "local"}, "object": {"key": key, "etag": "e1", "size": 9}});
        payloads.push(eventbridge("Object Created", &detail));
    }
    sqlx::query("ALTER TABLE items ADD CONSTRAINT refuse_marked CHECK (file_path NOT LIKE '%refused%')")
        .execute(&pool)
        .await
        .unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::channel(16);
    let bus = Arc::new(LocalBus::new().route(IMAGE_PROCESSED, tx));
    let stage = Thumbnailer::new(c.store.clone(), bus, pool.clone(), c.thumbnail.clone()).unwrap();
    let response = invoke(
        &Handler::new(&stage, &pool, TIMEOUT),
        serde_json::to_value(kinesis_batch(&payloads)).unwrap(),
        "req-thumbnail",
    )
    .await
    .unwrap();
    assert_eq!(redelivered(&response), Vec::<String>::new());
    let done: Vec<String> =
        sqlx::query_scalar("SELECT file_path FROM items WHERE thumbnail_status = 'done' ORDER BY 1")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(done, ["u/a.jpg", "u/b.jpg", "u/d.jpg"]);
    let mut published = Vec::new();
    while let Ok(PipelineEvent::ImageProcessed(e)) = rx.try_recv() {
        published.push(e.original_key);
    }
    assert_eq!(published, ["u/a.jpg", "u/b.jpg", "u/d.jpg"]);
    let records = status::record_failure_list(&pool, Some("u"), 10).await.unwrap();
    assert_eq!(records.len(), 1, "with no row of its own, the failure has a table of its own");
    assert_eq!((records[0].object_key.as_deref(), records[0].stage.as_str()), (Some("u/refused-c.jpg"), "thumbnail"));
    assert!(records[0].reason.contains("violates check constraint \"refuse_marked\""), "{}", records[0].reason);

    // Once the cause is gone, `collections retry` sends it through again.
    sqlx::query("ALTER TABLE items DROP CONSTRAINT refuse_marked").execute(&pool).await.unwrap();
    let report = retry_failures(&c, Some("u"), 100).await.unwrap();
    assert_eq!(report.processed, ["u/refused-c.jpg"], "{report:?}");
    assert!(status::record_failure_list(&pool, Some("u"), 10).await.unwrap().is_empty());
}

#[sqlx::test(migrations = "../migrations")]
async fn a_later_stage_never_hides_the_stage_that_must_run_again(pool: PgPool) {
    let dir = tempfile::tempdir().unwrap();
    let c = components(pool.clone(), &dir.path().join("data"), &[]).await;
    let thumbnailer =
        Thumbnailer::new(c.store.clone(), Arc::new(LocalBus::new()), pool.clone(), c.thumbnail.clone()).unwrap();
    let missing = ObjectRef { bucket: "local".into(), key: "u/missing.jpg".into(), ..ObjectRef::default() };
    runner::run(&thumbnailer, &pool, vec![Entry::readable("s1", missing.into())], BatchContext::default()).await;
    // A stray ImageProcessed for it (a replay from before the original went).
    let analyzer =
        Analyzer::new(c.store.clone(), Arc::new(LocalBus::new()), pool.clone(), c.vision.clone(), c.analyzer.clone());
    let ran =
        runner::run(&analyzer, &pool, vec![Entry::readable("s2", processed("u/missing.jpg"))], BatchContext::default())
            .await;
    assert_eq!(ran.metrics.failed, 1);
    let failed = failed_items(&pool).await;
    assert_eq!(failed.len(), 1);
    assert_eq!((failed[0].1.as_str(), failed[0].2.as_str()), ("thumbnail", "s3://local/u/missing.jpg does not exist"));
    let status: (String, String) =
        sqlx::query_as("SELECT thumbnail_status, analysis_status FROM items").fetch_one(&pool).await.unwrap();
    assert_eq!(status, ("failed".to_owned(), "failed".to_owned()));
}
