//! Removing images: `collections delete KEY...` (the original, then what
//! S3's "Object Deleted" does on AWS: the item, its analyses and vectors,
//! its thumbnail) and `collections erase --user U` (everything of a user:
//! rows, failures, deletion records, thumbnails, and with `--originals`
//! the originals). Locally on the local bucket, or with `--bucket` on S3
//! and the database `DATABASE_URL` names.

use std::sync::Arc;

use anyhow::Context;
use aws::s3::S3Store;
use domain::events::{ObjectRef, Upload};
use domain::keys::{ImageKey, KeyError};
use futures::StreamExt;
use runtime::batch::BatchContext;
use runtime::bus::LocalBus;
use runtime::storage::ObjectStore;
use sqlx::PgPool;
use thumbnailer::{ThumbnailConfig, ThumbnailOutcome, Thumbnailer};

use crate::components::Components;
use crate::ingest::validate_user;

/// Where images are deleted from: a bucket of a store, and the database.
#[derive(Clone)]
pub struct Place {
    pub store: Arc<dyn ObjectStore>,
    pub bucket: String,
    pub pool: PgPool,
    pub thumbnail: ThumbnailConfig,
}

impl Place {
    /// The local bucket.
    pub fn local(c: &Components) -> Self {
        Self {
            store: c.store.clone(),
            bucket: c.local.bucket.clone(),
            pool: c.pool.clone(),
            thumbnail: c.thumbnail.clone(),
        }
    }
}

/// Deletes these keys of the local bucket as S3 deletes would: each key
/// with what became of it.
pub async fn delete_keys(c: &Components, keys: &[String]) -> anyhow::Result<Vec<(String, String)>> {
    delete_keys_in(&Place::local(c), keys).await
}

/// Deletes these originals, then does at once what their "Object Deleted"
/// events will (on AWS they come later, and find nothing left to do):
/// each key with what became of it. Every key is parsed before anything is
/// touched; a key that is not an original's (malformed, a thumbnail, a
/// path leaving the bucket) is refused alone and nothing of it is deleted.
pub async fn delete_keys_in(place: &Place, keys: &[String]) -> anyhow::Result<Vec<(String, String)>> {
    let parsed: Vec<Result<ImageKey, KeyError>> = keys.iter().map(|key| ImageKey::parse(key)).collect();
    let originals: Vec<&ImageKey> = parsed.iter().flatten().collect();
    for key in &originals {
        place
            .store
            .delete(&place.bucket, key.as_str())
            .await
            .with_context(|| format!("deleting the original {key}"))?;
    }
    let thumbnailer =
        Thumbnailer::new(place.store.clone(), Arc::new(LocalBus::new()), place.pool.clone(), place.thumbnail.clone())?;
    let uploads: Vec<Upload> = originals
        .iter()
        .map(|key| ObjectRef {
            bucket: place.bucket.clone(),
            key: key.to_string(),
            deleted: true,
            ..ObjectRef::default()
        })
        .map(Upload::from)
        .collect();
    let mut outcomes = thumbnailer.process(&uploads, &BatchContext::default()).await.into_iter();
    Ok(keys
        .iter()
        .zip(parsed)
        .map(|(key, parsed)| {
            let said = match parsed.map(|_| outcomes.next().expect("one outcome per upload")) {
                Err(refused) => format!("refused, nothing deleted: {refused}"),
                Ok(ThumbnailOutcome::Deleted(what)) => what,
                Ok(ThumbnailOutcome::Skipped(why)) => why,
                Ok(ThumbnailOutcome::Failed(failure)) => format!("failed: {}", failure.reason),
                Ok(ThumbnailOutcome::Thumbnailed { .. }) => unreachable!("a deletion makes no thumbnail"),
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
    /// Objects deleted from S3 (none counted locally).
    pub objects: u64,
}

/// Removes every row of `user` (items, and with them analyses and vectors;
/// record failures), their thumbnails, and with `originals` their originals.
pub async fn erase_user(c: &Components, user: &str, originals: bool) -> anyhow::Result<Erased> {
    validate_user(user)?;
    let (items, record_failures) = store::items::erase_user(&c.pool, user).await?;
    let folder = c.store.path_of(&c.local.bucket, user)?;
    let remove = if originals { folder } else { folder.join(domain::keys::THUMBNAILS_DIR) };
    match std::fs::remove_dir_all(&remove) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(e).with_context(|| format!("removing {}", remove.display()));
        }
        _ => {}
    }
    Ok(Erased { items, record_failures, objects: 0 })
}

/// Objects deleted at once on S3.
const DELETES_IN_FLIGHT: usize = 16;

/// As [`erase_user`], on S3: the user's thumbnails (and with `originals`
/// every object under the user's folder) are deleted first, then the rows,
/// so an interrupted erase is finished by running it again. Deleting
/// originals sends "Object Deleted" events, which find nothing left.
pub async fn erase_user_on_s3(
    s3: &S3Store,
    pool: &PgPool,
    bucket: &str,
    user: &str,
    originals: bool,
) -> anyhow::Result<Erased> {
    validate_user(user)?;
    let prefix = if originals { format!("{user}/") } else { format!("{user}/{}/", domain::keys::THUMBNAILS_DIR) };
    let mut objects = 0;
    let mut after: Option<String> = None;
    loop {
        let page = s3.list_page(bucket, Some(&prefix), after.as_deref(), 1000).await?;
        after = page.objects.last().map(|o| o.key.clone());
        let deletes = page.objects.iter().map(|o| s3.delete(bucket, &o.key));
        let deleted: Vec<_> = futures::stream::iter(deletes).buffer_unordered(DELETES_IN_FLIGHT).collect().await;
        for result in deleted {
            result.context("deleting an object of the user")?;
            objects += 1;
        }
        if !page.truncated || after.is_none() {
            break;
        }
    }
    let (items, record_failures) = store::items::erase_user(pool, user).await?;
    Ok(Erased { items, record_failures, objects })
}
