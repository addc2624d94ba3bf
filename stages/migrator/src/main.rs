//! The migrator Lambda.

use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde_json::Value;
use shared::config::Env;

#[tokio::main]
async fn main() -> Result<(), Error> {
    shared::telemetry::init_lambda();
    let env = Env::process();
    lambda_runtime::run(service_fn(|event: LambdaEvent<Value>| {
        let env = &env;
        async move { migrator::handle(&event.payload, env).await }
    }))
    .await
}
