//! The search Lambda: settings, the database pool (the read-only role) and
//! the query embedder per cold start, then the API for every request.

use std::sync::Arc;
use std::time::Duration;

use aws::StageClients;
use domain::settings::Env;
use embedding::EmbeddingSettings;
use runtime::storage::BUCKET_NAME;
use search::SearchService;
use search::config::{URL_TTL_SECS, USER_CLAIM};
use search::links::PresignedLinks;
use search::query::{CachedQueries, QUERY_CACHE_ENTRIES};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    runtime::telemetry::init_lambda();
    let env = Env::process();
    let clients = StageClients::build(&env).await?;
    let embedding = EmbeddingSettings::from_env(&env)?.build(&clients.secrets(&env)?).await?;
    let embedding = Arc::new(CachedQueries::new(embedding, env.parse(&QUERY_CACHE_ENTRIES)?));
    let ttl = Duration::from_secs(env.parse(&URL_TTL_SECS)?);
    let links = PresignedLinks::new(clients.store.client().clone(), env.get(BUCKET_NAME.name), ttl);
    let service = Arc::new(SearchService { pool: clients.pool, embedding, links: Arc::new(links) });
    let limit = Arc::new(search::limit::UserLimit::from_env(&env)?);
    lambda_http::run(search::lambda::app(service, &env.text(&USER_CLAIM)?, limit)).await
}
