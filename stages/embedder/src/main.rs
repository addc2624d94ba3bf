//! The embedder Lambda: logs, settings, the database pool and the provider
//! (its key read once from SSM) per cold start, then one batch per invocation.

use embedder::{Embedder, EmbedderConfig, providers};
use lambda_runtime::{Error, service_fn};
use shared::aws::StageClients;
use shared::config::Env;
use shared::lambda::{Handler, function_timeout};
use shared::stage::Stage;

#[tokio::main]
async fn main() -> Result<(), Error> {
    shared::telemetry::init_lambda();
    let env = Env::process();
    let clients = StageClients::build(&env).await?;
    let config = EmbedderConfig::from_env(&env)?;
    let secrets = clients.secrets(&env);
    let provider = providers::build(&config, &secrets).await?;
    let reembed = providers::build_reembed(&config, &secrets).await?;
    let failures = clients.pool.clone();
    let stage = Embedder::new(clients.pool, provider, config).with_reembed(reembed);
    let handler = Handler::new(&stage, &failures, function_timeout(&env, stage.name())?);
    lambda_runtime::run(service_fn(|event| handler.invoke(event))).await
}
