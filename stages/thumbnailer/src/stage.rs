//! The thumbnail stage's batch, in named phases over each object's
//! [`Step`]: check what is already done, make the thumbnails that are not
//! (CPU work on a bounded rayon pool, until the batch's deadline), record
//! every item in one statement, then publish `ImageProcessed`.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use domain::events::{ImageInfo, ImageProcessed, ObjectRef, PipelineEvent, Upload, sequencer_order};
use domain::keys::{ImageKey, KeyError, THUMBNAIL_TAG};
use domain::retry::Retriable;
use domain::stage::StageName;
use runtime::batch::{BatchContext, until_deadline};
use runtime::bus::{EventPublisher, publish_for};
use runtime::outcome::{Failure, Outcome};
use runtime::stage::Stage;
use runtime::storage::{ObjectStore, StorageError};
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use store::items::{self, Deletion, ItemState, ThumbnailRecord};
use tracing::{Instrument, info_span};

use crate::config::ThumbnailConfig;
use crate::resize::{OutputFormat, Thumbnail, ThumbnailError, make_thumbnail};
use crate::worker::run_on;

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
    #[error("thumbnailing failed inside the decoder or encoder (a panic: {0})")]
    Panicked(String),
}

impl ItemError {
    /// What the image's owner is told: what is wrong with their file, never
    /// the decoder's or the bucket's words.
    fn public(&self) -> Option<&'static str> {
        match self {
            Self::Storage(StorageError::TooLarge { .. }) => Some("the file is too large"),
            Self::Storage(StorageError::NotFound { .. }) => Some("the file was not found"),
            Self::Storage(_) | Self::Panicked(_) => None,
            Self::Image(e) => Some(e.public()),
        }
    }
}

impl Retriable for ItemError {
    fn is_retriable(&self) -> bool {
        match self {
            Self::Storage(e) => e.is_retriable(),
            // The same bytes meet the same bug.
            Self::Image(_) | Self::Panicked(_) => false,
        }
    }
}

/// Where each object of a batch stands as the phases go on.
enum Step {
    Finished(Outcome),
    /// Its thumbnail is already written for this version; the later stages
    /// still have work, so `ImageProcessed` is published again.
    Unchanged(ImageProcessed),
    /// To thumbnail; `restart`: a new version of a known item.
    Make {
        restart: bool,
    },
    Made {
        result: Result<Made, ItemError>,
        restart: bool,
    },
}

/// A thumbnail made and written, and the SHA-256 of its original's bytes.
struct Made {
    thumbnail: Thumbnail,
    content_sha256: String,
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
    /// thumbnail; what is returned no longer holds the thumbnail's bytes,
    /// and carries the SHA-256 of the original's.
    async fn thumbnail_one(&self, object: &ObjectRef, key: &ImageKey) -> Result<Made, ItemError> {
        let bytes = self.store.get(&object.bucket, &object.key, self.config.max_file_bytes).await?;
        let spec = self.config.spec;
        let format = OutputFormat::for_extension(&key.extension());
        let (made, content_sha256) = run_on(&self.workers, move || {
            let content_sha256 = hex::encode(Sha256::digest(&bytes));
            (make_thumbnail(&bytes, format, &spec), content_sha256)
        })
        .await
        .map_err(ItemError::Panicked)?;
        let mut thumbnail = made?;
        let bucket = self.config.bucket.as_deref().unwrap_or(&object.bucket);
        let bytes = std::mem::take(&mut thumbnail.bytes);
        self.store.put(bucket, &key.thumbnail_key(), bytes, format.media_type(), &[THUMBNAIL_TAG]).await?;
        Ok(Made { thumbnail, content_sha256 })
    }
}

/// What became of one object of a batch, before publishing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ThumbnailOutcome {
    /// The thumbnail is written (now, or for this version before) and the
    /// item recorded; `event` is what to publish.
    Thumbnailed {
        thumbnail_key: String,
        event: Box<ImageProcessed>,
    },
    /// S3 deleted the object: its item (analyses and vectors with it) and
    /// its thumbnail are removed.
    Deleted(String),
    Skipped(String),
    Failed(Failure),
}

impl Thumbnailer {
    /// The stage's work on a batch, without publishing: one outcome per
    /// object, in order. Running it again on the same objects writes nothing
    /// new; running it on a changed original writes the same thumbnail bytes
    /// for the same bytes.
    pub async fn process(&self, uploads: &[Upload], context: &BatchContext) -> Vec<ThumbnailOutcome> {
        let mut deleted = self.delete(uploads).await;
        let mut steps = self.check(uploads).await;
        self.make(uploads, &mut steps, context).await;
        self.record(uploads, &mut steps).await;
        uploads
            .iter()
            .zip(steps)
            .enumerate()
            .map(|(i, (upload, step))| match step {
                _ if upload.object.deleted => deleted.remove(&i).expect("every deletion is settled"),
                Step::Finished(Outcome::Skipped(reason)) => ThumbnailOutcome::Skipped(reason),
                Step::Finished(Outcome::Failed(failure)) => ThumbnailOutcome::Failed(failure),
                Step::Finished(Outcome::Queued(_)) => unreachable!("the thumbnailer queues nothing"),
                Step::Unchanged(event) => {
                    ThumbnailOutcome::Thumbnailed { thumbnail_key: event.thumbnail_key.clone(), event: Box::new(event) }
                }
                Step::Made { result: Ok(t), .. } => {
                    let key = upload.key.as_ref().expect("only parsed keys are made");
                    let event = self.event(&upload.object, key, Some(&t.thumbnail));
                    ThumbnailOutcome::Thumbnailed { thumbnail_key: key.thumbnail_key(), event: Box::new(event) }
                }
                Step::Made { result: Err(e), .. } => {
                    let failure = Failure::caused_by(e.to_string(), &e);
                    ThumbnailOutcome::Failed(match e.public() {
                        Some(public) => failure.told(public),
                        None => failure,
                    })
                }
                Step::Finished(Outcome::Done) | Step::Make { .. } => {
                    unreachable!("every made object is recorded, and Done is only reached by recording")
                }
            })
            .collect()
    }

    /// Phase 0: objects S3 deleted. Their items go (analyses and vectors
    /// with them) unless made from a newer version, a tombstone keeps a late
    /// older version from coming back, and their thumbnails are removed.
    async fn delete(&self, uploads: &[Upload]) -> HashMap<usize, ThumbnailOutcome> {
        let mut outcomes = HashMap::new();
        let mut deletions = Vec::new();
        let mut claimed = Vec::new();
        for (i, upload) in uploads.iter().enumerate().filter(|(_, u)| u.object.deleted) {
            match &upload.key {
                Ok(key) => claimed.push((i, key)),
                Err(e) => {
                    outcomes.insert(i, ThumbnailOutcome::Skipped(format!("deleted: {e}")));
                }
            }
        }
        let confirmed =
            futures::future::join_all(claimed.iter().map(|&(i, key)| self.confirm_deleted(&uploads[i].object, key)))
                .await;
        for ((i, key), confirmed) in claimed.into_iter().zip(confirmed) {
            match confirmed {
                Ok(()) => deletions.push((i, key)),
                Err(outcome) => {
                    outcomes.insert(i, outcome);
                }
            }
        }
        if deletions.is_empty() {
            return outcomes;
        }
        let wanted: Vec<Deletion> = deletions
            .iter()
            .map(|&(i, key)| Deletion {
                key: key.as_str().to_owned(),
                sequencer: uploads[i].object.sequencer.as_deref().map(sequencer_order),
            })
            .collect();
        let removed = match items::delete_objects(&self.pool, &wanted).await {
            Ok(removed) => removed,
            Err(e) => {
                let failure = Failure::from_error(&e);
                for (i, _) in deletions {
                    outcomes.insert(i, ThumbnailOutcome::Failed(failure.clone()));
                }
                return outcomes;
            }
        };
        for (i, key) in deletions {
            let outcome = match removed.iter().find(|r| r.file_path == key.as_str()) {
                None => ThumbnailOutcome::Skipped("deleted: no item of an older version to remove".to_owned()),
                Some(item) => {
                    let bucket = self.config.bucket.as_deref().unwrap_or(&item.bucket);
                    let thumbnail = item.thumbnail_key.clone().unwrap_or_else(|| key.thumbnail_key());
                    match self.store.delete(bucket, &thumbnail).await {
                        Ok(()) => ThumbnailOutcome::Deleted(format!("removed the item and {thumbnail}")),
                        Err(e) => ThumbnailOutcome::Failed(Failure::of(format!("deleting {thumbnail}"), &e)),
                    }
                }
            };
            outcomes.insert(i, outcome);
        }
        outcomes
    }

    /// A deletion is acted on only for the pipeline's bucket and only once
    /// the object is really gone: the uploads stream is not a trust
    /// boundary, and a forged "Object Deleted" must not remove an item.
    async fn confirm_deleted(&self, object: &ObjectRef, key: &ImageKey) -> Result<(), ThumbnailOutcome> {
        if let Some(ours) = self.config.bucket.as_deref().filter(|&ours| ours != object.bucket) {
            let reason =
                format!("a deletion in bucket {:?}, not the pipeline's ({ours:?}): nothing removed", object.bucket);
            return Err(ThumbnailOutcome::Failed(Failure::refused(reason)));
        }
        match self.store.exists(&object.bucket, key.as_str()).await {
            Ok(false) => Ok(()),
            Ok(true) => {
                Err(ThumbnailOutcome::Skipped(format!("deleted: {key} is still there, so nothing was removed")))
            }
            Err(e) => Err(ThumbnailOutcome::Failed(Failure::of(format!("checking that {key} is gone"), &e))),
        }
    }

    /// Phase 1: keys that are no originals, ids of another user, and
    /// versions already thumbnailed are settled without touching the object.
    async fn check(&self, uploads: &[Upload]) -> Vec<Step> {
        let ids: Vec<_> = uploads.iter().filter_map(|u| u.key.as_ref().ok().map(ImageKey::item_uuid)).collect();
        let known: HashMap<_, ItemState> = match items::states(&self.pool, &ids).await {
            Ok(known) => known,
            Err(e) => {
                let failure = Failure::from_error(&e);
                return uploads
                    .iter()
                    .map(|u| match &u.key {
                        Ok(_) => Step::Finished(failure.clone().into()),
                        Err(e) => Step::Finished(key_outcome(e)),
                    })
                    .collect();
            }
        };
        uploads
            .iter()
            .map(|upload| {
                let key = match &upload.key {
                    Ok(key) => key,
                    Err(e) => return Step::Finished(key_outcome(e)),
                };
                if upload.object.deleted {
                    return Step::Finished(Outcome::Skipped("deleted (settled in phase 0)".to_owned()));
                }
                let Some(state) = known.get(&key.item_uuid()) else { return Step::Make { restart: false } };
                if state.user_id != key.user_id() {
                    return Step::Finished(
                        Failure::permanent(format!("item id {} already belongs to another user", key.item_uuid()))
                            .into(),
                    );
                }
                let same_version = upload.object.etag.is_some() && state.source_etag == upload.object.etag;
                match (same_version && state.thumbnail_status == "done", upload.object.reprocess) {
                    (true, false) if state.analysed_and_embedded() => {
                        Step::Finished(Outcome::Skipped("already processed (same version)".to_owned()))
                    }
                    (true, false) => Step::Unchanged(self.event(&upload.object, key, None)),
                    _ => Step::Make { restart: !same_version && upload.object.etag.is_some() },
                }
            })
            .collect()
    }

    /// Phase 2: reads, thumbnails and writes what is to make; twice the
    /// workers in flight (one set decoding while the other downloads or
    /// uploads); what is still running at the deadline is cut off.
    async fn make(&self, uploads: &[Upload], steps: &mut [Step], context: &BatchContext) {
        let to_make: Vec<usize> = (0..steps.len()).filter(|&i| matches!(steps[i], Step::Make { .. })).collect();
        let mut results =
            until_deadline(to_make.iter().copied(), steps.len(), self.config.threads * 2, context.deadline, |i| {
                let (object, key) = (&uploads[i].object, uploads[i].key.as_ref().expect("only parsed keys are made"));
                let span = info_span!("item", key = %object.key, user_id = key.user_id(), item_id = %key.item_uuid());
                self.thumbnail_one(object, key).instrument(span)
            })
            .await;
        for i in to_make {
            let Step::Make { restart } = steps[i] else { continue };
            steps[i] = match results[i].take() {
                Some(result) => Step::Made { result, restart },
                None => Step::Finished(Failure::cut_off(format!("thumbnailing {}", uploads[i].object.key)).into()),
            };
        }
    }

    /// Phase 3: every made item recorded (success or failure) and the
    /// successes marked done, in one transaction; a row the database
    /// refuses fails its item alone.
    async fn record(&self, uploads: &[Upload], steps: &mut [Step]) {
        let made: Vec<usize> = (0..steps.len()).filter(|&i| matches!(steps[i], Step::Made { .. })).collect();
        let mut records = Vec::with_capacity(made.len());
        let (mut done, mut restart) = (Vec::new(), Vec::new());
        for &i in &made {
            let Step::Made { result, restart: again } = &steps[i] else { continue };
            let key = uploads[i].key.as_ref().expect("only parsed keys are made");
            records.push(self.record_of(&uploads[i].object, key, result.as_ref().ok()));
            if result.is_ok() {
                done.push(key.item_uuid());
                if *again {
                    restart.push(key.item_uuid());
                }
            }
        }
        let stored = match items::store_thumbnails(&self.pool, &records, &done, &restart).await {
            Ok(stored) => stored,
            Err(e) => {
                let failure = Failure::from_error(&e);
                for i in made {
                    steps[i] = Step::Finished(failure.clone().into());
                }
                return;
            }
        };
        let refused: HashMap<_, _> = stored.refused.into_iter().collect();
        // Not written and not refused: deleted meanwhile, or another user's id.
        let unwritten: Vec<&str> = made
            .iter()
            .map(|&i| uploads[i].key.as_ref().expect("only parsed keys are made"))
            .filter(|key| !stored.written.contains(&key.item_uuid()) && !refused.contains_key(&key.item_uuid()))
            .map(ImageKey::as_str)
            .collect();
        let deleted = if unwritten.is_empty() {
            Ok(Default::default())
        } else {
            items::deleted_keys(&self.pool, &unwritten).await.map_err(|e| Failure::from_error(&e))
        };
        for i in made {
            let key = uploads[i].key.as_ref().expect("only parsed keys are made");
            let id = key.item_uuid();
            if let Some(reason) = refused.get(&id) {
                steps[i] = Step::Finished(Failure::permanent(reason.clone()).into());
                continue;
            }
            if stored.written.contains(&id) {
                continue;
            }
            steps[i] = Step::Finished(match &deleted {
                // Which of the two is not known: try again.
                Err(failure) => failure.clone().into(),
                Ok(deleted) if deleted.contains(key.as_str()) => {
                    // Its thumbnail was made while the delete went through: it goes too.
                    let bucket = self.config.bucket.as_deref().unwrap_or(&uploads[i].object.bucket);
                    match self.store.delete(bucket, &key.thumbnail_key()).await {
                        Ok(()) => Outcome::Skipped("deleted after this version was uploaded".to_owned()),
                        Err(e) => Failure::of(format!("deleting {}", key.thumbnail_key()), &e).into(),
                    }
                }
                Ok(_) => Failure::permanent(format!("item id {id} already belongs to another user")).into(),
            });
        }
    }
}

fn key_outcome(e: &KeyError) -> Outcome {
    if e.is_skip() { Outcome::Skipped(e.to_string()) } else { Failure::permanent(e.to_string()).into() }
}

#[async_trait]
impl Stage for Thumbnailer {
    type Input = Upload;

    fn name(&self) -> StageName {
        StageName::Thumbnail
    }

    async fn run_batch(&self, inputs: &[Upload], context: &BatchContext) -> Vec<Outcome> {
        let mut outcomes = Vec::with_capacity(inputs.len());
        let mut events = Vec::new();
        for outcome in self.process(inputs, context).await {
            outcomes.push(match outcome {
                ThumbnailOutcome::Thumbnailed { event, .. } => {
                    events.push((outcomes.len(), PipelineEvent::ImageProcessed(*event)));
                    Outcome::Done
                }
                ThumbnailOutcome::Deleted(_) => Outcome::Done,
                ThumbnailOutcome::Skipped(reason) => Outcome::Skipped(reason),
                ThumbnailOutcome::Failed(failure) => Outcome::Failed(failure),
            });
        }
        publish_for(self.publisher.as_ref(), &mut outcomes, events).await;
        outcomes
    }
}

impl Thumbnailer {
    fn record_of(&self, object: &ObjectRef, key: &ImageKey, made: Option<&Made>) -> ThumbnailRecord {
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
        match made {
            Some(Made { thumbnail: t, content_sha256 }) => ThumbnailRecord {
                mime_type: Some(format!("image/{}", t.source_format)),
                width: i32::try_from(t.original_width).ok(),
                height: i32::try_from(t.original_height).ok(),
                thumbnail_key: Some(key.thumbnail_key()),
                content_sha256: Some(content_sha256.clone()),
                sequencer: object.sequencer.as_deref().map(sequencer_order),
                camera: t.exif.camera.clone(),
                taken_at: t.exif.taken_at.clone(),
                ..base
            },
            None => base,
        }
    }

    /// The `ImageProcessed` of an object; what the thumbnailer measured
    /// goes with it when it made the thumbnail just now.
    fn event(&self, object: &ObjectRef, key: &ImageKey, made: Option<&Thumbnail>) -> ImageProcessed {
        let bucket = self.config.bucket.as_deref().unwrap_or(&object.bucket);
        ImageProcessed {
            image: made.map(|t| ImageInfo {
                width: t.original_width,
                height: t.original_height,
                format: t.source_format.to_owned(),
                thumbnail_width: t.width,
                thumbnail_height: t.height,
                camera: t.exif.camera.clone(),
                taken_at: t.exif.taken_at.clone(),
            }),
            ..ImageProcessed::of(bucket, key)
        }
    }
}
