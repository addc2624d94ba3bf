//! `collections delete KEY...`: images removed, original to vectors.

use std::sync::Arc;

use domain::settings::Env;
use domain::text::printable;
use store::config::DatabaseConfig;
use thumbnailer::ThumbnailConfig;

use crate::components::Components;
use crate::erase::{Place, delete_keys_in};

/// Delete images of the local bucket: the originals, their items (analyses
/// and vectors) and their thumbnails.
#[derive(Debug, clap::Args)]
pub struct Delete {
    #[arg(required = true)]
    keys: Vec<String>,
    /// On AWS: this S3 bucket (and the database DATABASE_URL names).
    #[arg(long)]
    bucket: Option<String>,
}

impl Delete {
    pub async fn run(self, env: &Env) -> anyhow::Result<()> {
        let place = match self.bucket {
            Some(bucket) => Place {
                store: Arc::new(aws::s3::S3Store::new(&aws::load_config().await)),
                bucket,
                pool: store::connect(&DatabaseConfig::from_env(env)?).await?,
                thumbnail: ThumbnailConfig::from_env(env)?,
            },
            None => Place::local(&Components::from_env(env).await?),
        };
        for (key, what) in delete_keys_in(&place, &self.keys).await? {
            println!("{}: {}", printable(&key), printable(&what));
        }
        Ok(())
    }
}
