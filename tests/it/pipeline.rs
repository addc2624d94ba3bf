//! The whole local pipeline against real PostgreSQL + pgvector: rows per
//! image, replays adding nothing, bad files failing alone, search ranking
//! and tenant isolation.

#![allow(clippy::type_complexity)] // rows are compared as tuples
use collections::ingest::run_folder;
use embedding::local::LocalEmbedder;
use sqlx::PgPool;
use store::Vector;
use store::search::{SearchQuery, search};
use test_support::images::{self, BLUE, GREEN, ORANGE, PINK};
use test_support::{components, counts};

async fn search_keys(pool: &PgPool, user: &str, text: &str) -> Vec<String> {
    let vector = Vector::from(LocalEmbedder::embed_text(text));
    let query =
        SearchQuery { user_id: user, text, vector: &vector, model: "local-hashing-v1", limit: 10, category: None };
    search(pool, &query).await.unwrap().into_iter().map(|h| h.key).collect()
}

#[sqlx::test(migrations = "../migrations")]
async fn every_good_image_gets_one_item_analysis_and_embedding(pool: PgPool) {
    let work = tempfile::tempdir().unwrap();
    let photos = work.path().join("photos");
    images::write(&photos, "blue.jpg", &images::jpeg(1200, 900, BLUE));
    images::write(&photos, "trip/green.PNG", &images::png(300, 500, GREEN));
    images::write(&photos, "notes.txt", b"not an image");
    let c = components(pool.clone(), &work.path().join("data"), &[]).await;

    let report = run_folder(&c, &photos, "alice", false).await.unwrap();
    assert_eq!(report.processed, vec!["alice/blue.jpg", "alice/trip/green.PNG"]);
    assert_eq!(report.skipped, vec![("alice/notes.txt".to_owned(), "not a .jpg, .jpeg or .png file".to_owned())]);
    assert!(report.failed.is_empty(), "{:?}", report.failed);

    let rows: Vec<(String, String, Option<String>, Option<i32>, Option<i32>, String)> = sqlx::query_as(
        "SELECT file_path, user_id, thumbnail_key, width, height, embedding_status FROM items ORDER BY file_path",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        rows,
        vec![
            (
                "alice/blue.jpg".into(),
                "alice".into(),
                Some("alice/thumbnails/blue.jpg".into()),
                Some(1200),
                Some(900),
                "done".into()
            ),
            (
                "alice/trip/green.PNG".into(),
                "alice".into(),
                Some("alice/thumbnails/trip/green.PNG".into()),
                Some(300),
                Some(500),
                "done".into()
            ),
        ]
    );
    let per_item: Vec<(String, i64, i64, Option<i32>, bool)> = sqlx::query_as(
        r#"SELECT i.file_path, count(DISTINCT a.id), count(DISTINCT e.id), max(e.embedding_dimensions),
                  bool_and(a.user_id = 'alice' AND e.user_id = 'alice' AND vector_dims(e.vector) = 1024)
           FROM items i JOIN analyses a ON a.item_id = i.id JOIN embeddings e ON e.analysis_id = a.id
           GROUP BY i.file_path ORDER BY 1"#,
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        per_item,
        vec![
            ("alice/blue.jpg".into(), 1, 1, Some(1024), true),
            ("alice/trip/green.PNG".into(), 1, 1, Some(1024), true)
        ]
    );

    let thumbnail = image::open(c.store.path_of("local", "alice/thumbnails/blue.jpg").unwrap()).unwrap();
    assert_eq!((thumbnail.width(), thumbnail.height()), (800, 600));
    let summary: String = sqlx::query_scalar(
        "SELECT summary FROM analyses a JOIN items i ON i.id = a.item_id WHERE i.file_path = 'alice/blue.jpg'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(summary.contains("blue"), "{summary}");
}

#[sqlx::test(migrations = "../migrations")]
async fn a_second_run_adds_no_rows(pool: PgPool) {
    let work = tempfile::tempdir().unwrap();
    let photos = work.path().join("photos");
    images::write(&photos, "a.jpg", &images::jpeg(640, 480, ORANGE));
    images::write(&photos, "b.png", &images::png(64, 64, PINK));
    let c = components(pool.clone(), &work.path().join("data"), &[]).await;

    run_folder(&c, &photos, "bob", false).await.unwrap();
    let after_first = counts(&pool).await;
    assert_eq!(after_first, (2, 2, 2));

    let again = run_folder(&c, &photos, "bob", false).await.unwrap();
    assert_eq!(again.skipped.len(), 2, "{again:?}");
    assert_eq!(counts(&pool).await, after_first);

    // Forced: every stage runs again, and the idempotency keys keep the rows as they were.
    let forced = run_folder(&c, &photos, "bob", true).await.unwrap();
    assert_eq!(forced.processed.len(), 2, "{forced:?}");
    assert_eq!(counts(&pool).await, after_first);
}

#[sqlx::test(migrations = "../migrations")]
async fn corrupt_and_empty_files_fail_alone_with_a_reason(pool: PgPool) {
    let work = tempfile::tempdir().unwrap();
    let photos = work.path().join("photos");
    images::write(&photos, "good.jpg", &images::jpeg(320, 240, BLUE));
    images::write(&photos, "empty.jpg", b"");
    let mut corrupt = images::jpeg(320, 240, GREEN);
    corrupt.truncate(corrupt.len() / 2);
    images::write(&photos, "corrupt.jpg", &corrupt);
    images::write(&photos, "text.png", b"hello, I am not a PNG");
    let c = components(pool.clone(), &work.path().join("data"), &[]).await;

    let report = run_folder(&c, &photos, "carol", false).await.unwrap();
    assert_eq!(report.processed, vec!["carol/good.jpg"]);
    let failed: Vec<&str> = report.failed.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(failed, vec!["carol/corrupt.jpg", "carol/empty.jpg", "carol/text.png"]);

    let listed = store::items::failures(&pool, Some("carol"), 10).await.unwrap();
    let reasons: Vec<(&str, &str, &str)> =
        listed.iter().map(|f| (f.file_path.as_str(), f.failed_stage.as_str(), f.last_error.as_str())).collect();
    let reason_of = |key: &str| reasons.iter().find(|r| r.0 == key).map(|r| (r.1, r.2)).unwrap();
    assert_eq!(reason_of("carol/empty.jpg"), ("thumbnail", "the file is empty (0 bytes)"));
    assert_eq!(reason_of("carol/corrupt.jpg"), ("thumbnail", "the JPEG data is truncated"));
    assert!(reason_of("carol/text.png").1.starts_with("not a JPEG or PNG image"), "{reasons:?}");
    assert_eq!(counts(&pool).await, (4, 1, 1));
}

#[sqlx::test(migrations = "../migrations")]
async fn search_ranks_the_matching_image_first_and_never_crosses_users(pool: PgPool) {
    let work = tempfile::tempdir().unwrap();
    let (dave, erin) = (work.path().join("dave"), work.path().join("erin"));
    images::write(&dave, "sea.jpg", &images::jpeg(800, 400, BLUE));
    images::write(&dave, "forest.jpg", &images::jpeg(400, 800, GREEN));
    images::write(&dave, "sunset.png", &images::png(500, 500, ORANGE));
    images::write(&erin, "lake.jpg", &images::jpeg(800, 400, BLUE));
    let c = components(pool.clone(), &work.path().join("data"), &[]).await;
    run_folder(&c, &dave, "dave", false).await.unwrap();
    run_folder(&c, &erin, "erin", false).await.unwrap();

    let forest_summary: String = sqlx::query_scalar(
        "SELECT a.summary FROM analyses a JOIN items i ON i.id = a.item_id WHERE i.file_path = 'dave/forest.jpg'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(forest_summary.contains("green") && forest_summary.contains("Portrait"), "{forest_summary}");
    assert_eq!(search_keys(&pool, "dave", "green portrait").await.first().map(String::as_str), Some("dave/forest.jpg"));
    assert_eq!(search_keys(&pool, "dave", "orange").await.first().map(String::as_str), Some("dave/sunset.png"));

    let daves = search_keys(&pool, "dave", "blue landscape").await;
    assert_eq!(daves.first().map(String::as_str), Some("dave/sea.jpg"));
    assert!(daves.iter().all(|k| k.starts_with("dave/")), "{daves:?}");
    assert_eq!(search_keys(&pool, "erin", "green portrait orange blue").await, vec!["erin/lake.jpg"]);
    assert!(search_keys(&pool, "nobody", "blue").await.is_empty());
}

#[sqlx::test(migrations = "../migrations")]
async fn a_run_over_the_local_buckets_own_folders_is_refused_and_deletes_nothing(pool: PgPool) {
    let dir = tempfile::tempdir().unwrap();
    let photos = dir.path().join("photos");
    images::write(&photos, "a.jpg", &images::jpeg(320, 240, BLUE));
    let c = components(pool.clone(), &dir.path().join("data"), &[]).await;
    run_folder(&c, &photos, "u", false).await.unwrap();
    let inside = dir.path().join("data/bucket/local/u");
    let original = inside.join("a.jpg");
    let before = std::fs::read(&original).unwrap();
    for folder in [inside.clone(), dir.path().join("data")] {
        let err = run_folder(&c, &folder, "u", false).await.unwrap_err().to_string();
        assert!(err.starts_with("refusing to run over"), "{err}");
    }
    assert_eq!(std::fs::read(&original).unwrap(), before, "the bucket's copy is untouched");
    assert_eq!(counts(&pool).await, (1, 1, 1));
}
