//! Data migrations in `migrations/`, run over rows written before them.

use std::path::{Path, PathBuf};

use domain::keys::item_uuid;
use sqlx::PgPool;
use uuid::Uuid;

/// The migration files, oldest first.
fn migration_files() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../migrations");
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    files
}

fn version_of(file: &Path) -> &str {
    file.file_name().unwrap().to_str().unwrap().split('_').next().unwrap()
}

/// Runs the migration files whose version is in `versions` on the test's database.
async fn migrate(pool: &PgPool, versions: impl Fn(&str) -> bool) {
    for file in migration_files().iter().filter(|f| versions(version_of(f))) {
        sqlx::raw_sql(&std::fs::read_to_string(file).unwrap()).execute(pool).await.unwrap();
    }
}

#[sqlx::test(migrations = false)]
async fn items_named_by_the_first_rule_move_to_their_whole_keys_id_with_their_analyses_and_vectors(pool: PgPool) {
    const WHOLE_KEYS: &str = "20261130000002";
    migrate(&pool, |v| v < WHOLE_KEYS).await;
    // Ids as the first rule gave them: a UUID name was the id itself.
    let stem = "0b7e5c1a-3f55-4d6e-9a0c-55b1f4f1c2d3";
    let rows = [
        (Uuid::new_v4(), "u/trips/beach.png".to_owned()),
        (Uuid::parse_str(stem).unwrap(), format!("u/{stem}.jpg")),
        (Uuid::new_v4(), "ユーザー/写真 1.JPG".to_owned()),
    ];
    for (id, key) in &rows {
        let (user, file) = key.split_once('/').unwrap();
        sqlx::query(
            "INSERT INTO items (id, user_id, filename, file_path, bucket, embedding_status)
             VALUES ($1, $2, $3, $4, 'b', 'done')",
        )
        .bind(id)
        .bind(user)
        .bind(file)
        .bind(key)
        .execute(&pool)
        .await
        .unwrap();
        let analysis = Uuid::now_v7();
        sqlx::query(
            "INSERT INTO analyses (id, item_id, user_id, version, category, summary, analysis, raw_response,
                                   provider_used, model_used, request_key)
             VALUES ($1, $2, $3, 1, 'nature', 's', '{}', '{}', 'local', 'm', $1::text)",
        )
        .bind(analysis)
        .bind(id)
        .bind(user)
        .execute(&pool)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO embeddings (id, item_id, analysis_id, user_id, vector, embedding_model, embedding_dimensions,
                                     embedding_source)
             VALUES ($1, $2, $1, $3, array_fill(0.5, ARRAY[1024])::vector, 'm', 1024, '{}')",
        )
        .bind(analysis)
        .bind(id)
        .bind(user)
        .execute(&pool)
        .await
        .unwrap();
    }

    migrate(&pool, |v| v == WHOLE_KEYS).await;

    let moved: Vec<(Uuid, String, i64, i64)> = sqlx::query_as(
        "SELECT i.id, i.file_path,
                (SELECT count(*) FROM analyses a WHERE a.item_id = i.id),
                (SELECT count(*) FROM embeddings e WHERE e.item_id = i.id)
         FROM items i ORDER BY i.file_path",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(moved.len(), rows.len());
    for (id, key, analyses, embeddings) in moved {
        assert_eq!(id, item_uuid(&key), "{key}: the id the stages compute now");
        assert_eq!((analyses, embeddings), (1, 1), "{key}: its analysis and vector moved with it");
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn the_sql_item_id_is_the_one_the_stages_compute(pool: PgPool) {
    let long = format!("u/{}x.jpeg", "dossier/".repeat(120));
    for key in ["user456/item123.jpg", "u/a.png", "u 1/my photo+x.JPG", "ユーザー/写真.png", "u/ü\u{301}.jpg", &long]
    {
        let sql: Uuid = sqlx::query_scalar("SELECT collections_item_id($1)").bind(key).fetch_one(&pool).await.unwrap();
        assert_eq!(sql, item_uuid(key), "{key}");
    }
}

#[sqlx::test(migrations = false)]
async fn analyses_stored_before_token_columns_get_their_replies_usage(pool: PgPool) {
    const TOKENS: &str = "20261130000003";
    migrate(&pool, |v| v < TOKENS).await;
    let item = item_uuid("u/a.jpg");
    sqlx::query(
        "INSERT INTO items (id, user_id, filename, file_path, bucket) VALUES ($1, 'u', 'a.jpg', 'u/a.jpg', 'b')",
    )
    .bind(item)
    .execute(&pool)
    .await
    .unwrap();
    let replies = [
        serde_json::json!({"usage": {"input_tokens": 1600, "output_tokens": 120, "cache_read_input_tokens": 7}}),
        serde_json::json!({"usage": {"prompt_tokens": 900, "completion_tokens": 110,
                                     "prompt_tokens_details": {"cached_tokens": 100}}}),
        serde_json::json!({"measurements": {}}),
    ];
    for (version, reply) in replies.iter().enumerate() {
        sqlx::query(
            "INSERT INTO analyses (id, item_id, user_id, version, category, summary, analysis, raw_response,
                                   provider_used, model_used, request_key)
             VALUES ($1, $2, 'u', $3, 'other', 's', '{}', $4, 'p', 'm', $3::text)",
        )
        .bind(Uuid::now_v7())
        .bind(item)
        .bind(version as i32 + 1)
        .bind(reply)
        .execute(&pool)
        .await
        .unwrap();
    }

    migrate(&pool, |v| v == TOKENS).await;

    type Tokens = (Option<i64>, Option<i64>, Option<i64>, Option<i64>);
    let columns: Vec<Tokens> = sqlx::query_as(
        "SELECT input_tokens, output_tokens, cache_read_tokens, cache_write_tokens FROM analyses ORDER BY version",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        columns,
        [
            (Some(1600), Some(120), Some(7), Some(0)),
            (Some(800), Some(110), Some(100), Some(0)),
            (None, None, None, None)
        ]
    );
}

#[sqlx::test(migrations = false)]
async fn vectors_stored_as_vector_1024_move_to_the_partitioned_table_unchanged_and_their_models_are_registered(
    pool: PgPool,
) {
    const ANY_DIMENSION: &str = "20261130000006";
    migrate(&pool, |v| v < ANY_DIMENSION).await;
    for (n, (user, model)) in
        [("ann", "voyage-3.5"), ("bob", "voyage-3.5"), ("bob", "local-hashing-v1")].iter().enumerate()
    {
        let key = format!("{user}/p{n}.jpg");
        let item = item_uuid(&key);
        let analysis = Uuid::now_v7();
        for statement in [
            "INSERT INTO items (id, user_id, filename, file_path, bucket) VALUES ($1, $2, 'p.jpg', $3, 'b')
             ON CONFLICT DO NOTHING",
            "INSERT INTO analyses (id, item_id, user_id, version, category, summary, analysis, raw_response,
                                   provider_used, model_used, request_key)
             VALUES ($4, $1, $2, 1, 'nature', 's', '{}', '{}', 'local', 'm', $4::text)",
            "INSERT INTO embeddings (id, item_id, analysis_id, user_id, vector, embedding_model, embedding_dimensions,
                                     embedding_source, tokens)
             SELECT $4, $1, $4, $2, array_fill($6::real, ARRAY[1024])::vector, $5, 1024, '{}', 7",
        ] {
            sqlx::query(statement)
                .bind(item)
                .bind(user)
                .bind(&key)
                .bind(analysis)
                .bind(model)
                .bind(n as f32 + 0.25)
                .execute(&pool)
                .await
                .unwrap();
        }
    }

    migrate(&pool, |v| v == ANY_DIMENSION).await;

    let moved: Vec<(String, String, f32, i32, Option<i64>, bool)> = sqlx::query_as(
        "SELECT user_id, embedding_model, (vector::real[])[1024], vector_dims(vector), tokens,
                tableoid::regclass::text LIKE 'embeddings_p%'
         FROM embeddings ORDER BY 3",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let expected = [("ann", "voyage-3.5", 0.25), ("bob", "voyage-3.5", 1.25), ("bob", "local-hashing-v1", 2.25)]
        .map(|(u, m, x)| (u.to_owned(), m.to_owned(), x, 1024, Some(7), true));
    assert_eq!(moved, expected, "every vector, unchanged, in a partition");
    let registered: Vec<(String, i32)> =
        sqlx::query_as("SELECT model, dimensions FROM embedding_models ORDER BY 1").fetch_all(&pool).await.unwrap();
    assert_eq!(registered, [("local-hashing-v1".to_owned(), 1024), ("voyage-3.5".to_owned(), 1024)]);
    // Another size is another model: a vector of 3 dimensions of a model
    // registered so is stored; of a model registered at 1024 it is refused.
    sqlx::query("INSERT INTO embedding_models (model, dimensions) VALUES ('tiny@3', 3)").execute(&pool).await.unwrap();
    let analysis: Uuid =
        sqlx::query_scalar("SELECT id FROM analyses WHERE user_id = 'ann'").fetch_one(&pool).await.unwrap();
    let insert = |model: &'static str| {
        sqlx::query(
            "INSERT INTO embeddings (id, item_id, analysis_id, user_id, vector, embedding_model, embedding_dimensions,
                                     embedding_source)
             SELECT gen_random_uuid(), item_id, id, user_id, '[1,2,3]', $2, 3, '{}' FROM analyses WHERE id = $1",
        )
        .bind(analysis)
        .bind(model)
        .execute(&pool)
    };
    insert("tiny@3").await.unwrap();
    let refused = insert("local-hashing-v1").await.unwrap_err();
    assert_eq!(refused.as_database_error().and_then(|e| e.code()).as_deref(), Some("23503"), "{refused}");
}

#[sqlx::test(migrations = false)]
async fn stored_vectors_and_analyses_get_their_latest_flags_and_full_text_documents(pool: PgPool) {
    const SEARCH_ROWS: &str = "20261204000005";
    migrate(&pool, |v| v < SEARCH_ROWS).await;
    sqlx::query("INSERT INTO embedding_models (model, dimensions) VALUES ('m', 3)").execute(&pool).await.unwrap();
    // "ann/a.jpg" analysed twice (version 2 in another category), "bob/b.jpg" once; every analysis embedded.
    for (key, version, category) in [("ann/a.jpg", 1, "nature"), ("ann/a.jpg", 2, "pets"), ("bob/b.jpg", 1, "food")] {
        let (user, file) = key.split_once('/').unwrap();
        let analysis = Uuid::now_v7();
        for statement in [
            "INSERT INTO items (id, user_id, filename, file_path, bucket) VALUES ($1, $2, $6, $3, 'b')
             ON CONFLICT DO NOTHING",
            "INSERT INTO analyses (id, item_id, user_id, version, category, summary, analysis, raw_response,
                                   provider_used, model_used, request_key)
             VALUES ($4, $1, $2, $5, $7, 'a photo', '{}', '{}', 'local', 'm', $4::text)",
            "INSERT INTO embeddings (id, item_id, analysis_id, user_id, vector, embedding_model, embedding_dimensions,
                                     embedding_source)
             VALUES ($4, $1, $4, $2, '[1,0,0]', 'm', 3, '{}')",
        ] {
            sqlx::query(statement)
                .bind(item_uuid(key))
                .bind(user)
                .bind(key)
                .bind(analysis)
                .bind(version)
                .bind(file)
                .bind(category)
                .execute(&pool)
                .await
                .unwrap();
        }
    }

    migrate(&pool, |v| v >= SEARCH_ROWS).await;

    let vectors: Vec<(String, i32, bool)> = sqlx::query_as(
        "SELECT i.file_path, a.version, e.is_latest FROM embeddings e
         JOIN items i ON i.id = e.item_id JOIN analyses a ON a.id = e.analysis_id ORDER BY 1, 2",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let expected = [("ann/a.jpg", 1, false), ("ann/a.jpg", 2, true), ("bob/b.jpg", 1, true)];
    assert_eq!(vectors, expected.map(|(k, v, l)| (k.to_owned(), v, l)), "only the latest analysis's vector counts");
    let documents: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT d.user_id, i.file_path, d.category FROM search_documents d JOIN items i ON i.id = d.item_id
         JOIN analyses a ON a.id = d.analysis_id AND a.is_latest AND a.search_vector = d.search_vector ORDER BY 2",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let expected = [("ann", "ann/a.jpg", "pets"), ("bob", "bob/b.jpg", "food")];
    assert_eq!(documents, expected.map(|(u, k, c)| (u.to_owned(), k.to_owned(), c.to_owned())), "one an item");
}
