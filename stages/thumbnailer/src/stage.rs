//! The thumbnail stage's batch: fetch originals and make thumbnails
//! concurrently (CPU work on a bounded rayon pool), write them, record every
//! item in one statement, then publish `ImageProcessed` for the successes.

use std::sync::Arc;

use async_trait::async_trait;
use futures::StreamExt;
use shared::bus::{EventPublisher, publish_for};
use shared::db::items::{self, ThumbnailRecord};
use shared::events::{ImageInfo, ImageProcessed, ObjectRef, PipelineEvent};
use shared::keys::{ImageKey, THUMBNAIL_TAG};
use shared::stage::{BatchContext, Failure, Outcome, Stage};
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

    /// Reads one original, thumbnails it on the worker pool, writes the
    /// thumbnail; what is returned no longer holds the thumbnail's bytes.
    async fn thumbnail_one(&self, object: &ObjectRef, key: &ImageKey) -> Result<Thumbnail, ItemError> {
        let bytes = self.store.get(&object.bucket, &object.key, self.config.max_file_bytes).await?;
        let spec = self.config.spec;
        let format = OutputFormat::for_extension(&key.extension());
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.workers.spawn(move || {
            let _ = tx.send(make_thumbnail(&bytes, format, &spec));
        });
        let mut thumbnail = rx.await.map_err(|_| ItemError::Worker)??;
        let bucket = self.config.bucket.as_deref().unwrap_or(&object.bucket);
        let bytes = std::mem::take(&mut thumbnail.bytes);
        self.store.put(bucket, &key.thumbnail_key(), bytes, format.media_type(), &[THUMBNAIL_TAG]).await?;
        Ok(thumbnail)
    }
}

/// What became of one object of a batch, before publishing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ThumbnailOutcome {
    /// The thumbnail is written and the item recorded; `event` is what to publish.
    Thumbnailed {
        thumbnail_key: String,
        width: u32,
        height: u32,
        event: Box<ImageProcessed>,
    },
    Skipped(String),
    Failed(Failure),
}

impl Thumbnailer {
    /// The stage's work on a batch, without publishing: thumbnails written,
    /// every item recorded in one statement, one outcome per object, in order.
    /// Running it again on the same objects writes the same thumbnails.
    pub async fn process(&self, objects: &[ObjectRef]) -> Vec<ThumbnailOutcome> {
        let keys: Vec<Result<ImageKey, ThumbnailOutcome>> = objects
            .iter()
            .map(|o| {
                ImageKey::parse(&o.key).map_err(|e| {
                    if e.is_skip() {
                        ThumbnailOutcome::Skipped(e.to_string())
                    } else {
                        ThumbnailOutcome::Failed(Failure { reason: e.to_string(), retriable: false, recorded: false })
                    }
                })
            })
            .collect();

        // Twice the workers in flight: one set decoding while the other downloads or uploads.
        // Indices, not references, go through the stream: closures over
        // borrowed items trip the `Send` check of `async_trait` futures.
        let keys_ref = &keys;
        let results: Vec<Option<Result<Thumbnail, ItemError>>> = futures::stream::iter(0..objects.len())
            .map(|i| async move {
                let (object, key) = (&objects[i], keys_ref[i].as_ref().ok()?);
                let span = info_span!("item", key = %object.key, user_id = key.user_id(), item_id = %key.item_uuid());
                Some(self.thumbnail_one(object, key).instrument(span).await)
            })
            .buffered(self.config.threads * 2)
            .collect()
            .await;

        let records: Vec<ThumbnailRecord> = objects
            .iter()
            .zip(&keys)
            .zip(&results)
            .filter_map(|((object, key), result)| Some(self.record(object, key.as_ref().ok()?, result.as_ref()?)))
            .collect();
        let written = match items::record_thumbnails(&self.pool, &records).await {
            Ok(written) => written,
            Err(e) => {
                warn!(error = %e, "recording the batch failed");
                let failure = Failure {
                    reason: format!("recording the thumbnail failed: {e}"),
                    retriable: e.is_retriable(),
                    recorded: false,
                };
                return keys
                    .into_iter()
                    .map(|k| k.err().unwrap_or_else(|| ThumbnailOutcome::Failed(failure.clone())))
                    .collect();
            }
        };

        objects
            .iter()
            .zip(keys)
            .zip(results)
            .map(|((object, key), result)| match (key, result) {
                (Err(outcome), _) => outcome,
                (Ok(key), Some(_)) if !written.contains(&key.item_uuid()) => ThumbnailOutcome::Failed(Failure {
                    reason: format!("item id {} already belongs to another user", key.item_uuid()),
                    retriable: false,
                    recorded: false,
                }),
                (Ok(key), Some(Ok(t))) => ThumbnailOutcome::Thumbnailed {
                    thumbnail_key: key.thumbnail_key(),
                    width: t.width,
                    height: t.height,
                    event: Box::new(self.event(object, &key, &t)),
                },
                (Ok(_), Some(Err(e))) => ThumbnailOutcome::Failed(Failure {
                    reason: e.to_string(),
                    retriable: e.is_retriable(),
                    recorded: true,
                }),
                (Ok(_), None) => unreachable!("every parsed key has a result"),
            })
            .collect()
    }
}

#[async_trait]
impl Stage for Thumbnailer {
    type Input = ObjectRef;

    fn name(&self) -> &'static str {
        "thumbnail"
    }

    async fn run_batch(&self, inputs: &[ObjectRef], _context: &BatchContext) -> Vec<Outcome> {
        let mut outcomes = Vec::with_capacity(inputs.len());
        let mut events = Vec::new();
        for outcome in self.process(inputs).await {
            outcomes.push(match outcome {
                ThumbnailOutcome::Thumbnailed { event, .. } => {
                    events.push((outcomes.len(), PipelineEvent::ImageProcessed(*event)));
                    Outcome::Done
                }
                ThumbnailOutcome::Skipped(reason) => Outcome::Skipped(reason),
                ThumbnailOutcome::Failed(failure) => Outcome::Failed(failure),
            });
        }
        publish_for(self.publisher.as_ref(), &mut outcomes, events).await;
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
