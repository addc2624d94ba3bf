//! The migrations on deploy: the onEvent handler of the CDK custom
//! resource (the Provider framework answers CloudFormation for it). Create
//! and Update apply `migrations/` and, given `APP_DATABASE_SECRET_ARN` (and
//! `SEARCH_DATABASE_SECRET_ARN`), make the stages' application role (and the
//! search API's read-only role) of that secret, then register the
//! configured embedding models (the active one and, during a change of
//! model, the re-embed one) and build their vector indexes; Delete leaves
//! the database alone.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use shared::config::Env;
use shared::db::models::{self, EmbeddingModel};

/// maintenance_work_mem for building a vector index, MiB: the database
/// server's memory, kept modest for small instances.
const INDEX_BUILD_MEMORY_MIB: u32 = 256;

/// How long the migrator builds vector indexes, at most (its function
/// has 300 s, and the migrations come first).
const INDEX_BUILD_TIME: Duration = Duration::from_secs(180);

/// Stays the same across deploys: a changed id would make CloudFormation
/// send a Delete for the old one.
pub const PHYSICAL_RESOURCE_ID: &str = "collections-migrations";

pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// Handles one custom-resource request.
pub async fn handle(request: &Value, env: &Env) -> Result<Value, Error> {
    let kind = request.get("RequestType").and_then(Value::as_str).ok_or("the request has no RequestType")?;
    match kind {
        "Delete" => Ok(json!({ "PhysicalResourceId": PHYSICAL_RESOURCE_ID })),
        "Create" | "Update" => {
            let config = shared::aws::load_config().await;
            let settings = shared::aws::database::resolve(env, &config).await?;
            let pool = shared::db::connect(&settings).await?;
            shared::db::migrate(&pool).await?;
            let applied = shared::db::MIGRATOR.iter().count();
            tracing::info!(applied, "migrations applied");
            // The role the stages connect as, in step with its secret.
            if let Some(arn) = env.get("APP_DATABASE_SECRET_ARN") {
                let app = shared::aws::database::read_secret(&config, &arn).await?;
                shared::db::roles::ensure_app_role(&pool, &app.username, &app.password).await?;
                tracing::info!(role = %app.username, "application role ready");
            }
            // The search API's role: it reads, and nothing more.
            if let Some(arn) = env.get("SEARCH_DATABASE_SECRET_ARN") {
                let reader = shared::aws::database::read_secret(&config, &arn).await?;
                shared::db::roles::ensure_reader_role(&pool, &reader.username, &reader.password).await?;
                tracing::info!(role = %reader.username, "search role ready");
            }
            // The embedding models the functions will write and search,
            // indexed before they roll out (the migrations resource is
            // updated when they change).
            let config = embedder::EmbedderConfig::from_env(env)?;
            // Graphs are built while the function has time; a large table's
            // rest is `collections vector-index build`'s (searches use the
            // graphs there are, and scan the other partitions).
            let deadline = Instant::now() + INDEX_BUILD_TIME;
            let targets = std::iter::once(config.active()).chain(config.reembed.clone());
            for target in targets {
                let model = EmbeddingModel::new(&embedder::providers::stored_name(&target), target.dimensions);
                let whole = models::prepare(&pool, &model, Some(INDEX_BUILD_MEMORY_MIB), Some(deadline)).await?;
                if whole {
                    tracing::info!(model = %model.model, dimensions = model.dimensions, "embedding model indexed");
                } else {
                    tracing::warn!(
                        model = %model.model,
                        "the vector index is not whole: run `collections vector-index build` to finish it"
                    );
                }
            }
            pool.close().await;
            Ok(json!({ "PhysicalResourceId": PHYSICAL_RESOURCE_ID, "Data": { "Migrations": applied.to_string() } }))
        }
        other => Err(format!("unknown RequestType {other:?}").into()),
    }
}
