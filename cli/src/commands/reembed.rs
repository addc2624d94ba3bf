//! `collections reembed --provider P`: another model's vectors beside the
//! active one's, here or (`--stream`) through the AWS analyzed stream.

use domain::settings::Env;
use embedding::{EmbeddingProviderName, EmbeddingSettings};
use ops::kinesis::StreamWriter;
use store::config::DatabaseConfig;

use super::positive_rate;
use crate::components::{Choices, Components};
use crate::reembed::{reembed, reembed_on_stream};

/// Embed every latest analysis with another model (--provider, --model),
/// beside the active model's vectors, which searches keep using until the
/// configuration switches. Resumable: what is embedded is skipped.
#[derive(Debug, clap::Args)]
pub struct Reembed {
    /// `voyage`, `openai` or `local` (any case).
    #[arg(long)]
    provider: EmbeddingProviderName,
    /// The provider's model (default: the one configured for it, else its own default).
    #[arg(long)]
    model: Option<String>,
    /// The new vectors' size (default: EMBEDDING_DIMENSIONS's).
    #[arg(long)]
    dimensions: Option<usize>,
    #[arg(long)]
    user: Option<String>,
    /// Analyses a second, at most.
    #[arg(long, default_value_t = 50.0, value_parser = positive_rate)]
    rate: f64,
    /// On AWS: put the work on this stream (the stack's analyzed stream)
    /// for the embedder function, deployed with this model as its re-embed
    /// model.
    #[arg(long)]
    stream: Option<String>,
}

impl Reembed {
    /// The model the flags name.
    pub fn model(&self, env: &Env) -> anyhow::Result<EmbeddingSettings> {
        anyhow::ensure!(
            self.provider != EmbeddingProviderName::Local || self.model.is_none(),
            "the local provider has one model: no --model"
        );
        let model = self.model.clone().or_else(|| EmbeddingSettings::configured_model(env, self.provider));
        let dimensions = match self.dimensions {
            Some(dimensions) => dimensions,
            None => EmbeddingSettings::configured_dimensions(env)?,
        };
        Ok(EmbeddingSettings::of(env, self.provider, model, dimensions)?)
    }

    pub async fn run(self, env: &Env) -> anyhow::Result<()> {
        let model = self.model(env)?;
        if let Some(stream) = &self.stream {
            let name = model.stored_name();
            let pool = store::connect(&DatabaseConfig::from_env(env)?).await?;
            let writer = StreamWriter::new(&aws::load_config().await, stream, Default::default());
            let put = reembed_on_stream(&pool, &writer, &name, self.user.as_deref(), self.rate).await?;
            println!("put {put} analyses on {stream} to embed with {name}");
            return Ok(());
        }
        let c = Components::connect(env, Choices { embedding: Some(model), ..Choices::default() }).await?;
        // The new model's index is built before its first vector, so it is
        // ready at the switch.
        c.prepare_database(true).await?;
        let report = reembed(&c, self.user.as_deref(), self.rate).await?;
        report.print()
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Line {
        #[command(flatten)]
        reembed: Reembed,
    }

    fn model(args: &[&str], env: &[(&str, &str)]) -> anyhow::Result<EmbeddingSettings> {
        let line = Line::try_parse_from(std::iter::once("reembed").chain(args.iter().copied()))?;
        line.reembed.model(&Env::from_pairs(env.iter().copied()))
    }

    /// The bug the environment hid: a provider named in another case sent
    /// its model to OpenAI's variable, and Voyage was asked for voyage-3.5.
    #[test]
    fn the_model_named_is_the_model_asked_for() {
        let voyage = model(&["--provider", "Voyage", "--model", "voyage-3-large", "--dimensions", "512"], &[]).unwrap();
        assert_eq!(
            (voyage.provider, voyage.model.as_str(), voyage.dimensions),
            (EmbeddingProviderName::Voyage, "voyage-3-large", 512)
        );
        assert_eq!(voyage.stored_name(), "voyage-3-large@512");
        let configured =
            model(&["--provider", "OPENAI"], &[("OPENAI_EMBEDDING_MODEL", "m"), ("EMBEDDING_DIMENSIONS", "384")])
                .unwrap();
        assert_eq!((configured.model.as_str(), configured.dimensions), ("m", 384));
        assert!(model(&["--provider", "local", "--model", "x"], &[]).unwrap_err().to_string().contains("one model"));
        assert!(model(&["--provider", "gemini"], &[]).is_err());
    }
}
