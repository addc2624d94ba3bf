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
    assert!(!c.store.path_of("local", "ann/a.jpg").unwrap().exists());
    assert!(!c.store.path_of("local", "ann/thumbnails/a.jpg").unwrap().exists());
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
    assert!(!c.store.path_of("local", "ann").unwrap().exists(), "originals and thumbnails are gone");

    // Bob keeps everything.
    assert_eq!(rows_of(&pool, "bob").await, 9);
    assert!(c.store.path_of("local", "bob/thumbnails/a.jpg").unwrap().exists());
    assert_eq!(search_text(&pool, c.embedding.as_ref(), "bob", "blue", 20, None).await.unwrap().len(), 3);
}

/// `collections delete ../../../victim.txt` deleted a file three folders
/// above the local bucket: keys are now parsed before anything is touched,
/// a bad key is refused alone, and the good key of the same call is deleted.
#[sqlx::test(migrations = "../migrations")]
async fn delete_refuses_keys_that_leave_the_bucket_and_deletes_the_rest(pool: PgPool) {
    let dir = tempfile::tempdir().unwrap();
    let c = components(pool.clone(), &dir.path().join("data"), &[]).await;
    run_folder(&c, &images::three_photos(dir.path()), "ann", false).await.unwrap();
    // Three folders above the bucket `{dir}/data/bucket/local`.
    let victim = dir.path().join("victim.txt");
    std::fs::write(&victim, "keep me").unwrap();
    let keys =
        ["../../../victim.txt", "ann/../../../../victim.txt", "ann/a.jpg", "ann/thumbnails/b.jpg", "ann/\u{1b}[2J.jpg"];
    let said = delete_keys(&c, &keys.map(str::to_owned)).await.unwrap();

    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep me");
    let refused: Vec<&str> =
        said.iter().filter(|(_, what)| what.starts_with("refused")).map(|(k, _)| k.as_str()).collect();
    assert_eq!(refused, [keys[0], keys[1], keys[3], keys[4]]);
    assert!(said[4].1.contains(r"\u{1b}") && !said[4].1.contains('\u{1b}'), "{}", said[4].1);
    assert_eq!(said[2].1, "removed the item and ann/thumbnails/a.jpg");
    assert!(c.store.path_of("local", "ann/thumbnails/b.jpg").unwrap().exists(), "a thumbnail key deletes nothing");
    assert_eq!(rows_of(&pool, "ann").await, 6);
}
