//! `collections`: the pipeline on one machine. Settings come from the
//! environment (see the README); `--help` on each command.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use collections::components::Components;
use collections::{ingest, thumbnail};
use shared::config::Env;
use shared::db::Vector;
use shared::db::search::{SearchQuery, search};
use shared::embedding::InputType;

#[derive(Debug, Parser)]
#[command(name = "collections", version, about = "Thumbnail, analyse, embed and search images")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Apply the database migrations (harmless to repeat).
    Migrate,
    /// Run every image under a folder through thumbnail → analysis → embedding.
    Run {
        /// The folder; its files become `{user}/{path inside the folder}`.
        dir: PathBuf,
        /// Whose images these are.
        #[arg(long, default_value = "local")]
        user: String,
        /// Process images again even if they were processed before.
        #[arg(long)]
        force: bool,
    },
    /// Search one user's images (full text and vectors, fused).
    Search {
        text: String,
        #[arg(long)]
        user: String,
        #[arg(long, default_value_t = 10)]
        limit: i64,
        /// Only this category.
        #[arg(long)]
        category: Option<String>,
    },
    /// Thumbnail files or folders into a folder, without a database.
    Thumbnail {
        #[arg(required = true)]
        inputs: Vec<PathBuf>,
        #[arg(long)]
        out: PathBuf,
    },
    /// List items whose last attempt failed, with the stage and reason.
    Failures {
        #[arg(long)]
        user: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: i64,
    },
    /// Run failed items again from the stage where they failed.
    Retry {
        #[arg(long)]
        user: Option<String>,
        #[arg(long, default_value_t = 1000)]
        limit: i64,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn,sqlx=error".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let env = Env::process();
    match cli.command {
        Command::Thumbnail { inputs, out } => {
            let config = thumbnailer::ThumbnailConfig::from_env(&env)?;
            let jobs = thumbnail::plan(&inputs, &out)?;
            let report = tokio::task::spawn_blocking(move || thumbnail::run(&jobs, &config)).await??;
            print!("{}", report.summary());
        }
        Command::Migrate => {
            let c = Components::from_env(&env).await?;
            shared::db::migrate(&c.pool).await?;
            println!("migrations applied");
        }
        Command::Run { dir, user, force } => {
            let c = Components::from_env(&env).await?;
            shared::db::migrate(&c.pool).await?;
            let report = ingest::run_folder(&c, &dir, &user, force).await?;
            print!("{}", report.summary());
        }
        Command::Search { text, user, limit, category } => {
            let c = Components::from_env(&env).await?;
            let vector = c
                .embedding
                .embed(std::slice::from_ref(&text), InputType::Query)
                .await
                .context("embedding the query")?
                .pop()
                .context("the embedding provider returned no vector")?;
            let query = SearchQuery {
                user_id: &user,
                text: &text,
                vector: &Vector(vector),
                model: c.embedding.model(),
                limit,
                category: category.as_deref(),
            };
            let hits = search(&c.pool, &query).await?;
            if hits.is_empty() {
                println!("no results for {text:?} among {user}'s images");
            }
            for (rank, hit) in hits.iter().enumerate() {
                println!("{:>2}. {:.4}  {}  [{}]", rank + 1, hit.score, hit.key, hit.category);
                println!("    thumbnail: {}", hit.thumbnail_key.as_deref().unwrap_or("-"));
                println!("    {}", hit.summary);
            }
        }
        Command::Failures { user, limit } => {
            let c = Components::from_env(&env).await?;
            let failed = shared::db::items::failures(&c.pool, user.as_deref(), limit).await?;
            if failed.is_empty() {
                println!("no failed items");
            }
            for f in failed {
                println!(
                    "{}  {}  stage={} attempts={}  {}",
                    f.updated_at.format("%F %T"),
                    f.file_path,
                    f.failed_stage,
                    f.attempts,
                    f.last_error
                );
            }
        }
        Command::Retry { user, limit } => {
            let c = Components::from_env(&env).await?;
            let report = ingest::retry_failures(&c, user.as_deref(), limit).await?;
            print!("{}", report.summary());
        }
    }
    Ok(())
}
