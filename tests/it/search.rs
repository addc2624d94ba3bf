//! Hybrid search on real PostgreSQL + pgvector over a small labelled set:
//! the right item first, category filters, tenant isolation, and vectors of
//! another model never compared with the query's.

use domain::analysis::Analysis;
use domain::retry::Retriable;
use domain::settings::Env;
use embedder::EmbedderConfig;
use embedding::EmbeddingProvider;
use search::query::search_text;
use sqlx::PgPool;
use store::search::SearchHit;
use test_support::providers::MockProviders;
use test_support::{FixedSecrets, analysis, seed_items};

/// Five images of `user`, labelled by what each is about.
fn labelled() -> Vec<(&'static str, Analysis)> {
    let mut receipt = analysis("document", "A shop receipt with printed totals", &["receipt", "paper"]);
    receipt.text = vec!["TOTAL 12.50".into(), "THANK YOU".into()];
    let mut beach =
        analysis("landscape", "A sandy beach with turquoise water and palm trees", &["beach", "sea", "palm"]);
    beach.description = "Waves roll onto white sand under a clear sky on a tropical holiday.".into();
    vec![
        ("beach", beach),
        ("cat", analysis("pets", "A ginger cat sleeping on a sofa", &["cat", "pet", "sofa"])),
        ("receipt", receipt),
        ("mountain", analysis("landscape", "Snowy mountain peaks under a blue sky", &["mountain", "snow", "peak"])),
        ("dinner", analysis("food", "A plate of pasta with tomato sauce and basil", &["pasta", "dinner", "italian"])),
    ]
}

/// Seeds the labelled set for `user` and embeds it with `provider`.
async fn seed(pool: &PgPool, user: &str, provider: std::sync::Arc<dyn EmbeddingProvider>) {
    seed_items(pool, user, provider, labelled()).await;
}

fn local() -> std::sync::Arc<dyn EmbeddingProvider> {
    std::sync::Arc::new(embedding::local::LocalEmbedder::default())
}

fn keys(hits: &[SearchHit]) -> Vec<&str> {
    hits.iter().map(|h| h.key.as_str()).collect()
}

#[sqlx::test(migrations = "../migrations")]
async fn each_query_finds_its_image_first(pool: PgPool) {
    seed(&pool, "ann", local()).await;
    let provider = local();
    for (query, expected) in [
        ("sleeping cat", "ann/cat.jpg"),
        ("seaside holiday with palms", "ann/beach.jpg"),
        ("TOTAL 12.50", "ann/receipt.jpg"),
        ("pasta dinner", "ann/dinner.jpg"),
        ("snow on the peaks", "ann/mountain.jpg"),
    ] {
        let hits = search_text(&pool, provider.as_ref(), "ann", query, 5, None).await.unwrap();
        assert_eq!(hits.first().map(|h| h.key.as_str()), Some(expected), "{query:?}: {:?}", keys(&hits));
        let top = &hits[0];
        assert!(top.semantic_rank.is_some() && top.lexical_rank.is_some(), "both lists agree on {query:?}");
        assert_eq!(top.thumbnail_key.as_deref(), Some(expected.replace("ann/", "ann/thumbnails/").as_str()));
        assert!(!top.summary.is_empty());
    }
    let scores: Vec<f64> =
        search_text(&pool, provider.as_ref(), "ann", "sky", 5, None).await.unwrap().iter().map(|h| h.score).collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "ranked by score: {scores:?}");
}

#[sqlx::test(migrations = "../migrations")]
async fn full_text_ranks_the_items_with_every_word_first_then_those_with_some(pool: PgPool) {
    // Both words, but only in the description (weight B).
    let mut both = analysis("pets", "An animal resting", &["pet"]);
    both.description = "A cat on a sofa.".into();
    let items = vec![
        ("both", both),
        ("cats", analysis("pets", "Cat, cat and cat: a cat", &["cat", "kitten cat"])),
        ("sofa", analysis("furniture", "A sofa", &["furniture"])),
        ("snow", analysis("landscape", "Snowy peaks", &["mountain"])),
    ];
    seed_items(&pool, "lex", local(), items).await;
    // Ranked by one list of either word, "cats" would come first.
    let rank = |key: &'static str| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, f32>(
                "SELECT ts_rank(a.search_vector, websearch_to_tsquery('english', 'cat or sofa')) \
                 FROM analyses a JOIN items i ON i.id = a.item_id WHERE i.file_path = $1",
            )
            .bind(key)
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    assert!(rank("lex/cats.jpg").await > rank("lex/both.jpg").await);

    let hits = search_text(&pool, local().as_ref(), "lex", "cat sofa", 5, None).await.unwrap();
    let mut lexical: Vec<(i64, &str)> = hits.iter().filter_map(|h| Some((h.lexical_rank?, h.key.as_str()))).collect();
    lexical.sort();
    assert_eq!(lexical.first(), Some(&(1, "lex/both.jpg")), "{lexical:?}");
    let rest: std::collections::BTreeSet<&str> = lexical[1..].iter().map(|(_, key)| *key).collect();
    assert_eq!(rest, ["lex/cats.jpg", "lex/sofa.jpg"].into(), "the items with one of the words follow");
}

#[sqlx::test(migrations = "../migrations")]
async fn the_category_filter_keeps_only_that_category(pool: PgPool) {
    seed(&pool, "ann", local()).await;
    let hits = search_text(&pool, local().as_ref(), "ann", "blue sky sea", 10, Some("landscape")).await.unwrap();
    let mut found = keys(&hits);
    found.sort();
    assert_eq!(found, vec!["ann/beach.jpg", "ann/mountain.jpg"], "both landscapes, and nothing else");
    assert!(hits.iter().all(|h| h.category == "landscape"));
}

#[sqlx::test(migrations = "../migrations")]
async fn a_filtered_search_finds_a_rare_category_beyond_the_nearest_of_all(pool: PgPool) {
    seed(&pool, "ann", local()).await;
    // Thirty more beach photos: the nearest vectors to a beach query, all landscapes.
    let beaches: Vec<(String, Analysis)> = (0..30)
        .map(|i| (format!("beach{i}"), analysis("landscape", "A sandy beach by the sea", &["beach", "sea", "sand"])))
        .collect();
    seed_items(&pool, "ann", local(), beaches).await;
    let hits = search_text(&pool, local().as_ref(), "ann", "beach sea sand", 5, Some("document")).await.unwrap();
    assert_eq!(keys(&hits), vec!["ann/receipt.jpg"], "the only document, however far from the query");
}

#[sqlx::test(migrations = "../migrations")]
async fn one_user_never_sees_another_users_items(pool: PgPool) {
    seed(&pool, "ann", local()).await;
    seed(&pool, "bob", local()).await;
    for query in ["cat", "beach", "TOTAL", "pasta mountain receipt"] {
        let hits = search_text(&pool, local().as_ref(), "bob", query, 20, None).await.unwrap();
        assert!(!hits.is_empty());
        assert!(hits.iter().all(|h| h.key.starts_with("bob/")), "{query}: {:?}", keys(&hits));
    }
    assert!(search_text(&pool, local().as_ref(), "carol", "cat", 20, None).await.unwrap().is_empty());
}

#[sqlx::test(migrations = "../migrations")]
async fn vectors_of_another_model_are_never_compared_with_the_query(pool: PgPool) {
    // Embedded by "voyage-3.5" (served by the mock), searched with the local model.
    let mock = MockProviders::start().await;
    let url = mock.voyage_url();
    let config =
        EmbedderConfig::from_env(&Env::from_pairs([("EMBEDDING_PROVIDER", "voyage"), ("VOYAGE_BASE_URL", &url)]))
            .unwrap();
    let secrets = FixedSecrets([("VOYAGE_API_KEY".to_owned(), "k".to_owned())].into());
    let voyage = config.active.build(&secrets).await.unwrap();
    seed(&pool, "ann", voyage.clone()).await;

    let hits = search_text(&pool, local().as_ref(), "ann", "sleeping cat", 5, None).await.unwrap();
    assert_eq!(keys(&hits), vec!["ann/cat.jpg"], "full text still finds it");
    assert_eq!(hits[0].semantic_rank, None, "but no vector of voyage-3.5 was compared with a local-hashing-v1 query");

    let hits = search_text(&pool, voyage.as_ref(), "ann", "sleeping cat", 5, None).await.unwrap();
    assert_eq!(hits[0].key, "ann/cat.jpg");
    assert_eq!(hits[0].semantic_rank, Some(1));
    let query = mock.requests().into_iter().last().unwrap();
    assert_eq!(query.body["input_type"], "query", "queries are embedded as queries");
}

#[sqlx::test(migrations = "../migrations")]
async fn each_model_has_its_own_index_which_can_be_dropped_rebuilt_and_resumed(pool: PgPool) {
    use store::models::{self, EmbeddingModel, VectorIndex};
    assert_eq!(models::registered(&pool).await.unwrap(), vec![], "nothing is registered before a vector is stored");
    seed(&pool, "ann", local()).await;
    let model = EmbeddingModel::new("local-hashing-v1", 1024);
    assert_eq!(models::registered(&pool).await.unwrap(), vec![model.clone()], "storing registers the model");
    assert_eq!(models::index_state(&pool, &model).await.unwrap(), VectorIndex::Absent);
    let hits = search_text(&pool, local().as_ref(), "ann", "sleeping cat", 3, None).await.unwrap();
    assert_eq!(hits[0].key, "ann/cat.jpg", "search works without the index");
    models::build_indexes(&pool, 64).await.unwrap();
    assert_eq!(models::index_state(&pool, &model).await.unwrap(), VectorIndex::Valid);
    let hits = search_text(&pool, local().as_ref(), "ann", "sleeping cat", 3, None).await.unwrap();
    assert_eq!(hits[0].key, "ann/cat.jpg");

    // What an interrupted build leaves: the index declared on the parent, a
    // partition's graph built invalid (a failed CONCURRENTLY build) and the
    // others missing. The next build drops the invalid one and ends the job.
    models::drop_index(&pool, &model).await.unwrap();
    assert_eq!(models::index_state(&pool, &model).await.unwrap(), VectorIndex::Absent);
    let name = model.index_name();
    let graph = "USING hnsw ((vector::halfvec(1024)) halfvec_cosine_ops) WHERE embedding_model = 'local-hashing-v1'";
    for statement in [
        format!("CREATE INDEX {name} ON ONLY embeddings {graph}"),
        format!("CREATE INDEX {name}_p00 ON embeddings_p00 {graph}"),
        format!("UPDATE pg_index SET indisvalid = false WHERE indexrelid = '{name}_p00'::regclass"),
    ] {
        sqlx::query(&statement).execute(&pool).await.unwrap();
    }
    assert_eq!(models::index_state(&pool, &model).await.unwrap(), VectorIndex::Partial);
    models::build_index(&pool, &model, 64, None).await.unwrap();
    assert_eq!(models::index_state(&pool, &model).await.unwrap(), VectorIndex::Valid);
    let graphs: Vec<(String, bool)> = sqlx::query_as(
        "SELECT c.relname::text, i.indisvalid FROM pg_inherits h JOIN pg_class c ON c.oid = h.inhrelid
         JOIN pg_index i ON i.indexrelid = c.oid WHERE h.inhparent = $1::regclass ORDER BY 1",
    )
    .bind(&name)
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(graphs.len(), 32, "one graph per partition");
    assert!(graphs.iter().all(|(_, valid)| *valid), "{graphs:?}");
}

#[sqlx::test(migrations = "../migrations")]
async fn a_vector_of_another_size_than_its_models_fails_alone_with_a_reason(pool: PgPool) {
    use store::embeddings::{EmbeddingBatch, store_batch};
    let mut rows = Vec::new();
    for key in ["u/a.jpg", "u/b.jpg", "u/c.jpg"] {
        let (item, analysis) =
            test_support::seed_analysis(&pool, key, &test_support::analysis("other", "A", &[])).await;
        rows.push(test_support::embedding_row(item, analysis));
    }
    rows[1].vector = store::Vector::from(vec![0.5; 768]);
    // As the embedder's start (or the migrator) registers its model.
    store::models::register(&pool, &store::models::EmbeddingModel::new("m", 1024)).await.unwrap();
    let refused = store_batch(&pool, &EmbeddingBatch { new: rows.clone(), ..EmbeddingBatch::default() }).await.unwrap();
    let reasons: Vec<(uuid::Uuid, String)> = refused.into_iter().map(|(item, _, why)| (item, why)).collect();
    assert_eq!(reasons, vec![(rows[1].item_id, "m stores 1024-dimension vectors; this one has 768".to_owned())]);
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM embeddings").fetch_one(&pool).await.unwrap();
    assert_eq!(stored, 2, "the rest of the batch is stored");
}

/// A write to a table another session has locked fails within the
/// session's lock timeout, retriably, instead of waiting for ever.
#[sqlx::test(migrations = "../migrations")]
async fn a_batch_write_blocked_by_a_lock_fails_fast_and_retriably(pool: PgPool) {
    use store::embeddings::{EmbeddingBatch, store_batch};
    let (item, analysis_id) =
        test_support::seed_analysis(&pool, "u/a.jpg", &test_support::analysis("other", "A", &[])).await;
    // A pool as the stages make it, on this test's database, with a short lock timeout.
    let base = std::env::var("DATABASE_URL").expect("DATABASE_URL is set for the tests");
    let database = pool.connect_options().get_database().expect("the test database").to_owned();
    let url = format!("{}/{database}?options=-c%20lock_timeout%3D1s", &base[..base.rfind('/').unwrap()]);
    let config = store::config::DatabaseConfig { url, max_connections: 2 };
    let guarded = store::connect(&config).await.unwrap();
    let timeouts: (String, String) =
        sqlx::query_as("SELECT current_setting('lock_timeout'), current_setting('statement_timeout')")
            .fetch_one(&guarded)
            .await
            .unwrap();
    assert_eq!(timeouts, ("1s".to_owned(), "1min".to_owned()), "the URL's setting wins; the other is the default");

    let mut holder = pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE embeddings IN ACCESS EXCLUSIVE MODE").execute(&mut *holder).await.unwrap();
    let row = test_support::embedding_row(item, analysis_id);
    let started = std::time::Instant::now();
    let err = store_batch(&guarded, &EmbeddingBatch { new: vec![row], ..EmbeddingBatch::default() }).await.unwrap_err();
    assert!(started.elapsed() < std::time::Duration::from_secs(5), "failed after {:?}", started.elapsed());
    assert!(err.is_retriable(), "{err}");
    assert!(err.to_string().contains("lock timeout"), "{err}");
    holder.rollback().await.unwrap();
}

/// `n` items of `user` with random dense vectors of model `m` (as if
/// embedded), written in bulk.
async fn random_items(pool: &PgPool, user: &str, n: i32) {
    for statement in [
        "INSERT INTO embedding_models (model, dimensions) SELECT 'm', 1024 WHERE $1 <> '' AND $2 > 0
         ON CONFLICT DO NOTHING",
        "INSERT INTO items (id, user_id, filename, file_path, bucket, thumbnail_status, analysis_status, embedding_status)
         SELECT collections_item_id($1 || '/r' || g || '.jpg'), $1, 'r' || g || '.jpg', $1 || '/r' || g || '.jpg',
                'local', 'done', 'done', 'done'
         FROM generate_series(1, $2) g",
        "INSERT INTO analyses (id, item_id, user_id, version, category, summary, analysis, raw_response,
                               provider_used, model_used, request_key)
         SELECT gen_random_uuid(), id, user_id, 1, 'other', 'random', '{}', '{}', 'test', 'test', file_path
         FROM items WHERE user_id = $1 AND $2 > 0",
        "INSERT INTO embeddings (id, item_id, analysis_id, user_id, vector, embedding_model, embedding_dimensions,
                                 embedding_source)
         SELECT gen_random_uuid(), a.item_id, a.id, a.user_id,
                ARRAY(SELECT random() - 0.5 FROM generate_series(1, 1024) WHERE a.id IS NOT NULL)::vector,
                'm', 1024, '{}'
         FROM analyses a WHERE a.user_id = $1 AND $2 > 0",
    ] {
        sqlx::query(statement).bind(user).bind(n).execute(pool).await.unwrap();
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn small_users_are_searched_exactly_large_ones_by_the_index_and_both_rank_by_distance(pool: PgPool) {
    use store::search::{EXACT_SEARCH_MAX_ROWS, SearchQuery, search};
    random_items(&pool, "big", (EXACT_SEARCH_MAX_ROWS + 500) as i32).await;
    random_items(&pool, "small", 300).await;
    random_items(&pool, "others", 2000).await;
    sqlx::query("ANALYZE").execute(&pool).await.unwrap();
    let model = store::models::EmbeddingModel::new("m", 1024);
    store::models::build_index(&pool, &model, 64, None).await.unwrap();

    // The large user's search goes through the model's own index.
    let [_, indexed] = store::search::search_queries(&model);
    let probe = store::Vector::from(vec![0.03; 1024]);
    let mut tx = pool.begin().await.unwrap();
    sqlx::query("SET LOCAL enable_sort = off").execute(&mut *tx).await.unwrap();
    let plan: Vec<String> = sqlx::query_scalar(&format!("EXPLAIN {indexed}"))
        .bind("big")
        .bind(&probe)
        .bind("m")
        .bind(1024)
        .bind("zzzzqx")
        .bind(None::<String>)
        .bind(80_i64)
        .bind(60.0_f64)
        .bind(20_i64)
        .bind("zzzzqx")
        .fetch_all(&mut *tx)
        .await
        .unwrap();
    assert!(plan.iter().any(|line| line.contains(&model.index_name())), "{}", plan.join("\n"));
    // So does the plan searches run: the generic one, made once per connection.
    let generic: Vec<String> = sqlx::raw_sql(&format!("EXPLAIN (GENERIC_PLAN) {indexed}"))
        .fetch_all(&mut *tx)
        .await
        .unwrap()
        .iter()
        .map(|row| sqlx::Row::get(row, 0))
        .collect();
    assert!(generic.iter().any(|line| line.contains(&model.index_name())), "{}", generic.join("\n"));
    tx.rollback().await.unwrap();

    for user in ["big", "small"] {
        // Queries near stored vectors: each one's own item must come first,
        // and the ranks must follow the exact distances (a relaxed-order index
        // scan returns rows only nearly in order).
        let targets: Vec<(uuid::Uuid, Vec<f32>)> = sqlx::query_as::<_, (uuid::Uuid, store::Vector)>(
            "SELECT item_id, vector FROM embeddings WHERE user_id = $1 ORDER BY id LIMIT 15",
        )
        .bind(user)
        .fetch_all(&pool)
        .await
        .unwrap()
        .into_iter()
        .map(|(id, v)| (id, v.as_slice().to_vec()))
        .collect();
        for (n, (target, vector)) in targets.into_iter().enumerate() {
            let noisy: Vec<f32> =
                vector.iter().enumerate().map(|(i, x)| x + if (i + n) % 7 == 0 { 0.01 } else { -0.005 }).collect();
            let query_vector = store::Vector::from(noisy);
            let query = SearchQuery {
                user_id: user,
                text: "zzzzqx",
                vector: &query_vector,
                model: "m",
                limit: 20,
                category: None,
            };
            let hits = search(&pool, &query).await.unwrap();
            assert_eq!(hits.len(), 20, "{user}");
            assert!(hits.iter().all(|h| h.key.starts_with(&format!("{user}/"))));
            assert_eq!(hits[0].item_id, target, "{user}: the nearest is the query's own item");
            let ids: Vec<uuid::Uuid> = hits.iter().map(|h| h.item_id).collect();
            let distances: Vec<f64> = sqlx::query_scalar(
                "SELECT e.vector <=> $2 FROM unnest($1::uuid[]) WITH ORDINALITY AS t(id, ord)
                 JOIN embeddings e ON e.item_id = t.id ORDER BY t.ord",
            )
            .bind(&ids)
            .bind(&query_vector)
            .fetch_all(&pool)
            .await
            .unwrap();
            let ranks: Vec<Option<i64>> = hits.iter().map(|h| h.semantic_rank).collect();
            assert_eq!(ranks, (1..=20).map(Some).collect::<Vec<_>>(), "{user}");
            assert!(distances.windows(2).all(|w| w[0] <= w[1]), "{user}: ranked out of distance order: {distances:?}");
        }
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn a_large_user_sharing_a_partition_with_a_larger_crowd_still_gets_a_full_page(pool: PgPool) {
    use store::search::{EXACT_SEARCH_MAX_ROWS, SearchQuery, search};
    // A user just past the exact path, and one five times larger in the
    // same partition: the graph's nearest rows are mostly the crowd's, so
    // only a scan that goes on past them (the transaction's iterative scan)
    // fills the page.
    let partition = |user: String| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i32>(
                "SELECT r FROM generate_series(0, 31) r \
                 WHERE satisfies_hash_partition('embeddings'::regclass, 32, r, $1::text)",
            )
            .bind(user)
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    let shared = partition("big".to_owned()).await;
    let mut crowd = None;
    for n in 0.. {
        if partition(format!("crowd-{n}")).await == shared {
            crowd = Some(format!("crowd-{n}"));
            break;
        }
    }
    random_items(&pool, "big", (EXACT_SEARCH_MAX_ROWS + 100) as i32).await;
    random_items(&pool, &crowd.unwrap(), (5 * EXACT_SEARCH_MAX_ROWS) as i32).await;
    sqlx::query("ANALYZE").execute(&pool).await.unwrap();
    store::models::build_index(&pool, &store::models::EmbeddingModel::new("m", 1024), 64, None).await.unwrap();

    for seed in 0..5 {
        let vector =
            store::Vector::from((0..1024).map(|i| ((i * 7 + seed * 13) % 17) as f32 - 8.0).collect::<Vec<_>>());
        let query =
            SearchQuery { user_id: "big", text: "zzzzqx", vector: &vector, model: "m", limit: 20, category: None };
        let hits = search(&pool, &query).await.unwrap();
        assert_eq!(hits.len(), 20, "query {seed}");
        assert!(hits.iter().all(|h| h.key.starts_with("big/")));
    }
}

/// Whether a window function numbers the `nearest` rows in the order they
/// come, without sorting them first.
fn numbers_unsorted(plan: &serde_json::Value) -> bool {
    let children = plan["Plans"].as_array().cloned().unwrap_or_default();
    let unsorted = plan["Node Type"] == "WindowAgg"
        && children.first().is_some_and(|c| c["Node Type"] == "CTE Scan" && c["CTE Name"] == "nearest");
    unsorted || children.iter().any(numbers_unsorted)
}

#[sqlx::test(migrations = "../migrations")]
async fn the_semantic_ranks_are_numbered_after_a_sort_not_in_index_order(pool: PgPool) {
    // With `hnsw.iterative_scan = relaxed_order` the index returns rows only
    // nearly in distance order; numbering them as they come ranked far rows
    // first on 100 000 vectors. The plan must sort before numbering.
    sqlx::query("SET hnsw.iterative_scan = relaxed_order").execute(&pool).await.unwrap();
    for sql in store::search::search_queries(&store::models::EmbeddingModel::new("m", 1024)) {
        // The simple protocol: a generic plan has parameters no one binds.
        let explain = format!("EXPLAIN (GENERIC_PLAN, FORMAT JSON) {sql}");
        let row = sqlx::raw_sql(&explain).fetch_one(&pool).await.unwrap();
        let plan: serde_json::Value = sqlx::Row::try_get(&row, 0).unwrap();
        assert!(!numbers_unsorted(&plan[0]["Plan"]), "{plan:#}");
    }
}

/// Search at scale, the small set: Zipf-sized users on one table. Every
/// bucket of user sizes must find its exact nearest ten (recall@10 ≥ 0.95);
/// the full set and its latencies are `search-scale`'s (benches/README.md).
#[sqlx::test(migrations = "../migrations")]
async fn users_of_every_size_find_their_nearest_ten(pool: PgPool) {
    use test_support::scale::{measure, seed, zipf_sizes};
    let sizes = zipf_sizes(12_000, 120);
    seed(&pool, &sizes).await.unwrap();
    let buckets = measure(&pool, &sizes, 12).await.unwrap();
    assert_eq!(buckets.len(), 4, "{buckets:?}");
    for b in buckets {
        assert!(b.recall >= 0.95, "{}: recall@10 {:.3}", b.name, b.recall);
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn only_each_items_highest_version_is_flagged_latest_whatever_is_added_or_removed(pool: PgPool) {
    let a = analysis("pets", "A cat", &["cat"]);
    let (item, first) = test_support::seed_analysis(&pool, "u/cat.jpg", &a).await;
    let (other, _) = test_support::seed_analysis(&pool, "u/dog.jpg", &a).await;
    let version = |v: i32| {
        let pool = pool.clone();
        async move {
            sqlx::query(
                "INSERT INTO analyses (id, item_id, user_id, version, category, summary, analysis, raw_response, \
                 provider_used, model_used, request_key) \
                 SELECT gen_random_uuid(), item_id, user_id, $2, category, summary, analysis, raw_response, \
                 provider_used, model_used, request_key || $2 FROM analyses WHERE id = $1",
            )
            .bind(first)
            .bind(v)
            .execute(&pool)
            .await
            .unwrap();
        }
    };
    // Every analysis gets a vector as it comes (the vectors' flags follow
    // their analyses').
    sqlx::query("INSERT INTO embedding_models (model, dimensions) VALUES ('m', 3)").execute(&pool).await.unwrap();
    let embed = || {
        sqlx::query(
            "INSERT INTO embeddings (id, item_id, analysis_id, user_id, vector, embedding_model, \
             embedding_dimensions, embedding_source) \
             SELECT gen_random_uuid(), a.item_id, a.id, a.user_id, '[1,0,0]', 'm', 3, '{}' FROM analyses a \
             WHERE NOT EXISTS (SELECT 1 FROM embeddings e WHERE e.analysis_id = a.id)",
        )
        .execute(&pool)
    };
    // (item, version) pairs that a query lists.
    let pairs = |sql: &'static str| {
        let pool = pool.clone();
        async move { sqlx::query_as::<_, (uuid::Uuid, i32)>(sql).fetch_all(&pool).await.unwrap() }
    };
    let latest_vectors = || {
        pairs(
            "SELECT e.item_id, a.version FROM embeddings e JOIN analyses a ON a.id = e.analysis_id \
             WHERE e.is_latest ORDER BY e.item_id, a.version",
        )
    };
    // The flagged analyses, and each item's full-text document (its latest analysis's).
    let latest = || async {
        (
            pairs("SELECT item_id, version FROM analyses WHERE is_latest ORDER BY item_id, version").await,
            pairs(
                "SELECT d.item_id, a.version FROM search_documents d JOIN analyses a ON a.id = d.analysis_id \
                 WHERE a.search_vector = d.search_vector AND a.category = d.category ORDER BY d.item_id",
            )
            .await,
        )
    };
    let expected = |v: i32| {
        let mut rows = vec![(item, v), (other, 1)];
        rows.sort();
        rows
    };
    let both = |v: i32| (expected(v), expected(v));
    embed().await.unwrap();
    assert_eq!(latest().await, both(1));
    assert_eq!(latest_vectors().await, expected(1));
    version(3).await;
    assert_eq!(latest().await, both(3));
    assert_eq!(latest_vectors().await, vec![(other, 1)], "the superseded analysis's vector no longer counts");
    embed().await.unwrap();
    assert_eq!(latest_vectors().await, expected(3));
    version(2).await; // an older version arriving late
    embed().await.unwrap();
    assert_eq!(latest().await, both(3));
    assert_eq!(latest_vectors().await, expected(3), "a late older version's vector is written unflagged");
    sqlx::query("DELETE FROM analyses WHERE item_id = $1 AND version = 3").bind(item).execute(&pool).await.unwrap();
    assert_eq!(latest().await, both(2), "the next highest takes over");
    assert_eq!(latest_vectors().await, expected(2));
    sqlx::query("UPDATE analyses SET version = 9 WHERE item_id = $1 AND version = 1")
        .bind(item)
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(latest().await, both(9));
    assert_eq!(latest_vectors().await, expected(9));
    sqlx::query("UPDATE analyses SET category = 'dogs' WHERE item_id = $1 AND version = 9")
        .bind(item)
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(latest().await, both(9), "the document follows a change of its analysis");
}
