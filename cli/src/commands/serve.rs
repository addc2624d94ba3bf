//! `collections serve --user U`: the search API and the gallery on
//! 127.0.0.1, for one user (a development mode).

use std::sync::Arc;

use anyhow::Context;
use domain::settings::Env;
use search::SearchService;
use search::links::LocalLinks;
use search::query::{CachedQueries, QUERY_CACHE_ENTRIES};

use crate::components::{Choices, Components};

/// Serve the search API and the gallery page on 127.0.0.1, for one user (a
/// development mode: no token is checked).
#[derive(Debug, clap::Args)]
pub struct Serve {
    #[arg(long)]
    user: String,
    #[arg(long, default_value_t = 8080)]
    port: u16,
}

impl Serve {
    pub async fn run(self, env: &Env) -> anyhow::Result<()> {
        let pool = store::connect(&search::config::database(env)?).await?;
        let c = Components::with_pool(env, &remote::EnvSecrets, pool, Choices::default()).await?;
        let embedding = Arc::new(CachedQueries::new(c.embedding.clone(), env.parse(&QUERY_CACHE_ENTRIES)?));
        let service = SearchService { pool: c.pool.clone(), embedding, links: Arc::new(LocalLinks) };
        let listener = tokio::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, self.port))
            .await
            .with_context(|| format!("listening on 127.0.0.1:{}", self.port))?;
        let address = listener.local_addr()?;
        let app = search::gallery::local_app(Arc::new(service), c.store.clone(), None, &self.user, address.port());
        println!("serving {}'s images: open http://{address}/ (Ctrl-C stops)", self.user);
        axum::serve(listener, app).await?;
        Ok(())
    }
}
