//! `collections reanalyze`: new analysis versions of the selected items,
//! embedded in turn, with older versions kept or pruned.

use collections::ingest::run_folder;
use collections::reanalyze::{Selection, reanalyze};
use sqlx::PgPool;
use test_support::components;
use test_support::images::{self, BLUE, GREEN, ORANGE};

/// (key, latest version, analyses, vectors, embedding status) per item, by key.
async fn versions(pool: &PgPool) -> Vec<(String, i32, i64, i64, String)> {
    sqlx::query_as(
        "SELECT i.file_path, (SELECT max(version) FROM analyses a WHERE a.item_id = i.id),
                (SELECT count(*) FROM analyses a WHERE a.item_id = i.id),
                (SELECT count(*) FROM embeddings e WHERE e.item_id = i.id), i.embedding_status
         FROM items i ORDER BY i.file_path",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

#[sqlx::test(migrations = "../migrations")]
async fn new_versions_are_made_and_embedded_for_the_selection_and_older_ones_pruned_on_request(pool: PgPool) {
    let dir = tempfile::tempdir().unwrap();
    let c = components(pool.clone(), &dir.path().join("data"), &[]).await;
    let photos = dir.path().join("photos");
    images::write(&photos, "a.jpg", &images::jpeg(640, 480, BLUE));
    images::write(&photos, "b.jpg", &images::jpeg(480, 640, GREEN));
    images::write(&photos, "c.png", &images::png(300, 300, ORANGE));
    run_folder(&c, &photos, "u", false).await.unwrap();
    run_folder(&c, &photos, "other", false).await.unwrap();

    let report = reanalyze(&c, Selection { user: Some("u"), category: None, not_waiting: false }, false).await.unwrap();
    assert_eq!((report.processed.len(), report.failed.len()), (3, 0), "{report:?}");
    let after = versions(&pool).await;
    for (key, latest, analyses, vectors, status) in &after {
        let expected = if key.starts_with("u/") { (2, 2, 2) } else { (1, 1, 1) };
        assert_eq!((*latest, *analyses, *vectors), expected, "{key}");
        assert_eq!(status, "done", "{key}");
    }

    // Only one category, and the older versions of what was analysed go.
    let (key, category): (String, String) = sqlx::query_as(
        "SELECT i.file_path, a.category FROM items i JOIN analyses a ON a.item_id = i.id
         WHERE i.user_id = 'u' ORDER BY i.file_path, a.version DESC LIMIT 1",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    let same: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM items i WHERE i.user_id = 'u' AND (SELECT category FROM analyses a
         WHERE a.item_id = i.id ORDER BY version DESC LIMIT 1) = $1",
    )
    .bind(&category)
    .fetch_one(&pool)
    .await
    .unwrap();
    reanalyze(&c, Selection { user: Some("u"), category: Some(&category), not_waiting: false }, true).await.unwrap();
    let pruned: Vec<_> = versions(&pool).await.into_iter().filter(|(_, latest, ..)| *latest == 3).collect();
    assert_eq!(pruned.len() as i64, same);
    assert!(pruned.iter().any(|(k, ..)| *k == key));
    for (key, _, analyses, vectors, status) in pruned {
        assert_eq!((analyses, vectors, status.as_str()), (1, 1, "done"), "{key}: only the latest is kept");
    }
}
