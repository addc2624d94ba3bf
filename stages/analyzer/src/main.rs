//! The analyzer Lambda: logs, settings, clients and the provider (its key
//! read once from SSM) per cold start, then one batch per invocation.

use analyzer::{Analyzer, AnalyzerConfig};
use aws::StageClients;
use aws::lambda::{Handler, function_timeout};
use domain::settings::Env;
use lambda_runtime::{Error, LambdaEvent, service_fn};
use runtime::stage::Stage;

#[tokio::main]
async fn main() -> Result<(), Error> {
    runtime::telemetry::init_lambda();
    let env = Env::process();
    let clients = StageClients::build(&env).await?;
    let config = AnalyzerConfig::from_env(&env)?;
    let provider = config.vision.build(&clients.secrets(&env)?).await?;
    let failures = clients.pool.clone();
    let stage = Analyzer::new(clients.store, clients.bus, clients.pool, provider, config);
    let handler = Handler::new(&stage, &failures, function_timeout(&env, stage.name())?);
    lambda_runtime::run(service_fn(|event: LambdaEvent<_>| handler.invoke(event))).await
}
