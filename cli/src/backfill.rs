//! `collections backfill`: existing S3 objects into the pipeline. Lists the
//! bucket a page at a time, keeps the accepted extensions (never
//! thumbnails), by default only objects not yet fully processed (checked
//! against the database a page at a time), and puts them on the `uploads`
//! stream as the EventBridge rule would, throttled to a rate so live
//! uploads are not starved; or, `--direct`, runs the stages in-process.
//! A checkpoint after every page makes it resumable.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use serde_json::json;
use shared::aws::kinesis::{Record, StreamWriter};
use shared::aws::s3::{Listed, S3Store};
use shared::db::items;
use shared::events::ObjectRef;
use shared::keys::{ImageKey, KeyError};
use sqlx::PgPool;
use uuid::Uuid;

use crate::components::Components;
use crate::pipeline::Pipeline;
use crate::report::Tracker;

/// Where eligible objects go.
pub enum Sink<'a> {
    /// The `uploads` stream, as the rule would put them there.
    Stream(&'a StreamWriter),
    /// The stages, in this process.
    Direct(&'a Components),
    /// Nowhere: count only.
    DryRun,
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

fn load_checkpoint(options: &Options) -> anyhow::Result<Option<Checkpoint>> {
    if options.restart || !options.checkpoint.exists() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&options.checkpoint)
        .with_context(|| format!("reading the checkpoint {}", options.checkpoint.display()))?;
    let checkpoint: Checkpoint = serde_json::from_str(&text).context("the checkpoint is not valid")?;
    Ok((checkpoint.bucket == options.bucket && checkpoint.prefix == options.prefix).then_some(checkpoint))
}

fn save_checkpoint(options: &Options, checkpoint: &Checkpoint) -> anyhow::Result<()> {
    if let Some(dir) = options.checkpoint.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let partial = options.checkpoint.with_extension("partial");
    std::fs::write(&partial, serde_json::to_vec_pretty(checkpoint)?)?;
    std::fs::rename(&partial, &options.checkpoint)?;
    Ok(())
}

/// The record the `uploads` stream gets for an object: an EventBridge
/// "Object Created" event, as the rule forwards S3's.
pub fn object_created_record(bucket: &str, object: &Listed) -> Record {
    let event = json!({
        "version": "0",
        "id": Uuid::new_v4(),
        "detail-type": "Object Created",
        "source": "collections.backfill",
        "time": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "resources": [format!("arn:aws:s3:::{bucket}")],
        "detail": {
            "version": "0",
            "bucket": {"name": bucket},
            "object": {"key": object.key, "size": object.size, "etag": object.etag},
            "reason": "Backfill",
        }
    });
    Record::new(&object.key, serde_json::to_vec(&event).expect("JSON values serialise"))
}

/// Keeps `rate` objects a second on average since the start.
pub(crate) struct Throttle {
    rate: f64,
    start: Instant,
    sent: u64,
}

impl Throttle {
    pub(crate) fn new(rate: f64) -> Self {
        Self { rate, start: Instant::now(), sent: 0 }
    }

    /// Waits until `n` more are due.
    pub(crate) async fn admit(&mut self, n: u64) {
        self.sent += n;
        let due = Duration::from_secs_f64(self.sent as f64 / self.rate.max(0.001));
        if let Some(wait) = due.checked_sub(self.start.elapsed()) {
            tokio::time::sleep(wait).await;
        }
    }
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
    fn settled(&mut self, tracker: &Tracker) -> Option<Checkpoint> {
        let mut settled = None;
        while self.0.front().is_some_and(|(keys, _)| tracker.settle(keys)) {
            settled = self.0.pop_front().map(|(_, after)| after);
        }
        settled
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Runs a backfill. `pool` is needed unless `options.all` (to skip what is
/// processed) or the sink is direct (which brings its own).
pub async fn backfill(
    s3: &S3Store,
    pool: Option<&PgPool>,
    sink: Sink<'_>,
    options: &Options,
) -> anyhow::Result<Report> {
    // A dry run neither resumes a backfill nor leaves one to resume.
    let keeps_checkpoint = !matches!(sink, Sink::DryRun);
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

    let pipeline = match &sink {
        Sink::Direct(c) => {
            let tracker = Arc::new(Tracker::hidden());
            Some((Pipeline::start(c, Arc::new(s3.clone()), tracker.clone())?, tracker))
        }
        _ => None,
    };
    let mut throttle = Throttle::new(options.rate);
    let mut pages = 0;
    // The saved checkpoint only moves past a page once every object of it is
    // settled: sent to the stream, or (direct) through the pipeline.
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
            let pool = pool.context("checking what is already processed needs DATABASE_URL (or pass --all)")?;
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
            match &sink {
                Sink::Stream(writer) => {
                    let records: Vec<Record> =
                        chunk.iter().map(|(o, _)| object_created_record(&options.bucket, o)).collect();
                    writer.put_all(&records).await.context("putting records on the stream")?;
                }
                Sink::Direct(_) => {
                    let (pipeline, tracker) = pipeline.as_ref().expect("a direct sink starts a pipeline");
                    for (o, item) in chunk {
                        tracker.register(*item, &o.key);
                        let object = ObjectRef {
                            bucket: options.bucket.clone(),
                            key: o.key.clone(),
                            etag: o.etag.clone(),
                            size: Some(o.size),
                            ..ObjectRef::default()
                        };
                        pipeline.submit_object(object).await?;
                    }
                }
                Sink::DryRun => {}
            }
            report.submitted += chunk.len() as u64;
        }
        progress.inc(page.objects.len() as u64);
        progress.set_message(format!("{} submitted", report.submitted));
        checkpoint.start_after = Some(last);
        let settled = match &pipeline {
            Some((_, tracker)) => {
                unsettled.push(eligible.iter().map(|(o, _)| o.key.clone()).collect(), checkpoint.clone());
                unsettled.settled(tracker)
            }
            None => Some(checkpoint.clone()),
        };
        if let Some(settled) = settled.filter(|_| keeps_checkpoint) {
            save_checkpoint(options, &settled)?;
        }
        if !page.truncated {
            checkpoint.report.complete = true;
            break;
        }
    }
    progress.finish_and_clear();
    if let Some((pipeline, tracker)) = pipeline {
        pipeline.finish().await?;
        checkpoint.report.failed = tracker.finish().failed;
        // Everything submitted is through the pipeline now.
        if keeps_checkpoint && !unsettled.is_empty() && !checkpoint.report.complete {
            save_checkpoint(options, &checkpoint)?;
        }
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
        let tracker = Tracker::hidden();
        let mut pages = Unsettled::default();
        pages.push(keys(&["a", "b"]), after("b"));
        pages.push(keys(&["c"]), after("c"));
        pages.push(keys(&["d", "e"]), after("e"));
        // Items finish out of order: page two's and three's before page one's.
        tracker.failed("c".into(), "corrupt".into());
        tracker.processed("d".into());
        tracker.skipped("e".into(), "x".into());
        tracker.processed("a".into());
        assert_eq!(pages.settled(&tracker), None, "b of page one is still in flight");
        tracker.processed("b".into());
        assert_eq!(pages.settled(&tracker), Some(after("e")), "now all three pages are through");
        assert!(pages.is_empty());
        assert_eq!(pages.settled(&tracker), None);
    }
}
