//! `collections thumbnail INPUT... --out DIR`: the thumbnail stage alone.

use std::path::PathBuf;

use domain::settings::Env;
use thumbnailer::ThumbnailConfig;

use crate::thumbnail;

/// Thumbnail files or folders into a folder, without a database.
#[derive(Debug, clap::Args)]
pub struct Thumbnail {
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
    /// A folder outside the inputs.
    #[arg(long)]
    out: PathBuf,
    /// Replace files already in the output folder (never an input).
    #[arg(long)]
    overwrite: bool,
}

impl Thumbnail {
    pub async fn run(self, env: &Env) -> anyhow::Result<()> {
        let config = ThumbnailConfig::from_env(env)?;
        let jobs = thumbnail::plan(&self.inputs, &self.out)?;
        let overwrite = self.overwrite;
        let report = tokio::task::spawn_blocking(move || thumbnail::run(&jobs, &config, overwrite)).await??;
        report.print()
    }
}
