//! What the integration tests share: generated images and a pipeline wired
//! to a test's own database and folders.

pub mod images;

use std::path::Path;

use collections::components::Components;
use shared::config::Env;
use sqlx::PgPool;

/// Local components on `pool`, with the bucket under `data_dir`, small
/// batches, and any extra settings.
pub fn components(pool: PgPool, data_dir: &Path, extra: &[(&str, &str)]) -> Components {
    let data_dir = data_dir.to_str().expect("temporary paths are UTF-8");
    let mut vars = vec![
        ("COLLECTIONS_DATA_DIR", data_dir),
        ("COLLECTIONS_BATCH_SIZE", "4"),
        ("COLLECTIONS_BATCH_WINDOW_MS", "20"),
    ];
    vars.extend_from_slice(extra);
    Components::with_pool(&Env::from_pairs(vars), pool).expect("test components build")
}

/// Row counts of the three tables.
pub async fn counts(pool: &PgPool) -> (i64, i64, i64) {
    sqlx::query_as(
        "SELECT (SELECT count(*) FROM items), (SELECT count(*) FROM analyses), (SELECT count(*) FROM embeddings)",
    )
    .fetch_one(pool)
    .await
    .expect("counting rows")
}
