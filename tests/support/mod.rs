//! What the integration tests share: generated images, mock provider
//! servers, and a pipeline wired to a test's own database and folders.

pub mod images;
pub mod providers;

use std::collections::HashMap;
use std::path::Path;

use collections::components::Components;
use shared::api::{ApiKey, SecretError, SecretSource};
use shared::config::Env;
use sqlx::PgPool;

/// Local components on `pool`, with the bucket under `data_dir`, small
/// batches, and any extra settings (`*_API_KEY` ones become the secrets).
pub async fn components(pool: PgPool, data_dir: &Path, extra: &[(&str, &str)]) -> Components {
    let data_dir = data_dir.to_str().expect("temporary paths are UTF-8");
    let mut vars =
        vec![("COLLECTIONS_DATA_DIR", data_dir), ("COLLECTIONS_BATCH_SIZE", "4"), ("COLLECTIONS_BATCH_WINDOW_MS", "20")];
    vars.extend_from_slice(extra);
    let secrets = FixedSecrets(
        vars.iter().filter(|(k, _)| k.ends_with("_API_KEY")).map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
    );
    Components::with_pool(&Env::from_pairs(vars), &secrets, pool).await.expect("test components build")
}

/// Secrets given by the test instead of the process environment.
#[derive(Debug, Clone, Default)]
pub struct FixedSecrets(pub HashMap<String, String>);

#[async_trait::async_trait]
impl SecretSource for FixedSecrets {
    async fn get(&self, name: &str) -> Result<Option<ApiKey>, SecretError> {
        Ok(self.0.get(name).map(ApiKey::new))
    }
}

/// Row counts of the three tables.
pub async fn counts(pool: &PgPool) -> (i64, i64, i64) {
    sqlx::query_as("SELECT (SELECT count(*) FROM items), (SELECT count(*) FROM analyses), (SELECT count(*) FROM embeddings)")
        .fetch_one(pool)
        .await
        .expect("counting rows")
}
