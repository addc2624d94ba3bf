//! Removing images locally: `collections delete KEY...` (the original, then
//! what S3's "Object Deleted" does on AWS: the item, its analyses and
//! vectors, its thumbnail) and `collections erase --user U` (everything of
//! a user: rows, failures, thumbnails, and with `--originals` the originals).

use std::sync::Arc;

use anyhow::Context;
use shared::bus::LocalBus;
use shared::events::{ObjectRef, Upload};
use shared::stage::BatchContext;
use shared::storage::ObjectStore;
use thumbnailer::{ThumbnailOutcome, Thumbnailer};

use crate::components::Components;
use crate::ingest::validate_user;

/// Deletes these keys of the local bucket as S3 deletes would: each key
/// with what became of it.
pub async fn delete_keys(c: &Components, keys: &[String]) -> anyhow::Result<Vec<(String, String)>> {
    for key in keys {
        c.store.delete(&c.local.bucket, key).await.with_context(|| format!("deleting the original {key}"))?;
    }
    let thumbnailer =
        Thumbnailer::new(c.store.clone(), Arc::new(LocalBus::new()), c.pool.clone(), c.thumbnail.clone())?;
    let uploads: Vec<Upload> = keys
        .iter()
        .map(|key| ObjectRef {
            bucket: c.local.bucket.clone(),
            key: key.clone(),
            deleted: true,
            ..ObjectRef::default()
        })
        .map(Upload::from)
        .collect();
    let outcomes = thumbnailer.process(&uploads, &BatchContext::default()).await;
    Ok(keys
        .iter()
        .zip(outcomes)
        .map(|(key, outcome)| {
            let said = match outcome {
                ThumbnailOutcome::Deleted(what) => what,
                ThumbnailOutcome::Skipped(why) => why,
                ThumbnailOutcome::Failed(failure) => format!("failed: {}", failure.reason),
                ThumbnailOutcome::Thumbnailed { .. } => unreachable!("a deletion makes no thumbnail"),
            };
            (key.clone(), said)
        })
        .collect())
}

/// What [`erase_user`] removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Erased {
    pub items: u64,
    pub record_failures: u64,
}

/// Removes every row of `user` (items, and with them analyses and vectors;
/// record failures), their thumbnails, and with `originals` their originals.
pub async fn erase_user(c: &Components, user: &str, originals: bool) -> anyhow::Result<Erased> {
    validate_user(user)?;
    let (items, record_failures) = shared::db::items::erase_user(&c.pool, user).await?;
    let folder = c.store.path_of(&c.local.bucket, user);
    let remove = if originals { folder } else { folder.join(shared::keys::THUMBNAILS_DIR) };
    match std::fs::remove_dir_all(&remove) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(e).with_context(|| format!("removing {}", remove.display()));
        }
        _ => {}
    }
    Ok(Erased { items, record_failures })
}
