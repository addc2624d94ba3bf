//! The migrations on deploy: the onEvent handler of the CDK custom
//! resource (the Provider framework answers CloudFormation for it). Create
//! and Update apply `migrations/` and, given `APP_DATABASE_SECRET_ARN` (and
//! `SEARCH_DATABASE_SECRET_ARN`), make the stages' application role (and the
//! search API's read-only role) of that secret; Delete leaves the database
//! alone.

use serde_json::{Value, json};
use shared::config::Env;

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
            pool.close().await;
            Ok(json!({ "PhysicalResourceId": PHYSICAL_RESOURCE_ID, "Data": { "Migrations": applied.to_string() } }))
        }
        other => Err(format!("unknown RequestType {other:?}").into()),
    }
}
