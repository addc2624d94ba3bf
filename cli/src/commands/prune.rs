//! `collections prune --model OLD`: after the switch, the old model's
//! vectors, index and registration.

use domain::settings::Env;

use crate::components::Components;
use crate::reembed::prune;

/// Remove a model's vectors, its index and its registration, after the
/// switch to another (with --user, only that user's vectors).
#[derive(Debug, clap::Args)]
pub struct Prune {
    #[arg(long)]
    model: String,
    #[arg(long)]
    user: Option<String>,
    /// Refuse while the model's last vector is younger than this.
    #[arg(long, default_value_t = 15)]
    idle_minutes: u64,
}

impl Prune {
    pub async fn run(self, env: &Env) -> anyhow::Result<()> {
        let c = Components::from_env(env).await?;
        let idle = std::time::Duration::from_secs(self.idle_minutes * 60);
        let removed = prune(&c, &self.model, self.user.as_deref(), idle).await?;
        println!("removed {removed} vectors of {}", self.model);
        Ok(())
    }
}
