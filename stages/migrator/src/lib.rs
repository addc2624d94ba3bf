//! The migrations on deploy: the onEvent handler of the CDK custom
//! resource (the Provider framework answers CloudFormation for it). Create
//! and Update apply `migrations/` and, given `APP_DATABASE_SECRET_ARN` (and
//! `SEARCH_DATABASE_SECRET_ARN`), make the stages' application role (and the
//! search API's read-only role) of that secret, then register the
//! configured embedding models (the active one and, during a change of
//! model, the re-embed one) and build their vector indexes; Delete leaves
//! the database alone.

use std::time::{Duration, Instant};

use aws_lambda_events::event::cloudformation::provider::{
    CloudFormationCustomResourceRequest as Request, CloudFormationCustomResourceResponse as Response,
};
use domain::settings::{Env, Setting};
use embedding::EmbeddingSettings;
use serde_json::json;
use store::models::{self, EmbeddingModel};

pub const APP_DATABASE_SECRET_ARN: Setting = Setting::optional(
    "APP_DATABASE_SECRET_ARN",
    "none",
    "the migrator on Lambda: the secret (`username`, `password`) of the role the stages connect as; after the \
     migrations it creates that role, or sets its password, with row access to the application's tables only",
);
pub const SEARCH_DATABASE_SECRET_ARN: Setting = Setting::optional(
    "SEARCH_DATABASE_SECRET_ARN",
    "none",
    "the migrator on Lambda: the secret of the search API's role; it is made with SELECT on the application's \
     tables and nothing else",
);

/// The settings of this crate, for `docs/configuration.md`.
pub const SETTINGS: &[Setting] = &[APP_DATABASE_SECRET_ARN, SEARCH_DATABASE_SECRET_ARN];

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
pub async fn handle(request: &Request, env: &Env) -> Result<Response, Error> {
    let mut response = Response::default();
    response.physical_resource_id = Some(PHYSICAL_RESOURCE_ID.to_owned());
    match request {
        Request::Delete(_) => Ok(response),
        Request::Create(_) | Request::Update(_) => {
            let applied = migrate(env).await?;
            response.data = json!({ "Migrations": applied.to_string() });
            Ok(response)
        }
        other => Err(format!("unknown request {other:?}").into()),
    }
}

/// Applies the migrations, makes the roles, registers and indexes the
/// models; answers how many migrations there are.
async fn migrate(env: &Env) -> Result<usize, Error> {
    let config = aws::load_config().await;
    let settings = aws::database::resolve(env, &config).await?;
    let pool = store::connect(&settings).await?;
    store::migrate(&pool).await?;
    let applied = store::MIGRATOR.iter().count();
    tracing::info!(applied, "migrations applied");
    // The role the stages connect as, in step with its secret.
    if let Some(arn) = env.value(&APP_DATABASE_SECRET_ARN) {
        let app = aws::database::read_secret(&config, &arn).await?;
        store::roles::ensure_app_role(&pool, &app.username, &app.password).await?;
        tracing::info!(role = %app.username, "application role ready");
    }
    // The search API's role: it reads, and nothing more.
    if let Some(arn) = env.value(&SEARCH_DATABASE_SECRET_ARN) {
        let reader = aws::database::read_secret(&config, &arn).await?;
        store::roles::ensure_reader_role(&pool, &reader.username, &reader.password).await?;
        tracing::info!(role = %reader.username, "search role ready");
    }
    // The embedding models the functions will write and search, indexed
    // before they roll out (the migrations resource is updated when they
    // change). Graphs are built while the function has time; a large
    // table's rest is `collections vector-index build`'s (searches use the
    // graphs there are, and scan the other partitions).
    let deadline = Instant::now() + INDEX_BUILD_TIME;
    let targets = std::iter::once(EmbeddingSettings::from_env(env)?).chain(EmbeddingSettings::reembed_from_env(env)?);
    for target in targets {
        let model = EmbeddingModel::new(&target.stored_name(), target.dimensions);
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
    Ok(applied)
}
