//! The embedder against a server speaking Voyage's and OpenAI's embeddings
//! formats, on real PostgreSQL + pgvector: request batching, retries, wrong
//! dimensions, replays, missing analyses, and the COPY path's fallback.

use domain::events::AnalysisComplete;
use domain::settings::Env;
use embedder::{Embedder, EmbedderConfig};
use runtime::batch::BatchContext;
use runtime::outcome::{Failure, Outcome};
use runtime::runner::{self, Entry, Settled};
use runtime::stage::Stage;
use serde_json::Value;
use sqlx::PgPool;
use store::embeddings::{self, EmbeddingBatch};
use test_support::providers::{MockProviders, Reply};
use test_support::{FixedSecrets, analysis, seed_analysis};
use uuid::Uuid;

async fn embedder(pool: &PgPool, mock: &MockProviders, provider: &str, extra: &[(&str, &str)]) -> Embedder {
    let (voyage, openai) = (mock.voyage_url(), mock.openai_url());
    let mut vars = vec![
        ("EMBEDDING_PROVIDER", provider),
        ("VOYAGE_BASE_URL", voyage.as_str()),
        ("OPENAI_BASE_URL", openai.as_str()),
        ("VOYAGE_EMBEDDING_MODEL", "voyage-3.5"),
        ("OPENAI_EMBEDDING_MODEL", "text-embedding-3-small"),
        ("EMBEDDING_RETRY_BASE_MS", "50"),
    ];
    vars.extend_from_slice(extra);
    let config = EmbedderConfig::from_env(&Env::from_pairs(vars)).unwrap();
    let secrets = FixedSecrets(
        [("VOYAGE_API_KEY", "pa-voyage-test"), ("OPENAI_API_KEY", "sk-test")]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .into(),
    );
    let provider = config.active.build(&secrets).await.unwrap();
    Embedder::new(pool.clone(), provider, config)
}

/// Seeds `n` analysed items of user `u`; their `AnalysisComplete` events.
async fn seeded(pool: &PgPool, n: usize) -> Vec<AnalysisComplete> {
    let mut events = Vec::new();
    for i in 0..n {
        let key = format!("u/photo{i}.jpg");
        let a = analysis("nature", &format!("Photo number {i} of a forest trail"), &["forest", "trail"]);
        let (_, analysis_id) = seed_analysis(pool, &key, &a).await;
        events.push(test_support::analysed(&key, analysis_id));
    }
    events
}

async fn stored(pool: &PgPool) -> Vec<(String, i32, i32, Value)> {
    sqlx::query_as(
        "SELECT embedding_model, embedding_dimensions, vector_dims(vector), embedding_source FROM embeddings",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

#[sqlx::test(migrations = "../migrations")]
async fn voyage_requests_carry_many_texts_and_vectors_are_stored_with_their_source(pool: PgPool) {
    let mock = MockProviders::start().await;
    let events = seeded(&pool, 6).await;
    let stage = embedder(&pool, &mock, "voyage", &[("EMBEDDING_MAX_BATCH", "4")]).await;
    let outcomes = stage.run_batch(&events, &BatchContext::default()).await;
    assert_eq!(outcomes, vec![Outcome::Done; 6]);

    let requests = mock.requests();
    let sizes: Vec<usize> = requests.iter().map(|r| r.body["input"].as_array().unwrap().len()).collect();
    assert_eq!(sizes, vec![4, 2], "six texts in two requests of at most four");
    for r in &requests {
        assert_eq!(r.route, "voyage");
        assert_eq!(r.headers["authorization"], "Bearer pa-voyage-test");
        assert_eq!((r.body["model"].as_str(), r.body["input_type"].as_str()), (Some("voyage-3.5"), Some("document")));
        assert_eq!(r.body["output_dimension"], 1024);
        assert!(r.body["input"][0].as_str().unwrap().starts_with("summary: Photo number"));
    }
    let rows = stored(&pool).await;
    assert_eq!(rows.len(), 6);
    for (model, dims, actual, source) in rows {
        assert_eq!((model.as_str(), dims, actual), ("voyage-3.5", 1024, 1024));
        assert_eq!(source["fields"], serde_json::json!(["summary", "category", "tags"]));
        assert_eq!(source["analysis_version"], 1);
    }
    let statuses: Vec<String> =
        sqlx::query_scalar("SELECT DISTINCT embedding_status FROM items").fetch_all(&pool).await.unwrap();
    assert_eq!(statuses, vec!["done"]);
}

#[sqlx::test(migrations = "../migrations")]
async fn openai_embeddings_ask_for_1024_dimensions(pool: PgPool) {
    let mock = MockProviders::start().await;
    let events = seeded(&pool, 2).await;
    let stage = embedder(&pool, &mock, "openai", &[]).await;
    assert_eq!(stage.run_batch(&events, &BatchContext::default()).await, vec![Outcome::Done; 2]);
    let r = &mock.requests()[0];
    assert_eq!(r.route, "openai-embeddings");
    assert_eq!(r.headers["authorization"], "Bearer sk-test");
    assert_eq!((r.body["model"].as_str(), r.body["dimensions"].as_u64()), (Some("text-embedding-3-small"), Some(1024)));
    assert_eq!(stored(&pool).await.len(), 2);
}

#[sqlx::test(migrations = "../migrations")]
async fn throttling_is_retried_and_wrong_dimensions_fail_naming_the_model(pool: PgPool) {
    let mock = MockProviders::start().await;
    let events = seeded(&pool, 3).await;
    let stage = embedder(&pool, &mock, "voyage", &[("EMBEDDING_MAX_BATCH", "1"), ("EMBEDDING_CONCURRENCY", "1")]).await;
    mock.script([
        Reply::Status { status: 429, retry_after: Some(1) },
        Reply::Status { status: 500, retry_after: None },
        Reply::Ok,
        Reply::Dimensions(768),
        Reply::MalformedJson,
    ]);
    // Through the batch runner, which records the failures.
    let entries = events.iter().map(|e| Entry::readable(e.item_id.clone(), e.clone())).collect();
    let ran = runner::run(&stage, &pool, entries, BatchContext::default()).await;
    assert_eq!(ran.settled[0].1, Settled::Done);
    let reasons: Vec<String> = ran.settled[1..]
        .iter()
        .map(|(_, settled)| match settled {
            Settled::Failed(reason) => reason.clone(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        reasons[0],
        "embedding with voyage-3.5 failed after 1 attempt(s): voyage-3.5 returned 768-dimensional vectors; it is configured for 1024"
    );
    assert!(reasons[1].contains("voyage returned a malformed reply"), "{}", reasons[1]);
    let at: Vec<_> = mock.requests().iter().map(|r| r.at).collect();
    assert!(at[1] - at[0] >= std::time::Duration::from_secs(1), "retry-after honoured");
    assert_eq!(stored(&pool).await.len(), 1);
    let failed = store::items::failures(&pool, Some("u"), 10).await.unwrap();
    assert_eq!(failed.len(), 2);
    assert!(failed.iter().all(|f| f.failed_stage == "embedding"));
}

#[sqlx::test(migrations = "../migrations")]
async fn a_provider_out_past_the_budget_leaves_the_items_pending_and_records_nothing(pool: PgPool) {
    let mock = MockProviders::start().await;
    let events = seeded(&pool, 3).await;
    let stage =
        embedder(&pool, &mock, "voyage", &[("EMBEDDING_MAX_BATCH", "1"), ("EMBEDDING_RETRY_BUDGET_SECS", "1")]).await;
    mock.outage(Reply::Status { status: 503, retry_after: None }, std::time::Duration::from_secs(600));
    let entries = || events.iter().map(|e| Entry::readable(e.item_id.clone(), e.clone())).collect();
    let ran = runner::run(&stage, &pool, entries(), BatchContext::default()).await;
    for (_, settled) in &ran.settled {
        assert!(matches!(settled, Settled::Postponed(reason) if reason.contains("HTTP 503")), "{settled:?}");
    }
    assert!(mock.requests().len() > 3, "retried while the budget lasted");
    assert!(store::items::failures(&pool, Some("u"), 10).await.unwrap().is_empty(), "nothing recorded");
    let statuses: Vec<String> =
        sqlx::query_scalar("SELECT embedding_status FROM items").fetch_all(&pool).await.unwrap();
    assert_eq!(statuses, ["pending"; 3]);

    // Delivered again once the provider is back: done.
    mock.reset();
    let ran = runner::run(&stage, &pool, entries(), BatchContext::default()).await;
    assert!(ran.settled.iter().all(|(_, s)| *s == Settled::Done), "{:?}", ran.settled);
    assert_eq!(stored(&pool).await.len(), 3);
}

#[sqlx::test(migrations = "../migrations")]
async fn a_replay_adds_nothing_and_calls_nobody_and_missing_analyses_fail_alone(pool: PgPool) {
    let mock = MockProviders::start().await;
    let mut events = seeded(&pool, 2).await;
    let stage = embedder(&pool, &mock, "voyage", &[]).await;
    stage.run_batch(&events, &BatchContext::default()).await;
    assert_eq!(mock.requests().len(), 1);

    events.push(test_support::analysed("u/photo0.jpg", Uuid::now_v7()));
    events.push(AnalysisComplete { analysis_id: "analysis789".into(), ..events[2].clone() });
    let outcomes = stage.run_batch(&events, &BatchContext::default()).await;
    let skipped = Outcome::Skipped("already embedded by voyage-3.5".into());
    assert_eq!(outcomes[..2], [skipped.clone(), skipped]);
    assert!(matches!(&outcomes[2], Outcome::Failed(f) if f.reason.contains("not found")));
    assert!(matches!(&outcomes[3], Outcome::Failed(f) if f.reason == "analysis_id \"analysis789\" is not a UUID"));
    assert_eq!(mock.requests().len(), 1, "nothing to embed: no call");
    assert_eq!(stored(&pool).await.len(), 2);

    // An analysis claimed by another user is not theirs to embed.
    let stranger = AnalysisComplete { user_id: "mallory".into(), ..events[0].clone() };
    assert!(matches!(&stage.run_batch(&[stranger], &BatchContext::default()).await[0], Outcome::Failed(_)));
}

#[sqlx::test(migrations = "../migrations")]
async fn an_empty_document_is_a_clear_failure(pool: PgPool) {
    let mock = MockProviders::start().await;
    let (_, analysis_id) = seed_analysis(&pool, "u/blank.jpg", &analysis("other", "x", &[])).await;
    // A stored analysis with nothing in it (written by hand: validation would refuse it).
    sqlx::query("UPDATE analyses SET analysis = '{\"category\": \"\", \"summary\": \" \"}' WHERE id = $1")
        .bind(analysis_id)
        .execute(&pool)
        .await
        .unwrap();
    let stage = embedder(&pool, &mock, "voyage", &[]).await;
    let event = test_support::analysed("u/blank.jpg", analysis_id);
    let outcomes = stage.run_batch(&[event], &BatchContext::default()).await;
    assert_eq!(
        outcomes,
        vec![Failure::permanent(format!("analysis {analysis_id} gives an empty embedding document")).into()]
    );
    assert!(mock.requests().is_empty());
}

#[sqlx::test(migrations = "../migrations")]
async fn the_copy_path_falls_back_when_a_concurrent_delivery_stored_rows_first(pool: PgPool) {
    let (item, analysis_id) = seed_analysis(&pool, "u/a.jpg", &analysis("other", "A", &[])).await;
    let row = test_support::embedding_row(item, analysis_id);
    let batch = EmbeddingBatch { new: vec![row], ..EmbeddingBatch::default() };
    embeddings::store_batch(&pool, &batch).await.unwrap();
    // The same rows again, as a second Lambda that raced the first would send them.
    embeddings::store_batch(&pool, &batch).await.unwrap();
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM embeddings").fetch_one(&pool).await.unwrap();
    assert_eq!(count, 1);
    let status: String = sqlx::query_scalar("SELECT embedding_status FROM items").fetch_one(&pool).await.unwrap();
    assert_eq!(status, "done");
}

#[sqlx::test(migrations = "../migrations")]
async fn a_replayed_event_of_an_older_analysis_never_marks_the_item_embedded(pool: PgPool) {
    let mock = MockProviders::start().await;
    let old = seeded(&pool, 1).await.remove(0);
    // A re-analysis stored version 2: the item waits for its embedding.
    let item: uuid::Uuid = sqlx::query_scalar("SELECT id FROM items").fetch_one(&pool).await.unwrap();
    let again = store::analyses::NewAnalysis {
        item_id: item,
        user_id: "u".into(),
        category: "nature".into(),
        summary: "A forest trail, looked at again".into(),
        analysis: serde_json::to_value(analysis("nature", "A forest trail, looked at again", &["trail"])).unwrap(),
        raw_response: serde_json::json!({}),
        provider_used: "test".into(),
        model_used: "seed".into(),
        trace_id: None,
        request_key: "again".into(),
        usage: None,
        batch_id: None,
    };
    let latest = store::analyses::store_batch(&pool, &[again], &[]).await.unwrap().stored[0].analysis_id;
    let status = || async {
        sqlx::query_scalar::<_, String>("SELECT embedding_status FROM items").fetch_one(&pool).await.unwrap()
    };
    assert_eq!(status().await, "pending");

    let stage = embedder(&pool, &mock, "voyage", &[]).await;
    let outcomes = stage.run_batch(std::slice::from_ref(&old), &BatchContext::default()).await;
    assert_eq!(
        outcomes,
        [Outcome::Skipped(format!(
            "analysis {} is version 1 of item photo0; version 2 is the latest",
            old.analysis_id
        ))]
    );
    assert_eq!(status().await, "pending", "the latest analysis is not embedded yet");
    assert!(mock.requests().is_empty(), "and nothing was paid for");

    let current = AnalysisComplete { analysis_id: latest.to_string(), ..old };
    assert_eq!(stage.run_batch(&[current], &BatchContext::default()).await, [Outcome::Done]);
    assert_eq!(status().await, "done");
}

/// A forged `AnalysisComplete` naming another user's item with an analysis
/// id that does not exist (or is not a UUID) is refused, and the refusal is
/// the record's: the item it names keeps its status, and no user sees it.
#[sqlx::test(migrations = "../migrations")]
async fn a_forged_analysis_complete_fails_alone_and_is_written_on_no_item(pool: PgPool) {
    let mock = MockProviders::start().await;
    let mut events = seeded(&pool, 2).await;
    let victim = events[0].clone();
    events.push(AnalysisComplete { analysis_id: Uuid::now_v7().to_string(), ..victim.clone() });
    events.push(AnalysisComplete { analysis_id: "not-an-id".into(), ..victim.clone() });
    let stage = embedder(&pool, &mock, "voyage", &[]).await;
    let entries = events.into_iter().map(|e| Entry::readable("", e)).collect();
    let ran = runner::run(&stage, &pool, entries, BatchContext::default()).await;
    let fates: Vec<bool> = ran.settled.iter().map(|(_, s)| matches!(s, Settled::Done)).collect();
    assert_eq!(fates, [true, true, false, false]);

    let statuses: Vec<String> =
        sqlx::query_scalar("SELECT embedding_status FROM items ORDER BY file_path").fetch_all(&pool).await.unwrap();
    assert_eq!(statuses, ["done", "done"], "the named item is not marked failed");
    assert!(store::items::failures(&pool, Some("u"), 10).await.unwrap().is_empty());
    assert!(store::status::record_failure_list(&pool, Some("u"), 10).await.unwrap().is_empty());
    let records = store::status::record_failure_list(&pool, None, 10).await.unwrap();
    assert_eq!(records.len(), 2);
    assert!(records.iter().all(|r| r.user_id.is_none() && r.item_id.is_none() && r.input.is_some()));
}
