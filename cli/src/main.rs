//! `collections`: the pipeline on one machine. Settings come from the
//! environment (see the README); `--help` on each command.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use collections::components::{Components, INDEX_BUILD_MEMORY_MIB};
use collections::{backfill, ingest, thumbnail};
use shared::config::DatabaseConfig;
use shared::config::Env;
use shared::db::models;
use shared::db::search::search_text;

#[derive(Debug, Parser)]
#[command(name = "collections", version, about = "Thumbnail, analyse, embed and search images")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Apply the database migrations, and register and index the configured
    /// embedding model (harmless to repeat; needs no API key).
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
        /// For big loads: drop the vector index first and build it once at
        /// the end (searches scan meanwhile).
        #[arg(long)]
        defer_index: bool,
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
        /// A folder outside the inputs.
        #[arg(long)]
        out: PathBuf,
        /// Replace files already in the output folder (never an input).
        #[arg(long)]
        overwrite: bool,
    },
    /// List items whose last attempt failed, with the stage and reason, and
    /// failed records that belong to no item of their user.
    Failures {
        #[arg(long)]
        user: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: i64,
    },
    /// Feed existing S3 objects to the pipeline: onto the uploads stream, or
    /// (--direct) through the stages in this process. Resumable.
    Backfill {
        #[arg(long, env = "BUCKET_NAME")]
        bucket: String,
        #[arg(long)]
        prefix: Option<String>,
        /// The Kinesis stream the thumbnailer reads.
        #[arg(long, env = "UPLOADS_STREAM_NAME", default_value = "uploads")]
        stream: String,
        /// Objects a second, at most, so live uploads are not starved.
        #[arg(long, default_value_t = 200.0, value_parser = positive_rate)]
        rate: f64,
        /// Also objects already fully processed.
        #[arg(long)]
        all: bool,
        /// List and count, send nothing.
        #[arg(long)]
        dry_run: bool,
        /// Run the stages here instead of feeding the stream.
        #[arg(long)]
        direct: bool,
        /// Where progress is saved (default: under COLLECTIONS_DATA_DIR).
        #[arg(long)]
        checkpoint: Option<PathBuf>,
        /// Start over, ignoring a saved checkpoint.
        #[arg(long)]
        restart: bool,
        /// Skip the first listing that sizes the progress bar.
        #[arg(long)]
        no_count: bool,
        /// Stop after this many pages of 1000 keys.
        #[arg(long, hide = true)]
        max_pages: Option<usize>,
    },
    /// Drop, build or show the HNSW vector index of every registered
    /// embedding model (for bulk loads: drop, load, build).
    VectorIndex {
        #[arg(value_enum)]
        action: IndexAction,
        /// maintenance_work_mem for the build, MiB.
        #[arg(long, default_value_t = INDEX_BUILD_MEMORY_MIB)]
        memory_mib: u32,
    },
    /// Put the records a stream's on-failure queue names back on their
    /// stream; each message is deleted once its records are.
    Redrive {
        /// The SQS queue's URL (the stack's on-failure destination of a stage).
        #[arg(long)]
        queue: String,
        /// Messages to take, at most.
        #[arg(long, default_value_t = 1000)]
        max_messages: usize,
    },
    /// Serve the search API and the gallery page on 127.0.0.1, for one user
    /// (a development mode: no token is checked).
    Serve {
        #[arg(long)]
        user: String,
        #[arg(long, default_value_t = 8080)]
        port: u16,
    },
    /// Items by status, the commonest failures, tokens by model and their
    /// estimated cost (prices from prices.json or COLLECTIONS_PRICES).
    Stats {
        #[arg(long)]
        user: Option<String>,
        /// Only what was made since: a date (2026-11-30) or an RFC 3339 time.
        #[arg(long, value_parser = collections::stats::parse_since)]
        since: Option<chrono::DateTime<chrono::Utc>>,
    },
    /// Analyse stored images again (new analysis versions, then embedded)
    /// with the configured provider and model (ANALYZER_PROVIDER,
    /// ANALYZER_MODEL, or --provider and --model).
    Reanalyze {
        #[arg(long)]
        user: Option<String>,
        /// Only images whose latest analysis has this category.
        #[arg(long)]
        category: Option<String>,
        #[arg(long)]
        provider: Option<String>,
        #[arg(long)]
        model: Option<String>,
        /// Remove the older analysis versions (and their vectors) afterwards.
        #[arg(long)]
        prune: bool,
        /// On AWS: put the work on this stream (the stack's processed
        /// stream) for the analyzer function and its configured model.
        #[arg(long, conflicts_with_all = ["provider", "model", "prune"])]
        stream: Option<String>,
        /// With --stream: items a second, at most.
        #[arg(long, default_value_t = 50.0, value_parser = positive_rate, requires = "stream")]
        rate: f64,
    },
    /// Remove analyses that a newer version of their item supersedes, once
    /// that version has a vector of the active model (after `reanalyze
    /// --stream` drained).
    PruneAnalyses {
        #[arg(long)]
        user: Option<String>,
    },
    /// Embed every latest analysis with another model (--provider, --model),
    /// beside the active model's vectors, which searches keep using until
    /// the configuration switches. Resumable: what is embedded is skipped.
    Reembed {
        #[arg(long)]
        provider: String,
        #[arg(long)]
        model: Option<String>,
        /// The new vectors' size (EMBEDDING_DIMENSIONS); default 1024.
        #[arg(long)]
        dimensions: Option<usize>,
        #[arg(long)]
        user: Option<String>,
        /// Analyses a second, at most.
        #[arg(long, default_value_t = 50.0, value_parser = positive_rate)]
        rate: f64,
        /// On AWS: put the work on this stream (the stack's analyzed
        /// stream) for the embedder function, deployed with this model as
        /// its re-embed model.
        #[arg(long)]
        stream: Option<String>,
    },
    /// Remove a model's vectors, its index and its registration, after the
    /// switch to another (with --user, only that user's vectors).
    #[command(alias = "prune-vectors")]
    Prune {
        #[arg(long)]
        model: String,
        #[arg(long)]
        user: Option<String>,
        /// Refuse while the model's last vector is younger than this.
        #[arg(long, default_value_t = 15)]
        idle_minutes: u64,
    },
    /// Delete images of the local bucket: the originals, their items
    /// (analyses and vectors) and their thumbnails.
    Delete {
        #[arg(required = true)]
        keys: Vec<String>,
        /// On AWS: this S3 bucket (and the database DATABASE_URL names).
        #[arg(long)]
        bucket: Option<String>,
    },
    /// Remove everything of a user: rows, failures, thumbnails, and with
    /// --originals the originals too.
    Erase {
        #[arg(long)]
        user: String,
        #[arg(long)]
        originals: bool,
        /// On AWS: this S3 bucket (and the database DATABASE_URL names).
        #[arg(long)]
        bucket: Option<String>,
    },
    /// Run failed items again from the stage where they failed.
    Retry {
        #[arg(long)]
        user: Option<String>,
        #[arg(long, default_value_t = 1000)]
        limit: i64,
    },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum IndexAction {
    Drop,
    Build,
    Status,
}

#[tokio::main]
async fn main() -> ExitCode {
    shared::telemetry::init_cli();
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
        Command::Thumbnail { inputs, out, overwrite } => {
            let config = thumbnailer::ThumbnailConfig::from_env(&env)?;
            let jobs = thumbnail::plan(&inputs, &out)?;
            let report = tokio::task::spawn_blocking(move || thumbnail::run(&jobs, &config, overwrite)).await??;
            print!("{}", report.summary());
        }
        Command::Migrate => {
            let pool = shared::db::connect(&DatabaseConfig::from_env(&env)?).await?;
            let embedder = embedder::EmbedderConfig::from_env(&env)?;
            collections::components::prepare_database(&pool, &embedder, true).await?;
            let model = embedder::providers::stored_name(&embedder.active());
            println!("migrations applied; {model} is registered and indexed");
        }
        Command::Run { dir, user, force, defer_index } => {
            let c = Components::from_env(&env).await?;
            c.prepare_database(!defer_index).await?;
            if defer_index {
                models::drop_indexes(&c.pool).await?;
            }
            let report = ingest::run_folder(&c, &dir, &user, force).await;
            if defer_index {
                eprintln!("building the vector indexes ...");
                models::build_indexes(&c.pool, INDEX_BUILD_MEMORY_MIB).await?;
            }
            print!("{}", report?.summary());
        }
        Command::Backfill {
            bucket,
            prefix,
            stream,
            rate,
            all,
            dry_run,
            direct,
            checkpoint,
            restart,
            no_count,
            max_pages,
        } => {
            let local = collections::components::LocalConfig::from_env(&env)?;
            let checkpoint = checkpoint.unwrap_or_else(|| {
                let name = format!(
                    "{bucket}{}",
                    prefix.as_deref().map(|p| format!("-{}", p.replace('/', "_"))).unwrap_or_default()
                );
                local.data_dir.join("backfill").join(format!("{name}.json"))
            });
            let options = backfill::Options {
                bucket,
                prefix,
                rate,
                all,
                checkpoint,
                restart,
                count_first: !no_count,
                page_size: 1000,
                max_pages,
                progress: true,
            };
            let aws = shared::aws::load_config().await;
            let s3 = shared::aws::s3::S3Store::new(&aws);
            let report = if direct {
                let c = Components::from_env(&env).await?;
                c.prepare_database(true).await?;
                backfill::backfill(&s3, Some(&c.pool), backfill::Sink::Direct(&c), &options).await?
            } else {
                let pool = match DatabaseConfig::from_env(&env) {
                    Ok(settings) if !all => Some(shared::db::connect(&settings).await?),
                    _ => None,
                };
                let writer = shared::aws::kinesis::StreamWriter::new(&aws, stream, Default::default());
                let sink = if dry_run { backfill::Sink::DryRun } else { backfill::Sink::Stream(&writer) };
                backfill::backfill(&s3, pool.as_ref(), sink, &options).await?
            };
            print!("{}", report.summary());
        }
        Command::VectorIndex { action, memory_mib } => {
            let c = Components::from_env(&env).await?;
            match action {
                IndexAction::Drop => models::drop_indexes(&c.pool).await?,
                IndexAction::Build => models::build_indexes(&c.pool, memory_mib).await?,
                IndexAction::Status => {}
            }
            let registered = models::registered(&c.pool).await?;
            if registered.is_empty() {
                println!("no embedding model is registered yet");
            }
            for model in registered {
                let state = match models::index_state(&c.pool, &model).await? {
                    models::VectorIndex::Valid => "present",
                    models::VectorIndex::Absent => "absent",
                    models::VectorIndex::Partial => "partial (an interrupted build; `vector-index build` ends it)",
                    models::VectorIndex::Unindexable => "none (over 4000 dimensions: searched exactly)",
                };
                let active = if model.model == c.embedding.model() { ", active" } else { "" };
                println!("{} ({} dimensions{active}): {state}", model.model, model.dimensions);
            }
        }
        Command::Search { text, user, limit, category } => {
            let c = Components::from_env(&env).await?;
            let hits = search_text(&c.pool, c.embedding.as_ref(), &user, &text, limit, category.as_deref()).await?;
            if hits.is_empty() {
                println!("no results for {text:?} among {user}'s images");
            }
            for (rank, hit) in hits.iter().enumerate() {
                println!("{:>2}. {:.4}  {}  [{}]", rank + 1, hit.score, hit.key, hit.category);
                println!("    thumbnail: {}", hit.thumbnail_key.as_deref().unwrap_or("-"));
                println!("    {}", hit.summary);
                if !hit.also_keys.is_empty() {
                    println!("    the same image as: {}", hit.also_keys.join(", "));
                }
            }
        }
        Command::Failures { user, limit } => {
            let c = Components::from_env(&env).await?;
            let failed = shared::db::items::failures(&c.pool, user.as_deref(), limit).await?;
            let records = shared::db::status::record_failure_list(&c.pool, user.as_deref(), limit).await?;
            if failed.is_empty() && records.is_empty() {
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
            for r in records {
                println!(
                    "{}  {}  stage={} attempts={}  {}{}",
                    r.updated_at.format("%F %T"),
                    r.object_key.as_deref().unwrap_or("(no item)"),
                    r.stage,
                    r.attempts,
                    r.reason,
                    if r.input.is_some() { "" } else { "  [unreadable: cannot be retried]" }
                );
            }
        }
        Command::Redrive { queue, max_messages } => {
            let aws = shared::aws::load_config().await;
            let report =
                shared::aws::redrive::Redrive::new(&aws).run(&queue, max_messages).await.map_err(anyhow::Error::msg)?;
            println!("redriven {} messages ({} records), kept {}", report.redriven, report.records, report.kept.len());
            for (id, reason) in &report.kept {
                println!("  KEPT {id}: {reason}");
            }
        }
        Command::Serve { user, port } => {
            let c = Components::from_env(&env).await?;
            let service = search::SearchService {
                pool: c.pool.clone(),
                embedding: c.embedding.clone(),
                links: std::sync::Arc::new(search::links::LocalLinks),
            };
            let app = search::gallery::local_app(std::sync::Arc::new(service), c.store.clone(), None, &user);
            let listener = tokio::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, port))
                .await
                .with_context(|| format!("listening on 127.0.0.1:{port}"))?;
            println!("serving {user}'s images: open http://{}/ (Ctrl-C stops)", listener.local_addr()?);
            axum::serve(listener, app).await?;
        }
        Command::Stats { user, since } => {
            let c = Components::from_env(&env).await?;
            let prices =
                collections::stats::Prices::load(env.get("COLLECTIONS_PRICES").as_deref().map(std::path::Path::new))?;
            let filter = collections::stats::Filter { user: user.as_deref(), since };
            let stats = collections::stats::gather(&c.pool, filter).await?;
            print!("{}", collections::stats::report(&stats, &prices));
        }
        Command::Reanalyze { user, category, stream: Some(stream), rate, .. } => {
            let pool = shared::db::connect(&DatabaseConfig::from_env(&env)?).await?;
            let aws = shared::aws::load_config().await;
            let writer = shared::aws::kinesis::StreamWriter::new(&aws, &stream, Default::default());
            let selection = collections::reanalyze::Selection { user: user.as_deref(), category: category.as_deref() };
            let put = collections::reanalyze::reanalyze_on_stream(&pool, &writer, selection, rate).await?;
            println!("put {put} re-analyses on {stream}; `collections prune-analyses` removes the old versions after");
        }
        Command::PruneAnalyses { user } => {
            let pool = shared::db::connect(&DatabaseConfig::from_env(&env)?).await?;
            let active = embedder::providers::stored_name(&embedder::EmbedderConfig::from_env(&env)?.active());
            let removed = collections::reanalyze::prune_superseded(&pool, &active, user.as_deref()).await?;
            println!("removed {removed} superseded analyses");
        }
        Command::Reanalyze { user, category, provider, model, prune, stream: None, .. } => {
            let mut pairs: Vec<(String, String)> = std::env::vars().collect();
            pairs.extend(provider.map(|p| ("ANALYZER_PROVIDER".to_owned(), p)));
            pairs.extend(model.map(|m| ("ANALYZER_MODEL".to_owned(), m)));
            let c = Components::from_env(&Env::from_pairs(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())))).await?;
            c.prepare_database(true).await?;
            let selection = collections::reanalyze::Selection { user: user.as_deref(), category: category.as_deref() };
            let report = collections::reanalyze::reanalyze(&c, selection, prune).await?;
            print!("{}", report.summary());
        }
        Command::Reembed { provider, model, dimensions, user, rate, stream } => {
            let mut pairs: Vec<(String, String)> = std::env::vars().collect();
            pairs.push(("EMBEDDING_PROVIDER".to_owned(), provider.clone()));
            if let Some(model) = model {
                anyhow::ensure!(
                    !provider.eq_ignore_ascii_case("local"),
                    "the local provider has one model: no --model"
                );
                let name = if provider == "voyage" { "VOYAGE_EMBEDDING_MODEL" } else { "OPENAI_EMBEDDING_MODEL" };
                pairs.push((name.to_owned(), model));
            }
            pairs.extend(dimensions.map(|d| ("EMBEDDING_DIMENSIONS".to_owned(), d.to_string())));
            let target = Env::from_pairs(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())));
            if let Some(stream) = stream {
                let name = embedder::providers::stored_name(&embedder::EmbedderConfig::from_env(&target)?.active());
                let pool = shared::db::connect(&DatabaseConfig::from_env(&env)?).await?;
                let aws = shared::aws::load_config().await;
                let writer = shared::aws::kinesis::StreamWriter::new(&aws, &stream, Default::default());
                let put = collections::reembed::reembed_on_stream(&pool, &writer, &name, user.as_deref(), rate).await?;
                println!("put {put} analyses on {stream} to embed with {name}");
                return Ok(());
            }
            let c = Components::from_env(&target).await?;
            // The new model's index is built before its first vector, so it
            // is ready at the switch.
            c.prepare_database(true).await?;
            let report = collections::reembed::reembed(&c, user.as_deref(), rate).await?;
            print!("{}", report.summary());
        }
        Command::Prune { model, user, idle_minutes } => {
            let c = Components::from_env(&env).await?;
            let idle = std::time::Duration::from_secs(idle_minutes * 60);
            let removed = collections::reembed::prune(&c, &model, user.as_deref(), idle).await?;
            println!("removed {removed} vectors of {model}");
        }
        Command::Delete { keys, bucket } => {
            let place = match bucket {
                Some(bucket) => collections::erase::Place {
                    store: std::sync::Arc::new(shared::aws::s3::S3Store::new(&shared::aws::load_config().await)),
                    bucket,
                    pool: shared::db::connect(&DatabaseConfig::from_env(&env)?).await?,
                    thumbnail: thumbnailer::ThumbnailConfig::from_env(&env)?,
                },
                None => collections::erase::Place::local(&Components::from_env(&env).await?),
            };
            for (key, what) in collections::erase::delete_keys_in(&place, &keys).await? {
                println!("{key}: {what}");
            }
        }
        Command::Erase { user, originals, bucket } => {
            let erased = match bucket {
                Some(bucket) => {
                    let s3 = shared::aws::s3::S3Store::new(&shared::aws::load_config().await);
                    let pool = shared::db::connect(&DatabaseConfig::from_env(&env)?).await?;
                    collections::erase::erase_user_on_s3(&s3, &pool, &bucket, &user, originals).await?
                }
                None => collections::erase::erase_user(&Components::from_env(&env).await?, &user, originals).await?,
            };
            println!(
                "erased {user}: {} items (with their analyses and vectors), {} failed records, thumbnails{}{}",
                erased.items,
                erased.record_failures,
                if originals { " and originals" } else { "" },
                if erased.objects > 0 { format!(" ({} objects)", erased.objects) } else { String::new() }
            );
        }
        Command::Retry { user, limit } => {
            let c = Components::from_env(&env).await?;
            let report = ingest::retry_failures(&c, user.as_deref(), limit).await?;
            print!("{}", report.summary());
        }
    }
    Ok(())
}

/// A rate above zero (objects a second).
fn positive_rate(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(rate) if rate > 0.0 && rate.is_finite() => Ok(rate),
        _ => Err(format!("{text:?} is not a rate above zero")),
    }
}
