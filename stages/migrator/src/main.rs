//! The migrator Lambda.

use domain::settings::Env;
use lambda_runtime::{Error, LambdaEvent, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    runtime::telemetry::init_lambda();
    let env = Env::process();
    lambda_runtime::run(service_fn(|event: LambdaEvent<_>| {
        let env = &env;
        async move { migrator::handle(&event.payload, env).await }
    }))
    .await
}
