//! The role the stages connect as, against the real PostgreSQL: it can read
//! and write the application's rows, and cannot DROP, ALTER or TRUNCATE a
//! table or create one.

use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use store::roles::ensure_app_role;

/// Each statement fails for want of privilege (SQLSTATE 42501).
async fn assert_refused(pool: &PgPool, statements: &[&str]) {
    for statement in statements {
        let err = sqlx::query(statement).execute(pool).await.expect_err(statement);
        let code = err.as_database_error().and_then(|e| e.code()).map(|c| c.into_owned());
        assert_eq!(code.as_deref(), Some("42501"), "{statement}: {err}");
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn the_application_role_writes_rows_but_cannot_change_the_schema(pool: PgPool) {
    let role = format!("app_{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let password = "a pass'word with \"quotes\"";
    ensure_app_role(&pool, &role, "first").await.unwrap();
    ensure_app_role(&pool, &role, password).await.expect("harmless to repeat, with a new password");

    let options = (*pool.connect_options()).clone().username(&role).password(password);
    let app = PgPoolOptions::new().max_connections(1).connect_with(options).await.unwrap();
    let who: String = sqlx::query_scalar("SELECT current_user::text").fetch_one(&app).await.unwrap();
    assert_eq!(who, role);

    // What the stages do: rows in, rows read, statuses changed.
    test_support::seed_analysis(&app, "u/a.jpg", &test_support::analysis("other", "A", &[])).await;
    sqlx::query("UPDATE items SET embedding_status = 'failed'").execute(&app).await.unwrap();
    sqlx::query("DELETE FROM record_failures").execute(&app).await.unwrap();

    assert_refused(
        &app,
        &[
            "DROP TABLE embeddings",
            "ALTER TABLE items ADD COLUMN note text",
            "TRUNCATE analyses",
            "CREATE TABLE scratch (x int)",
            "DROP INDEX embeddings_user_model",
        ],
    )
    .await;
    app.close().await;
    sqlx::query(&format!("DROP OWNED BY {role}")).execute(&pool).await.unwrap();
    sqlx::query(&format!("DROP ROLE {role}")).execute(&pool).await.unwrap();
}

/// A Secrets Manager secret of moto's holding `role`'s credentials; its ARN.
async fn role_secret(config: &aws_config::SdkConfig, role: &str, password: &str) -> String {
    let secret = serde_json::json!({"username": role, "password": password}).to_string();
    aws_sdk_secretsmanager::Client::new(config)
        .create_secret()
        .name(format!("collections-{role}"))
        .secret_string(secret)
        .send()
        .await
        .unwrap()
        .arn
        .expect("an ARN")
}

async fn grants_of(pool: &PgPool, role: &str) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT table_name || ':' || privilege_type FROM information_schema.role_table_grants \
         WHERE grantee = $1 ORDER BY 1",
    )
    .bind(role)
    .fetch_all(pool)
    .await
    .unwrap()
}

/// The migrator on deploy, against moto's Secrets Manager: after the
/// migrations it makes the roles of `APP_DATABASE_SECRET_ARN`'s and
/// `SEARCH_DATABASE_SECRET_ARN`'s secrets.
#[sqlx::test(migrations = "../migrations")]
async fn the_migrator_makes_the_roles_its_secrets_name(pool: PgPool) {
    let config = test_support::aws::config().await;
    let suffix = &uuid::Uuid::new_v4().simple().to_string()[..8];
    let (app, reader) = (format!("app_{suffix}"), format!("search_{suffix}"));
    let app_arn = role_secret(&config, &app, "from-the-secret").await;
    let reader_arn = role_secret(&config, &reader, "reader's secret").await;
    let base = std::env::var("DATABASE_URL").expect("DATABASE_URL is set for the tests");
    let database = pool.connect_options().get_database().expect("the test database").to_owned();
    let url = format!("{}/{database}", &base[..base.rfind('/').unwrap()]);
    let env = domain::settings::Env::from_pairs([
        ("DATABASE_URL", url.as_str()),
        ("APP_DATABASE_SECRET_ARN", app_arn.as_str()),
        ("SEARCH_DATABASE_SECRET_ARN", reader_arn.as_str()),
    ]);
    // As the CDK Provider framework hands the onEvent handler a Create.
    let request = serde_json::json!({
        "RequestType": "Create", "RequestId": "r-1", "ResourceType": "Custom::Migrations",
        "LogicalResourceId": "Migrations", "ResourceProperties": {"ServiceToken": "arn:aws:lambda:x"},
        "StackId": "arn:aws:cloudformation:us-east-1:123456789012:stack/Collections-test/1"
    });
    let answer = migrator::handle(&serde_json::from_value(request).unwrap(), &env).await.unwrap();
    let answer = serde_json::to_value(answer).unwrap();
    assert_eq!(answer["PhysicalResourceId"], migrator::PHYSICAL_RESOURCE_ID);
    // The configured embedding model (here the default, local) is registered
    // and indexed before any function writes or searches with it.
    use store::models::{self, EmbeddingModel, VectorIndex};
    let active = EmbeddingModel::new("local-hashing-v1", 1024);
    assert_eq!(models::registered(&pool).await.unwrap(), vec![active.clone()]);
    assert_eq!(models::index_state(&pool, &active).await.unwrap(), VectorIndex::Valid);
    let tables = [
        "analyses",
        "batch_requests",
        "deleted_objects",
        "embedding_models",
        "embeddings",
        "items",
        "provider_batches",
        "record_failures",
        "search_documents",
    ];
    let expected: Vec<String> =
        tables.iter().flat_map(|t| ["DELETE", "INSERT", "SELECT", "UPDATE"].map(|p| format!("{t}:{p}"))).collect();
    assert_eq!(grants_of(&pool, &app).await, expected, "row access to the application's tables, nothing else");
    let expected: Vec<String> = ["analyses", "embedding_models", "embeddings", "items", "search_documents"]
        .iter()
        .map(|t| format!("{t}:SELECT"))
        .collect();
    assert_eq!(grants_of(&pool, &reader).await, expected, "the search role reads, nothing else");

    // Connected as the search role: it reads, and every write is refused.
    test_support::seed_analysis(&pool, "u/a.jpg", &test_support::analysis("other", "A", &[])).await;
    let options = (*pool.connect_options()).clone().username(&reader).password("reader's secret");
    let search = PgPoolOptions::new().max_connections(1).connect_with(options).await.unwrap();
    let items: i64 = sqlx::query_scalar("SELECT count(*) FROM items").fetch_one(&search).await.unwrap();
    assert_eq!(items, 1);
    assert_refused(
        &search,
        &[
            "UPDATE items SET embedding_status = 'failed'",
            "DELETE FROM embeddings",
            "INSERT INTO record_failures (id, stage, reason, source, fingerprint) \
             VALUES (gen_random_uuid(), 'analysis', 'r', 's', 'f')",
            "TRUNCATE analyses",
            "DROP TABLE items",
            // The record as received and the operator's detail are not the API's to read.
            "SELECT input FROM record_failures",
            "SELECT raw FROM record_failures",
            "SELECT reason FROM record_failures",
            "SELECT count(*) FROM deleted_objects",
        ],
    )
    .await;
    let shown = store::status::public_record_failures(&search, "u", 10).await.unwrap();
    assert!(shown.is_empty(), "what the API lists, it may read");
    search.close().await;
    for role in [app, reader] {
        sqlx::query(&format!("DROP OWNED BY {role}")).execute(&pool).await.unwrap();
        sqlx::query(&format!("DROP ROLE {role}")).execute(&pool).await.unwrap();
    }
}
