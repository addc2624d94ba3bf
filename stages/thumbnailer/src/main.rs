//! The thumbnailer Lambda: logs, settings and clients once per cold start,
//! then one batch per invocation.

use aws::StageClients;
use aws::lambda::{Handler, function_timeout};
use domain::settings::Env;
use lambda_runtime::{Error, LambdaEvent, service_fn};
use runtime::stage::Stage;
use thumbnailer::{ThumbnailConfig, Thumbnailer};

#[tokio::main]
async fn main() -> Result<(), Error> {
    runtime::telemetry::init_lambda();
    let env = Env::process();
    let clients = StageClients::build(&env).await?;
    let failures = clients.pool.clone();
    let stage = Thumbnailer::new(clients.store, clients.bus, clients.pool, ThumbnailConfig::from_env(&env)?)?;
    let handler = Handler::new(&stage, &failures, function_timeout(&env, stage.name())?);
    lambda_runtime::run(service_fn(|event: LambdaEvent<_>| handler.invoke(event))).await
}
