//! Local runs: a folder's images are "uploaded" into the local bucket as
//! `{user}/{relative path}` (hard-linked where possible), then sent through
//! the pipeline; failed items are sent again from the stage that failed;
//! and a direct backfill's objects go through the pipeline here
//! ([`DirectSink`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use async_trait::async_trait;
use aws::s3::S3Store;
use domain::events::{AnalysisComplete, ImageProcessed, ObjectRef, PipelineEvent};
use domain::keys::ImageKey;
use domain::stage::StageName;
use ops::backfill::{Sink, SinkError};
use store::{analyses, items, status};
use uuid::Uuid;
use walkdir::WalkDir;

use crate::components::Components;
use crate::pipeline::Pipeline;
use crate::report::{Report, Tracker};

/// Checks a user id can be the first folder of a key.
pub fn validate_user(user: &str) -> anyhow::Result<()> {
    Ok(domain::keys::check_user_id(user)?)
}

/// A file found under the folder of a run.
#[derive(Debug, Clone)]
pub struct ScannedFile {
    pub path: PathBuf,
    /// `{user}/{relative path}`.
    pub key: String,
}

/// Every file under `dir`, in path order, keyed for `user`.
pub fn scan(dir: &Path, user: &str) -> anyhow::Result<Vec<ScannedFile>> {
    let mut files = Vec::new();
    for entry in WalkDir::new(dir).sort_by_file_name() {
        let entry = entry.with_context(|| format!("reading {}", dir.display()))?;
        if !entry.file_type().is_file() {
            continue;
        }
        let relative = entry.path().strip_prefix(dir).expect("walkdir yields paths under its root");
        let parts: Option<Vec<&str>> = relative.components().map(|c| c.as_os_str().to_str()).collect();
        let key = match parts {
            Some(parts) => format!("{user}/{}", parts.join("/")),
            None => format!("{user}/{}", relative.to_string_lossy()),
        };
        files.push(ScannedFile { path: entry.path().to_owned(), key });
    }
    Ok(files)
}

/// Puts a file into the local bucket under its key (a hard link, or a copy
/// across file systems) and describes it as an S3 notification would. The
/// etag is the file's size and modification time: cheap, and it changes
/// when the file does.
pub fn upload(c: &Components, file: &ScannedFile) -> anyhow::Result<ObjectRef> {
    let meta = std::fs::metadata(&file.path).with_context(|| format!("reading {}", file.path.display()))?;
    let modified = meta.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).unwrap_or_default();
    let target = c.store.path_of(&c.local.bucket, &file.key)?;
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    match std::fs::remove_file(&target) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(e).context(format!("replacing {}", target.display()));
        }
        _ => {}
    }
    if std::fs::hard_link(&file.path, &target).is_err() {
        std::fs::copy(&file.path, &target)
            .with_context(|| format!("copying {} into the bucket", file.path.display()))?;
    }
    Ok(ObjectRef {
        bucket: c.local.bucket.clone(),
        key: file.key.clone(),
        etag: Some(format!("{}-{}", meta.len(), modified.as_nanos())),
        size: Some(meta.len()),
        ..ObjectRef::default()
    })
}

/// Runs every image under `dir` through the pipeline as `user`'s. Images
/// already processed in the same version are skipped unless `force`.
pub async fn run_folder(c: &Components, dir: &Path, user: &str, force: bool) -> anyhow::Result<Report> {
    validate_user(user)?;
    if !dir.is_dir() {
        bail!("{} is not a folder", dir.display());
    }
    let bucket_root = c.local.data_dir.join("bucket");
    if crate::thumbnail::is_inside(dir, &bucket_root) || crate::thumbnail::is_inside(&bucket_root, dir) {
        bail!(
            "refusing to run over {}: it holds or is inside the local bucket ({}), whose files are the pipeline's own copies",
            dir.display(),
            bucket_root.display()
        );
    }
    let files = scan(dir, user)?;
    let tracker = Arc::new(Tracker::new(files.len() as u64));
    let mut objects = Vec::new();
    for file in &files {
        match ImageKey::parse(&file.key) {
            Ok(key) => {
                tracker.register(key.item_uuid(), &file.key);
                objects.push(upload(c, file)?);
            }
            Err(e) => tracker.skipped(file.key.clone(), skip_reason(&e)),
        }
    }

    let keys: Vec<String> = objects.iter().map(|o| o.key.clone()).collect();
    let mut processed = std::collections::HashMap::new();
    for chunk in keys.chunks(1000) {
        processed.extend(items::processed_etags(&c.pool, &c.local.bucket, chunk).await?);
    }
    let pipeline = Pipeline::start(c, c.store.clone(), tracker.clone())?;
    for object in objects {
        if tracker.halted().is_some() {
            break;
        }
        if !force && processed.get(&object.key).is_some_and(|etag| *etag == object.etag) {
            tracker.skipped(object.key, "already processed".to_owned());
        } else {
            pipeline.submit_object(ObjectRef { reprocess: force, ..object }).await?;
        }
    }
    pipeline.finish().await?;
    Ok(tracker.finish())
}

fn skip_reason(e: &domain::keys::KeyError) -> String {
    use domain::keys::KeyError;
    match e {
        KeyError::UnsupportedExtension { .. } | KeyError::NoExtension(_) => "not a .jpg, .jpeg or .png file".to_owned(),
        KeyError::Thumbnail(_) => "under a thumbnails folder".to_owned(),
        other => other.to_string(),
    }
}

/// What a stored record failure is sent again as.
enum Resend {
    Object(ObjectRef),
    Event(PipelineEvent),
}

/// Sends failed items (of one user, or all) through the pipeline again,
/// each from the stage where it failed, and the failed records that could
/// be read (see `record_failures`) to their stage.
pub async fn retry_failures(c: &Components, user: Option<&str>, limit: i64) -> anyhow::Result<Report> {
    let failed = items::failures(&c.pool, user, limit).await?;
    let records = status::record_failure_list(&c.pool, user, limit).await?;
    let tracker = Arc::new(Tracker::new((failed.len() + records.len()) as u64));
    let embed_ids: Vec<uuid::Uuid> =
        failed.iter().filter(|f| f.failed_stage == StageName::Embedding.as_str()).map(|f| f.id).collect();
    let latest: std::collections::HashMap<_, _> =
        analyses::latest_ids(&c.pool, &embed_ids).await?.into_iter().collect();

    let pipeline = Pipeline::start(c, c.store.clone(), tracker.clone())?;
    for item in failed {
        tracker.register(item.id, &item.file_path);
        let key = match ImageKey::parse(&item.file_path) {
            Ok(key) => key,
            Err(e) => {
                tracker.failed(item.file_path, e.to_string());
                continue;
            }
        };
        match item.failed_stage.parse::<StageName>() {
            Ok(StageName::Thumbnail) => {
                let object = ObjectRef { bucket: item.bucket, key: item.file_path, ..ObjectRef::default() };
                pipeline.submit_object(object).await?;
            }
            Ok(StageName::Analysis) => {
                let event = ImageProcessed {
                    thumbnail_key: item.thumbnail_key.unwrap_or_else(|| key.thumbnail_key()),
                    ..ImageProcessed::of(&item.bucket, &key)
                };
                pipeline.submit_event(PipelineEvent::ImageProcessed(event)).await?;
            }
            Ok(StageName::Embedding) => match latest.get(&item.id) {
                Some(analysis_id) => {
                    let event = AnalysisComplete::of_key(&key, *analysis_id);
                    pipeline.submit_event(PipelineEvent::AnalysisComplete(event)).await?;
                }
                None => tracker.failed(item.file_path, "no analysis to embed".to_owned()),
            },
            Err(e) => tracker.failed(item.file_path, e),
        }
    }
    for record in records {
        let name = record.object_key.clone().unwrap_or_else(|| format!("record {}", record.source));
        if let Some(item) = record.item_id {
            tracker.register(item, &name);
        }
        let Some(input) = record.input.map(|j| j.0) else {
            tracker.failed(name, format!("cannot be sent again: it was never readable ({})", record.reason));
            continue;
        };
        let resend = match record.stage.parse::<StageName>() {
            Ok(StageName::Thumbnail) => serde_json::from_value::<ObjectRef>(input).map(Resend::Object),
            Ok(StageName::Analysis) => {
                serde_json::from_value(input).map(|e| Resend::Event(PipelineEvent::ImageProcessed(e)))
            }
            Ok(StageName::Embedding) => {
                serde_json::from_value(input).map(|e| Resend::Event(PipelineEvent::AnalysisComplete(e)))
            }
            Err(e) => Err(serde::de::Error::custom(e)),
        };
        let resend = match resend {
            Ok(resend) => resend,
            Err(e) => {
                tracker.failed(name, format!("its stored input does not read as a {} input: {e}", record.stage));
                continue;
            }
        };
        // Forgotten first: if it fails again, the runner records it again.
        status::forget_record_failure(&c.pool, record.id).await?;
        match resend {
            Resend::Object(object) => pipeline.submit_object(object).await?,
            Resend::Event(event) => pipeline.submit_event(event).await?,
        }
    }
    pipeline.finish().await?;
    Ok(tracker.finish())
}

/// A backfill's objects through the stages in this process (`backfill
/// --direct`), reading originals from S3.
pub struct DirectSink {
    pipeline: Pipeline,
    tracker: Arc<Tracker>,
}

impl DirectSink {
    pub fn start(c: &Components, s3: S3Store) -> anyhow::Result<Self> {
        let tracker = Arc::new(Tracker::hidden());
        Ok(Self { pipeline: Pipeline::start(c, Arc::new(s3), tracker.clone())?, tracker })
    }
}

#[async_trait]
impl Sink for DirectSink {
    async fn send(&self, objects: Vec<(ObjectRef, Uuid)>) -> Result<(), SinkError> {
        for (object, item) in objects {
            if let Some(reason) = self.tracker.halted() {
                return Err(SinkError::from(format!("stopped by a configuration fault: {reason}")));
            }
            self.tracker.register(item, &object.key);
            self.pipeline.submit_object(object).await.map_err(|e| SinkError::from(e.to_string()))?;
        }
        Ok(())
    }

    /// Once every one of them has an outcome from the stages.
    fn through(&self, keys: &[String]) -> bool {
        self.tracker.halted().is_some() || self.tracker.settle(keys)
    }

    /// The failures, and the items left pending (a provider out past the
    /// retries' budget; the next backfill, which skips what is processed,
    /// takes them up).
    async fn finish(self: Box<Self>) -> Result<Vec<(String, String)>, SinkError> {
        self.pipeline.finish().await.map_err(|e| SinkError::from(e.to_string()))?;
        let report = self.tracker.finish();
        let pending =
            report.pending.into_iter().map(|(key, reason)| (key, format!("left pending, not failed: {reason}")));
        Ok(report.failed.into_iter().chain(pending).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_ids_are_single_segments() {
        assert!(validate_user("user-1").is_ok());
        assert!(validate_user("ユーザー").is_ok());
        for bad in ["", ".", "..", "a/b", "x\0"] {
            assert!(validate_user(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn scan_keys_files_by_relative_path_in_order() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("trip/day 1")).unwrap();
        for f in ["b.jpg", "a.png", "trip/day 1/c.JPG", "notes.txt"] {
            std::fs::write(dir.path().join(f), b"x").unwrap();
        }
        let keys: Vec<String> = scan(dir.path(), "u").unwrap().into_iter().map(|f| f.key).collect();
        assert_eq!(keys, vec!["u/a.png", "u/b.jpg", "u/notes.txt", "u/trip/day 1/c.JPG"]);
    }
}
