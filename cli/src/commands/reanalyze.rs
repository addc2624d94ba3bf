//! `collections reanalyze`: new analysis versions of stored images, here
//! or (`--stream`) through the AWS processed stream.

use domain::settings::Env;
use ops::kinesis::StreamWriter;
use store::config::DatabaseConfig;
use vision::{VisionProviderName, VisionSettings};

use super::positive_rate;
use crate::components::{Choices, Components};
use crate::reanalyze::{Selection, reanalyze, reanalyze_on_stream};

/// Analyse stored images again (new analysis versions, then embedded) with
/// the configured provider and model (ANALYZER_PROVIDER, ANALYZER_MODEL), or
/// --provider and --model.
#[derive(Debug, clap::Args)]
pub struct Reanalyze {
    #[arg(long)]
    user: Option<String>,
    /// Only images whose latest analysis has this category.
    #[arg(long)]
    category: Option<String>,
    /// `anthropic`, `openai` or `local` (any case); without --model, its default model.
    #[arg(long)]
    provider: Option<VisionProviderName>,
    #[arg(long)]
    model: Option<String>,
    /// Remove the older analysis versions (and their vectors) afterwards.
    #[arg(long)]
    prune: bool,
    /// On AWS: put the work on this stream (the stack's processed stream)
    /// for the analyzer function and its configured model.
    #[arg(long, conflicts_with_all = ["provider", "model", "prune", "batch_api"])]
    stream: Option<String>,
    /// Analyse through the vision provider's batch API (Anthropic's or
    /// OpenAI's, half the price, answered within 24 hours) instead of a call
    /// per image; the command waits for the batches, and a rerun picks up
    /// those in flight.
    #[arg(long)]
    batch_api: bool,
    /// With --stream: items a second, at most.
    #[arg(long, default_value_t = 50.0, value_parser = positive_rate, requires = "stream")]
    rate: f64,
}

impl Reanalyze {
    /// The provider and model to analyse with: the flags', else the
    /// configured ones.
    pub fn vision(&self, env: &Env) -> anyhow::Result<VisionSettings> {
        let configured = VisionSettings::from_env(env)?;
        if self.provider.is_none() && self.model.is_none() {
            return Ok(configured);
        }
        let provider = self.provider.unwrap_or(configured.provider);
        // The configured model belongs to the configured provider only.
        let model = self.model.clone().or(if provider == configured.provider { configured.model } else { None });
        Ok(VisionSettings::of(env, provider, model)?)
    }

    pub async fn run(self, env: &Env) -> anyhow::Result<()> {
        let selection =
            Selection { user: self.user.as_deref(), category: self.category.as_deref(), not_waiting: self.batch_api };
        if let Some(stream) = &self.stream {
            let pool = store::connect(&DatabaseConfig::from_env(env)?).await?;
            let writer = StreamWriter::new(&aws::load_config().await, stream, Default::default());
            let put = reanalyze_on_stream(&pool, &writer, selection, self.rate).await?;
            println!("put {put} re-analyses on {stream}; `collections prune-analyses` removes the old versions after");
            return Ok(());
        }
        let choices = Choices { vision: Some(self.vision(env)?), batch_api: self.batch_api, ..Choices::default() };
        let c = Components::connect(env, choices).await?;
        c.prepare_database(true).await?;
        let report = reanalyze(&c, selection, self.prune).await?;
        report.print()
    }
}
