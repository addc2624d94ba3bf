//! The Lambda handlers and the backfill against a real local AWS endpoint
//! (moto_server, through the real AWS SDK) and real PostgreSQL + pgvector:
//! S3 upload to rows in PostgreSQL through every stage, a poison record
//! reported alone, a replayed batch adding nothing, and a backfill putting
//! every eligible key on the stream exactly once across an interruption.
//! What moto cannot do — refuse some entries of a call — is tested against
//! `FaultyAws`, which speaks the same wire format.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use analyzer::{Analyzer, AnalyzerConfig};
use aws::eventbridge::EventBridgePublisher;
use aws::lambda::Handler;
use aws::s3::S3Store;
use aws_lambda_events::event::kinesis::KinesisEvent;
use collections::ingest::DirectSink;
use domain::settings::Env;
use embedder::{Embedder, EmbedderConfig};
use ops::backfill::{self, DryRun, StreamSink};
use ops::kinesis::StreamWriter;
use remote::retry::RetryPolicy;
use serde_json::Value;
use sqlx::PgPool;
use test_support::aws::{World, invoke};
use test_support::faulty_aws::FaultyAws;
use test_support::images::{self, BLUE, GREEN, ORANGE};
use test_support::providers::{MockProviders, Reply};
use test_support::{counts, redelivered};
use thumbnailer::{ThumbnailConfig, Thumbnailer};

struct Stages {
    pool: PgPool,
    thumbnailer: Thumbnailer,
    analyzer: Analyzer,
    embedder: Embedder,
}

/// The three stages as their Lambdas build them, on the local endpoint.
fn stages(world: &World, pool: &PgPool) -> Stages {
    let store = Arc::new(S3Store::new(&world.config));
    let bus = Arc::new(EventBridgePublisher::new(&world.config, "default", Default::default()));
    let env = Env::from_pairs([]);
    Stages {
        pool: pool.clone(),
        thumbnailer: Thumbnailer::new(
            store.clone(),
            bus.clone(),
            pool.clone(),
            ThumbnailConfig::from_env(&env).unwrap(),
        )
        .unwrap(),
        analyzer: Analyzer::new(
            store,
            bus,
            pool.clone(),
            Arc::new(vision::local::LocalAnalyzer),
            AnalyzerConfig::from_env(&env).unwrap(),
        ),
        embedder: Embedder::new(
            pool.clone(),
            Arc::new(embedding::local::LocalEmbedder::default()),
            EmbedderConfig::from_env(&env).unwrap(),
        ),
    }
}

/// The function timeout the handlers are given in these tests.
const TIMEOUT: Duration = Duration::from_secs(60);

async fn thumbnail(s: &Stages, batch: &KinesisEvent) -> Value {
    let handler = Handler::new(&s.thumbnailer, &s.pool, TIMEOUT);
    invoke(&handler, serde_json::to_value(batch).unwrap(), "req-thumbnail").await.unwrap()
}

async fn analyze(s: &Stages, batch: &KinesisEvent) -> Value {
    let handler = Handler::new(&s.analyzer, &s.pool, TIMEOUT);
    invoke(&handler, serde_json::to_value(batch).unwrap(), "req-analyze").await.unwrap()
}

async fn embed(s: &Stages, batch: &KinesisEvent) -> Value {
    let handler = Handler::new(&s.embedder, &s.pool, TIMEOUT);
    invoke(&handler, serde_json::to_value(batch).unwrap(), "req-embed").await.unwrap()
}

#[sqlx::test(migrations = "../migrations")]
async fn an_upload_flows_through_every_lambda_into_postgres_and_a_replay_adds_nothing(pool: PgPool) {
    let world = World::create("flow").await;
    let s = stages(&world, &pool);
    world.upload("flow-u1/beach.jpg", images::jpeg(1600, 1200, BLUE)).await;
    world.upload("flow-u1/Leaf.PNG", images::png(300, 600, GREEN)).await;
    world.upload("flow-u1/notes.txt", b"not an image".to_vec()).await;

    // S3 → EventBridge → (the rule) → uploads → thumbnailer.
    let created = world.published("Object Created", 2).await;
    assert_eq!(created.len(), 2, "the rule forwards images only");
    world.forward(&world.uploads, &created).await;
    let uploads = world.batch(&world.uploads).await;
    assert_eq!(redelivered(&thumbnail(&s, &uploads).await), Vec::<String>::new());
    let thumb = world.s3().get_object().bucket(&world.bucket).key("flow-u1/thumbnails/beach.jpg").send().await.unwrap();
    let bytes = thumb.body.collect().await.unwrap().into_bytes();
    assert_eq!(image::load_from_memory(&bytes).unwrap().width(), 800);
    let tags =
        world.s3().get_object_tagging().bucket(&world.bucket).key("flow-u1/thumbnails/beach.jpg").send().await.unwrap();
    assert_eq!(
        tags.tag_set().iter().map(|t| (t.key(), t.value())).collect::<Vec<_>>(),
        vec![("collections:kind", "thumbnail")]
    );

    // ImageProcessed on the bus → processed → analyzer.
    let processed = world.published("ImageProcessed", 2).await;
    assert_eq!(processed.len(), 2);
    assert!(
        processed
            .iter()
            .all(|e| e["source"] == "collections.imageprocessor" && e["detail"]["bucket"] == world.bucket.as_str())
    );
    world.forward(&world.processed, &processed).await;
    let processed_batch = world.batch(&world.processed).await;
    assert_eq!(redelivered(&analyze(&s, &processed_batch).await), Vec::<String>::new());

    // AnalysisComplete → analyzed → embedder → rows.
    let analyzed = world.published("AnalysisComplete", 2).await;
    assert_eq!(analyzed.len(), 2);
    world.forward(&world.analyzed, &analyzed).await;
    let analyzed_batch = world.batch(&world.analyzed).await;
    assert_eq!(redelivered(&embed(&s, &analyzed_batch).await), Vec::<String>::new());
    assert_eq!(counts(&pool).await, (2, 2, 2));
    let trace: Vec<Option<String>> =
        sqlx::query_scalar("SELECT trace_id FROM analyses").fetch_all(&pool).await.unwrap();
    assert_eq!(trace, vec![Some("req-analyze".to_owned()); 2], "the Lambda request id is stored");

    // The same three batches delivered again: nothing new anywhere.
    assert!(redelivered(&thumbnail(&s, &uploads).await).is_empty());
    assert!(redelivered(&analyze(&s, &processed_batch).await).is_empty());
    assert!(redelivered(&embed(&s, &analyzed_batch).await).is_empty());
    assert_eq!(counts(&pool).await, (2, 2, 2));
    let statuses: Vec<String> =
        sqlx::query_scalar("SELECT DISTINCT embedding_status FROM items").fetch_all(&pool).await.unwrap();
    assert_eq!(statuses, vec!["done"]);
}

#[sqlx::test(migrations = "../migrations")]
async fn a_revoked_key_hands_the_analyzer_batch_back_and_fails_no_item(pool: PgPool) {
    let world = World::create("revoked").await;
    let processed = two_images_thumbnailed(&world, &pool, "revoked-u1").await;
    let mock = MockProviders::start().await;
    mock.script(std::iter::repeat_n(Reply::Status { status: 401, retry_after: None }, 10));
    let revoked = lambda_analyzer(&world, &pool, &mock, &[("ANALYZER_CONCURRENCY", "1")]).await;
    let handler = Handler::new(&revoked, &pool, TIMEOUT);
    let reply = invoke(&handler, processed, "req-revoked").await.unwrap();

    assert_eq!(redelivered(&reply).len(), 2, "both records handed back to the stream: {reply}");
    assert_eq!(mock.requests().len(), 1, "one call, then none: the others would meet the same answer");
    assert_nothing_recorded(&pool).await;
}

#[sqlx::test(migrations = "../migrations")]
async fn a_provider_out_past_the_budget_hands_the_analyzer_batch_back_and_fails_no_item(pool: PgPool) {
    let world = World::create("overloaded").await;
    let processed = two_images_thumbnailed(&world, &pool, "overloaded-u1").await;
    let mock = MockProviders::start().await;
    mock.outage(Reply::Status { status: 529, retry_after: None }, Duration::from_secs(600));
    let budget = [("ANALYZER_RETRY_BUDGET_SECS", "1"), ("ANALYZER_RETRY_BASE_MS", "20")];
    let analyzer = lambda_analyzer(&world, &pool, &mock, &budget).await;
    let handler = Handler::new(&analyzer, &pool, TIMEOUT);
    let reply = invoke(&handler, processed, "req-overloaded").await.unwrap();

    assert_eq!(redelivered(&reply).len(), 2, "both records handed back to the stream: {reply}");
    assert!(mock.requests().len() > 2, "retried while the budget lasted");
    assert_nothing_recorded(&pool).await;
}

/// Two images of `user` uploaded and thumbnailed as the Lambdas do; the
/// analyzer's batch of their `ImageProcessed` events.
async fn two_images_thumbnailed(world: &World, pool: &PgPool, user: &str) -> Value {
    let s = stages(world, pool);
    world.upload(&format!("{user}/a.jpg"), images::jpeg(640, 480, BLUE)).await;
    world.upload(&format!("{user}/b.jpg"), images::jpeg(640, 480, ORANGE)).await;
    world.forward(&world.uploads, &world.published("Object Created", 2).await).await;
    assert!(redelivered(&thumbnail(&s, &world.batch(&world.uploads).await).await).is_empty());
    world.forward(&world.processed, &world.published("ImageProcessed", 2).await).await;
    serde_json::to_value(world.batch(&world.processed).await).unwrap()
}

/// The analyzer as its Lambda builds it, calling Anthropic's format on `mock`.
async fn lambda_analyzer(world: &World, pool: &PgPool, mock: &MockProviders, extra: &[(&str, &str)]) -> Analyzer {
    let dir = tempfile::tempdir().unwrap();
    let anthropic = mock.anthropic_url();
    let mut vars = vec![
        ("ANALYZER_PROVIDER", "anthropic"),
        ("ANTHROPIC_BASE_URL", anthropic.as_str()),
        ("ANTHROPIC_API_KEY", "sk-ant"),
    ];
    vars.extend_from_slice(extra);
    let c = test_support::components(pool.clone(), dir.path(), &vars).await;
    let bus = Arc::new(EventBridgePublisher::new(&world.config, "default", Default::default()));
    let config = AnalyzerConfig::from_env(&Env::from_pairs(vars)).unwrap();
    Analyzer::new(Arc::new(S3Store::new(&world.config)), bus, pool.clone(), c.vision.clone(), config)
}

/// No item failed and no record failure kept: what was handed back stays pending.
async fn assert_nothing_recorded(pool: &PgPool) {
    let statuses: Vec<(String, Option<String>)> =
        sqlx::query_as("SELECT analysis_status, last_error FROM items").fetch_all(pool).await.unwrap();
    assert_eq!(statuses, vec![("pending".to_owned(), None); 2], "no item failed");
    let recorded: i64 = sqlx::query_scalar("SELECT count(*) FROM record_failures").fetch_one(pool).await.unwrap();
    assert_eq!(recorded, 0);
}

#[sqlx::test(migrations = "../migrations")]
async fn long_keys_and_keys_that_differ_by_extension_or_user_are_items_of_their_own(pool: PgPool) {
    let world = World::create("keys").await;
    let s = stages(&world, &pool);
    let long = format!("keys-u1/{}beach.jpg", "2024 summer trip/".repeat(17));
    assert!(long.len() > 300);
    let stem = "0b7e5c1a-3f55-4d6e-9a0c-55b1f4f1c2d3";
    let keys = [
        long.clone(),
        "keys-u1/a.jpg".to_owned(),
        "keys-u1/a.png".to_owned(),
        format!("keys-u1/{stem}.jpg"),
        format!("keys-u2/{stem}.jpg"),
    ];
    for (i, key) in keys.iter().enumerate() {
        let image =
            if key.ends_with(".png") { images::png(200, 100, GREEN) } else { images::jpeg(200 + i as u32, 100, BLUE) };
        world.upload(key, image).await;
    }

    let hops = [
        ("Object Created", &world.uploads),
        ("ImageProcessed", &world.processed),
        ("AnalysisComplete", &world.analyzed),
    ];
    for (n, (detail_type, stream)) in hops.into_iter().enumerate() {
        let events = world.published(detail_type, keys.len()).await;
        assert_eq!(events.len(), keys.len(), "{detail_type}");
        world.forward(stream, &events).await;
        let partition_keys: Vec<usize> =
            world.records(stream).await.iter().map(|(_, k, _)| k.chars().count()).collect();
        assert!(
            partition_keys.iter().all(|&len| len <= 256),
            "{stream}: partition keys of {partition_keys:?} characters"
        );
        let batch = world.batch(stream).await;
        let response = match n {
            0 => thumbnail(&s, &batch).await,
            1 => analyze(&s, &batch).await,
            _ => embed(&s, &batch).await,
        };
        assert_eq!(redelivered(&response), Vec::<String>::new(), "{detail_type}");
    }

    let rows: Vec<(uuid::Uuid, String, String)> =
        sqlx::query_as("SELECT id, file_path, embedding_status FROM items ORDER BY file_path")
            .fetch_all(&pool)
            .await
            .unwrap();
    let mut expected: Vec<&String> = keys.iter().collect();
    expected.sort();
    assert_eq!(rows.iter().map(|(_, key, _)| key).collect::<Vec<_>>(), expected, "one item per key");
    for (id, key, status) in &rows {
        assert_eq!(status, "done", "{key}");
        assert_eq!(*id, domain::keys::item_uuid(key));
    }
    assert_eq!(counts(&pool).await, (5, 5, 5));
}

/// One EventBridge event as a Kinesis batch of its own.
fn alone(event: &Value) -> KinesisEvent {
    test_support::kinesis_batch(&[event.to_string().into_bytes()])
}

#[sqlx::test(migrations = "../migrations")]
async fn a_deleted_object_takes_its_item_and_thumbnail_and_an_older_version_does_not_come_back(pool: PgPool) {
    let world = World::create("delete").await;
    let s = stages(&world, &pool);
    let key = "delete-u1/beach.jpg";
    world.upload(key, images::jpeg(640, 480, BLUE)).await;
    world.upload("delete-u1/kept.jpg", images::jpeg(640, 480, GREEN)).await;
    let created = world.published("Object Created", 2).await;
    for event in &created {
        assert!(redelivered(&thumbnail(&s, &alone(event)).await).is_empty());
    }
    for event in world.published("ImageProcessed", 2).await {
        assert!(redelivered(&analyze(&s, &alone(&event)).await).is_empty());
    }
    for event in world.published("AnalysisComplete", 2).await {
        assert!(redelivered(&embed(&s, &alone(&event)).await).is_empty());
    }
    assert_eq!(counts(&pool).await, (2, 2, 2));

    world.s3().delete_object().bucket(&world.bucket).key(key).send().await.unwrap();
    let mut deleted = world.published("Object Deleted", 1).await;
    assert_eq!(deleted.len(), 1);
    // moto gives every event the same sequencer; S3's grow per key.
    let created_beach = created.iter().find(|e| e["detail"]["object"]["key"] == key).unwrap().clone();
    let sequencer = created_beach["detail"]["object"]["sequencer"].as_str().unwrap().to_owned();
    deleted[0]["detail"]["object"]["sequencer"] = Value::String(format!("{sequencer}1"));
    assert!(redelivered(&thumbnail(&s, &alone(&deleted[0])).await).is_empty());
    let left: Vec<String> = sqlx::query_scalar("SELECT file_path FROM items").fetch_all(&pool).await.unwrap();
    assert_eq!(left, ["delete-u1/kept.jpg"]);
    assert_eq!(counts(&pool).await, (1, 1, 1), "its analysis and vector went with it");
    let thumbnail_left =
        world.s3().head_object().bucket(&world.bucket).key("delete-u1/thumbnails/beach.jpg").send().await;
    assert!(thumbnail_left.is_err(), "its thumbnail went too");

    // The create of the version the delete came after, delivered again
    // late, brings nothing back, though an object is there again.
    world.upload(key, images::jpeg(320, 240, ORANGE)).await;
    assert!(redelivered(&thumbnail(&s, &alone(&created_beach)).await).is_empty());
    assert_eq!(counts(&pool).await, (1, 1, 1));
    assert!(world.s3().head_object().bucket(&world.bucket).key("delete-u1/thumbnails/beach.jpg").send().await.is_err());

    // A newer version (a greater sequencer) is an item again.
    let mut newer = created_beach;
    newer["detail"]["object"]["sequencer"] = Value::String(format!("{sequencer}2"));
    assert!(redelivered(&thumbnail(&s, &alone(&newer)).await).is_empty());
    let rows: i64 =
        sqlx::query_scalar("SELECT count(*) FROM items WHERE file_path = $1").bind(key).fetch_one(&pool).await.unwrap();
    assert_eq!(rows, 1);
}

#[sqlx::test(migrations = "../migrations")]
async fn a_poison_record_is_the_only_one_reported(pool: PgPool) {
    let world = World::create("poison").await;
    let s = stages(&world, &pool);
    world.upload("poison-u1/a.jpg", images::jpeg(320, 240, ORANGE)).await;
    world.upload("poison-u1/b.jpg", images::jpeg(320, 240, BLUE)).await;
    world.upload("poison-u1/broken.jpg", b"\xFF\xD8\xFF truncated".to_vec()).await;
    let created = world.published("Object Created", 3).await;
    let kinesis = aws_sdk_kinesis::Client::new(&world.config);
    world.forward(&world.uploads, &created[..1]).await;
    world.put_raw(&kinesis, &world.uploads, "poison", b"{not json".to_vec()).await;
    world
        .put_raw(&kinesis, &world.uploads, "stranger", br#"{"detail-type":"Object Deleted","detail":{}}"#.to_vec())
        .await;
    world.forward(&world.uploads, &created[1..]).await;
    let batch = world.batch(&world.uploads).await;
    assert_eq!(batch.records.len(), 5);

    let reported = redelivered(&thumbnail(&s, &batch).await);
    assert_eq!(
        reported,
        Vec::<String>::new(),
        "unreadable records and the corrupt image are recorded, not redelivered"
    );
    let unreadable: Vec<(String, Option<String>, String)> =
        sqlx::query_as("SELECT source, raw, reason FROM record_failures ORDER BY source")
            .fetch_all(&pool)
            .await
            .unwrap();
    let expected: Vec<&str> = batch.records[1..3].iter().map(|r| r.kinesis.sequence_number.as_str()).collect();
    assert_eq!(unreadable.iter().map(|(s, _, _)| s.as_str()).collect::<Vec<_>>(), expected);
    assert_eq!(unreadable[0].1.as_deref(), Some("{not json"), "kept as received");
    assert!(unreadable[0].2.starts_with("the record is not JSON"), "{}", unreadable[0].2);
    let rows: Vec<(String, String)> =
        sqlx::query_as("SELECT file_path, thumbnail_status FROM items ORDER BY 1").fetch_all(&pool).await.unwrap();
    assert_eq!(
        rows,
        vec![
            ("poison-u1/a.jpg".into(), "done".into()),
            ("poison-u1/b.jpg".into(), "done".into()),
            ("poison-u1/broken.jpg".into(), "failed".into())
        ]
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn a_direct_s3_notification_is_handled_too(pool: PgPool) {
    let world = World::create("direct").await;
    let s = stages(&world, &pool);
    world.upload("direct-u1/my photo.jpg", images::jpeg(320, 240, GREEN)).await;
    let notification = serde_json::json!({"Records": [{
        "eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "us-east-1",
        "eventTime": "2026-11-28T12:00:00.000Z", "eventName": "ObjectCreated:Put",
        "userIdentity": {"principalId": "EXAMPLE"}, "requestParameters": {"sourceIPAddress": "127.0.0.1"},
        "responseElements": {"x-amz-request-id": "r", "x-amz-id-2": "i"},
        "s3": {"s3SchemaVersion": "1.0", "configurationId": "c",
               "bucket": {"name": world.bucket, "ownerIdentity": {"principalId": "EXAMPLE"}, "arn": format!("arn:aws:s3:::{}", world.bucket)},
               "object": {"key": "direct-u1/my+photo.jpg", "size": 10, "eTag": "e", "sequencer": "1"}}
    }]});
    let handler = Handler::new(&s.thumbnailer, &s.pool, TIMEOUT);
    let response = invoke(&handler, notification, "req-s3").await.unwrap();
    assert_eq!((response["done"].as_u64(), response["failed"].as_u64()), (Some(1), Some(0)));
    let rows: Vec<String> = sqlx::query_scalar("SELECT file_path FROM items").fetch_all(&pool).await.unwrap();
    assert_eq!(rows, vec!["direct-u1/my photo.jpg"], "the notification's key is URL-decoded");
}

#[sqlx::test(migrations = "../migrations")]
async fn backfill_puts_every_eligible_key_on_the_stream_once_across_an_interruption(pool: PgPool) {
    let world = World::create("backfill").await;
    let s3 = S3Store::new(&world.config);
    let mut eligible = BTreeSet::new();
    let tiny = images::jpeg(8, 8, BLUE);
    for i in 0..250 {
        let key = format!("user{}/photo-{i:03}.{}", i % 5, if i % 7 == 0 { "PNG" } else { "jpg" });
        world.upload(&key, tiny.clone()).await;
        eligible.insert(key);
    }
    for i in 0..20 {
        world.upload(&format!("user{}/thumbnails/photo-{i:03}.jpg", i % 5), tiny.clone()).await;
    }
    for i in 0..30 {
        world.upload(&format!("user{}/notes-{i:02}.txt", i % 5), b"x".to_vec()).await;
    }
    // Ten already went through every stage, in this very version (etag).
    let listed = s3.list_page(&world.bucket, Some("user0/"), None, 1000).await.unwrap();
    let done: Vec<_> = listed.objects.iter().filter(|o| o.key.contains("photo")).take(10).collect();
    for o in &done {
        let key = domain::keys::ImageKey::parse(&o.key).unwrap();
        sqlx::query(
            "INSERT INTO items (id, user_id, filename, file_path, bucket, source_etag, thumbnail_status, analysis_status, embedding_status)
             VALUES ($1, $2, $3, $4, $5, $6, 'done', 'done', 'done')",
        )
        .bind(key.item_uuid())
        .bind(key.user_id())
        .bind(key.filename())
        .bind(&o.key)
        .bind(&world.bucket)
        .bind(&o.etag)
        .execute(&pool)
        .await
        .unwrap();
        eligible.remove(&o.key);
    }

    let dir = tempfile::tempdir().unwrap();
    let mut options = backfill::Options {
        bucket: world.bucket.clone(),
        prefix: None,
        rate: 10_000.0,
        all: false,
        checkpoint: dir.path().join("checkpoint.json"),
        restart: false,
        count_first: false,
        page_size: 100,
        max_pages: Some(1),
        progress: false,
    };
    let dry = backfill::backfill(&s3, Some(&pool), Box::new(DryRun), &options).await.unwrap();
    assert_eq!((dry.listed, dry.complete), (100, false));
    assert!(world.records(&world.uploads).await.is_empty(), "a dry run sends nothing");
    assert!(!options.checkpoint.exists(), "and leaves no checkpoint");

    let writer = StreamWriter::new(&world.config, &world.uploads, Default::default());
    let first = backfill::backfill(&s3, Some(&pool), Box::new(StreamSink(&writer)), &options).await.unwrap();
    assert!(!first.complete && options.checkpoint.exists(), "interrupted after one page, with a checkpoint");
    options.max_pages = None;
    let rest = backfill::backfill(&s3, Some(&pool), Box::new(StreamSink(&writer)), &options).await.unwrap();
    assert!(rest.complete && rest.resumed_after.is_some());
    assert!(!options.checkpoint.exists(), "a finished backfill leaves no checkpoint");
    assert_eq!(
        (first.listed, rest.listed),
        (100, 300),
        "the second run went on from the checkpoint, counting the whole backfill"
    );
    assert_eq!(rest.skipped.get("a thumbnail"), Some(&20));
    assert_eq!(rest.skipped.get("not a .jpg, .jpeg or .png key"), Some(&30));
    assert_eq!(rest.skipped.get("already processed"), Some(&10));

    let records = world.records(&world.uploads).await;
    let mut sent = Vec::new();
    for (_, partition_key, data) in &records {
        let event: Value = serde_json::from_slice(data).unwrap();
        assert_eq!(
            (event["detail-type"].as_str(), event["detail"]["bucket"]["name"].as_str()),
            (Some("Object Created"), Some(world.bucket.as_str()))
        );
        let key = event["detail"]["object"]["key"].as_str().unwrap().to_owned();
        assert_eq!(partition_key, &key);
        sent.push(key);
    }
    assert_eq!(sent.len(), eligible.len(), "no key twice");
    assert_eq!(sent.into_iter().collect::<BTreeSet<_>>(), eligible);
    // And what the stream carries, the thumbnailer reads.
    let batch = world.batch(&world.uploads).await;
    let objects: Vec<domain::events::ObjectRef> = batch
        .records
        .iter()
        .flat_map(|r| <domain::events::Upload as aws::lambda::EventInput>::from_record(&r.kinesis.data.0).unwrap())
        .map(|upload| upload.object)
        .collect();
    assert_eq!(objects.len(), 240);
    assert!(objects.iter().all(|o| o.etag.is_some() && o.size == Some(tiny.len() as u64)));
}

#[sqlx::test(migrations = "../migrations")]
async fn events_are_published_in_calls_of_ten_and_all_arrive(pool: PgPool) {
    use runtime::bus::EventPublisher;
    let world = World::create("publish").await;
    let bus = EventBridgePublisher::new(&world.config, "default", Default::default());
    let events = processed_events(25, &world.bucket);
    let results = bus.publish(events).await;
    assert_eq!(results, vec![Ok(()); 25]);
    let arrived = world.published("ImageProcessed", 25).await;
    let mut ids: Vec<String> = arrived.iter().map(|e| e["detail"]["item_id"].as_str().unwrap().to_owned()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 25);
    drop(pool);
}

/// A backfill of `prefix` in `bucket`, its checkpoint under `dir`, as fast as moto takes it.
fn backfill_options(bucket: &str, prefix: &str, dir: &std::path::Path) -> backfill::Options {
    backfill::Options {
        bucket: bucket.to_owned(),
        prefix: Some(prefix.into()),
        rate: 1000.0,
        all: false,
        checkpoint: dir.join("checkpoint.json"),
        restart: false,
        count_first: true,
        page_size: 1000,
        max_pages: None,
        progress: false,
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn a_direct_backfill_runs_the_stages_here(pool: PgPool) {
    let world = World::create("directfill").await;
    world.upload("directfill-u/a.jpg", images::jpeg(900, 600, ORANGE)).await;
    world.upload("directfill-u/b.png", images::png(200, 100, GREEN)).await;
    world.upload("directfill-u/thumbnails/old.jpg", images::jpeg(10, 10, BLUE)).await;
    let dir = tempfile::tempdir().unwrap();
    let c = test_support::components(pool.clone(), &dir.path().join("data"), &[]).await;
    let options = backfill_options(&world.bucket, "directfill-u/", dir.path());
    let s3 = S3Store::new(&world.config);
    let report = backfill::backfill(&s3, Some(&pool), Box::new(DirectSink::start(&c, s3.clone()).unwrap()), &options)
        .await
        .unwrap();
    assert_eq!((report.submitted, report.failed.len()), (2, 0), "{report:?}");
    assert_eq!(counts(&pool).await, (2, 2, 2));
    world
        .s3()
        .head_object()
        .bucket(&world.bucket)
        .key("directfill-u/thumbnails/a.jpg")
        .send()
        .await
        .expect("the thumbnail is in S3");
    let again = backfill::backfill(&s3, Some(&pool), Box::new(DirectSink::start(&c, s3.clone()).unwrap()), &options)
        .await
        .unwrap();
    assert_eq!((again.submitted, again.skipped.get("already processed")), (0, Some(&2)));
}

/// `backfill --direct --batch-api`: the originals from S3, the analyses
/// through a batch API that takes no synchronous call, in one batch, and the
/// checkpoint gone once every page is through.
#[sqlx::test(migrations = "../migrations")]
async fn a_direct_backfill_through_the_batch_api_analyses_in_one_batch(pool: PgPool) {
    let world = World::create("batchfill").await;
    for (i, colour) in [ORANGE, GREEN, BLUE].into_iter().enumerate() {
        world.upload(&format!("batchfill-u/{i}.jpg"), images::jpeg(300 + 10 * i as u32, 200, colour)).await;
    }
    let mock = MockProviders::start().await;
    mock.batches_only();
    mock.set_batch_duration(Duration::from_millis(200));
    let dir = tempfile::tempdir().unwrap();
    let anthropic = mock.anthropic_url();
    let settings = [
        ("ANALYZER_PROVIDER", "anthropic"),
        ("ANTHROPIC_BASE_URL", anthropic.as_str()),
        ("ANTHROPIC_API_KEY", "sk-ant-test"),
        ("ANALYZER_BATCH_POLL_SECS", "0.05"),
    ];
    let choices = collections::components::Choices { batch_api: true, ..Default::default() };
    let c = test_support::components_choosing(pool.clone(), &dir.path().join("data"), &settings, choices).await;
    let options = backfill_options(&world.bucket, "batchfill-u/", dir.path());
    let s3 = S3Store::new(&world.config);
    let report = backfill::backfill(&s3, Some(&pool), Box::new(DirectSink::start(&c, s3.clone()).unwrap()), &options)
        .await
        .unwrap();
    assert_eq!((report.submitted, report.failed.len()), (3, 0), "{report:?}");
    assert_eq!(counts(&pool).await, (3, 3, 3));
    assert_eq!(mock.batches().iter().map(Vec::len).collect::<Vec<_>>(), [3]);
    let priced: i64 =
        sqlx::query_scalar("SELECT count(*) FROM analyses WHERE batch_id IS NOT NULL").fetch_one(&pool).await.unwrap();
    assert_eq!(priced, 3);
    assert!(!options.checkpoint.exists(), "a finished backfill leaves no checkpoint");
}

#[sqlx::test(migrations = "../migrations")]
async fn api_keys_come_from_ssm_secure_strings_under_the_prefix(pool: PgPool) {
    use aws::ssm::SsmParameters;
    use remote::SecretSource;
    let config = test_support::aws::config().await;
    let prefix = format!("/collections-{}", uuid::Uuid::new_v4().simple());
    aws_sdk_ssm::Client::new(&config)
        .put_parameter()
        .name(format!("{prefix}/VOYAGE_API_KEY"))
        .value("pa-from-ssm")
        .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
        .send()
        .await
        .unwrap();
    let secrets = SsmParameters::new(&config, &format!("{prefix}/"));
    let key = secrets.get("VOYAGE_API_KEY").await.unwrap().expect("the key");
    assert_eq!(key.expose(), "pa-from-ssm");
    assert_eq!(format!("{key:?}"), "ApiKey(***)");
    assert_eq!(secrets.get("ANTHROPIC_API_KEY").await.unwrap(), None, "a missing parameter is no key, not an error");
    drop(pool);
}

/// `n` ImageProcessed events from `bucket`, for items `i0`…
fn processed_events(n: usize, bucket: &str) -> Vec<domain::events::PipelineEvent> {
    use domain::events::{ImageProcessed, PipelineEvent};
    (0..n)
        .map(|i| {
            let key = domain::keys::ImageKey::parse(&format!("u/i{i}.jpg")).unwrap();
            PipelineEvent::ImageProcessed(ImageProcessed::of(bucket, &key))
        })
        .collect()
}

fn quick_retries() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 3,
        base_delay: Duration::from_millis(5),
        max_delay: Duration::from_millis(50),
        ..RetryPolicy::default()
    }
}

fn markers(range: std::ops::Range<usize>, prefix: &str) -> Vec<String> {
    range.map(|i| format!("{prefix}{i}")).collect()
}

#[tokio::test]
async fn refused_put_events_entries_are_resent_alone_and_fail_only_their_item() {
    use runtime::bus::{EventPublisher, PublishError};
    let endpoint = FaultyAws::start().await;
    endpoint.refuse("i3", 1);
    endpoint.refuse("i11", usize::MAX);
    endpoint.refuse_with("i5", "MalformedDetail");
    let bus = EventBridgePublisher::new(&endpoint.config().await, "default", quick_retries());

    let results = bus.publish(processed_events(12, "b")).await;

    for (i, result) in results.iter().enumerate() {
        match (i, result) {
            (5 | 11, Err(PublishError::Rejected { code, message })) => {
                let expected = if i == 5 { "MalformedDetail" } else { "ThrottlingException" };
                assert_eq!((code.as_str(), message.as_str()), (expected, "Refused by the test"));
            }
            (5 | 11, other) => panic!("i{i} is always refused, got {other:?}"),
            (_, result) => assert_eq!(result, &Ok(()), "item i{i}"),
        }
    }
    let expected =
        vec![markers(0..10, "i"), vec!["i3".into()], markers(10..12, "i"), vec!["i11".into()], vec!["i11".into()]];
    assert_eq!(
        endpoint.calls(),
        expected,
        "only throttled entries are resent, at most 3 attempts each; the malformed one (i5) is not"
    );
}

#[tokio::test]
async fn a_denied_put_events_call_fails_its_entries_without_resending() {
    use runtime::bus::{EventPublisher, PublishError};
    let endpoint = FaultyAws::start().await;
    endpoint.deny("AccessDeniedException");
    let bus = EventBridgePublisher::new(&endpoint.config().await, "default", quick_retries());

    let results = bus.publish(processed_events(2, "b")).await;

    assert!(
        results.iter().all(|r| matches!(r, Err(PublishError::Call(m)) if m.contains("AccessDeniedException"))),
        "{results:?}"
    );
    assert_eq!(endpoint.calls().len(), 1, "access denied is not worth a second call");
}

#[tokio::test]
async fn throttled_kinesis_records_are_resent_until_accepted_or_out_of_attempts() {
    use ops::kinesis::{PutError, Record};
    let endpoint = FaultyAws::start().await;
    let writer = StreamWriter::new(&endpoint.config().await, "uploads", quick_retries());
    let records: Vec<Record> = (0..600).map(|i| Record::new(&format!("k{i}"), vec![b'x'; 10])).collect();
    endpoint.refuse("k7", 2);
    endpoint.refuse("k550", 1);

    writer.put_all(&records).await.expect("every record is accepted within three attempts");
    let expected =
        vec![markers(0..500, "k"), vec!["k7".into()], vec!["k7".into()], markers(500..600, "k"), vec!["k550".into()]];
    assert_eq!(endpoint.calls(), expected);

    endpoint.refuse("k1", usize::MAX);
    let error = writer.put_all(&records[..3]).await.unwrap_err();
    assert_eq!(
        error,
        PutError::Refused {
            failed: 1,
            sent: 3,
            attempts: 3,
            last: "ProvisionedThroughputExceededException: Rate exceeded for shard".into()
        }
    );
}

#[tokio::test]
async fn a_rotated_database_secret_reaches_new_connections_of_a_running_pool() {
    use aws::database::{keep_current, resolve};
    let config = test_support::aws::config().await;
    let secrets = aws_sdk_secretsmanager::Client::new(&config);
    let login = |user: &str, password: &str| {
        serde_json::json!({"username": user, "password": password, "host": "db.internal", "port": 5432}).to_string()
    };
    let arn = secrets
        .create_secret()
        .name(format!("collections-db-{}", uuid::Uuid::new_v4().simple()))
        .secret_string(login("app", "first"))
        .send()
        .await
        .unwrap()
        .arn
        .expect("an ARN");
    let env = Env::from_pairs([("DATABASE_SECRET_ARN", arn.as_str()), ("DATABASE_SETTINGS_REFRESH_SECONDS", "1")]);
    let first = resolve(&env, &config).await.unwrap();
    assert_eq!(first.url, "postgres://app:first@db.internal:5432/collections?sslmode=require");
    let pool = sqlx::postgres::PgPoolOptions::new().connect_lazy_with(store::connect_options(&first.url).unwrap());
    let refresher = keep_current(pool.clone(), &first, &env, &config).unwrap().expect("a secret can change");

    // Rotation with alternating users: the secret now names the other user.
    secrets.put_secret_value().secret_id(&arn).secret_string(login("app_clone", "second")).send().await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while pool.connect_options().get_username() != "app_clone" {
        assert!(tokio::time::Instant::now() < deadline, "the pool still logs in as the old user");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(pool.connect_options().get_host(), "db.internal");
    refresher.abort();

    let fixed = Env::from_pairs([("DATABASE_URL", "postgres://u:p@localhost/x")]);
    assert!(keep_current(pool, &first, &fixed, &config).unwrap().is_none(), "DATABASE_URL cannot change");
}

#[sqlx::test(migrations = "../migrations")]
async fn a_record_that_ran_out_of_retries_is_processed_after_a_redrive(pool: PgPool) {
    use ops::redrive::Redrive;
    let world = World::create("redrive").await;
    let s = stages(&world, &pool);
    world.upload("redrive-u1/a.jpg", images::jpeg(320, 240, BLUE)).await;
    let created = world.published("Object Created", 1).await;
    world.forward(&world.uploads, &created).await;
    let on_stream = world.records(&world.uploads).await;
    let (sequence, _, _) = on_stream[0].clone();

    // What Lambda sends to the on-failure queue when the record's retries run out.
    let sqs = aws_sdk_sqs::Client::new(&world.config);
    let queue = sqs.create_queue().queue_name(format!("{}-failures", world.uploads)).send().await.unwrap();
    let queue_url = queue.queue_url().unwrap().to_owned();
    let message = serde_json::json!({
        "requestContext": {"requestId": "r", "condition": "RetryAttemptsExhausted", "approximateInvokeCount": 3},
        "version": "1.0", "timestamp": "2026-11-30T06:00:00.000Z",
        "KinesisBatchInfo": {"shardId": "shardId-000000000000", "startSequenceNumber": sequence,
            "endSequenceNumber": sequence, "batchSize": 1,
            "streamArn": format!("arn:aws:kinesis:us-east-1:123456789012:stream/{}", world.uploads)}
    });
    sqs.send_message().queue_url(&queue_url).message_body(message.to_string()).send().await.unwrap();
    // And one naming records the stream no longer has: it must stay.
    let mut gone = message.clone();
    gone["KinesisBatchInfo"]["startSequenceNumber"] = serde_json::json!(format!("{sequence}9"));
    gone["KinesisBatchInfo"]["endSequenceNumber"] = serde_json::json!(format!("{sequence}9"));
    sqs.send_message().queue_url(&queue_url).message_body(gone.to_string()).send().await.unwrap();

    let report = Redrive::new(&world.config).run(&queue_url, 10).await.unwrap();
    assert_eq!((report.redriven, report.records, report.kept.len()), (1, 1, 1), "{report:?}");
    let again = world.records(&world.uploads).await;
    assert_eq!(again.len(), 2, "the record is on the stream once more");
    assert_eq!((&again[1].1, &again[1].2), (&on_stream[0].1, &on_stream[0].2), "same key, same data");

    // The redriven record goes through the thumbnailer like any other.
    let batch = world.batch(&world.uploads).await;
    let mut redriven = batch.clone();
    redriven.records.remove(0);
    assert_eq!(redelivered(&thumbnail(&s, &redriven).await), Vec::<String>::new());
    let status: String = sqlx::query_scalar("SELECT thumbnail_status FROM items WHERE file_path = 'redrive-u1/a.jpg'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(status, "done");

    // Only the message whose records were put back is gone.
    let left = sqs
        .receive_message()
        .queue_url(&queue_url)
        .max_number_of_messages(10)
        .visibility_timeout(0)
        .send()
        .await
        .unwrap();
    let left: Vec<String> = left.messages().iter().filter_map(|m| m.body().map(str::to_owned)).collect();
    assert_eq!(left.len(), 1);
    assert!(left[0].contains(&format!("{sequence}9")));
}

/// Uploads these images and takes each through the three functions.
async fn through_every_stage(world: &World, s: &Stages, uploads: &[(&str, Vec<u8>)]) {
    for (key, bytes) in uploads {
        world.upload(key, bytes.clone()).await;
    }
    let n = uploads.len();
    for event in world.published("Object Created", n).await {
        assert_eq!(redelivered(&thumbnail(s, &alone(&event)).await), Vec::<String>::new());
    }
    for event in world.published("ImageProcessed", n).await {
        assert_eq!(redelivered(&analyze(s, &alone(&event)).await), Vec::<String>::new());
    }
    for event in world.published("AnalysisComplete", n).await {
        assert_eq!(redelivered(&embed(s, &alone(&event)).await), Vec::<String>::new());
    }
}

/// (versions, model) of every vector, sorted: what was embedded from what.
async fn vectors(pool: &PgPool) -> Vec<(i32, String, i32)> {
    sqlx::query_as(
        "SELECT a.version, e.embedding_model, vector_dims(e.vector) FROM embeddings e
         JOIN analyses a ON a.id = e.analysis_id ORDER BY 1, 2",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

#[sqlx::test(migrations = "../migrations")]
async fn reanalysis_and_a_change_of_embedding_model_go_through_the_streams(pool: PgPool) {
    use collections::reanalyze::{Selection, reanalyze_on_stream};
    use collections::reembed::reembed_on_stream;
    use store::analyses::prune_superseded;
    use store::models::{self, EmbeddingModel};
    let world = World::create("streams").await;
    let mut s = stages(&world, &pool);
    let next_model = Arc::new(embedding::local::LocalEmbedder::new(384));
    let plain = Embedder::new(
        pool.clone(),
        Arc::new(embedding::local::LocalEmbedder::default()),
        EmbedderConfig::from_env(&Env::from_pairs([])).unwrap(),
    );
    s.embedder = plain.with_reembed(Some(next_model));
    let photos =
        [("streams-u1/a.jpg", images::jpeg(320, 240, BLUE)), ("streams-u1/b.jpg", images::png(200, 300, GREEN))];
    through_every_stage(&world, &s, &photos).await;
    let writer = |stream: &str| StreamWriter::new(&world.config, stream, RetryPolicy::default());

    // Re-analysis: one new version per item, made by the analyzer function
    // and embedded by the embedder function.
    let selection = Selection { user: Some("streams-u1"), category: None, not_waiting: false };
    assert_eq!(reanalyze_on_stream(&pool, &writer(&world.processed), selection, 1000.0).await.unwrap(), 2);
    assert_eq!(redelivered(&analyze(&s, &world.batch(&world.processed).await).await), Vec::<String>::new());
    let analysed = world.published("AnalysisComplete", 2).await;
    assert_eq!(analysed.len(), 2);
    world.forward(&world.analyzed, &analysed).await;
    assert_eq!(redelivered(&embed(&s, &world.batch(&world.analyzed).await).await), Vec::<String>::new());
    let active = |version| (version, "local-hashing-v1".to_owned(), 1024);
    assert_eq!(vectors(&pool).await, [active(1), active(1), active(2), active(2)]);
    assert_eq!(prune_superseded(&pool, "local-hashing-v1", Some("streams-u1")).await.unwrap(), 2);
    assert_eq!(vectors(&pool).await, [active(2), active(2)], "only the new versions are left");

    // A change of model: the new one is registered and indexed by the
    // migrator on deploy; the work goes on the analyzed stream.
    let unregistered = reembed_on_stream(&pool, &writer(&world.analyzed), "local-hashing-v1@384", None, 1000.0).await;
    assert!(unregistered.unwrap_err().to_string().contains("is not registered"));
    models::prepare(&pool, &EmbeddingModel::new("local-hashing-v1@384", 384), Some(64), None).await.unwrap();
    let put = reembed_on_stream(&pool, &writer(&world.analyzed), "local-hashing-v1@384", None, 1000.0).await.unwrap();
    assert_eq!(put, 2);
    // An item whose active embedding failed stays failed: the re-embed's
    // vectors are of another model, and leave the statuses alone.
    sqlx::query("UPDATE items SET embedding_status = 'failed', last_error = 'x' WHERE file_path = 'streams-u1/a.jpg'")
        .execute(&pool)
        .await
        .unwrap();
    let analyzed = world.batch(&world.analyzed).await;
    let mut reembeds = analyzed.clone();
    reembeds.records = reembeds.records.split_off(analyzed.records.len() - 2);
    assert_eq!(redelivered(&embed(&s, &reembeds).await), Vec::<String>::new());
    let status: String = sqlx::query_scalar("SELECT embedding_status FROM items WHERE file_path = 'streams-u1/a.jpg'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(status, "failed");
    sqlx::query("UPDATE items SET embedding_status = 'done', last_error = NULL").execute(&pool).await.unwrap();
    let next = |version| (version, "local-hashing-v1@384".to_owned(), 384);
    assert_eq!(vectors(&pool).await, [active(2), active(2), next(2), next(2)]);
    let again = reembed_on_stream(&pool, &writer(&world.analyzed), "local-hashing-v1@384", None, 1000.0).await.unwrap();
    assert_eq!(again, 0, "nothing is left to embed");

    // An embedder deployed without that re-embed model fails those records
    // alone, permanently: listed with the reason as failed records (not
    // redelivered), while the items keep their embedding by the active model.
    let without = Stages {
        embedder: Embedder::new(
            pool.clone(),
            Arc::new(embedding::local::LocalEmbedder::default()),
            EmbedderConfig::from_env(&Env::from_pairs([])).unwrap(),
        ),
        ..stages(&world, &pool)
    };
    assert_eq!(redelivered(&embed(&without, &analyzed).await), Vec::<String>::new());
    let listed = store::status::record_failure_list(&pool, Some("streams-u1"), 10).await.unwrap();
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert!(listed.iter().all(|r| r.reason.contains("no re-embed model is configured (REEMBED_PROVIDER)")));
    assert!(listed.iter().all(|r| r.input.is_some()), "each can be re-sent");
    let statuses: Vec<String> =
        sqlx::query_scalar("SELECT DISTINCT embedding_status FROM items").fetch_all(&pool).await.unwrap();
    assert_eq!(statuses, ["done"]);
}

#[sqlx::test(migrations = "../migrations")]
async fn delete_and_erase_work_against_s3_and_leave_nothing_of_the_user(pool: PgPool) {
    use collections::erase::{Place, delete_keys_in, erase_user_on_s3};
    let world = World::create("erase").await;
    let s = stages(&world, &pool);
    let photos = [
        ("erase-u1/a.jpg", images::jpeg(320, 240, BLUE)),
        ("erase-u1/b.jpg", images::jpeg(320, 240, GREEN)),
        ("erase-u2/c.jpg", images::jpeg(320, 240, ORANGE)),
    ];
    through_every_stage(&world, &s, &photos).await;
    assert_eq!(counts(&pool).await, (3, 3, 3));
    let store = Arc::new(S3Store::new(&world.config));
    let keys_under = |prefix: &'static str| {
        let store = store.clone();
        let bucket = world.bucket.clone();
        async move {
            let page = store.list_page(&bucket, Some(prefix), None, 1000).await.unwrap();
            page.objects.into_iter().map(|o| o.key).collect::<Vec<_>>()
        }
    };

    // delete: the original goes, and at once its item and thumbnail; the
    // "Object Deleted" event that comes later finds nothing left to do.
    let place = Place {
        store: store.clone(),
        bucket: world.bucket.clone(),
        pool: pool.clone(),
        thumbnail: ThumbnailConfig::from_env(&Env::from_pairs([])).unwrap(),
    };
    let said = delete_keys_in(&place, &["erase-u1/a.jpg".to_owned()]).await.unwrap();
    assert_eq!(said, [("erase-u1/a.jpg".to_owned(), "removed the item and erase-u1/thumbnails/a.jpg".to_owned())]);
    assert_eq!(keys_under("erase-u1/").await, ["erase-u1/b.jpg", "erase-u1/thumbnails/b.jpg"]);
    assert_eq!(counts(&pool).await, (2, 2, 2));
    for event in world.published("Object Deleted", 1).await {
        assert_eq!(redelivered(&thumbnail(&s, &alone(&event)).await), Vec::<String>::new());
    }
    assert_eq!(counts(&pool).await, (2, 2, 2));

    // erase: every object and row of the user, nothing of the other.
    let erased = erase_user_on_s3(&store, &pool, &world.bucket, "erase-u1", true).await.unwrap();
    assert_eq!((erased.items, erased.objects), (1, 2));
    assert_eq!(keys_under("erase-u1/").await, Vec::<String>::new());
    assert_eq!(keys_under("erase-u2/").await, ["erase-u2/c.jpg", "erase-u2/thumbnails/c.jpg"]);
    let left: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM items WHERE user_id = 'erase-u1') + (SELECT count(*) FROM analyses WHERE user_id = 'erase-u1')
              + (SELECT count(*) FROM embeddings WHERE user_id = 'erase-u1')
              + (SELECT count(*) FROM record_failures WHERE user_id = 'erase-u1')
              + (SELECT count(*) FROM deleted_objects WHERE key LIKE 'erase-u1/%')",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(left, 0, "no row of the erased user");
    assert_eq!(counts(&pool).await, (1, 1, 1), "the other user keeps everything");
}
