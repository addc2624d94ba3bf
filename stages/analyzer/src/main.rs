//! The analyzer Lambda: logs, settings, clients and the provider (its key
//! read once from SSM) per cold start, then one batch per invocation.

use analyzer::{Analyzer, AnalyzerConfig, providers};
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
    let config = AnalyzerConfig::from_env(&env)?;
    let provider = providers::build(&config, &clients.secrets(&env)).await?;
    let failures = clients.pool.clone();
    let stage = Analyzer::new(clients.store, clients.bus, clients.pool, provider, config);
    let handler = Handler::new(&stage, &failures, function_timeout(&env, stage.name())?);
    lambda_runtime::run(service_fn(|event| handler.invoke(event))).await
}
