//! A change of embedding model without downtime: `reembed` embeds every
//! latest analysis with the new model (here of another size) beside the
//! active one's vectors; searches answer from the active model all the
//! while; run again it skips what is done; `prune` then removes the old
//! model's vectors, its index and its registration.

use std::time::Duration;

use collections::ingest::run_folder;
use collections::reembed::{prune, reembed};
use search::query::search_text;
use sqlx::PgPool;
use store::models::{self, EmbeddingModel, VectorIndex};
use store::search::SearchHit;
use test_support::components;
use test_support::images::{self, BLUE, GREEN, ORANGE};
use test_support::providers::MockProviders;

fn ranked(hits: &[SearchHit]) -> Vec<(String, Option<i64>)> {
    hits.iter().map(|h| (h.key.clone(), h.semantic_rank)).collect()
}

#[sqlx::test(migrations = "../migrations")]
async fn searches_use_the_active_model_while_another_is_embedded_and_the_old_vectors_go_after(pool: PgPool) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let active = components(pool.clone(), &data, &[]).await;
    let photos = dir.path().join("photos");
    for (n, colour) in [BLUE, GREEN, ORANGE].into_iter().enumerate() {
        images::write(&photos, &format!("p{n}.jpg"), &images::jpeg(640, 480, colour));
    }
    run_folder(&active, &photos, "u", false).await.unwrap();
    let baseline = search_text(&pool, active.embedding.as_ref(), "u", "blue photo", 10, None).await.unwrap();
    assert!(baseline.iter().any(|h| h.semantic_rank.is_some()));

    let mock = MockProviders::start().await;
    mock.set_latency(Duration::from_millis(300));
    let voyage_url = mock.voyage_url();
    let next = components(
        pool.clone(),
        &data,
        &[
            ("EMBEDDING_PROVIDER", "voyage"),
            ("VOYAGE_BASE_URL", &voyage_url),
            ("VOYAGE_API_KEY", "pa-test"),
            ("EMBEDDING_DIMENSIONS", "512"),
            ("COLLECTIONS_BATCH_SIZE", "1"),
        ],
    )
    .await;
    // What `collections reembed` does first: the new model is registered
    // and its index built before its first vector.
    active.prepare_database(true).await.unwrap();
    next.prepare_database(true).await.unwrap();
    let new_model = EmbeddingModel::new("voyage-3.5@512", 512);
    assert_eq!(models::index_state(&pool, &new_model).await.unwrap(), VectorIndex::Valid);
    let running = tokio::spawn({
        let next = next.clone();
        async move { reembed(&next, Some("u"), 100.0).await.unwrap() }
    });
    let mut searched = 0;
    while !running.is_finished() {
        let hits = search_text(&pool, active.embedding.as_ref(), "u", "blue photo", 10, None).await.unwrap();
        assert_eq!(ranked(&hits), ranked(&baseline), "answers come from the active model meanwhile");
        searched += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let report = running.await.unwrap();
    assert_eq!((report.processed.len(), report.failed.len()), (3, 0), "{report:?}");
    assert!(searched > 3, "searched {searched} times during the re-embed");
    let per_model: Vec<(String, i64)> =
        sqlx::query_as("SELECT embedding_model, count(*) FROM embeddings GROUP BY 1 ORDER BY 1")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(per_model, [("local-hashing-v1".to_owned(), 3), ("voyage-3.5@512".to_owned(), 3)]);
    let sizes: Vec<i32> = sqlx::query_scalar(
        "SELECT DISTINCT vector_dims(vector) FROM embeddings WHERE embedding_model = 'voyage-3.5@512'",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(sizes, [512]);
    assert!(mock.requests().iter().all(|r| r.body["output_dimension"] == 512), "the provider is asked for 512");

    // Interrupted or not, running it again embeds nothing twice.
    let calls = mock.requests().len();
    let again = reembed(&next, Some("u"), 100.0).await.unwrap();
    assert_eq!(again.processed.len(), 0);
    assert_eq!(mock.requests().len(), calls, "no request for what is embedded");

    // The switch: searches with the new model find by its vectors; the old ones go.
    let switched = search_text(&pool, next.embedding.as_ref(), "u", "blue photo", 10, None).await.unwrap();
    assert!(switched.iter().any(|h| h.semantic_rank.is_some()));
    let refused = prune(&next, "voyage-3.5@512", None, Duration::ZERO).await.unwrap_err();
    assert!(refused.to_string().contains("is the active embedding model"), "{refused}");
    let recent = prune(&next, "local-hashing-v1", None, Duration::from_secs(900)).await.unwrap_err();
    assert!(recent.to_string().contains("something may still use it"), "{recent}");
    let old_model = EmbeddingModel::new("local-hashing-v1", 1024);
    assert_eq!(models::index_state(&pool, &old_model).await.unwrap(), VectorIndex::Valid);
    assert_eq!(prune(&next, "local-hashing-v1", None, Duration::ZERO).await.unwrap(), 3);
    assert_eq!(models::index_state(&pool, &old_model).await.unwrap(), VectorIndex::Absent, "its index went too");
    assert_eq!(models::registered(&pool).await.unwrap(), vec![new_model]);
    let old = search_text(&pool, active.embedding.as_ref(), "u", "blue photo", 10, None).await.unwrap();
    assert!(old.iter().all(|h| h.semantic_rank.is_none()), "no vector of the old model is left");
    let still = search_text(&pool, next.embedding.as_ref(), "u", "blue photo", 10, None).await.unwrap();
    assert_eq!(ranked(&still), ranked(&switched));
}
