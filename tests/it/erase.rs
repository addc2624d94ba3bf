//! Removing images locally: `collections delete` takes an image's item,
//! analyses, vectors, thumbnail and original; `collections erase --user`
//! leaves nothing of that user for any query, and nothing of anyone else
//! is touched.

use collections::erase::{delete_keys, erase_user};
use collections::ingest::run_folder;
use search::query::search_text;
use sqlx::PgPool;
use test_support::{components, images};

async fn rows_of(pool: &PgPool, user: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM items WHERE user_id = $1) + (SELECT count(*) FROM analyses WHERE user_id = $1)
              + (SELECT count(*) FROM embeddings WHERE user_id = $1)
              + (SELECT count(*) FROM record_failures WHERE user_id = $1)",
    )
    .bind(user)
    .fetch_one(pool)
    .await
    .unwrap()
}

#[sqlx::test(migrations = "../migrations")]
async fn a_deleted_image_and_an_erased_user_leave_nothing_behind(pool: PgPool) {
    let dir = tempfile::tempdir().unwrap();
    let c = components(pool.clone(), &dir.path().join("data"), &[]).await;
    let photos = images::three_photos(dir.path());
    run_folder(&c, &photos, "ann", false).await.unwrap();
    run_folder(&c, &photos, "bob", false).await.unwrap();
    assert_eq!(rows_of(&pool, "ann").await, 9);

    let said = delete_keys(&c, &["ann/a.jpg".to_owned()]).await.unwrap();
    assert_eq!(said, [("ann/a.jpg".to_owned(), "removed the item and ann/thumbnails/a.jpg".to_owned())]);
    assert_eq!(rows_of(&pool, "ann").await, 6);
    assert!(!c.store.path_of("local", "ann/a.jpg").exists());
    assert!(!c.store.path_of("local", "ann/thumbnails/a.jpg").exists());
    let hits = search_text(&pool, c.embedding.as_ref(), "ann", "blue", 20, None).await.unwrap();
    assert!(hits.iter().all(|h| h.key != "ann/a.jpg"));

    // A record failure of Ann's, to see it go too.
    sqlx::query(
        "INSERT INTO record_failures (id, stage, user_id, reason, source, fingerprint)
         VALUES (gen_random_uuid(), 'analysis', 'ann', 'r', 's', 'f')",
    )
    .execute(&pool)
    .await
    .unwrap();
    let erased = erase_user(&c, "ann", true).await.unwrap();
    assert_eq!((erased.items, erased.record_failures), (2, 1));
    assert_eq!(rows_of(&pool, "ann").await, 0);
    for query in ["blue", "green", "photo", "landscape", "a", "orange square"] {
        assert!(search_text(&pool, c.embedding.as_ref(), "ann", query, 100, None).await.unwrap().is_empty());
    }
    let stats = store::stats::gather(&pool, store::stats::Filter { user: Some("ann"), since: None }).await.unwrap();
    assert_eq!((stats.images, stats.statuses.len(), stats.models.len()), (0, 0, 0));
    assert!(store::items::failures(&pool, Some("ann"), 100).await.unwrap().is_empty());
    assert!(!c.store.path_of("local", "ann").exists(), "originals and thumbnails are gone");

    // Bob keeps everything.
    assert_eq!(rows_of(&pool, "bob").await, 9);
    assert!(c.store.path_of("local", "bob/thumbnails/a.jpg").exists());
    assert_eq!(search_text(&pool, c.embedding.as_ref(), "bob", "blue", 20, None).await.unwrap().len(), 3);
}
