//! What the integration tests share: generated images, mock provider
//! servers, and a pipeline wired to a test's own database and folders.

pub mod aws;
pub mod faulty_aws;
pub mod images;
pub mod providers;

use std::collections::HashMap;
use std::path::Path;

use collections::components::Components;
use shared::api::{ApiKey, SecretError, SecretSource};
use shared::config::Env;
use sqlx::PgPool;

/// Local components on `pool`, with the bucket under `data_dir`, small
/// batches, and any extra settings (`*_API_KEY` ones become the secrets).
pub async fn components(pool: PgPool, data_dir: &Path, extra: &[(&str, &str)]) -> Components {
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
    Components::with_pool(&Env::from_pairs(vars), &secrets, pool).await.expect("test components build")
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
pub fn processed(key: &str) -> shared::events::ImageProcessed {
    shared::events::ImageProcessed::of("local", &shared::keys::ImageKey::parse(key).expect("a valid key"))
}

/// The `AnalysisComplete` the analyzer publishes for analysis `id` of `key`'s item.
pub fn analysed(key: &str, id: uuid::Uuid) -> shared::events::AnalysisComplete {
    shared::events::AnalysisComplete::of_key(&shared::keys::ImageKey::parse(key).expect("a valid key"), id)
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
pub async fn seed_analysis(pool: &PgPool, key: &str, analysis: &shared::llm::Analysis) -> (uuid::Uuid, uuid::Uuid) {
    use shared::db::{analyses, items};
    let parsed = shared::keys::ImageKey::parse(key).expect("a valid key");
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
    };
    let batch = analyses::store_batch(pool, &[new], &[]).await.expect("storing the analysis");
    (parsed.item_uuid(), batch.stored[0].analysis_id)
}

/// Seeds these analyses as `user`'s items (`{user}/{name}.jpg`) and embeds
/// them with `provider`, as the embedder stage does.
pub async fn seed_items(
    pool: &PgPool,
    user: &str,
    provider: std::sync::Arc<dyn shared::embedding::EmbeddingProvider>,
    items: Vec<(impl std::fmt::Display, shared::llm::Analysis)>,
) {
    use shared::stage::{BatchContext, Outcome, Stage};
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
pub fn embedding_row(item_id: uuid::Uuid, analysis_id: uuid::Uuid) -> shared::db::embeddings::NewEmbedding {
    shared::db::embeddings::NewEmbedding {
        item_id,
        analysis_id,
        user_id: "u".into(),
        vector: shared::db::Vector::from(vec![0.5; 1024]),
        model: "m".into(),
        source: serde_json::json!({}),
        tokens: None,
    }
}

/// An analysis with the given category, summary and tags, the rest empty.
pub fn analysis(category: &str, summary: &str, tags: &[&str]) -> shared::llm::Analysis {
    shared::llm::Analysis {
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

/// The sequence numbers a Kinesis batch response asks to have delivered again.
pub fn redelivered(response: &aws_lambda_events::event::streams::KinesisEventResponse) -> Vec<String> {
    response.batch_item_failures.iter().filter_map(|f| f.item_identifier.clone()).collect()
}
