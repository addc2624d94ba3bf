//! The thumbnail stage, through the batch runner, on real files and a real
//! database: per-item outcomes, bad files failing alone and recorded,
//! events only for successes, nothing redone on a replay, a repeated upload
//! in one batch, and an item id that belongs to another user.

use std::sync::Arc;

use domain::events::{IMAGE_PROCESSED, ObjectRef, PipelineEvent, Upload};
use runtime::batch::BatchContext;
use runtime::bus::LocalBus;
use runtime::runner::{self, Entry, Settled};
use runtime::storage::{FolderStore, ObjectStore};
use sqlx::PgPool;
use test_support::images::{self, BLUE, GREEN};
use thumbnailer::{ThumbnailConfig, ThumbnailOutcome, Thumbnailer};

fn object(key: &str) -> Upload {
    ObjectRef { bucket: "b".into(), key: key.into(), etag: Some("e1".into()), ..ObjectRef::default() }.into()
}

/// Runs a batch as the Lambdas and the local pipeline do; one line per object.
async fn run(stage: &Thumbnailer, pool: &PgPool, uploads: &[Upload]) -> Vec<String> {
    let entries = uploads.iter().map(|u| Entry::readable(u.object.key.clone(), u.clone())).collect();
    let ran = runner::run(stage, pool, entries, BatchContext::default()).await;
    ran.settled
        .into_iter()
        .map(|(_, settled)| match settled {
            Settled::Done => "done".to_owned(),
            Settled::Skipped(reason) => format!("skipped: {reason}"),
            Settled::Queued(reason) => format!("queued: {reason}"),
            Settled::Failed(reason) => format!("failed (recorded): {reason}"),
            Settled::Redeliver(reason) => format!("failed (to deliver again): {reason}"),
            Settled::Halted(reason) => format!("held back (configuration fault): {reason}"),
            Settled::Postponed(reason) => format!("held back (outage): {reason}"),
        })
        .collect()
}

/// A 1-bit PNG declaring 20000×20000 pixels: about 60 KB on disk.
fn png_bomb() -> Vec<u8> {
    let image = image::GrayImage::new(20_000, 20_000);
    images::encode(&image::DynamicImage::ImageLuma8(image), image::ImageFormat::Png)
}

#[sqlx::test(migrations = "../migrations")]
async fn a_batch_with_bad_files_thumbnails_the_good_ones_and_reports_the_rest(pool: PgPool) {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(FolderStore::new(dir.path()));
    let files: Vec<(&str, Vec<u8>)> = vec![
        ("u/photo.jpg", images::jpeg(1600, 1200, BLUE)),
        ("u/bomb.png", png_bomb()),
        ("u/empty.jpeg", vec![]),
        ("u/noise.png", (0..2048u32).map(|i| (i * 7919 % 251) as u8).collect()),
        ("u/wide.PNG", images::png(2400, 300, GREEN)),
    ];
    for (key, bytes) in &files {
        store.put("b", key, bytes.clone(), "application/octet-stream", &[]).await.unwrap();
    }
    let (tx, mut rx) = tokio::sync::mpsc::channel(16);
    let config = ThumbnailConfig { threads: 2, ..ThumbnailConfig::default() };
    let stage =
        Thumbnailer::new(store.clone(), Arc::new(LocalBus::new().route(IMAGE_PROCESSED, tx)), pool.clone(), config)
            .unwrap();
    let mut objects: Vec<Upload> = files.iter().map(|(k, _)| object(k)).collect();
    objects.push(object("u/thumbnails/photo.jpg"));
    objects.push(object("u/notes.txt"));
    objects.push(object("u/missing.jpg"));

    let expected = vec![
        "done",
        "failed (recorded): the image declares 20000×20000 pixels (400.0 MP), over the limit of 120.0 MP",
        "failed (recorded): the file is empty (0 bytes)",
        "failed (recorded): not a JPEG or PNG image (content starts with bytes 00 8a 19 a3 32 bc 4b d5)",
        "done",
        "skipped: key \"u/thumbnails/photo.jpg\" is a thumbnail",
        "skipped: key \"u/notes.txt\" has extension \"txt\"; accepted: jpg, jpeg, png",
        "failed (recorded): s3://b/u/missing.jpg does not exist",
    ];
    assert_eq!(run(&stage, &pool, &objects).await, expected);
    let mut published = Vec::new();
    while let Ok(PipelineEvent::ImageProcessed(e)) = rx.try_recv() {
        published.push((
            e.original_key,
            e.thumbnail_key,
            e.image.map(|i| (i.width, i.height, i.thumbnail_width, i.thumbnail_height)),
        ));
    }
    assert_eq!(
        published,
        vec![
            ("u/photo.jpg".into(), "u/thumbnails/photo.jpg".into(), Some((1600, 1200, 800, 600))),
            ("u/wide.PNG".into(), "u/thumbnails/wide.PNG".into(), Some((2400, 300, 800, 100))),
        ],
        "events for the two successes only"
    );

    let rows: Vec<(String, String, Option<String>, Option<String>)> =
        sqlx::query_as("SELECT file_path, thumbnail_status, failed_stage, last_error FROM items ORDER BY file_path")
            .fetch_all(&pool)
            .await
            .unwrap();
    let statuses: Vec<(&str, &str, Option<&str>)> =
        rows.iter().map(|(k, s, stage, _)| (k.as_str(), s.as_str(), stage.as_deref())).collect();
    assert_eq!(
        statuses,
        vec![
            ("u/bomb.png", "failed", Some("thumbnail")),
            ("u/empty.jpeg", "failed", Some("thumbnail")),
            ("u/missing.jpg", "failed", Some("thumbnail")),
            ("u/noise.png", "failed", Some("thumbnail")),
            ("u/photo.jpg", "done", None),
            ("u/wide.PNG", "done", None)
        ]
    );
    assert_eq!(rows[1].3.as_deref(), Some("the file is empty (0 bytes)"), "the reason is on the row");

    // The same batch again (a replay): the thumbnails of this version are
    // not made again, but, the later stages having work left, they are
    // sent on again; the bad files fail again.
    let thumbnail = store.path_of("b", "u/thumbnails/photo.jpg").unwrap();
    let first = (std::fs::read(&thumbnail).unwrap(), std::fs::metadata(&thumbnail).unwrap().modified().unwrap());
    assert_eq!(run(&stage, &pool, &objects).await, expected);
    let again = (std::fs::read(&thumbnail).unwrap(), std::fs::metadata(&thumbnail).unwrap().modified().unwrap());
    assert_eq!(again, first, "not written again");
    let mut republished = Vec::new();
    while let Ok(PipelineEvent::ImageProcessed(e)) = rx.try_recv() {
        republished.push(e.original_key);
    }
    assert_eq!(republished, ["u/photo.jpg", "u/wide.PNG"]);

    // Once the later stages are done too, a replay is skipped.
    sqlx::query("UPDATE items SET analysis_status = 'done', embedding_status = 'done' WHERE thumbnail_status = 'done'")
        .execute(&pool)
        .await
        .unwrap();
    let third = run(&stage, &pool, &objects).await;
    assert_eq!(third[0], "skipped: already processed (same version)");
    assert_eq!(third[4], "skipped: already processed (same version)");
    assert!(rx.try_recv().is_err(), "nothing published");
}

#[sqlx::test(migrations = "../migrations")]
async fn a_repeated_upload_in_one_batch_is_one_item_and_another_users_upload_of_the_same_name_is_theirs(pool: PgPool) {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(FolderStore::new(dir.path()));
    let id = "0190c6f1-7a3e-7cc1-9a8e-3f6c2b1d4e5a";
    for key in [format!("alice/{id}.jpg"), format!("mallory/{id}.jpg"), "alice/cat.jpg".to_owned()] {
        store.put("b", &key, images::jpeg(400, 300, BLUE), "image/jpeg", &[]).await.unwrap();
    }
    let stage = Thumbnailer::new(
        store.clone(),
        Arc::new(LocalBus::new()),
        pool.clone(),
        ThumbnailConfig { threads: 2, ..ThumbnailConfig::default() },
    )
    .unwrap();
    let alice = object(&format!("alice/{id}.jpg"));
    let context = BatchContext::default();
    let first = stage.process(&[alice.clone(), object("alice/cat.jpg"), alice], &context).await;
    assert!(first.iter().all(|o| matches!(o, ThumbnailOutcome::Thumbnailed { .. })), "{first:?}");

    // Mallory names her upload as Alice named hers: it is Mallory's own item.
    let cat = Upload::from(ObjectRef { etag: Some("e2".into()), ..object("alice/cat.jpg").object });
    let second = stage.process(&[object(&format!("mallory/{id}.jpg")), cat], &context).await;
    assert!(second.iter().all(|o| matches!(o, ThumbnailOutcome::Thumbnailed { .. })), "{second:?}");
    let rows: Vec<(String, String)> =
        sqlx::query_as("SELECT user_id, file_path FROM items ORDER BY file_path").fetch_all(&pool).await.unwrap();
    let expected = vec![
        ("alice".to_owned(), format!("alice/{id}.jpg")),
        ("alice".into(), "alice/cat.jpg".into()),
        ("mallory".into(), format!("mallory/{id}.jpg")),
    ];
    assert_eq!(rows, expected);
}
