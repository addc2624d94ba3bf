//! The thumbnail stage's batch: fetch originals and make thumbnails
//! concurrently (CPU work on a bounded rayon pool), write them, record every
//! item in one statement, then publish `ImageProcessed` for the successes.

use std::sync::Arc;

use async_trait::async_trait;
use futures::StreamExt;
use shared::bus::EventPublisher;
use shared::db::items::{self, ThumbnailRecord};
use shared::events::{ImageInfo, ImageProcessed, ObjectRef, PipelineEvent};
use shared::keys::ImageKey;
use shared::stage::{BatchContext, Outcome, Stage};
use shared::storage::{ObjectStore, StorageError};
use sqlx::PgPool;
use tracing::{Instrument, info_span, warn};

use crate::config::ThumbnailConfig;
use crate::resize::{OutputFormat, Thumbnail, ThumbnailError, make_thumbnail};

pub struct Thumbnailer {
    store: Arc<dyn ObjectStore>,
    publisher: Arc<dyn EventPublisher>,
    pool: PgPool,
    config: ThumbnailConfig,
    workers: rayon::ThreadPool,
}

impl std::fmt::Debug for Thumbnailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Thumbnailer").field("config", &self.config).finish_non_exhaustive()
    }
}

/// Why one item failed in this stage.
#[derive(Debug, thiserror::Error)]
enum ItemError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Image(#[from] ThumbnailError),
    #[error("the thumbnail worker stopped")]
    Worker,
}

impl ItemError {
    fn is_retriable(&self) -> bool {
        match self {
            Self::Storage(e) => e.is_retriable(),
            Self::Image(_) => false,
            Self::Worker => true,
        }
    }
}

impl Thumbnailer {
    pub fn new(
        store: Arc<dyn ObjectStore>,
        publisher: Arc<dyn EventPublisher>,
        pool: PgPool,
        config: ThumbnailConfig,
    ) -> std::io::Result<Self> {
        let workers = rayon::ThreadPoolBuilder::new()
            .num_threads(config.threads)
            .thread_name(|i| format!("thumbnail-{i}"))
            .build()
            .map_err(std::io::Error::other)?;
        Ok(Self { store, publisher, pool, config, workers })
    }

    /// Reads one original, thumbnails it on the worker pool, writes the thumbnail.
    async fn thumbnail_one(&self, object: &ObjectRef, key: &ImageKey) -> Result<Thumbnail, ItemError> {
        let bytes = self.store.get(&object.bucket, &object.key, self.config.max_file_bytes).await?;
        let spec = self.config.spec;
        let format = OutputFormat::for_extension(&key.extension());
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.workers.spawn(move || {
            let _ = tx.send(make_thumbnail(&bytes, format, &spec));
        });
        let thumbnail = rx.await.map_err(|_| ItemError::Worker)??;
        let bucket = self.config.bucket.as_deref().unwrap_or(&object.bucket);
        self.store.put(bucket, &key.thumbnail_key(), thumbnail.bytes.clone(), format.media_type()).await?;
        Ok(thumbnail)
    }
}

#[async_trait]
impl Stage for Thumbnailer {
    type Input = ObjectRef;

    fn name(&self) -> &'static str {
        "thumbnail"
    }

    async fn run_batch(&self, inputs: &[ObjectRef], _context: &BatchContext) -> Vec<Outcome> {
        let keys: Vec<Result<ImageKey, Outcome>> = inputs
            .iter()
            .map(|o| {
                ImageKey::parse(&o.key).map_err(|e| {
                    if e.is_skip() {
                        Outcome::Skipped(e.to_string())
                    } else {
                        Outcome::failed(e.to_string(), false, false)
                    }
                })
            })
            .collect();

        // Twice the workers in flight: one set decoding while the other downloads or uploads.
        let in_flight = self.config.threads * 2;
        // Indices, not references, go through the stream: closures over
        // borrowed items trip the `Send` check of `async_trait` futures.
        let keys_ref = &keys;
        let results: Vec<Option<Result<Thumbnail, ItemError>>> = futures::stream::iter(0..inputs.len())
            .map(|i| async move {
                let (object, key) = (&inputs[i], keys_ref[i].as_ref().ok()?);
                let span = info_span!("item", key = %object.key, user_id = key.user_id(), item_id = %key.item_uuid());
                Some(self.thumbnail_one(object, key).instrument(span).await)
            })
            .buffered(in_flight)
            .collect()
            .await;

        let records: Vec<ThumbnailRecord> = inputs
            .iter()
            .zip(&keys)
            .zip(&results)
            .filter_map(|((object, key), result)| Some(self.record(object, key.as_ref().ok()?, result.as_ref()?)))
            .collect();
        if let Err(e) = items::record_thumbnails(&self.pool, &records).await {
            warn!(error = %e, "recording the batch failed");
            return keys
                .into_iter()
                .map(|k| match k {
                    Ok(_) => Outcome::failed(format!("recording the thumbnail failed: {e}"), e.is_retriable(), false),
                    Err(outcome) => outcome,
                })
                .collect();
        }

        let mut outcomes: Vec<Outcome> = Vec::with_capacity(inputs.len());
        let mut events = Vec::new();
        let mut waiting = Vec::new(); // outcome index of each event
        for ((object, key), result) in inputs.iter().zip(keys).zip(results) {
            match (key, result) {
                (Err(outcome), _) => outcomes.push(outcome),
                (Ok(key), Some(Ok(thumbnail))) => {
                    waiting.push(outcomes.len());
                    events.push(PipelineEvent::ImageProcessed(self.event(object, &key, &thumbnail)));
                    outcomes.push(Outcome::Done);
                }
                (Ok(_), Some(Err(e))) => outcomes.push(Outcome::failed(e.to_string(), e.is_retriable(), true)),
                (Ok(_), None) => unreachable!("every parsed key has a result"),
            }
        }
        let published = self.publisher.publish(events).await;
        for (index, result) in waiting.into_iter().zip(published) {
            if let Err(e) = result {
                outcomes[index] = Outcome::failed(format!("publishing ImageProcessed failed: {e}"), true, false);
            }
        }
        outcomes
    }
}

impl Thumbnailer {
    fn record(&self, object: &ObjectRef, key: &ImageKey, result: &Result<Thumbnail, ItemError>) -> ThumbnailRecord {
        let base = ThumbnailRecord {
            id: key.item_uuid(),
            user_id: key.user_id().to_owned(),
            bucket: object.bucket.clone(),
            key: object.key.clone(),
            filename: key.filename().to_owned(),
            mime_type: Some(key.mime_type().to_owned()),
            etag: object.etag.clone(),
            size_bytes: object.size.and_then(|s| i64::try_from(s).ok()),
            ..ThumbnailRecord::default()
        };
        match result {
            Ok(t) => ThumbnailRecord {
                mime_type: Some(format!("image/{}", t.source_format)),
                width: i32::try_from(t.original_width).ok(),
                height: i32::try_from(t.original_height).ok(),
                thumbnail_key: Some(key.thumbnail_key()),
                ..base
            },
            Err(e) => ThumbnailRecord { error: Some(e.to_string()), ..base },
        }
    }

    fn event(&self, object: &ObjectRef, key: &ImageKey, t: &Thumbnail) -> ImageProcessed {
        ImageProcessed {
            item_id: key.item_id().to_owned(),
            user_id: key.user_id().to_owned(),
            bucket: self.config.bucket.clone().unwrap_or_else(|| object.bucket.clone()),
            original_key: object.key.clone(),
            thumbnail_key: key.thumbnail_key(),
            image: Some(ImageInfo {
                width: t.original_width,
                height: t.original_height,
                format: t.source_format.to_owned(),
                thumbnail_width: t.width,
                thumbnail_height: t.height,
                camera: t.exif.camera.clone(),
                taken_at: t.exif.taken_at.clone(),
            }),
            reanalysis: None,
        }
    }
}
