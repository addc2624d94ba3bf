//! `--batch-api`: the analyses of a run through Anthropic's Message Batches
//! API on a server speaking its format: no synchronous call, every kind of
//! result accounted for, a killed run picked up without submitting again,
//! a submission whose answer was lost found again, a result for an item
//! deleted meanwhile dropped, and the tokens priced as batch.

use std::path::{Path, PathBuf};
use std::time::Duration;

use collections::components::{Choices, Components};
use collections::ingest::run_folder;
use collections::reanalyze::{Selection, reanalyze};
use collections::stats::{Prices, cost};
use sqlx::PgPool;
use test_support::images::{self, BLUE, GREEN, ORANGE, PINK};
use test_support::providers::{BatchLine, MockProviders};

/// Components analysing with Anthropic on the mock through its batch API.
async fn batch_components(pool: &PgPool, dir: &Path, mock: &MockProviders, extra: &[(&str, &str)]) -> Components {
    let mut vars = vec![("ANALYZER_PROVIDER", "anthropic"), ("ANALYZER_MODEL", "claude-haiku-4-5")];
    vars.extend_from_slice(extra);
    components_with(pool, dir, mock, &vars).await
}

/// Components analysing through the mock's batch API, as `extra` says.
async fn components_with(pool: &PgPool, dir: &Path, mock: &MockProviders, extra: &[(&str, &str)]) -> Components {
    let (anthropic, openai) = (mock.anthropic_url(), mock.openai_url());
    let mut vars = vec![
        ("ANTHROPIC_BASE_URL", anthropic.as_str()),
        ("OPENAI_BASE_URL", openai.as_str()),
        ("ANTHROPIC_API_KEY", "sk-ant-test"),
        ("OPENAI_API_KEY", "sk-openai-test"),
        ("ANALYZER_BATCH_POLL_SECS", "0.05"),
    ];
    vars.extend_from_slice(extra);
    let choices = Choices { batch_api: true, ..Choices::default() };
    test_support::components_choosing(pool.clone(), &dir.join("data"), &vars, choices).await
}

/// `n` photos, each of its own bytes.
fn photos(dir: &Path, n: u32) -> PathBuf {
    let photos = dir.join("photos");
    for i in 0..n {
        let color = [BLUE, GREEN, ORANGE, PINK][i as usize % 4];
        images::write(&photos, &format!("p{i}.jpg"), &images::jpeg(600 + 10 * i, 400, color));
    }
    photos
}

fn routes(mock: &MockProviders, route: &str) -> usize {
    mock.requests().iter().filter(|r| r.route == route).count()
}

async fn scalar(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

/// Runs `work` on components of its own, in a runtime of its own that is
/// shut down (every task dropped at its next await, as a SIGKILL leaves
/// things) once `submitted` batches have the provider's id recorded.
async fn kill_once_submitted<F, R>(pool: &PgPool, dir: &Path, mock: &MockProviders, submitted: i64, work: F)
where
    F: FnOnce(Components) -> R + Send + 'static,
    R: std::future::Future + Send + 'static,
    R::Output: Send + 'static,
{
    let (options, dir, mock) = (pool.connect_options().as_ref().clone(), dir.to_owned(), mock.clone());
    let killed = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        runtime.block_on(async move {
            let pool = PgPool::connect_with(options).await.unwrap();
            let c = batch_components(&pool, &dir, &mock, &[]).await;
            tokio::spawn(work(c));
            for _ in 0..400 {
                let sql = "SELECT count(*) FROM provider_batches WHERE provider_batch_id IS NOT NULL";
                if scalar(&pool, sql).await == submitted {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            panic!("no batch was submitted");
        });
        runtime.shutdown_background();
    });
    tokio::task::spawn_blocking(move || killed.join()).await.unwrap().unwrap();
}

#[sqlx::test(migrations = "../migrations")]
async fn a_run_through_the_batch_api_makes_no_synchronous_call_and_accounts_for_every_result(pool: PgPool) {
    let dir = tempfile::tempdir().unwrap();
    let mock = MockProviders::start().await;
    mock.set_batch_duration(Duration::from_millis(300));
    // The first batch's six results, in submission order; the second batch's all succeed.
    mock.batch_script([
        BatchLine::Succeeded,
        BatchLine::Errored("invalid_request_error"),
        BatchLine::Errored("overloaded_error"),
        BatchLine::Expired,
        BatchLine::Succeeded,
        BatchLine::Garbled,
    ]);
    let c = batch_components(&pool, dir.path(), &mock, &[]).await;
    let report = run_folder(&c, &photos(dir.path(), 6), "u", false).await.unwrap();

    assert_eq!(routes(&mock, "anthropic"), 0, "no synchronous Messages call");
    let batches = mock.batches();
    assert_eq!(batches.iter().map(Vec::len).collect::<Vec<_>>(), [6, 3], "the provider's misses submitted once more");
    assert_eq!((report.processed.len(), report.failed.len(), report.pending.len()), (5, 1, 0), "{report:?}");
    assert!(report.skipped.is_empty(), "{report:?}");
    assert!(report.failed[0].1.contains("invalid_request_error"), "{:?}", report.failed);

    let failed: (String, String) =
        sqlx::query_as("SELECT failed_stage, last_error FROM items WHERE failed_stage IS NOT NULL")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(failed.0, "analysis");
    assert!(
        failed.1.contains("in a provider batch failed") && failed.1.contains("invalid_request_error"),
        "{failed:?}"
    );
    assert_eq!(scalar(&pool, "SELECT count(*) FROM analyses WHERE batch_id IS NOT NULL").await, 5);
    assert_eq!(scalar(&pool, "SELECT count(*) FROM analyses WHERE batch_id IS NULL").await, 0);
    assert_eq!(scalar(&pool, "SELECT count(*) FROM items WHERE embedding_status = 'done'").await, 5);
    assert_eq!(scalar(&pool, "SELECT count(*) FROM batch_requests").await, 0, "nothing left waiting");
    let counts: Vec<(String, i32, i32, i32, i32)> = sqlx::query_as(
        "SELECT status, requests, succeeded, failed, resubmitted FROM provider_batches ORDER BY submitted_at",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(counts, [("ingested".to_owned(), 6, 2, 1, 3), ("ingested".to_owned(), 3, 3, 0, 0)]);

    // Priced at the batch price: half of the list price.
    let stats = store::stats::gather(&pool, Default::default()).await.unwrap();
    let analysis = stats.models.iter().find(|m| m.stage == "analysis").unwrap();
    assert!(analysis.batch && analysis.used.input == 5 * 1600 && analysis.used.output == 5 * 120, "{analysis:?}");
    let expected = (5.0 * 1600.0 * 0.50 + 5.0 * 120.0 * 2.50) / 1e6;
    assert!((cost(&stats, &Prices::load(None).unwrap()).total - expected).abs() < 1e-9);
}

#[sqlx::test(migrations = "../migrations")]
async fn a_run_killed_after_submitting_is_picked_up_by_the_next_without_submitting_again(pool: PgPool) {
    let dir = tempfile::tempdir().unwrap();
    let mock = MockProviders::start().await;
    mock.set_batch_duration(Duration::from_secs(2));
    let photos = photos(dir.path(), 5);
    // Killed once the provider holds the batch and its id is recorded.
    let first = photos.clone();
    kill_once_submitted(&pool, dir.path(), &mock, 1, move |c| async move { run_folder(&c, &first, "u", false).await })
        .await;
    assert_eq!(mock.batches().len(), 1);
    assert_eq!(scalar(&pool, "SELECT count(*) FROM analyses").await, 0, "killed before the batch ended");
    let stats = store::stats::gather(&pool, Default::default()).await.unwrap();
    let shown = collections::stats::report(&stats, &Prices::load(None).unwrap());
    assert!(shown.contains("provider batches: 0 requests queued, 5 submitted, 1 batches not stored yet"), "{shown}");

    let c = batch_components(&pool, dir.path(), &mock, &[]).await;
    let report = run_folder(&c, &photos, "u", false).await.unwrap();
    assert_eq!(mock.batches().len(), 1, "the batch in flight is picked up, not submitted again");
    assert_eq!(report.processed.len(), 5, "{report:?}");
    assert!(report.skipped.is_empty() && report.pending.is_empty(), "{report:?}");
    assert_eq!(scalar(&pool, "SELECT count(*) FROM analyses").await, 5);
    assert_eq!(routes(&mock, "anthropic"), 0);
}

#[sqlx::test(migrations = "../migrations")]
async fn a_submission_whose_answer_was_lost_is_found_at_the_provider_not_sent_again(pool: PgPool) {
    let dir = tempfile::tempdir().unwrap();
    let mock = MockProviders::start().await;
    mock.set_batch_duration(Duration::from_millis(200));
    // The provider takes the batch and answers after the client has given up.
    mock.set_create_delay(Duration::from_secs(3));
    let c = batch_components(&pool, dir.path(), &mock, &[("ANALYZER_TIMEOUT_SECS", "1")]).await;
    let report = run_folder(&c, &photos(dir.path(), 3), "u", false).await.unwrap();
    assert_eq!(mock.batches().len(), 1, "found among the provider's batches");
    assert!(routes(&mock, "anthropic-batch-list") >= 1);
    assert_eq!((report.processed.len(), report.skipped.len()), (3, 0), "{report:?}");
    assert_eq!(scalar(&pool, "SELECT count(*) FROM analyses WHERE batch_id IS NOT NULL").await, 3);
}

#[sqlx::test(migrations = "../migrations")]
async fn a_result_for_an_item_deleted_meanwhile_is_dropped_and_the_rest_stored(pool: PgPool) {
    let dir = tempfile::tempdir().unwrap();
    let mock = MockProviders::start().await;
    mock.set_batch_duration(Duration::from_millis(1500));
    let photos = photos(dir.path(), 4);
    let c = batch_components(&pool, dir.path(), &mock, &[]).await;
    let run = tokio::spawn({
        let (c, photos) = (c.clone(), photos.clone());
        async move { run_folder(&c, &photos, "u", false).await }
    });
    while mock.batches().is_empty() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    sqlx::query("DELETE FROM items WHERE filename = 'p1.jpg'").execute(&pool).await.unwrap();
    let report = run.await.unwrap().unwrap();
    assert_eq!(report.processed.len(), 3, "{report:?}");
    assert!(report.failed.is_empty() && report.pending.is_empty(), "{report:?}");
    assert_eq!(
        report.skipped,
        [("u/p1.jpg".to_owned(), "no longer waiting for a batch (deleted meanwhile)".to_owned())]
    );
    assert_eq!(scalar(&pool, "SELECT count(*) FROM analyses").await, 3);
    assert_eq!(scalar(&pool, "SELECT count(*) FROM record_failures").await, 0);
    assert_eq!(scalar(&pool, "SELECT succeeded::bigint FROM provider_batches").await, 3);
}

#[sqlx::test(migrations = "../migrations")]
async fn a_rejected_key_stops_the_run_and_leaves_the_requests_queued(pool: PgPool) {
    let dir = tempfile::tempdir().unwrap();
    let mock = MockProviders::start().await;
    mock.script([test_support::providers::Reply::Status { status: 401, retry_after: None }]);
    let c = batch_components(&pool, dir.path(), &mock, &[]).await;
    let err = run_folder(&c, &photos(dir.path(), 2), "u", false).await.unwrap_err();
    assert!(err.to_string().contains("configuration fault") && err.to_string().contains("401"), "{err:#}");
    assert_eq!(scalar(&pool, "SELECT count(*) FROM batch_requests WHERE batch_id IS NULL").await, 2);
    assert_eq!(scalar(&pool, "SELECT count(*) FROM provider_batches").await, 0);
    assert_eq!(scalar(&pool, "SELECT count(*) FROM items WHERE failed_stage IS NOT NULL").await, 0);

    // A run of another model leaves them be: they are submitted by a run of theirs.
    let other = batch_components(&pool, dir.path(), &mock, &[("ANALYZER_MODEL", "claude-sonnet-4-5")]).await;
    let nothing: Vec<(uuid::Uuid, String, ())> = Vec::new();
    collections::pipeline::run_events(&other, nothing, None, |(), _| unreachable!()).await.unwrap();
    assert!(mock.batches().is_empty());
    assert_eq!(scalar(&pool, "SELECT count(*) FROM batch_requests WHERE batch_id IS NULL").await, 2);

    // The key mended, what is queued is submitted with nothing to go through
    // (as `collections batches --follow` does); a thumbnail gone meanwhile
    // fails its item, with the reason, and the other is stored.
    let (bucket, thumbnail): (String, String) =
        sqlx::query_as("SELECT bucket, thumbnail_key FROM items WHERE filename = 'p0.jpg'")
            .fetch_one(&pool)
            .await
            .unwrap();
    std::fs::remove_file(c.store.path_of(&bucket, &thumbnail).unwrap()).unwrap();
    let nothing: Vec<(uuid::Uuid, String, ())> = Vec::new();
    let (report, _) = collections::pipeline::run_events(&c, nothing, None, |(), _| unreachable!()).await.unwrap();
    assert_eq!((report.processed.len(), report.failed.len()), (1, 1), "{report:?}");
    assert!(
        report.failed[0].0.ends_with("p0.jpg") && report.failed[0].1.contains("reading the thumbnail"),
        "{report:?}"
    );
    assert_eq!(mock.batches().iter().map(Vec::len).collect::<Vec<_>>(), [1]);
    assert_eq!(scalar(&pool, "SELECT count(*) FROM batch_requests").await, 0);
}

/// Components analysing with OpenAI's chat model on the mock through its Batch API.
async fn openai_components(pool: &PgPool, dir: &Path, mock: &MockProviders, extra: &[(&str, &str)]) -> Components {
    let mut vars = vec![("ANALYZER_PROVIDER", "openai"), ("ANALYZER_MODEL", "gpt-4.1-mini")];
    vars.extend_from_slice(extra);
    components_with(pool, dir, mock, &vars).await
}

#[sqlx::test(migrations = "../migrations")]
async fn openais_batch_api_takes_an_uploaded_file_and_its_output_and_error_files_are_accounted_for(pool: PgPool) {
    let dir = tempfile::tempdir().unwrap();
    let mock = MockProviders::start().await;
    mock.set_batch_duration(Duration::from_millis(300));
    mock.batch_script([
        BatchLine::Succeeded,
        BatchLine::Errored("invalid_request_error"),
        BatchLine::Expired,
        BatchLine::Errored("server_error"),
    ]);
    let c = openai_components(&pool, dir.path(), &mock, &[]).await;
    let report = run_folder(&c, &photos(dir.path(), 4), "u", false).await.unwrap();

    assert_eq!(routes(&mock, "openai-chat"), 0, "no synchronous chat call");
    assert_eq!(routes(&mock, "openai-file-upload"), 2, "one file a batch");
    let uploaded = mock.requests().into_iter().find(|r| r.route == "openai-batch-create").unwrap();
    assert_eq!(uploaded.headers["authorization"], "Bearer sk-openai-test");
    assert_eq!(mock.batches().iter().map(Vec::len).collect::<Vec<_>>(), [4, 2]);
    assert_eq!((report.processed.len(), report.failed.len(), report.skipped.len()), (3, 1, 0), "{report:?}");
    assert!(report.failed[0].1.contains("HTTP 400"), "{:?}", report.failed);
    let stored: Vec<(String, Option<i64>)> =
        sqlx::query_as("SELECT provider_used, input_tokens FROM analyses WHERE batch_id IS NOT NULL")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(stored, vec![("openai".to_owned(), Some(900)); 3]);
}

#[sqlx::test(migrations = "../migrations")]
async fn an_openai_submission_whose_answer_was_lost_is_found_by_its_label(pool: PgPool) {
    let dir = tempfile::tempdir().unwrap();
    let mock = MockProviders::start().await;
    mock.set_batch_duration(Duration::from_millis(200));
    let c = openai_components(&pool, dir.path(), &mock, &[("ANALYZER_TIMEOUT_SECS", "1")]).await;
    // Someone else's batch of as many requests, just before ours: a match by
    // size and age would take it.
    let api = c.batches.clone().unwrap();
    let image = images::jpeg(10, 10, BLUE);
    let request = vision::VisionRequest { image: &image, media_type: "image/jpeg", info: None };
    let lines: Vec<Vec<u8>> = (0..3).map(|i| api.request_line(&format!("theirs-{i}"), &request)).collect();
    api.create("someone-else", &lines).await.unwrap();
    // OpenAI counts time in whole seconds: theirs is the older.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    mock.set_create_delay(Duration::from_secs(3));
    let report = run_folder(&c, &photos(dir.path(), 3), "u", false).await.unwrap();
    assert_eq!(mock.batches().len(), 2, "ours found among the provider's batches by its metadata, not sent again");
    assert!(routes(&mock, "openai-batch-list") >= 1);
    assert_eq!((report.processed.len(), report.skipped.len()), (3, 0), "{report:?}");
}

#[sqlx::test(migrations = "../migrations")]
async fn a_reanalysis_killed_after_submitting_and_run_again_submits_nothing_twice(pool: PgPool) {
    let dir = tempfile::tempdir().unwrap();
    let mock = MockProviders::start().await;
    mock.set_batch_duration(Duration::from_millis(100));
    let c = batch_components(&pool, dir.path(), &mock, &[]).await;
    let first = run_folder(&c, &photos(dir.path(), 3), "u", false).await.unwrap();
    assert_eq!(first.processed.len(), 3, "{first:?}");

    mock.set_batch_duration(Duration::from_secs(2));
    let selection = Selection { user: Some("u"), category: None, not_waiting: true };
    // Killed once the provider holds the re-analysis's batch and its id is recorded.
    kill_once_submitted(&pool, dir.path(), &mock, 2, move |c| async move { reanalyze(&c, selection, false).await })
        .await;
    assert_eq!(mock.batches().len(), 2);

    let again = reanalyze(&c, selection, false).await.unwrap();
    assert_eq!(mock.batches().len(), 2, "the re-analysis in flight is picked up, not submitted again");
    assert_eq!(again.processed.len(), 3, "{again:?}");
    assert_eq!(scalar(&pool, "SELECT count(*) FROM analyses WHERE version = 2").await, 3);
    assert_eq!(scalar(&pool, "SELECT count(*) FROM analyses").await, 6);
}
