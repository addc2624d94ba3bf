//! The thumbnailer Lambda: logs, settings and clients once per cold start,
//! then one batch per invocation.

use lambda_runtime::{Error, service_fn};
use shared::aws::StageClients;
use shared::config::Env;
use thumbnailer::{ThumbnailConfig, Thumbnailer, handler};

#[tokio::main]
async fn main() -> Result<(), Error> {
    shared::telemetry::init_lambda();
    let env = Env::process();
    let clients = StageClients::build(&env).await?;
    let stage = Thumbnailer::new(clients.store, clients.bus, clients.pool, ThumbnailConfig::from_env(&env)?)?;
    lambda_runtime::run(service_fn(|event| handler::handle(&stage, event))).await
}
