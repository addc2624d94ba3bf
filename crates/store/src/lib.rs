//! All SQL of the pipeline, against PostgreSQL + pgvector: the pool, the
//! embedded migrations, and one module per table or question (items,
//! analyses, embeddings and their models, statuses and failures, search,
//! stats, roles, binary COPY). Every value is bound; callers see
//! [`DbError`], not driver internals. It calls no provider: a search is
//! given its query's vector.

pub mod analyses;
pub mod batches;
pub mod config;
pub mod copy;
pub mod embeddings;
pub mod items;
pub mod models;
pub mod roles;
pub mod search;
pub mod stats;
pub mod status;
pub mod vector;

use std::time::Duration;

use futures::future::BoxFuture;
use sqlx::PgConnection;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use thiserror::Error;

use domain::retry::Retriable;
use domain::stage::StageName;

use crate::config::{DatabaseConfig, redact_url};

pub use vector::Vector;

/// The migrations in `migrations/`, compiled into every binary.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations");

#[derive(Debug, Error)]
pub enum DbError {
    #[error("cannot reach the database at {url}: {source}")]
    Connect { url: String, source: sqlx::Error },
    #[error("database unavailable during {operation}: {source}")]
    Unavailable { operation: &'static str, source: sqlx::Error },
    #[error("{operation} failed: {source}")]
    Query { operation: &'static str, source: sqlx::Error },
    #[error("applying migrations failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

impl Retriable for DbError {
    /// Lost connections, pool exhaustion, serialization failures, deadlocks
    /// and unique-key races are worth a retry; other errors are not.
    fn is_retriable(&self) -> bool {
        match self {
            Self::Connect { .. } | Self::Unavailable { .. } => true,
            Self::Query { .. } | Self::Migrate(_) => {
                // Also a lock not granted in time (55P03) and a statement
                // cancelled by its timeout (57014).
                matches!(self.sqlstate().as_deref(), Some("40001" | "40P01" | "23505" | "57P01" | "55P03" | "57014"))
            }
        }
    }
}

impl DbError {
    /// Whether PostgreSQL refused the data itself (SQLSTATE classes 22,
    /// data exception, and 23, integrity violation), other than a unique
    /// key taken: writing the same rows again would fail again, but the
    /// other rows of their batch may be fine.
    pub fn is_refusal(&self) -> bool {
        match self.sqlstate().as_deref() {
            Some("23505") | None => false,
            Some(code) => code.starts_with("22") || code.starts_with("23"),
        }
    }

    /// The error PostgreSQL answered a query with, if it did.
    pub(crate) fn database_error(&self) -> Option<&dyn sqlx::error::DatabaseError> {
        match self {
            Self::Query { source: sqlx::Error::Database(e), .. } => Some(e.as_ref()),
            _ => None,
        }
    }

    /// Its SQLSTATE code, if PostgreSQL answered with an error.
    pub(crate) fn sqlstate(&self) -> Option<std::borrow::Cow<'_, str>> {
        self.database_error().and_then(|e| e.code())
    }

    /// Wraps a driver error raised by `operation`.
    pub(crate) fn during(operation: &'static str) -> impl FnOnce(sqlx::Error) -> Self {
        move |source| match source {
            sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Tls(_) => {
                Self::Unavailable { operation, source }
            }
            source => Self::Query { operation, source },
        }
    }
}

/// Opens a pool. Connections are made lazily after the first one succeeds.
pub async fn connect(config: &DatabaseConfig) -> Result<PgPool, DbError> {
    PgPoolOptions::new()
        .max_connections(config.max_connections)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(connect_options(&config.url)?)
        .await
        .map_err(|source| DbError::Connect { url: redact_url(&config.url), source })
}

/// Limits every session starts with, so that no statement waits without
/// end: a held lock fails a batch write in seconds, retriably, instead of at
/// the Lambda's timeout after every provider call was paid. A setting the
/// URL's `options` names (`?options=-c%20lock_timeout%3D1s`) wins. Index
/// builds and migrations lift them for their own session.
pub const SESSION_LIMITS: [(&str, &str); 2] = [("statement_timeout", "60s"), ("lock_timeout", "10s")];

/// The connection options a `postgres://` URL describes, with
/// [`SESSION_LIMITS`] for the settings it does not name.
pub fn connect_options(url: &str) -> Result<PgConnectOptions, DbError> {
    let options: PgConnectOptions = url.parse().map_err(|source| DbError::Connect { url: redact_url(url), source })?;
    let missing: Vec<(&str, &str)> = SESSION_LIMITS.into_iter().filter(|(name, _)| !url.contains(name)).collect();
    Ok(options.options(missing))
}

/// Gives a session its [`SESSION_LIMITS`] (and every other setting) back
/// before its connection returns to the pool, whether or not the work done
/// [`without_limits`] succeeded.
pub(crate) async fn with_limits_back(conn: &mut PgConnection, doing: &'static str) -> Result<(), DbError> {
    sqlx::query("RESET ALL").execute(conn).await.map_err(DbError::during(doing))?;
    Ok(())
}

/// Lifts [`SESSION_LIMITS`] for this session: for work that is meant to
/// take long (an index build, a migration).
pub(crate) async fn without_limits(conn: &mut PgConnection) -> Result<(), DbError> {
    sqlx::query("SET statement_timeout = 0")
        .execute(&mut *conn)
        .await
        .map_err(DbError::during("lifting the statement timeout"))?;
    sqlx::query("SET lock_timeout = 0").execute(conn).await.map_err(DbError::during("lifting the lock timeout"))?;
    Ok(())
}

/// A statement that writes a slice of rows and answers what it wrote.
pub(crate) type WriteRows<T, R> = for<'c> fn(&'c mut PgConnection, &'c [T]) -> BoxFuture<'c, Result<Vec<R>, DbError>>;

/// Writes `rows` with `write` in one statement; if the database refuses
/// the batch for a data reason, writes each row on its own, so that only
/// the rows it refuses fail. Each attempt runs under a savepoint, so a
/// refusal leaves the caller's transaction usable. Answers what was
/// written, and the refused rows by position with the database's reason.
pub(crate) async fn each_on_refusal<T, R>(
    conn: &mut PgConnection,
    rows: &[T],
    write: WriteRows<T, R>,
) -> Result<(Vec<R>, Vec<(usize, DbError)>), DbError> {
    match attempt(conn, rows, write).await {
        Err(e) if e.is_refusal() && rows.len() > 1 => {
            tracing::warn!(error = %e, rows = rows.len(), "the database refused a batch; writing its rows one by one");
            let (mut written, mut refused) = (Vec::new(), Vec::new());
            for (position, row) in rows.iter().enumerate() {
                match attempt(conn, std::slice::from_ref(row), write).await {
                    Ok(r) => written.extend(r),
                    Err(e) if e.is_refusal() => refused.push((position, e)),
                    Err(e) => return Err(e),
                }
            }
            Ok((written, refused))
        }
        Err(e) if e.is_refusal() => Ok((Vec::new(), vec![(0, e)])),
        other => other.map(|written| (written, Vec::new())),
    }
}

async fn attempt<T, R>(conn: &mut PgConnection, rows: &[T], write: WriteRows<T, R>) -> Result<Vec<R>, DbError> {
    let mut savepoint = sqlx::Connection::begin(&mut *conn).await.map_err(DbError::during("starting a write"))?;
    match write(&mut savepoint, rows).await {
        Ok(written) => {
            savepoint.commit().await.map_err(DbError::during("finishing a write"))?;
            Ok(written)
        }
        Err(e) => {
            savepoint.rollback().await.map_err(DbError::during("undoing a refused write"))?;
            Err(e)
        }
    }
}

/// Applies the migrations that have not been applied yet; harmless to
/// repeat. A migration may take long: its session has no time limits.
pub async fn migrate(pool: &PgPool) -> Result<(), DbError> {
    let mut conn = pool.acquire().await.map_err(DbError::during("migrating"))?;
    without_limits(&mut conn).await?;
    let migrated = MIGRATOR.run(&mut *conn).await;
    with_limits_back(&mut conn, "migrating").await?;
    Ok(migrated?)
}

/// The status column of a stage in `items` (a fixed identifier, never input).
pub(crate) fn status_column(stage: StageName) -> &'static str {
    match stage {
        StageName::Thumbnail => "thumbnail_status",
        StageName::Analysis => "analysis_status",
        StageName::Embedding => "embedding_status",
    }
}
