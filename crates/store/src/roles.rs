//! The roles the functions connect as. The stages' application role reads
//! and writes the application's rows and nothing else (no DROP, ALTER or
//! TRUNCATE, no new tables); the search API's reader role only reads them.
//! The migrator, connected as the owner, creates both and keeps their
//! passwords in step with their secrets.

use sqlx::PgPool;

use crate::DbError;

/// The tables the stages read and write.
pub const APP_TABLES: [&str; 6] =
    ["items", "analyses", "embeddings", "embedding_models", "record_failures", "deleted_objects"];

/// Creates the login role `role` with `password`, or sets the password of
/// the existing one, and grants it row access (SELECT, INSERT, UPDATE,
/// DELETE) to [`APP_TABLES`]. Harmless to repeat.
pub async fn ensure_app_role(pool: &PgPool, role: &str, password: &str) -> Result<(), DbError> {
    ensure_role(pool, role, password, "SELECT, INSERT, UPDATE, DELETE").await
}

/// As [`ensure_app_role`], with SELECT only: the search API's role.
pub async fn ensure_reader_role(pool: &PgPool, role: &str, password: &str) -> Result<(), DbError> {
    ensure_role(pool, role, password, "SELECT").await
}

/// A login role with `privileges` on [`APP_TABLES`] and nothing else.
async fn ensure_role(pool: &PgPool, role: &str, password: &str, privileges: &str) -> Result<(), DbError> {
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)")
        .bind(role)
        .fetch_one(pool)
        .await
        .map_err(DbError::during("looking up the application role"))?;
    // Role statements take no bind parameters: PostgreSQL's own format()
    // quotes the name (%I) and the password (%L).
    let create = if exists {
        "SELECT format('ALTER ROLE %I WITH LOGIN PASSWORD %L', $1::text, $2::text)"
    } else {
        "SELECT format('CREATE ROLE %I WITH LOGIN PASSWORD %L', $1::text, $2::text)"
    };
    let grants = [
        create.to_owned(),
        "SELECT format('GRANT USAGE ON SCHEMA public TO %I', $1::text, $2::text)".to_owned(),
        format!("SELECT format('GRANT {privileges} ON {} TO %I', $1::text, $2::text)", APP_TABLES.join(", ")),
    ];
    for statement in grants {
        let sql: String = sqlx::query_scalar(&statement)
            .bind(role)
            .bind(password)
            .fetch_one(pool)
            .await
            .map_err(DbError::during("preparing the application role"))?;
        sqlx::query(&sql).execute(pool).await.map_err(DbError::during("setting up the application role"))?;
    }
    Ok(())
}
