//! `collections search "<text>" --user U`: hybrid search of one user's images.

use domain::settings::Env;
use domain::text::printable;
use search::query::search_text;

use crate::components::Components;

/// Search one user's images (full text and vectors, fused).
#[derive(Debug, clap::Args)]
pub struct Search {
    text: String,
    #[arg(long)]
    user: String,
    #[arg(long, default_value_t = 10)]
    limit: i64,
    /// Only this category.
    #[arg(long)]
    category: Option<String>,
}

impl Search {
    pub async fn run(self, env: &Env) -> anyhow::Result<()> {
        let Self { text, user, limit, category } = self;
        let c = Components::from_env(env).await?;
        let hits = search_text(&c.pool, c.embedding.as_ref(), &user, &text, limit, category.as_deref()).await?;
        if hits.is_empty() {
            println!("no results for {text:?} among {}'s images", printable(&user));
        }
        for (rank, hit) in hits.iter().enumerate() {
            println!("{:>2}. {:.4}  {}  [{}]", rank + 1, hit.score, printable(&hit.key), printable(&hit.category));
            println!("    thumbnail: {}", printable(hit.thumbnail_key.as_deref().unwrap_or("-")));
            println!("    {}", printable(&hit.summary));
            if !hit.also_keys.is_empty() {
                println!("    the same image as: {}", printable(&hit.also_keys.join(", ")));
            }
        }
        Ok(())
    }
}
