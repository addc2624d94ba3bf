//! Identical bytes, analysed once: the same photo under many keys of one
//! user costs one provider call and one vector, and every item ends `done`;
//! search shows it once, with its other keys. Never shared across users.

use collections::ingest::run_folder;
use sqlx::PgPool;
use test_support::components;
use test_support::images::{self, BLUE, GREEN};
use test_support::providers::MockProviders;

async fn paid(pool: &PgPool, data: &std::path::Path, mock: &MockProviders) -> collections::components::Components {
    let (anthropic, voyage) = (mock.anthropic_url(), mock.voyage_url());
    components(
        pool.clone(),
        data,
        &[
            ("ANALYZER_PROVIDER", "anthropic"),
            ("ANTHROPIC_BASE_URL", anthropic.as_str()),
            ("ANTHROPIC_API_KEY", "sk-ant-test"),
            ("EMBEDDING_PROVIDER", "voyage"),
            ("VOYAGE_BASE_URL", voyage.as_str()),
            ("VOYAGE_API_KEY", "pa-test"),
            ("COLLECTIONS_BATCH_SIZE", "16"),
        ],
    )
    .await
}

fn calls(mock: &MockProviders, route: &str) -> usize {
    mock.requests().iter().filter(|r| r.route == route).count()
}

#[sqlx::test(migrations = "../migrations")]
async fn one_photo_under_a_hundred_keys_is_analysed_and_embedded_once(pool: PgPool) {
    let dir = tempfile::tempdir().unwrap();
    let mock = MockProviders::start().await;
    let c = paid(&pool, &dir.path().join("data"), &mock).await;
    let photos = dir.path().join("photos");
    let photo = images::jpeg(640, 480, BLUE);
    for n in 0..100 {
        images::write(&photos, &format!("trip/copy-{n:03}.jpg"), &photo);
    }
    images::write(&photos, "other.jpg", &images::jpeg(640, 480, GREEN));

    let report = run_folder(&c, &photos, "u", false).await.unwrap();
    assert_eq!((report.processed.len(), report.failed.len()), (101, 0), "{report:?}");
    assert_eq!(calls(&mock, "anthropic"), 2, "one call for the photo, one for the other");
    let (analyses, vectors): (i64, i64) =
        sqlx::query_as("SELECT (SELECT count(*) FROM analyses), (SELECT count(*) FROM embeddings)")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!((analyses, vectors), (2, 2));
    let statuses: Vec<(String, String, String, i64)> = sqlx::query_as(
        "SELECT thumbnail_status, analysis_status, embedding_status, count(*) FROM items GROUP BY 1, 2, 3",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(statuses, [("done".into(), "done".into(), "done".into(), 101)]);
    let thumbnails = std::fs::read_dir(c.store.path_of("local", "u/thumbnails/trip").unwrap()).unwrap().count();
    assert_eq!(thumbnails, 100, "each key still has its thumbnail");

    // Search shows the photo once, with its other 99 keys.
    let hits = search::query::search_text(&pool, c.embedding.as_ref(), "u", "photo", 10, None).await.unwrap();
    let keys: Vec<&str> = hits.iter().map(|h| h.key.as_str()).collect();
    assert_eq!(keys.iter().filter(|k| k.starts_with("u/trip/")).count(), 1, "{keys:?}");
    let shown = hits.iter().find(|h| h.key.starts_with("u/trip/")).unwrap();
    assert_eq!(shown.also_keys.len(), 99);
    assert!(!shown.also_keys.contains(&shown.key));
}

#[sqlx::test(migrations = "../migrations")]
async fn the_same_photo_of_two_users_is_analysed_for_each(pool: PgPool) {
    let dir = tempfile::tempdir().unwrap();
    let mock = MockProviders::start().await;
    let c = paid(&pool, &dir.path().join("data"), &mock).await;
    let photos = dir.path().join("photos");
    images::write(&photos, "a.jpg", &images::jpeg(640, 480, BLUE));
    run_folder(&c, &photos, "ann", false).await.unwrap();
    run_folder(&c, &photos, "bob", false).await.unwrap();
    assert_eq!(calls(&mock, "anthropic"), 2);
    let duplicates: i64 =
        sqlx::query_scalar("SELECT count(*) FROM items WHERE duplicate_of IS NOT NULL").fetch_one(&pool).await.unwrap();
    assert_eq!(duplicates, 0);
}
