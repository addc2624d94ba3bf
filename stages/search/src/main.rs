//! The search Lambda: settings, the database pool (the read-only role) and
//! the query embedder per cold start, then the API for every request.

use std::sync::Arc;
use std::time::Duration;

use embedder::{EmbedderConfig, providers};
use search::SearchService;
use search::links::PresignedLinks;
use shared::aws::StageClients;
use shared::config::Env;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    shared::telemetry::init_lambda();
    let env = Env::process();
    let clients = StageClients::build(&env).await?;
    let embedding = providers::build(&EmbedderConfig::from_env(&env)?, &clients.secrets(&env)).await?;
    let ttl = Duration::from_secs(env.parse_or("SEARCH_URL_TTL_SECS", 900)?);
    let links = PresignedLinks::new(clients.store.client().clone(), env.get("BUCKET_NAME"), ttl);
    let service = Arc::new(SearchService { pool: clients.pool, embedding, links: Arc::new(links) });
    let claim = env.string_or("SEARCH_USER_CLAIM", "sub");
    lambda_http::run(search::lambda::app(service, &claim)).await
}
