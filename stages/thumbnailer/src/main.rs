//! The thumbnailer Lambda: logs, settings and clients once per cold start,
//! then one batch per invocation.

use lambda_runtime::{Error, service_fn};
use shared::aws::StageClients;
use shared::config::Env;
use shared::lambda::{Handler, function_timeout};
use shared::stage::Stage;
use thumbnailer::{ThumbnailConfig, Thumbnailer, handler};

#[tokio::main]
async fn main() -> Result<(), Error> {
    shared::telemetry::init_lambda();
    let env = Env::process();
    let clients = StageClients::build(&env).await?;
    let failures = clients.pool.clone();
    let stage = Thumbnailer::new(clients.store, clients.bus, clients.pool, ThumbnailConfig::from_env(&env)?)?;
    let handler = Handler::new(&stage, &failures, function_timeout(&env, stage.name())?);
    lambda_runtime::run(service_fn(|event| handler::handle(&handler, event))).await
}
