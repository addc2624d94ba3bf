//! What the integration tests and the benchmarks share: generated images
//! and photos, ICC profiles, mock provider servers, the local AWS world,
//! the search-at-scale harness, and a pipeline wired to a test's own
//! database and folders.

pub mod aws;
pub mod bench;
pub mod faulty_aws;
pub mod icc;
pub mod images;
pub mod providers;
pub mod scale;

use std::collections::HashMap;
use std::path::Path;

use collections::components::{Choices, Components};
use domain::settings::Env;
use remote::{ApiKey, SecretError, SecretSource};
use sqlx::PgPool;

/// Local components on `pool`, with the bucket under `data_dir`, small
/// batches, and any extra settings (`*_API_KEY` ones become the secrets).
pub async fn components(pool: PgPool, data_dir: &Path, extra: &[(&str, &str)]) -> Components {
    components_choosing(pool, data_dir, extra, Choices::default()).await
}

/// As [`components`], with what a command chose (`--batch-api`, a model).
pub async fn components_choosing(
    pool: PgPool,
    data_dir: &Path,
    extra: &[(&str, &str)],
    choices: Choices,
) -> Components {
    let data_dir = data_dir.to_str().expect("temporary paths are UTF-8");
    let mut vars = vec![
        ("COLLECTIONS_DATA_DIR", data_dir),
        ("COLLECTIONS_BATCH_SIZE", "4"),
        ("COLLECTIONS_BATCH_WINDOW_MS", "20"),
    ];
    vars.extend_from_slice(extra);
    let secrets = FixedSecrets(
        vars.iter().filter(|(k, _)| k.ends_with("_API_KEY")).map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
    );
    Components::with_pool(&Env::from_pairs(vars), &secrets, pool, choices).await.expect("test components build")
}

/// Secrets given by the test instead of the process environment.
#[derive(Debug, Clone, Default)]
pub struct FixedSecrets(pub HashMap<String, String>);

#[async_trait::async_trait]
impl SecretSource for FixedSecrets {
    async fn get(&self, name: &str) -> Result<Option<ApiKey>, SecretError> {
        Ok(self.0.get(name).map(ApiKey::new))
    }
}

/// The `ImageProcessed` the thumbnailer publishes for `key`, of the local bucket.
pub fn processed(key: &str) -> domain::events::ImageProcessed {
    domain::events::ImageProcessed::of("local", &domain::keys::ImageKey::parse(key).expect("a valid key"))
}

/// The `AnalysisComplete` the analyzer publishes for analysis `id` of `key`'s item.
pub fn analysed(key: &str, id: uuid::Uuid) -> domain::events::AnalysisComplete {
    domain::events::AnalysisComplete::of_key(&domain::keys::ImageKey::parse(key).expect("a valid key"), id)
}

/// Row counts of the three tables.
pub async fn counts(pool: &PgPool) -> (i64, i64, i64) {
    sqlx::query_as(
        "SELECT (SELECT count(*) FROM items), (SELECT count(*) FROM analyses), (SELECT count(*) FROM embeddings)",
    )
    .fetch_one(pool)
    .await
    .expect("counting rows")
}

/// An item with one stored analysis, as if the first two stages had run;
/// returns the item and analysis ids.
pub async fn seed_analysis(
    pool: &PgPool,
    key: &str,
    analysis: &domain::analysis::Analysis,
) -> (uuid::Uuid, uuid::Uuid) {
    use store::{analyses, items};
    let parsed = domain::keys::ImageKey::parse(key).expect("a valid key");
    let item = items::ThumbnailRecord {
        id: parsed.item_uuid(),
        user_id: parsed.user_id().to_owned(),
        bucket: "local".to_owned(),
        key: key.to_owned(),
        filename: parsed.filename().to_owned(),
        thumbnail_key: Some(parsed.thumbnail_key()),
        ..items::ThumbnailRecord::default()
    };
    items::store_thumbnails(pool, &[item], &[parsed.item_uuid()], &[]).await.expect("recording the item");
    let new = analyses::NewAnalysis {
        item_id: parsed.item_uuid(),
        user_id: parsed.user_id().to_owned(),
        category: analysis.category.clone(),
        summary: analysis.summary.clone(),
        analysis: serde_json::to_value(analysis).expect("analyses serialise"),
        raw_response: serde_json::json!({"seeded": true}),
        provider_used: "test".to_owned(),
        model_used: "seed".to_owned(),
        trace_id: None,
        request_key: format!("seed:{key}"),
        usage: None,
        batch_id: None,
    };
    let batch = analyses::store_batch(pool, &[new], &[]).await.expect("storing the analysis");
    (parsed.item_uuid(), batch.stored[0].analysis_id)
}

/// Seeds these analyses as `user`'s items (`{user}/{name}.jpg`) and embeds
/// them with `provider`, as the embedder stage does.
pub async fn seed_items(
    pool: &PgPool,
    user: &str,
    provider: std::sync::Arc<dyn embedding::EmbeddingProvider>,
    items: Vec<(impl std::fmt::Display, domain::analysis::Analysis)>,
) {
    use runtime::batch::BatchContext;
    use runtime::outcome::Outcome;
    use runtime::stage::Stage;
    let mut events = Vec::new();
    for (name, a) in items {
        let key = format!("{user}/{name}.jpg");
        let (_, analysis_id) = seed_analysis(pool, &key, &a).await;
        events.push(analysed(&key, analysis_id));
    }
    let config = embedder::EmbedderConfig::from_env(&Env::from_pairs([])).expect("default embedder settings");
    let outcomes =
        embedder::Embedder::new(pool.clone(), provider, config).run_batch(&events, &BatchContext::default()).await;
    assert!(outcomes.iter().all(|o| *o == Outcome::Done), "{outcomes:?}");
}

/// A 1024-dimension embedding of user `u`'s analysis, by model `m`, ready to store.
pub fn embedding_row(item_id: uuid::Uuid, analysis_id: uuid::Uuid) -> store::embeddings::NewEmbedding {
    store::embeddings::NewEmbedding {
        item_id,
        analysis_id,
        user_id: "u".into(),
        vector: store::Vector::from(vec![0.5; 1024]),
        model: "m".into(),
        source: serde_json::json!({}),
        tokens: None,
    }
}

/// An analysis with the given category, summary and tags, the rest empty.
pub fn analysis(category: &str, summary: &str, tags: &[&str]) -> domain::analysis::Analysis {
    domain::analysis::Analysis {
        category: category.to_owned(),
        summary: summary.to_owned(),
        description: String::new(),
        tags: tags.iter().map(|t| (*t).to_owned()).collect(),
        objects: Vec::new(),
        colors: Vec::new(),
        text: Vec::new(),
        scene: None,
        style: None,
        people_count: None,
    }
}

/// A Kinesis batch as Lambda delivers it, one record per payload (each an
/// EventBridge event or any bytes), sequence numbers `seq-0`, `seq-1`, ….
pub fn kinesis_batch(payloads: &[Vec<u8>]) -> aws_lambda_events::event::kinesis::KinesisEvent {
    use base64::Engine;
    let records: Vec<serde_json::Value> = payloads
        .iter()
        .enumerate()
        .map(|(i, data)| {
            serde_json::json!({
                "kinesis": {
                    "kinesisSchemaVersion": "1.0",
                    "partitionKey": format!("p{i}"),
                    "sequenceNumber": format!("seq-{i}"),
                    "data": base64::engine::general_purpose::STANDARD.encode(data),
                    "approximateArrivalTimestamp": 1764331200.0
                },
                "eventSource": "aws:kinesis",
                "eventVersion": "1.0",
                "eventID": format!("shardId-000000000000:seq-{i}"),
                "eventName": "aws:kinesis:record",
                "invokeIdentityArn": "arn:aws:iam::123456789012:role/collections",
                "awsRegion": "us-east-1",
                "eventSourceARN": "arn:aws:kinesis:us-east-1:123456789012:stream/test"
            })
        })
        .collect();
    serde_json::from_value(serde_json::json!({ "Records": records })).expect("a Kinesis event")
}

/// An EventBridge event of `detail_type` carrying `detail`, as a rule
/// forwards it to a stream.
pub fn eventbridge(detail_type: &str, detail: &impl serde::Serialize) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "version": "0", "id": "e", "detail-type": detail_type, "source": "collections.test",
        "account": "123456789012", "time": "2026-11-30T00:00:00Z", "region": "us-east-1", "resources": [],
        "detail": detail
    }))
    .expect("events serialise")
}

/// The sequence numbers a Kinesis batch's reply (as the function answers
/// it, JSON) asks to have delivered again.
pub fn redelivered(reply: &serde_json::Value) -> Vec<String> {
    let failures = reply["batchItemFailures"].as_array().expect("a Kinesis batch reply");
    failures.iter().map(|f| f["itemIdentifier"].as_str().expect("an item identifier").to_owned()).collect()
}
