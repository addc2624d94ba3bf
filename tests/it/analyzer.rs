//! The analyzer against a server speaking the providers' real formats:
//! request shapes, retries and their spacing, the in-flight limit, faults
//! that fail one item only, and what is stored.

use std::sync::Arc;
use std::time::Duration;

use analyzer::{Analyzer, AnalyzerConfig};
use base64::Engine;
use collections::components::Components;
use collections::ingest::run_folder;
use domain::analysis::Analysis;
use domain::events::{ANALYSIS_COMPLETE, ImageInfo, ImageProcessed, PipelineEvent};
use domain::settings::Env;
use runtime::batch::BatchContext;
use runtime::bus::LocalBus;
use runtime::outcome::Outcome;
use runtime::stage::Stage;
use serde_json::Value;
use sqlx::PgPool;
use test_support::images::{self, BLUE, GREEN, ORANGE, PINK};
use test_support::providers::{MockProviders, Reply};
use test_support::{components, counts};

/// Components whose analyzer is `provider` on the mock server, plus `extra` settings.
async fn with_provider(
    pool: &PgPool,
    dir: &std::path::Path,
    mock: &MockProviders,
    provider: &str,
    extra: &[(&str, &str)],
) -> Components {
    let (anthropic, openai) = (mock.anthropic_url(), mock.openai_url());
    let mut vars = vec![
        ("ANALYZER_PROVIDER", provider),
        ("ANTHROPIC_BASE_URL", anthropic.as_str()),
        ("OPENAI_BASE_URL", openai.as_str()),
        ("ANTHROPIC_API_KEY", "sk-ant-test"),
        ("OPENAI_API_KEY", "sk-openai-test"),
        ("ANALYZER_MODEL", "vision-test-1"),
        ("ANALYZER_RETRY_BASE_MS", "50"),
    ];
    vars.extend_from_slice(extra);
    components(pool.clone(), &dir.join("data"), &vars).await
}

fn photos(dir: &std::path::Path) -> std::path::PathBuf {
    let photos = dir.join("photos");
    images::write(&photos, "a.jpg", &images::jpeg(1200, 900, BLUE));
    images::write(&photos, "b.png", &images::png(400, 300, GREEN));
    photos
}

fn header<'a>(r: &'a test_support::providers::Recorded, name: &str) -> &'a str {
    r.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default()
}

#[sqlx::test(migrations = "../migrations")]
async fn anthropic_requests_carry_the_thumbnail_and_a_forced_tool_and_replies_are_stored(pool: PgPool) {
    let dir = tempfile::tempdir().unwrap();
    let mock = MockProviders::start().await;
    let c = with_provider(&pool, dir.path(), &mock, "anthropic", &[]).await;
    let report = run_folder(&c, &photos(dir.path()), "u", false).await.unwrap();
    assert_eq!(report.processed.len(), 2, "{report:?}");

    let requests = mock.requests();
    assert_eq!(requests.len(), 2);
    let mut media_types = Vec::new();
    for r in &requests {
        assert_eq!(header(r, "x-api-key"), "sk-ant-test");
        assert_eq!(header(r, "anthropic-version"), "2023-06-01");
        assert_eq!(r.body["model"], "vision-test-1");
        assert_eq!(r.body["tool_choice"], serde_json::json!({"type": "tool", "name": "record_analysis"}));
        assert_eq!(r.body["tools"][0]["input_schema"], Analysis::json_schema());
        let image = &r.body["messages"][0]["content"][0];
        assert_eq!(image["source"]["type"], "base64");
        let bytes =
            base64::engine::general_purpose::STANDARD.decode(image["source"]["data"].as_str().unwrap()).unwrap();
        let decoded = image::load_from_memory(&bytes).expect("the thumbnail, not the original, is sent");
        assert!(decoded.width() <= 800 && decoded.height() <= 800);
        media_types.push(image["source"]["media_type"].as_str().unwrap().to_owned());
    }
    media_types.sort();
    assert_eq!(media_types, vec!["image/jpeg", "image/png"]);

    let stored: Vec<(String, String, String, Option<String>, String, Value)> = sqlx::query_as(
        "SELECT category, provider_used, model_used, trace_id, summary, raw_response FROM analyses ORDER BY summary",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(stored.len(), 2);
    for (category, provider, model, trace_id, summary, raw) in stored {
        assert_eq!((category.as_str(), provider.as_str(), model.as_str()), ("nature", "anthropic", "vision-test-1"));
        assert!(trace_id.unwrap().starts_with("req_"), "the provider's request id is kept");
        assert!(summary.starts_with("A mountain lake at dawn"));
        assert_eq!(raw["type"], "message", "raw_response is the provider's reply");
        assert_eq!(raw["content"][0]["type"], "tool_use");
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn openai_requests_send_a_data_url_and_a_strict_schema(pool: PgPool) {
    let dir = tempfile::tempdir().unwrap();
    let mock = MockProviders::start().await;
    let c = with_provider(&pool, dir.path(), &mock, "openai", &[]).await;
    let report = run_folder(&c, &photos(dir.path()), "u", false).await.unwrap();
    assert_eq!(report.processed.len(), 2, "{report:?}");
    for r in mock.requests() {
        assert_eq!(r.route, "openai-chat");
        assert_eq!(header(&r, "authorization"), "Bearer sk-openai-test");
        assert_eq!(r.body["model"], "vision-test-1");
        let url = r.body["messages"][0]["content"][1]["image_url"]["url"].as_str().unwrap();
        assert!(
            url.starts_with("data:image/jpeg;base64,") || url.starts_with("data:image/png;base64,"),
            "{}",
            &url[..30]
        );
        let format = &r.body["response_format"];
        assert_eq!(
            (format["type"].as_str(), format["json_schema"]["strict"].as_bool()),
            (Some("json_schema"), Some(true))
        );
        assert_eq!(format["json_schema"]["schema"], Analysis::json_schema());
    }
    let providers: Vec<String> =
        sqlx::query_scalar("SELECT provider_used FROM analyses").fetch_all(&pool).await.unwrap();
    assert_eq!(providers, vec!["openai", "openai"]);
}

#[sqlx::test(migrations = "../migrations")]
async fn throttling_and_server_errors_are_retried_honouring_retry_after(pool: PgPool) {
    let dir = tempfile::tempdir().unwrap();
    let photos = dir.path().join("photos");
    images::write(&photos, "a.jpg", &images::jpeg(640, 480, ORANGE));
    let mock = MockProviders::start().await;
    mock.script([
        Reply::Status { status: 429, retry_after: Some(1) },
        Reply::Status { status: 529, retry_after: None },
        Reply::Ok,
    ]);
    let c = with_provider(&pool, dir.path(), &mock, "anthropic", &[]).await;
    let report = run_folder(&c, &photos, "u", false).await.unwrap();
    assert_eq!(report.processed, vec!["u/a.jpg"], "{report:?}");

    let at: Vec<_> = mock.requests().iter().map(|r| r.at).collect();
    assert_eq!(at.len(), 3, "two retries");
    assert!(at[1] - at[0] >= Duration::from_secs(1), "retry-after 1 s honoured: {:?}", at[1] - at[0]);
    assert!(
        at[2] - at[1] < Duration::from_millis(900),
        "the backoff of the second retry is capped at 100 ms plus jitter"
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn an_item_whose_retries_run_out_fails_with_provider_status_and_key_and_the_batch_goes_on(pool: PgPool) {
    let dir = tempfile::tempdir().unwrap();
    let mock = MockProviders::start().await;
    // One call at a time, so the first item (a.jpg) meets all four failures.
    mock.script(std::iter::repeat_n(Reply::Status { status: 500, retry_after: None }, 4));
    let c = with_provider(
        &pool,
        dir.path(),
        &mock,
        "anthropic",
        &[("ANALYZER_CONCURRENCY", "1"), ("ANALYZER_MAX_ATTEMPTS", "4")],
    )
    .await;
    let report = run_folder(&c, &photos(dir.path()), "u", false).await.unwrap();
    assert_eq!(report.processed, vec!["u/b.png"]);
    assert_eq!(
        report.failed,
        vec![(
            "u/a.jpg".to_owned(),
            "analysing u/a.jpg with vision-test-1 failed after 4 attempts: anthropic answered HTTP 500: api_error: mock 500"
                .to_owned()
        )]
    );
    assert_eq!(mock.requests().len(), 5);
    let failed = store::items::failures(&pool, Some("u"), 10).await.unwrap();
    assert_eq!((failed[0].file_path.as_str(), failed[0].failed_stage.as_str()), ("u/a.jpg", "analysis"));
}

#[sqlx::test(migrations = "../migrations")]
async fn slow_replies_time_out_and_are_retried(pool: PgPool) {
    let dir = tempfile::tempdir().unwrap();
    let photos = dir.path().join("photos");
    images::write(&photos, "a.jpg", &images::jpeg(640, 480, ORANGE));
    let mock = MockProviders::start().await;
    mock.script([Reply::Slow(Duration::from_secs(3))]);
    let c = with_provider(&pool, dir.path(), &mock, "openai", &[("ANALYZER_TIMEOUT_SECS", "1")]).await;
    let report = run_folder(&c, &photos, "u", false).await.unwrap();
    assert_eq!(report.processed, vec!["u/a.jpg"], "{report:?}");
    assert_eq!(mock.requests().len(), 2);
}

#[sqlx::test(migrations = "../migrations")]
async fn malformed_and_refused_replies_fail_their_item_without_retries(pool: PgPool) {
    let dir = tempfile::tempdir().unwrap();
    let photos = dir.path().join("photos");
    images::write(&photos, "a.jpg", &images::jpeg(640, 480, BLUE));
    images::write(&photos, "b.jpg", &images::jpeg(640, 480, GREEN));
    images::write(&photos, "c.jpg", &images::jpeg(640, 480, ORANGE));
    let mock = MockProviders::start().await;
    mock.script([Reply::MalformedJson, Reply::Refusal]);
    let c = with_provider(&pool, dir.path(), &mock, "anthropic", &[("ANALYZER_CONCURRENCY", "1")]).await;
    let report = run_folder(&c, &photos, "u", false).await.unwrap();
    assert_eq!(report.processed, vec!["u/c.jpg"]);
    let reasons: Vec<&str> = report.failed.iter().map(|(_, r)| r.as_str()).collect();
    assert!(reasons[0].ends_with("after 1 attempt: anthropic returned a malformed reply: the body is not JSON (EOF while parsing a string at line 1 column 14): {\"id\": \"broken"), "{}", reasons[0]);
    assert!(
        reasons[1].ends_with(
            "after 1 attempt: anthropic refused to analyse the image: I can't help with analysing this image."
        ),
        "{}",
        reasons[1]
    );
    assert_eq!(mock.requests().len(), 3, "no retries for permanent faults");
    assert_eq!(counts(&pool).await, (3, 1, 1));
}

#[sqlx::test(migrations = "../migrations")]
async fn never_more_calls_in_flight_than_the_limit(pool: PgPool) {
    let dir = tempfile::tempdir().unwrap();
    let photos = dir.path().join("photos");
    for i in 0..12 {
        images::write(&photos, &format!("{i:02}.jpg"), &images::jpeg(200, 150, [i * 20, 100, 200]));
    }
    let mock = MockProviders::start().await;
    mock.set_latency(Duration::from_millis(150));
    let c = with_provider(
        &pool,
        dir.path(),
        &mock,
        "anthropic",
        &[("ANALYZER_CONCURRENCY", "3"), ("COLLECTIONS_BATCH_SIZE", "12")],
    )
    .await;
    let report = run_folder(&c, &photos, "u", false).await.unwrap();
    assert_eq!(report.processed.len(), 12);
    assert_eq!(mock.peak_in_flight(), 3, "the limit is reached and never passed");
}

/// The analyzer stage on `c`'s store, pool and provider, publishing into a
/// channel the test reads.
fn stage_publishing_to_a_channel(
    c: &Components,
    settings: &[(&str, &str)],
) -> (Analyzer, tokio::sync::mpsc::Receiver<PipelineEvent>) {
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let config = AnalyzerConfig::from_env(&Env::from_pairs(settings.iter().copied())).unwrap();
    let bus = Arc::new(LocalBus::new().route(ANALYSIS_COMPLETE, tx));
    (Analyzer::new(c.store.clone(), bus, c.pool.clone(), c.vision.clone(), config), rx)
}

fn event(item: &str) -> ImageProcessed {
    test_support::processed(&format!("u/{item}.jpg"))
}

#[sqlx::test(migrations = "../migrations")]
async fn a_replayed_event_adds_nothing_and_a_reanalysis_adds_the_next_version(pool: PgPool) {
    let dir = tempfile::tempdir().unwrap();
    let mock = MockProviders::start().await;
    let c = with_provider(&pool, dir.path(), &mock, "anthropic", &[]).await;
    run_folder(&c, &photos(dir.path()), "u", false).await.unwrap();
    let (stage, mut rx) = stage_publishing_to_a_channel(&c, &[]);
    let versions = || async {
        sqlx::query_scalar::<_, i32>(
            "SELECT version FROM analyses a JOIN items i ON i.id = a.item_id WHERE i.file_path = 'u/a.jpg' ORDER BY 1",
        )
        .fetch_all(&pool)
        .await
        .unwrap()
    };
    let calls_before = mock.requests().len();

    // The same event again, after a re-upload of the same image set the item
    // back to pending: no provider call, no row, the item done again, and
    // the event published again.
    sqlx::query("UPDATE items SET analysis_status = 'pending' WHERE file_path = 'u/a.jpg'")
        .execute(&pool)
        .await
        .unwrap();
    let outcomes = stage.run_batch(&[event("a")], &BatchContext::default()).await;
    assert_eq!(outcomes, vec![Outcome::Done]);
    assert_eq!(versions().await, vec![1]);
    assert_eq!(mock.requests().len(), calls_before);
    let status: String = sqlx::query_scalar("SELECT analysis_status FROM items WHERE file_path = 'u/a.jpg'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(status, "done");
    let first = match rx.try_recv().unwrap() {
        PipelineEvent::AnalysisComplete(e) => e.analysis_id,
        other => panic!("{other:?}"),
    };

    // A re-analysis request: version 2, once, however often it is delivered.
    let again = ImageProcessed { reanalysis: Some("user-asked-1".into()), ..event("a") };
    let context = BatchContext { trace_id: Some("lambda-req-1".into()), ..BatchContext::default() };
    let duplicate = Outcome::Skipped("the same request as another record of this batch".into());
    for _ in 0..2 {
        assert_eq!(
            stage.run_batch(&[again.clone(), again.clone()], &context).await,
            vec![Outcome::Done, duplicate.clone()]
        );
    }
    assert_eq!(versions().await, vec![1, 2]);
    assert_eq!(mock.requests().len(), calls_before + 1, "one call for the new request, however often it comes");
    let trace: Option<String> =
        sqlx::query_scalar("SELECT trace_id FROM analyses WHERE version = 2").fetch_one(&pool).await.unwrap();
    assert_eq!(trace.as_deref(), Some("lambda-req-1"));
    let mut ids = Vec::new();
    while let Ok(PipelineEvent::AnalysisComplete(e)) = rx.try_recv() {
        ids.push(e.analysis_id);
    }
    assert_eq!(ids.len(), 2, "one event per delivery, none for the duplicate");
    assert!(ids.iter().all(|id| *id != first));

    // The first image put back (the plain event again): its analysis is
    // reused without a call and becomes the latest version again.
    assert_eq!(stage.run_batch(&[event("a")], &BatchContext::default()).await, vec![Outcome::Done]);
    assert_eq!(mock.requests().len(), calls_before + 1);
    assert_eq!(versions().await, vec![2, 3]);
    let latest: uuid::Uuid =
        sqlx::query_scalar("SELECT id FROM analyses ORDER BY version DESC LIMIT 1").fetch_one(&pool).await.unwrap();
    assert_eq!(latest.to_string(), first);

    // Two earlier analyses brought back in one batch: the last delivered
    // becomes the latest.
    let other = ImageProcessed { reanalysis: Some("user-asked-2".into()), ..event("a") };
    assert_eq!(stage.run_batch(&[other], &BatchContext::default()).await, vec![Outcome::Done]);
    assert_eq!(versions().await, vec![2, 3, 4]);
    let outcomes = stage.run_batch(&[again, event("a")], &BatchContext::default()).await;
    assert_eq!(outcomes, vec![Outcome::Done, Outcome::Done]);
    assert_eq!(mock.requests().len(), calls_before + 2);
    assert_eq!(versions().await, vec![2, 4, 5]);
    let latest: uuid::Uuid =
        sqlx::query_scalar("SELECT id FROM analyses ORDER BY version DESC LIMIT 1").fetch_one(&pool).await.unwrap();
    assert_eq!(latest.to_string(), first);
}

/// The prompt text of a recorded Anthropic request.
fn prompt(r: &test_support::providers::Recorded) -> String {
    r.body["messages"][0]["content"][1]["text"].as_str().unwrap_or_default().to_owned()
}

#[sqlx::test(migrations = "../migrations")]
async fn the_prompt_takes_camera_and_date_from_the_original_not_from_the_event(pool: PgPool) {
    let dir = tempfile::tempdir().unwrap();
    let mock = MockProviders::start().await;
    let c = with_provider(&pool, dir.path(), &mock, "anthropic", &[]).await;
    let photos = dir.path().join("photos");
    let exif = images::with_exif(&images::jpeg(1200, 900, BLUE), "Canon", "EOS 5D", "2021:06:01 10:00:00");
    images::write(&photos, "a.jpg", &exif);
    images::write(&photos, "b.jpg", &images::jpeg(640, 480, GREEN));
    run_folder(&c, &photos, "u", false).await.unwrap();
    let mut prompts: Vec<String> = mock.requests().iter().map(prompt).collect();
    prompts.sort();
    assert!(prompts[0].ends_with("The original is 1200×900 pixels, taken with Canon EOS 5D on 2021-06-01 10:00:00."));
    assert!(prompts[1].ends_with("The original is 640×480 pixels."), "{}", prompts[1]);

    // Forged events for both (their keys are consistent, so they are
    // analysed again): what they claim of the image goes nowhere.
    let claims = ImageInfo {
        width: 1,
        height: 1,
        format: "png".into(),
        camera: Some("Nikon D850".into()),
        taken_at: Some("1999-01-01".into()),
        ..ImageInfo::default()
    };
    let forged =
        |item: &str| ImageProcessed { image: Some(claims.clone()), reanalysis: Some("forged".into()), ..event(item) };
    let (stage, _rx) = stage_publishing_to_a_channel(&c, &[]);
    mock.reset();
    assert_eq!(
        stage.run_batch(&[forged("a"), forged("b")], &BatchContext::default()).await,
        vec![Outcome::Done, Outcome::Done]
    );
    let mut again: Vec<String> = mock.requests().iter().map(prompt).collect();
    again.sort();
    assert_eq!(again, prompts, "the prompts are the thumbnailer's, whatever the event says");
}

#[sqlx::test(migrations = "../migrations")]
async fn analysis_complete_is_published_only_for_stored_analyses(pool: PgPool) {
    let dir = tempfile::tempdir().unwrap();
    let mock = MockProviders::start().await;
    let c = with_provider(&pool, dir.path(), &mock, "anthropic", &[]).await;
    run_folder(&c, &photos(dir.path()), "u", false).await.unwrap();
    let (stage, mut rx) = stage_publishing_to_a_channel(&c, &[("ANALYZER_MAX_ATTEMPTS", "1")]);
    mock.script([Reply::Status { status: 400, retry_after: None }]);
    let fresh = ImageProcessed { reanalysis: Some("r".into()), ..event("a") };
    let missing = event("nope");
    let outcomes = stage.run_batch(&[fresh, missing], &BatchContext::default()).await;
    assert!(matches!(&outcomes[0], Outcome::Failed(f) if f.reason.contains("HTTP 400") && !f.is_retriable()));
    assert!(matches!(&outcomes[1], Outcome::Failed(f) if f.reason.contains("u/thumbnails/nope.jpg does not exist")));
    assert!(rx.try_recv().is_err(), "nothing published");
}

#[sqlx::test(migrations = "../migrations")]
async fn calls_still_running_at_the_deadline_are_cut_off_and_the_finished_ones_stored(pool: PgPool) {
    let dir = tempfile::tempdir().unwrap();
    let photos = dir.path().join("photos");
    images::write(&photos, "a.jpg", &images::jpeg(640, 480, ORANGE));
    images::write(&photos, "c.jpg", &images::jpeg(640, 480, BLUE));
    let mock = MockProviders::start().await;
    let c = with_provider(&pool, dir.path(), &mock, "anthropic", &[]).await;
    run_folder(&c, &photos, "u", false).await.unwrap();
    let (stage, _rx) = stage_publishing_to_a_channel(&c, &[]);

    // Re-analyses of both: one answer comes at once, the other after 30 s.
    mock.script([Reply::Ok, Reply::Slow(Duration::from_secs(30))]);
    let events = ["a", "c"].map(|i| ImageProcessed { reanalysis: Some("again".into()), ..event(i) });
    let started = std::time::Instant::now();
    let context = BatchContext { deadline: Some(started + Duration::from_secs(2)), ..BatchContext::default() };
    let outcomes = stage.run_batch(&events, &context).await;

    assert!(started.elapsed() < Duration::from_secs(10), "the batch ended at its deadline");
    let done = outcomes.iter().filter(|o| **o == Outcome::Done).count();
    let cut: Vec<_> = outcomes
        .iter()
        .filter_map(|o| match o {
            Outcome::Failed(f) => Some(f),
            _ => None,
        })
        .collect();
    assert_eq!((done, cut.len()), (1, 1), "{outcomes:?}");
    assert!(cut[0].is_retriable() && cut[0].reason.ends_with("was cut off: the invocation ran out of time"), "{cut:?}");
    let versions: i64 =
        sqlx::query_scalar("SELECT count(*) FROM analyses WHERE version = 2").fetch_one(&pool).await.unwrap();
    assert_eq!(versions, 1, "the finished analysis is stored");
}

#[sqlx::test(migrations = "../migrations")]
async fn an_item_with_a_success_and_a_failure_in_one_batch_is_recorded_failed(pool: PgPool) {
    use store::analyses;
    let a = test_support::analysis("pets", "A cat on a sofa", &["cat"]);
    let (item, analysis) = test_support::seed_analysis(&pool, "u/cat.jpg", &a).await;
    // The stage stores what succeeded; the runner then records what failed.
    analyses::store_batch(&pool, &[], &[analysis]).await.unwrap();
    let failed = store::status::FailedInput {
        subject: domain::subject::Subject { key: None, user_id: Some("u".into()), item_id: Some(item) },
        reason: "re-analysis refused".to_owned(),
        public: "the image could not be analysed".to_owned(),
        input: None,
        raw: None,
        source: "test".to_owned(),
    };
    store::status::record_failures(&pool, domain::stage::StageName::Analysis, &[failed]).await.unwrap();
    let (status, error): (String, Option<String>) =
        sqlx::query_as("SELECT analysis_status, last_error FROM items WHERE id = $1")
            .bind(item)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!((status.as_str(), error.as_deref()), ("failed", Some("re-analysis refused")));
}

#[sqlx::test(migrations = "../migrations")]
async fn a_reply_that_fails_validation_is_asked_for_once_more_and_trivial_slips_are_accepted(pool: PgPool) {
    let dir = tempfile::tempdir().unwrap();
    let photos = dir.path().join("photos");
    for (name, colour) in [("a", BLUE), ("b", GREEN), ("c", ORANGE)] {
        images::write(&photos, &format!("{name}.jpg"), &images::jpeg(320, 240, colour));
    }
    let mock = MockProviders::start().await;
    let unknown = serde_json::json!({"category": "memes", "summary": "A joke."});
    let slipped = serde_json::json!({"category": "nature", "summary": "A lake.", "description": null,
        "tags": "lake", "objects": null, "colors": [], "text": null});
    mock.script([
        Reply::Analysis(unknown.clone()), // a: refused by validation, asked again …
        Reply::Ok,                        // … and answered well
        Reply::Analysis(slipped),         // b: a string for a list, nulls for empty ones
        Reply::Analysis(unknown.clone()), // c: wrong twice
        Reply::Analysis(unknown),
    ]);
    let c = with_provider(&pool, dir.path(), &mock, "anthropic", &[("ANALYZER_CONCURRENCY", "1")]).await;
    let report = run_folder(&c, &photos, "u", false).await.unwrap();
    assert_eq!(report.processed, ["u/a.jpg", "u/b.jpg"], "{report:?}");
    assert_eq!(
        report.failed,
        [(
            "u/c.jpg".to_owned(),
            "analysing u/c.jpg with vision-test-1 failed after 2 attempts: anthropic returned an invalid analysis: \
             category \"memes\" is not one of the fixed list"
                .to_owned()
        )]
    );
    assert_eq!(mock.requests().len(), 5);
    let (tags, objects): (Value, Value) =
        sqlx::query_as("SELECT analysis -> 'tags', analysis -> 'objects' FROM analyses WHERE summary = 'A lake.'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!((tags, objects), (serde_json::json!(["lake"]), serde_json::json!([])));
}

#[sqlx::test(migrations = "../migrations")]
async fn a_reply_without_end_fails_its_item_and_the_batch_goes_on(pool: PgPool) {
    let dir = tempfile::tempdir().unwrap();
    let mock = MockProviders::start().await;
    mock.script([Reply::Endless(remote::client::MAX_REPLY_BYTES + (1 << 20))]);
    let c = with_provider(&pool, dir.path(), &mock, "openai", &[("ANALYZER_CONCURRENCY", "1")]).await;
    let report = run_folder(&c, &photos(dir.path()), "u", false).await.unwrap();
    assert_eq!(report.processed, ["u/b.png"], "{report:?}");
    assert_eq!(report.failed.len(), 1);
    let expected = format!(
        "failed after 1 attempt: openai returned a malformed reply: the reply is over {} bytes",
        remote::client::MAX_REPLY_BYTES
    );
    assert!(report.failed[0].1.contains(&expected), "{:?}", report.failed);
}

/// Four photos whose analyses meet `reply` every time, two calls in flight.
async fn run_meeting(pool: &PgPool, reply: Reply) -> (anyhow::Result<collections::report::Report>, MockProviders) {
    let dir = tempfile::tempdir().unwrap();
    let photos = dir.path().join("photos");
    for (name, colour) in [("a.jpg", BLUE), ("b.jpg", GREEN), ("c.jpg", ORANGE), ("d.jpg", PINK)] {
        images::write(&photos, name, &images::jpeg(320, 240, colour));
    }
    let mock = MockProviders::start().await;
    mock.script(std::iter::repeat_n(reply, 20));
    let c = with_provider(pool, dir.path(), &mock, "anthropic", &[("ANALYZER_CONCURRENCY", "2")]).await;
    (run_folder(&c, &photos, "u", false).await, mock)
}

#[sqlx::test(migrations = "../migrations")]
async fn a_configuration_fault_stops_the_run_and_fails_no_item(pool: PgPool) {
    let faults = [
        (Reply::Status { status: 401, retry_after: None }, "HTTP 401"),
        (Reply::Status { status: 403, retry_after: None }, "HTTP 403"),
        (Reply::StatusSaying(404, "model: vision-test-1".into()), "HTTP 404"),
        (Reply::StatusSaying(400, "model: vision-test-1 does not accept images".into()), "HTTP 400"),
    ];
    for (reply, told) in faults {
        sqlx::query("TRUNCATE items CASCADE").execute(&pool).await.unwrap();
        let (ran, mock) = run_meeting(&pool, reply).await;
        let err = format!("{:#}", ran.expect_err("the run stops with an error"));
        assert!(err.contains("stopped by a configuration fault") && err.contains(told), "{err}");
        assert!(err.contains("nothing was marked failed"), "{err}");
        let calls = mock.requests().len();
        assert!((1..=2).contains(&calls), "{told}: at most the calls in flight, not one per item: {calls}");
        let statuses: Vec<(String, String)> =
            sqlx::query_as("SELECT analysis_status, coalesce(last_error, '') FROM items ORDER BY file_path")
                .fetch_all(&pool)
                .await
                .unwrap();
        assert_eq!(statuses.len(), 4, "{told}: every item thumbnailed");
        assert!(statuses.iter().all(|(s, e)| s == "pending" && e.is_empty()), "{told}: {statuses:?}");
        let recorded: i64 = sqlx::query_scalar("SELECT count(*) FROM record_failures").fetch_one(&pool).await.unwrap();
        assert_eq!(recorded, 0, "{told}");
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn a_400_about_the_image_fails_its_item_and_the_run_goes_on(pool: PgPool) {
    let (ran, mock) =
        run_meeting(&pool, Reply::StatusSaying(400, "image exceeds 5 MB maximum: 5242881 bytes".into())).await;
    let report = ran.expect("an input's fault does not stop the run");
    assert_eq!(report.failed.len(), 4, "{report:?}");
    assert!(report.failed.iter().all(|(_, reason)| reason.contains("HTTP 400")), "{report:?}");
    assert_eq!(mock.requests().len(), 4, "one call each: not retried");
}

/// `n` photos whose bytes differ (so none is another's duplicate).
fn distinct_photos(dir: &std::path::Path, n: u8) -> std::path::PathBuf {
    let photos = dir.join("photos");
    for i in 0..n {
        let colour = [40 + 12 * i, 200 - 10 * i, 90];
        images::write(&photos, &format!("p{i}.jpg"), &images::jpeg(320, 240, colour));
    }
    photos
}

#[sqlx::test(migrations = "../migrations")]
async fn an_outage_shorter_than_the_budget_is_waited_out_and_fails_nothing(pool: PgPool) {
    let dir = tempfile::tempdir().unwrap();
    let photos = distinct_photos(dir.path(), 12);
    let mock = MockProviders::start().await;
    let outage = Duration::from_secs(3);
    mock.outage(Reply::Status { status: 529, retry_after: None }, outage);
    let began = std::time::Instant::now();
    let settings = [("ANALYZER_CONCURRENCY", "4"), ("ANALYZER_MAX_ATTEMPTS", "2"), ("ANALYZER_RETRY_MAX_SECS", "1")];
    let c = with_provider(&pool, dir.path(), &mock, "anthropic", &settings).await;
    let report = run_folder(&c, &photos, "u", false).await.unwrap();
    assert_eq!((report.processed.len(), report.failed.len(), report.pending.len()), (12, 0, 0), "{report:?}");

    let requests = mock.requests();
    let met_it = requests.iter().filter(|r| r.at < began + outage).count();
    assert!(met_it > 4 * 2, "each of the 4 calls in flight retried past its 2 attempts: {met_it} calls met the outage");
    assert_eq!(requests.len() - met_it, 12, "one call each once it was over");
    assert!(store::items::failures(&pool, Some("u"), 10).await.unwrap().is_empty());
}

#[sqlx::test(migrations = "../migrations")]
async fn an_outage_past_the_budget_leaves_items_pending_and_the_next_run_finishes_them(pool: PgPool) {
    let dir = tempfile::tempdir().unwrap();
    let photos = distinct_photos(dir.path(), 4);
    let mock = MockProviders::start().await;
    mock.outage(Reply::Status { status: 529, retry_after: None }, Duration::from_secs(600));
    let settings = [("ANALYZER_CONCURRENCY", "2"), ("ANALYZER_RETRY_BUDGET_SECS", "1")];
    let c = with_provider(&pool, dir.path(), &mock, "anthropic", &settings).await;
    let report = run_folder(&c, &photos, "u", false).await.unwrap();
    assert_eq!((report.processed.len(), report.failed.len(), report.pending.len()), (0, 0, 4), "{report:?}");
    assert!(report.pending.iter().all(|(_, reason)| reason.contains("HTTP 529")), "{report:?}");
    assert!(report.summary().contains("left pending 4, not failed"), "{}", report.summary());
    assert!(report.print().is_err(), "a run that left items pending exits non-zero");
    let statuses: Vec<(String, String, Option<String>)> =
        sqlx::query_as("SELECT thumbnail_status, analysis_status, last_error FROM items")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(statuses, vec![("done".to_owned(), "pending".to_owned(), None); 4]);
    let recorded: i64 = sqlx::query_scalar("SELECT count(*) FROM record_failures").fetch_one(&pool).await.unwrap();
    assert_eq!(recorded, 0);

    // The provider is back: the same command finishes them, one call each.
    mock.reset();
    let report = run_folder(&c, &photos, "u", false).await.unwrap();
    assert_eq!((report.processed.len(), report.pending.len()), (4, 0), "{report:?}");
    assert_eq!(mock.requests().len(), 4);
}

#[sqlx::test(migrations = "../migrations")]
async fn a_batch_cut_short_keeps_every_answer_it_paid_for(pool: PgPool) {
    let dir = tempfile::tempdir().unwrap();
    let photos = dir.path().join("photos");
    let names: Vec<String> = (0..8).map(|i| format!("p{i}")).collect();
    for (i, name) in names.iter().enumerate() {
        let colour = [40 + 25 * i as u8, 200 - 20 * i as u8, 90];
        images::write(&photos, &format!("{name}.jpg"), &images::jpeg(320, 240, colour));
    }
    let mock = MockProviders::start().await;
    let c = with_provider(&pool, dir.path(), &mock, "anthropic", &[]).await;
    run_folder(&c, &photos, "u", false).await.unwrap();

    // A re-analysis of all eight (each a new paid call), two at a time at
    // 300 ms a call, killed after a second (about three rounds answered,
    // one in flight).
    mock.reset();
    mock.set_latency(Duration::from_millis(300));
    let events: Vec<ImageProcessed> =
        names.iter().map(|n| ImageProcessed { reanalysis: Some("again".into()), ..event(n) }).collect();
    let settings = [("ANALYZER_CONCURRENCY", "2")];
    let (stage, _rx) = stage_publishing_to_a_channel(&c, &settings);
    let batch = events.clone();
    let killed = tokio::spawn(async move { stage.run_batch(&batch, &BatchContext::default()).await });
    tokio::time::sleep(Duration::from_millis(1000)).await;
    killed.abort();
    let _ = killed.await;
    let stored = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM analyses WHERE version = 2").fetch_one(&pool).await.unwrap()
    };
    let paid = mock.requests().len() as i64;
    let kept = stored().await;
    assert!(kept >= 2, "rounds were answered before the kill: {kept} stored");
    assert!(paid - kept <= 2, "every answer that came back is stored: {paid} paid, {kept} stored");

    // Delivered again: only what was not stored is paid for again.
    let (stage, mut rx) = stage_publishing_to_a_channel(&c, &settings);
    assert!(stage.run_batch(&events, &BatchContext::default()).await.iter().all(|o| *o == Outcome::Done));
    let total = mock.requests().len() as i64;
    assert_eq!(total, paid + (8 - kept), "one call for each analysis not stored");
    assert!(total <= 8 + 2, "images + the calls that were in flight: {total}");
    assert_eq!(stored().await, 8);
    let mut published = 0;
    while let Ok(PipelineEvent::AnalysisComplete(_)) = rx.try_recv() {
        published += 1;
    }
    assert_eq!(published, 8, "each stored analysis is published once it is delivered again");
}
