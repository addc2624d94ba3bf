//! `collections backfill --bucket B`: existing S3 objects into the pipeline,
//! onto the uploads stream or (`--direct`) through the stages here.

use std::path::PathBuf;

use domain::settings::{Env, Setting};
use ops::backfill::{self, DryRun, Options, Sink, StreamSink};
use ops::kinesis::StreamWriter;
use runtime::storage::BUCKET_NAME;
use store::config::DatabaseConfig;

use super::positive_rate;
use crate::components::{Choices, Components, DATA_DIR};
use crate::ingest::DirectSink;

pub const UPLOADS_STREAM_NAME: Setting =
    Setting::new("UPLOADS_STREAM_NAME", "uploads", "the stream `collections backfill` feeds");

/// Feed existing S3 objects to the pipeline: onto the uploads stream, or
/// (--direct) through the stages in this process. Resumable.
#[derive(Debug, clap::Args)]
pub struct Backfill {
    #[arg(long, env = BUCKET_NAME.name)]
    bucket: String,
    #[arg(long)]
    prefix: Option<String>,
    /// The Kinesis stream the thumbnailer reads.
    #[arg(long, env = UPLOADS_STREAM_NAME.name, default_value = UPLOADS_STREAM_NAME.default_text())]
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
    /// With --direct: analyse through the vision provider's batch API
    /// (Anthropic's or OpenAI's, half the price, answered within 24
    /// hours); the command waits for the batches, and a rerun picks up those
    /// in flight. (Through the stream, the analyzer function calls per image.)
    #[arg(long, requires = "direct")]
    batch_api: bool,
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
}

impl Backfill {
    pub async fn run(self, env: &Env) -> anyhow::Result<()> {
        let checkpoint = match self.checkpoint {
            Some(path) => path,
            None => {
                let prefix = self.prefix.as_deref().map(|p| format!("-{}", p.replace('/', "_"))).unwrap_or_default();
                PathBuf::from(env.text(&DATA_DIR)?).join("backfill").join(format!("{}{prefix}.json", self.bucket))
            }
        };
        let options = Options {
            bucket: self.bucket,
            prefix: self.prefix,
            rate: self.rate,
            all: self.all,
            checkpoint,
            restart: self.restart,
            count_first: !self.no_count,
            page_size: 1000,
            max_pages: self.max_pages,
            progress: true,
        };
        let aws = aws::load_config().await;
        let s3 = aws::s3::S3Store::new(&aws);
        let report = if self.direct {
            let c = Components::connect(env, Choices { batch_api: self.batch_api, ..Choices::default() }).await?;
            c.prepare_database(true).await?;
            let sink = DirectSink::start(&c, s3.clone())?;
            backfill::backfill(&s3, Some(&c.pool), Box::new(sink), &options).await?
        } else {
            let pool = match DatabaseConfig::from_env(env) {
                Ok(settings) if !options.all => Some(store::connect(&settings).await?),
                _ => None,
            };
            let writer = StreamWriter::new(&aws, self.stream, Default::default());
            let sink: Box<dyn Sink> = if self.dry_run { Box::new(DryRun) } else { Box::new(StreamSink(&writer)) };
            backfill::backfill(&s3, pool.as_ref(), sink, &options).await?
        };
        print!("{}", report.summary());
        Ok(())
    }
}
