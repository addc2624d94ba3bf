//! The roles the functions connect as. The stages' application role reads
//! and writes the application's rows and nothing else (no DROP, ALTER or
//! TRUNCATE, no new tables); the search API's reader role only reads them,
//! and of the record failures only what a tenant is shown.
//! The migrator, connected as the owner, creates both and keeps their
//! passwords in step with their secrets.

use sqlx::PgPool;

use crate::DbError;

/// The tables the stages read and write.
pub const APP_TABLES: [&str; 9] = [
    "items",
    "analyses",
    "embeddings",
    "search_documents",
    "embedding_models",
    "record_failures",
    "deleted_objects",
    "provider_batches",
    "batch_requests",
];

/// Creates the login role `role` with `password`, or sets the password of
/// the existing one, and grants it row access (SELECT, INSERT, UPDATE,
/// DELETE) to [`APP_TABLES`]. Harmless to repeat.
pub async fn ensure_app_role(pool: &PgPool, role: &str, password: &str) -> Result<(), DbError> {
    let grants = [format!(
        "SELECT format('GRANT SELECT, INSERT, UPDATE, DELETE ON {} TO %I', $1::text, $2::text)",
        APP_TABLES.join(", ")
    )];
    ensure_role(pool, role, password, &grants).await
}

/// The tables the search API reads whole.
pub const READER_TABLES: [&str; 5] = ["items", "analyses", "embeddings", "search_documents", "embedding_models"];

/// The columns of `record_failures` the search API reads: what a tenant is
/// shown, not the record as received (`input`, `raw`) nor the operator's
/// detail (`reason`).
pub const READER_RECORD_FAILURE_COLUMNS: [&str; 8] =
    ["id", "stage", "user_id", "item_id", "object_key", "public_reason", "attempts", "updated_at"];

/// A login role that reads [`READER_TABLES`] and the public columns of
/// `record_failures` ([`READER_RECORD_FAILURE_COLUMNS`]), nothing else: the
/// search API's role. Grants of earlier versions (SELECT on every table)
/// are taken back.
pub async fn ensure_reader_role(pool: &PgPool, role: &str, password: &str) -> Result<(), DbError> {
    let grants = [
        format!("SELECT format('REVOKE ALL ON {} FROM %I', $1::text, $2::text)", APP_TABLES.join(", ")),
        format!("SELECT format('GRANT SELECT ON {} TO %I', $1::text, $2::text)", READER_TABLES.join(", ")),
        format!(
            "SELECT format('GRANT SELECT ({}) ON record_failures TO %I', $1::text, $2::text)",
            READER_RECORD_FAILURE_COLUMNS.join(", ")
        ),
    ];
    ensure_role(pool, role, password, &grants).await
}

/// A login role with `password`, then `grants` run: each a query that
/// yields one statement, given the role as `$1` (and the password as `$2`).
async fn ensure_role(pool: &PgPool, role: &str, password: &str, grants: &[String]) -> Result<(), DbError> {
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
    let setup =
        [create.to_owned(), "SELECT format('GRANT USAGE ON SCHEMA public TO %I', $1::text, $2::text)".to_owned()];
    for statement in setup.iter().chain(grants) {
        let sql: String = sqlx::query_scalar(statement)
            .bind(role)
            .bind(password)
            .fetch_one(pool)
            .await
            .map_err(DbError::during("preparing the application role"))?;
        sqlx::query(&sql).execute(pool).await.map_err(DbError::during("setting up the application role"))?;
    }
    Ok(())
}
