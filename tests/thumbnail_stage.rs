//! The thumbnail stage's batch entry point on real files and a real
//! database: per-item outcomes, bad files failing alone, events only for
//! successes, the same output on a second run, a repeated upload in one
//! batch, and an item id that belongs to another user.

use std::sync::Arc;

use collections_tests::images::{self, BLUE, GREEN};
use shared::bus::LocalBus;
use shared::events::{IMAGE_PROCESSED, ObjectRef, PipelineEvent};
use shared::stage::{BatchContext, Outcome, Stage};
use shared::storage::{FolderStore, ObjectStore};
use sqlx::PgPool;
use thumbnailer::{ThumbnailConfig, ThumbnailOutcome, Thumbnailer};

fn object(key: &str) -> ObjectRef {
    ObjectRef { bucket: "b".into(), key: key.into(), etag: Some("e1".into()), size: None }
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
    let mut objects: Vec<ObjectRef> = files.iter().map(|(k, _)| object(k)).collect();
    objects.push(object("u/thumbnails/photo.jpg"));
    objects.push(object("u/notes.txt"));
    objects.push(object("u/missing.jpg"));

    let outcomes = stage.process(&objects).await;
    let summary: Vec<String> = outcomes
        .iter()
        .map(|o| match o {
            ThumbnailOutcome::Thumbnailed { thumbnail_key, width, height, .. } => {
                format!("{thumbnail_key} {width}x{height}")
            }
            ThumbnailOutcome::Skipped(reason) => format!("skipped: {reason}"),
            ThumbnailOutcome::Failed(f) => {
                format!("failed ({}): {}", if f.retriable { "retriable" } else { "permanent" }, f.reason)
            }
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            "u/thumbnails/photo.jpg 800x600",
            "failed (permanent): the image declares 20000×20000 pixels (400.0 MP), over the limit of 120.0 MP",
            "failed (permanent): the file is empty (0 bytes)",
            "failed (permanent): not a JPEG or PNG image (content starts with bytes 00 8a 19 a3 32 bc 4b d5)",
            "u/thumbnails/wide.PNG 800x100",
            "skipped: key \"u/thumbnails/photo.jpg\" is a thumbnail",
            "skipped: key \"u/notes.txt\" has extension \"txt\"; accepted: jpg, jpeg, png",
            "failed (permanent): s3://b/u/missing.jpg does not exist",
        ]
    );

    let rows: Vec<(String, String, Option<String>)> =
        sqlx::query_as("SELECT file_path, thumbnail_status, last_error FROM items ORDER BY file_path")
            .fetch_all(&pool)
            .await
            .unwrap();
    let statuses: Vec<(&str, &str)> = rows.iter().map(|(k, s, _)| (k.as_str(), s.as_str())).collect();
    assert_eq!(
        statuses,
        vec![
            ("u/bomb.png", "failed"),
            ("u/empty.jpeg", "failed"),
            ("u/missing.jpg", "failed"),
            ("u/noise.png", "failed"),
            ("u/photo.jpg", "done"),
            ("u/wide.PNG", "done")
        ]
    );

    // Through the Stage interface: events for the two successes only, and the same bytes again.
    let first = std::fs::read(store.path_of("b", "u/thumbnails/photo.jpg")).unwrap();
    let outcomes = stage.run_batch(&objects, &BatchContext::default()).await;
    assert_eq!(outcomes.iter().filter(|o| **o == Outcome::Done).count(), 2);
    let mut published = Vec::new();
    while let Ok(PipelineEvent::ImageProcessed(e)) = rx.try_recv() {
        published.push((e.original_key, e.thumbnail_key, e.image.map(|i| (i.width, i.height, i.thumbnail_width))));
    }
    assert_eq!(
        published,
        vec![
            ("u/photo.jpg".into(), "u/thumbnails/photo.jpg".into(), Some((1600, 1200, 800))),
            ("u/wide.PNG".into(), "u/thumbnails/wide.PNG".into(), Some((2400, 300, 800))),
        ]
    );
    assert_eq!(std::fs::read(store.path_of("b", "u/thumbnails/photo.jpg")).unwrap(), first);
}

#[sqlx::test(migrations = "../migrations")]
async fn a_repeated_upload_in_one_batch_is_one_item_and_another_users_id_is_refused(pool: PgPool) {
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
    let first = stage.process(&[alice.clone(), object("alice/cat.jpg"), alice]).await;
    assert!(first.iter().all(|o| matches!(o, ThumbnailOutcome::Thumbnailed { .. })), "{first:?}");

    // Mallory names her upload with Alice's item id: her item fails, Alice's row stays hers.
    let second = stage.process(&[object(&format!("mallory/{id}.jpg")), object("alice/cat.jpg")]).await;
    match &second[0] {
        ThumbnailOutcome::Failed(f) => {
            assert_eq!(f.reason, format!("item id {id} already belongs to another user"));
            assert!(!f.retriable);
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(second[1], ThumbnailOutcome::Thumbnailed { .. }));
    let rows: Vec<(String, String)> =
        sqlx::query_as("SELECT user_id, file_path FROM items ORDER BY file_path").fetch_all(&pool).await.unwrap();
    let expected = vec![("alice".to_owned(), format!("alice/{id}.jpg")), ("alice".into(), "alice/cat.jpg".into())];
    assert_eq!(rows, expected);
}
