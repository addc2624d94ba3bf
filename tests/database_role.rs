//! The role the stages connect as, against the real PostgreSQL: it can read
//! and write the application's rows, and cannot DROP, ALTER or TRUNCATE a
//! table or create one.

use shared::db::roles::ensure_app_role;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

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
    collections_tests::seed_analysis(&app, "u/a.jpg", &collections_tests::analysis("other", "A", &[])).await;
    sqlx::query("UPDATE items SET embedding_status = 'failed'").execute(&app).await.unwrap();
    sqlx::query("DELETE FROM record_failures").execute(&app).await.unwrap();

    for statement in [
        "DROP TABLE embeddings",
        "ALTER TABLE items ADD COLUMN note text",
        "TRUNCATE analyses",
        "CREATE TABLE scratch (x int)",
        "DROP INDEX embeddings_vector_hnsw",
    ] {
        let err = sqlx::query(statement).execute(&app).await.expect_err(statement);
        let code = err.as_database_error().and_then(|e| e.code()).map(|c| c.into_owned());
        assert_eq!(code.as_deref(), Some("42501"), "{statement}: {err}");
    }
    app.close().await;
    sqlx::query(&format!("DROP OWNED BY {role}")).execute(&pool).await.unwrap();
    sqlx::query(&format!("DROP ROLE {role}")).execute(&pool).await.unwrap();
}

/// The migrator on deploy, against moto's Secrets Manager: after the
/// migrations it makes the role of `APP_DATABASE_SECRET_ARN`'s secret.
#[sqlx::test(migrations = "../migrations")]
async fn the_migrator_makes_the_role_its_secret_names(pool: PgPool) {
    let config = collections_tests::aws::config().await;
    let role = format!("app_{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let secret = serde_json::json!({"username": role, "password": "from-the-secret"}).to_string();
    let arn = aws_sdk_secretsmanager::Client::new(&config)
        .create_secret()
        .name(format!("collections-app-{role}"))
        .secret_string(secret)
        .send()
        .await
        .unwrap()
        .arn
        .expect("an ARN");
    let base = std::env::var("DATABASE_URL").expect("DATABASE_URL is set for the tests");
    let database = pool.connect_options().get_database().expect("the test database").to_owned();
    let url = format!("{}/{database}", &base[..base.rfind('/').unwrap()]);
    let env =
        shared::config::Env::from_pairs([("DATABASE_URL", url.as_str()), ("APP_DATABASE_SECRET_ARN", arn.as_str())]);
    let request = serde_json::json!({"RequestType": "Create", "ResourceProperties": {}});
    let answer = migrator::handle(&request, &env).await.unwrap();
    assert_eq!(answer["PhysicalResourceId"], migrator::PHYSICAL_RESOURCE_ID);
    let grants: Vec<String> = sqlx::query_scalar(
        "SELECT table_name || ':' || privilege_type FROM information_schema.role_table_grants \
         WHERE grantee = $1 ORDER BY 1",
    )
    .bind(&role)
    .fetch_all(&pool)
    .await
    .unwrap();
    let expected: Vec<String> = ["analyses", "embeddings", "items", "record_failures"]
        .iter()
        .flat_map(|t| ["DELETE", "INSERT", "SELECT", "UPDATE"].map(|p| format!("{t}:{p}")))
        .collect();
    assert_eq!(grants, expected, "row access to the application's tables, nothing else");
    sqlx::query(&format!("DROP OWNED BY {role}")).execute(&pool).await.unwrap();
    sqlx::query(&format!("DROP ROLE {role}")).execute(&pool).await.unwrap();
}
