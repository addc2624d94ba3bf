//! `collections erase --user U`: everything of a user.

use domain::settings::Env;
use store::config::DatabaseConfig;

use crate::components::Components;
use crate::erase::{erase_user, erase_user_on_s3};

/// Remove everything of a user: rows, failures, thumbnails, and with
/// --originals the originals too.
#[derive(Debug, clap::Args)]
pub struct Erase {
    #[arg(long)]
    user: String,
    #[arg(long)]
    originals: bool,
    /// On AWS: this S3 bucket (and the database DATABASE_URL names).
    #[arg(long)]
    bucket: Option<String>,
}

impl Erase {
    pub async fn run(self, env: &Env) -> anyhow::Result<()> {
        let Self { user, originals, bucket } = self;
        let erased = match bucket {
            Some(bucket) => {
                let s3 = aws::s3::S3Store::new(&aws::load_config().await);
                let pool = store::connect(&DatabaseConfig::from_env(env)?).await?;
                erase_user_on_s3(&s3, &pool, &bucket, &user, originals).await?
            }
            None => erase_user(&Components::from_env(env).await?, &user, originals).await?,
        };
        println!(
            "erased {user}: {} items (with their analyses and vectors), {} failed records, thumbnails{}{}",
            erased.items,
            erased.record_failures,
            if originals { " and originals" } else { "" },
            if erased.objects > 0 { format!(" ({} objects)", erased.objects) } else { String::new() }
        );
        Ok(())
    }
}
