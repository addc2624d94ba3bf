//! A backfill: existing S3 objects into the pipeline. Lists the bucket a
//! page at a time, keeps the accepted extensions (never thumbnails), by
//! default only objects not yet fully processed (checked against the
//! database a page at a time), and hands them to a [`Sink`]: the `uploads`
//! stream as the EventBridge rule would ([`StreamSink`]), throttled to a
//! rate so live uploads are not starved, or (`collections backfill
//! --direct`) the stages in-process. A checkpoint after every page makes it
//! resumable.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;

use async_trait::async_trait;
use aws::s3::{Listed, S3Store};
use domain::events::ObjectRef;
use domain::keys::{ImageKey, KeyError};
use indicatif::{ProgressBar, ProgressStyle};
use runtime::storage::StorageError;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::PgPool;
use store::DbError;
use store::items;
use thiserror::Error;
use uuid::Uuid;

use crate::kinesis::{PutError, Record, StreamWriter};
use crate::throttle::Throttle;

/// An error of a sink, whatever it is.
pub type SinkError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, Error)]
pub enum BackfillError {
    #[error("listing the bucket failed: {0}")]
    Listing(#[from] StorageError),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("checking what is already processed needs DATABASE_URL (or pass --all)")]
    NoDatabase,
    #[error("the checkpoint {path}: {message}")]
    Checkpoint { path: PathBuf, message: String },
    #[error("sending objects on failed: {0}")]
    Sink(SinkError),
}

/// Where eligible objects go.
#[async_trait]
pub trait Sink: Send + Sync {
    /// Sends these objects on, each with its item's id.
    async fn send(&self, objects: Vec<(ObjectRef, Uuid)>) -> Result<(), SinkError>;

    /// Whether every object of `keys` has an outcome. The checkpoint passes
    /// a page only once it has: a sink that runs the stages itself says so
    /// when they are through; one that hands them on, as soon as it has.
    fn through(&self, _keys: &[String]) -> bool {
        true
    }

    /// Whether progress is saved (a dry run neither resumes a backfill nor
    /// leaves one to resume).
    fn keeps_checkpoint(&self) -> bool {
        true
    }

    /// Waits until everything sent has an outcome; answers the failures, by key.
    async fn finish(self: Box<Self>) -> Result<Vec<(String, String)>, SinkError> {
        Ok(Vec::new())
    }
}

/// The `uploads` stream, as the rule would put the objects there.
#[derive(Debug)]
pub struct StreamSink<'a>(pub &'a StreamWriter);

#[async_trait]
impl Sink for StreamSink<'_> {
    async fn send(&self, objects: Vec<(ObjectRef, Uuid)>) -> Result<(), SinkError> {
        let records: Vec<Record> = objects.iter().map(|(object, _)| object_created_record(object)).collect();
        self.0.put_all(&records).await.map_err(|e: PutError| Box::new(e) as SinkError)
    }
}

/// Nowhere: count only.
#[derive(Debug)]
pub struct DryRun;

#[async_trait]
impl Sink for DryRun {
    async fn send(&self, _objects: Vec<(ObjectRef, Uuid)>) -> Result<(), SinkError> {
        Ok(())
    }

    fn keeps_checkpoint(&self) -> bool {
        false
    }
}

#[derive(Debug, Clone)]
pub struct Options {
    pub bucket: String,
    pub prefix: Option<String>,
    /// Objects a second, at most.
    pub rate: f64,
    /// Also objects already processed.
    pub all: bool,
    pub checkpoint: PathBuf,
    /// Ignore an existing checkpoint.
    pub restart: bool,
    /// List the bucket once first, for a progress bar with an ETA.
    pub count_first: bool,
    /// Keys a listing page asks for (at most 1000).
    pub page_size: i32,
    /// Stop after this many pages (an interruption, for tests and trials).
    pub max_pages: Option<usize>,
    pub progress: bool,
}

/// Progress saved after each page: the last key done, and the counts so far.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub bucket: String,
    pub prefix: Option<String>,
    pub start_after: Option<String>,
    pub report: Report,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    pub listed: u64,
    pub submitted: u64,
    /// Objects passed over, by reason.
    pub skipped: BTreeMap<String, u64>,
    /// Objects the direct mode could not process, with reasons.
    pub failed: Vec<(String, String)>,
    /// The key the run resumed after, if it did.
    pub resumed_after: Option<String>,
    /// False when the run stopped before the end of the listing.
    pub complete: bool,
}

impl Report {
    pub fn summary(&self) -> String {
        let skipped: u64 = self.skipped.values().sum();
        let mut out = format!("listed {}, submitted {}, skipped {skipped}", self.listed, self.submitted);
        if !self.failed.is_empty() {
            out.push_str(&format!(", failed {}", self.failed.len()));
        }
        if let Some(key) = &self.resumed_after {
            out.push_str(&format!(" (resumed after {key})"));
        }
        out.push('\n');
        for (reason, n) in &self.skipped {
            out.push_str(&format!("  skipped {n}: {reason}\n"));
        }
        for (key, reason) in &self.failed {
            out.push_str(&format!("  FAILED {key}: {reason}\n"));
        }
        if !self.complete {
            out.push_str("  stopped before the end; run again to resume from the checkpoint\n");
        }
        out
    }
}

fn load_checkpoint(options: &Options) -> Result<Option<Checkpoint>, BackfillError> {
    if options.restart || !options.checkpoint.exists() {
        return Ok(None);
    }
    let fault = |message: String| BackfillError::Checkpoint { path: options.checkpoint.clone(), message };
    let text = std::fs::read_to_string(&options.checkpoint).map_err(|e| fault(format!("reading it failed: {e}")))?;
    let checkpoint: Checkpoint = serde_json::from_str(&text).map_err(|e| fault(format!("it is not valid: {e}")))?;
    Ok((checkpoint.bucket == options.bucket && checkpoint.prefix == options.prefix).then_some(checkpoint))
}

fn save_checkpoint(options: &Options, checkpoint: &Checkpoint) -> Result<(), BackfillError> {
    let fault = |e: std::io::Error| BackfillError::Checkpoint {
        path: options.checkpoint.clone(),
        message: format!("saving it failed: {e}"),
    };
    if let Some(dir) = options.checkpoint.parent() {
        std::fs::create_dir_all(dir).map_err(fault)?;
    }
    let partial = options.checkpoint.with_extension("partial");
    let bytes = serde_json::to_vec_pretty(checkpoint).expect("a checkpoint serialises");
    std::fs::write(&partial, bytes).map_err(fault)?;
    std::fs::rename(&partial, &options.checkpoint).map_err(fault)
}

/// The record the `uploads` stream gets for an object: an EventBridge
/// "Object Created" event, as the rule forwards S3's.
pub fn object_created_record(object: &ObjectRef) -> Record {
    let event = json!({
        "version": "0",
        "id": Uuid::new_v4(),
        "detail-type": "Object Created",
        "source": "collections.backfill",
        "time": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "resources": [format!("arn:aws:s3:::{}", object.bucket)],
        "detail": {
            "version": "0",
            "bucket": {"name": object.bucket},
            "object": {"key": object.key, "size": object.size, "etag": object.etag},
            "reason": "Backfill",
        }
    });
    Record::new(&object.key, serde_json::to_vec(&event).expect("JSON values serialise"))
}

fn skip_reason(e: &KeyError) -> String {
    match e {
        KeyError::Thumbnail(_) => "a thumbnail".to_owned(),
        KeyError::UnsupportedExtension { .. } | KeyError::NoExtension(_) => "not a .jpg, .jpeg or .png key".to_owned(),
        other => format!("an invalid key ({other})"),
    }
}

/// The pages a direct backfill submitted whose objects are not all through
/// the pipeline yet, in order: (the keys it submitted, the checkpoint after
/// the page).
#[derive(Debug, Default)]
struct Unsettled(VecDeque<(Vec<String>, Checkpoint)>);

impl Unsettled {
    fn push(&mut self, keys: Vec<String>, after: Checkpoint) {
        self.0.push_back((keys, after));
    }

    /// The checkpoint after the last page that, with every page before it,
    /// now has an outcome for each of its keys, if one newly does. Items
    /// finish out of order, so a later page may be through before an
    /// earlier one; it waits for it.
    fn settled(&mut self, through: impl Fn(&[String]) -> bool) -> Option<Checkpoint> {
        let mut settled = None;
        while self.0.front().is_some_and(|(keys, _)| through(keys)) {
            settled = self.0.pop_front().map(|(_, after)| after);
        }
        settled
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Runs a backfill into `sink`. `pool` is needed unless `options.all` (to
/// skip what is processed).
pub async fn backfill(
    s3: &S3Store,
    pool: Option<&PgPool>,
    sink: Box<dyn Sink + '_>,
    options: &Options,
) -> Result<Report, BackfillError> {
    let keeps_checkpoint = sink.keeps_checkpoint();
    let saved = if keeps_checkpoint { load_checkpoint(options)? } else { None };
    let mut checkpoint = saved.unwrap_or_else(|| Checkpoint {
        bucket: options.bucket.clone(),
        prefix: options.prefix.clone(),
        ..Checkpoint::default()
    });
    checkpoint.report.resumed_after = checkpoint.start_after.clone();
    let prefix = options.prefix.as_deref();

    let progress = if options.progress { ProgressBar::new_spinner() } else { ProgressBar::hidden() };
    if options.count_first && options.progress {
        let mut total = 0u64;
        let (mut after, mut more) = (checkpoint.start_after.clone(), true);
        while more {
            let page = s3.list_page(&options.bucket, prefix, after.as_deref(), 1000).await?;
            total += page.objects.len() as u64;
            more = page.truncated && !page.objects.is_empty();
            after = page.objects.last().map(|o| o.key.clone());
        }
        progress.set_length(total);
    }
    progress.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} listed, {msg} {per_sec} ETA {eta}",
        )
        .expect("the template is valid"),
    );

    let mut throttle = Throttle::new(options.rate);
    let mut pages = 0;
    // The saved checkpoint only moves past a page once every object of it
    // has gone through the sink (see `Sink::through`).
    let mut unsettled = Unsettled::default();
    loop {
        if options.max_pages.is_some_and(|max| pages >= max) {
            break;
        }
        let page = s3.list_page(&options.bucket, prefix, checkpoint.start_after.as_deref(), options.page_size).await?;
        pages += 1;
        let Some(last) = page.objects.last().map(|o| o.key.clone()) else {
            checkpoint.report.complete = true;
            break;
        };
        let report = &mut checkpoint.report;
        report.listed += page.objects.len() as u64;
        // Each eligible object with its item's id.
        let mut eligible: Vec<(&Listed, Uuid)> = Vec::new();
        for object in &page.objects {
            match ImageKey::parse(&object.key) {
                Ok(key) => eligible.push((object, key.item_uuid())),
                Err(e) => *report.skipped.entry(skip_reason(&e)).or_default() += 1,
            }
        }
        if !options.all {
            let keys: Vec<String> = eligible.iter().map(|(o, _)| o.key.clone()).collect();
            let pool = pool.ok_or(BackfillError::NoDatabase)?;
            let done = items::processed_etags(pool, &options.bucket, &keys).await?;
            let before = eligible.len();
            eligible.retain(|(o, _)| !done.get(&o.key).is_some_and(|etag| etag.is_some() && *etag == o.etag));
            let already = (before - eligible.len()) as u64;
            if already > 0 {
                *report.skipped.entry("already processed".to_owned()).or_default() += already;
            }
        }
        for chunk in eligible.chunks(100) {
            throttle.admit(chunk.len() as u64).await;
            let objects = chunk
                .iter()
                .map(|(o, item)| {
                    let object = ObjectRef {
                        bucket: options.bucket.clone(),
                        key: o.key.clone(),
                        etag: o.etag.clone(),
                        size: Some(o.size),
                        ..ObjectRef::default()
                    };
                    (object, *item)
                })
                .collect();
            sink.send(objects).await.map_err(BackfillError::Sink)?;
            report.submitted += chunk.len() as u64;
        }
        progress.inc(page.objects.len() as u64);
        progress.set_message(format!("{} submitted", report.submitted));
        checkpoint.start_after = Some(last);
        unsettled.push(eligible.iter().map(|(o, _)| o.key.clone()).collect(), checkpoint.clone());
        if let Some(settled) = unsettled.settled(|keys| sink.through(keys)).filter(|_| keeps_checkpoint) {
            save_checkpoint(options, &settled)?;
        }
        if !page.truncated {
            checkpoint.report.complete = true;
            break;
        }
    }
    progress.finish_and_clear();
    checkpoint.report.failed = sink.finish().await.map_err(BackfillError::Sink)?;
    // Everything submitted has an outcome now.
    if keeps_checkpoint && !unsettled.is_empty() && !checkpoint.report.complete {
        save_checkpoint(options, &checkpoint)?;
    }
    if checkpoint.report.complete && keeps_checkpoint {
        // Done: the next backfill starts from the beginning.
        let _ = std::fs::remove_file(&options.checkpoint);
    }
    Ok(checkpoint.report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn after(key: &str) -> Checkpoint {
        Checkpoint { start_after: Some(key.to_owned()), ..Checkpoint::default() }
    }

    #[test]
    fn the_checkpoint_only_passes_pages_whose_objects_are_all_through() {
        let keys = |ks: &[&str]| ks.iter().map(|k| (*k).to_owned()).collect::<Vec<_>>();
        let done = std::cell::RefCell::new(std::collections::HashSet::<String>::new());
        let through = |keys: &[String]| keys.iter().all(|k| done.borrow().contains(k));
        let mut pages = Unsettled::default();
        pages.push(keys(&["a", "b"]), after("b"));
        pages.push(keys(&["c"]), after("c"));
        pages.push(keys(&["d", "e"]), after("e"));
        // Items finish out of order: page two's and three's before page one's.
        done.borrow_mut().extend(keys(&["c", "d", "e", "a"]));
        assert_eq!(pages.settled(through), None, "b of page one is still in flight");
        done.borrow_mut().insert("b".into());
        assert_eq!(pages.settled(through), Some(after("e")), "now all three pages are through");
        assert!(pages.is_empty());
        assert_eq!(pages.settled(through), None);
    }
}
