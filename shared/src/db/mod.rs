//! PostgreSQL + pgvector: the pool, the embedded migrations, and one
//! repository per table. Every value is bound; callers see [`DbError`], not
//! driver internals.

pub mod analyses;
pub mod copy;
pub mod embeddings;
pub mod items;
pub mod search;
pub mod vector;

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use thiserror::Error;

use crate::config::{DatabaseConfig, redact_url};

pub use vector::Vector;

/// The migrations in `migrations/`, compiled into every binary.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

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

impl DbError {
    /// Lost connections, pool exhaustion, serialization failures, deadlocks
    /// and unique-key races are worth a retry; other errors are not.
    pub fn is_retriable(&self) -> bool {
        match self {
            Self::Connect { .. } | Self::Unavailable { .. } => true,
            Self::Query { .. } | Self::Migrate(_) => {
                matches!(self.sqlstate().as_deref(), Some("40001" | "40P01" | "23505" | "57P01"))
            }
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

/// The connection options a `postgres://` URL describes.
pub fn connect_options(url: &str) -> Result<PgConnectOptions, DbError> {
    url.parse().map_err(|source| DbError::Connect { url: redact_url(url), source })
}

/// Applies the migrations that have not been applied yet; harmless to repeat.
pub async fn migrate(pool: &PgPool) -> Result<(), DbError> {
    MIGRATOR.run(pool).await?;
    Ok(())
}

/// The stages that keep a status on each item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StageName {
    Thumbnail,
    Analysis,
    Embedding,
}

impl StageName {
    /// The value of `items.failed_stage` for this stage.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Thumbnail => "thumbnail",
            Self::Analysis => "analysis",
            Self::Embedding => "embedding",
        }
    }

    /// The status column of this stage in `items` (a fixed identifier, never input).
    pub(crate) fn status_column(self) -> &'static str {
        match self {
            Self::Thumbnail => "thumbnail_status",
            Self::Analysis => "analysis_status",
            Self::Embedding => "embedding_status",
        }
    }
}

impl std::str::FromStr for StageName {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "thumbnail" => Ok(Self::Thumbnail),
            "analysis" => Ok(Self::Analysis),
            "embedding" => Ok(Self::Embedding),
            other => Err(format!("unknown stage {other:?}")),
        }
    }
}
