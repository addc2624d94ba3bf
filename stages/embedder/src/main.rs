//! The embedder Lambda: logs, settings, the database pool and the providers
//! (their keys read once from SSM) per cold start, then one batch per
//! invocation.

use aws::StageClients;
use aws::lambda::{Handler, function_timeout};
use domain::settings::Env;
use embedder::{Embedder, EmbedderConfig};
use lambda_runtime::{Error, LambdaEvent, service_fn};
use runtime::stage::Stage;

#[tokio::main]
async fn main() -> Result<(), Error> {
    runtime::telemetry::init_lambda();
    let env = Env::process();
    let clients = StageClients::build(&env).await?;
    let config = EmbedderConfig::from_env(&env)?;
    let secrets = clients.secrets(&env)?;
    let provider = config.active.build(&secrets).await?;
    let reembed = match &config.reembed {
        Some(model) => Some(model.build(&secrets).await?),
        None => None,
    };
    let failures = clients.pool.clone();
    let stage = Embedder::new(clients.pool, provider, config).with_reembed(reembed);
    let handler = Handler::new(&stage, &failures, function_timeout(&env, stage.name())?);
    lambda_runtime::run(service_fn(|event: LambdaEvent<_>| handler.invoke(event))).await
}
