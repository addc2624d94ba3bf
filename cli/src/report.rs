//! What a local run did with each item, kept as it happens (with a progress
//! bar) and printed as a summary at the end.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use domain::text::printable;
use indicatif::{ProgressBar, ProgressStyle};
use remote::limit::AdaptiveLimit;
use tokio::task::JoinHandle;
use uuid::Uuid;

/// The fate of every item a run was given.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    /// Keys that went through every stage.
    pub processed: Vec<String>,
    /// Keys passed over, with why.
    pub skipped: Vec<(String, String)>,
    /// Keys that failed, with the reason.
    pub failed: Vec<(String, String)>,
    /// Keys left pending (a provider out past the retries' budget), with
    /// the reason: not failed, and the next run takes them up.
    pub pending: Vec<(String, String)>,
}

impl Report {
    /// The summary a user reads at the end of a run.
    pub fn summary(&self) -> String {
        let mut out =
            format!("processed {}, skipped {}, failed {}", self.processed.len(), self.skipped.len(), self.failed.len());
        if !self.pending.is_empty() {
            out.push_str(&format!(", left pending {}", self.pending.len()));
        }
        out.push('\n');
        let mut reasons: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (key, reason) in &self.skipped {
            reasons.entry(reason).or_default().push(key);
        }
        for (reason, keys) in reasons {
            let shown: Vec<Cow<str>> = keys.iter().take(5).map(|k| printable(k)).collect();
            let more = if keys.len() > shown.len() {
                format!(", and {} more", keys.len() - shown.len())
            } else {
                String::new()
            };
            out.push_str(&format!("  skipped {} ({}): {}{more}\n", keys.len(), printable(reason), shown.join(", ")));
        }
        for (key, reason) in &self.failed {
            out.push_str(&format!("  FAILED {}: {}\n", printable(key), printable(reason)));
        }
        if let Some((_, reason)) = self.pending.first() {
            out.push_str(&format!(
                "  left pending {}, not failed (the last: {}); run the same command again to finish them\n",
                self.pending.len(),
                printable(reason)
            ));
        }
        out
    }

    /// Whether every item came to an end (processed, skipped or failed).
    pub fn is_complete(&self) -> bool {
        self.pending.is_empty()
    }

    /// Prints the summary; an error (a non-zero exit) when items were left
    /// pending, so that a script knows to run the command again.
    pub fn print(&self) -> anyhow::Result<()> {
        print!("{}", self.summary());
        anyhow::ensure!(self.is_complete(), "{} items left pending; run the command again", self.pending.len());
        Ok(())
    }
}

/// Collects outcomes from the stages as they run.
#[derive(Debug)]
pub struct Tracker {
    keys: Mutex<HashMap<Uuid, String>>,
    report: Mutex<Report>,
    /// Keys with an outcome that nobody has asked about yet ([`Tracker::settle`]).
    finished: Mutex<HashSet<String>>,
    /// Items a stage did work on that have not reached the end yet.
    worked: Mutex<HashSet<Uuid>>,
    /// Keys waiting for a provider batch's result (`--batch-api`), with why.
    queued: Mutex<HashMap<String, String>>,
    /// The first configuration fault a stage met: the run stops.
    halted: OnceLock<String>,
    progress: ProgressBar,
}

impl Tracker {
    /// A tracker with a progress bar (drawn only on a terminal) of `total` items.
    pub fn new(total: u64) -> Self {
        let progress = ProgressBar::new(total);
        progress.set_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} {per_sec} ETA {eta}\n{wide_msg}",
            )
            .expect("the template is valid"),
        );
        Self::with_progress(progress)
    }

    /// A tracker that draws nothing.
    pub fn hidden() -> Self {
        Self::with_progress(ProgressBar::hidden())
    }

    fn with_progress(progress: ProgressBar) -> Self {
        Self {
            keys: Mutex::default(),
            report: Mutex::default(),
            finished: Mutex::default(),
            worked: Mutex::default(),
            queued: Mutex::default(),
            halted: OnceLock::new(),
            progress,
        }
    }

    /// Remembers which key an item came from, to name it in the summary.
    pub fn register(&self, item: Uuid, key: &str) {
        self.keys.lock().expect("tracker lock").insert(item, key.to_owned());
    }

    /// The key of an item if it was registered, or else `fallback`.
    pub fn name(&self, item: Option<Uuid>, fallback: String) -> String {
        item.and_then(|id| self.keys.lock().expect("tracker lock").get(&id).cloned()).unwrap_or(fallback)
    }

    pub fn processed(&self, key: String) {
        self.queued.lock().expect("tracker lock").remove(&key);
        self.finished.lock().expect("tracker lock").insert(key.clone());
        self.report.lock().expect("tracker lock").processed.push(key);
        self.progress.inc(1);
    }

    pub fn failed(&self, key: String, reason: String) {
        tracing::debug!(%key, %reason, "item failed");
        self.queued.lock().expect("tracker lock").remove(&key);
        self.finished.lock().expect("tracker lock").insert(key.clone());
        self.report.lock().expect("tracker lock").failed.push((key, reason));
        self.progress.inc(1);
    }

    /// A stage did its work on the item, and a later one has it now.
    /// An item that waited for a provider batch (`--batch-api`) waits no more.
    pub fn worked(&self, item: Option<Uuid>, key: String) {
        self.queued.lock().expect("tracker lock").remove(&key);
        self.mark_worked(item);
    }

    fn mark_worked(&self, item: Option<Uuid>) {
        if let Some(item) = item {
            self.worked.lock().expect("tracker lock").insert(item);
        }
    }

    /// Whether a stage did work on the item (forgetting it: the item has
    /// reached its end).
    fn take_worked(&self, item: Option<Uuid>) -> bool {
        item.is_some_and(|id| self.worked.lock().expect("tracker lock").remove(&id))
    }

    /// A stage passed the item over: it was processed if an earlier stage
    /// of this run did work on it (a later stage found its work done),
    /// else skipped.
    pub fn skipped_or_processed(&self, item: Option<Uuid>, key: String, reason: String) {
        if self.take_worked(item) { self.processed(key) } else { self.skipped(key, reason) }
    }

    /// The last stage finished the item.
    pub fn processed_item(&self, item: Option<Uuid>, key: String) {
        self.take_worked(item);
        self.processed(key);
    }

    /// A stage failed the item: it goes no further.
    pub fn failed_item(&self, item: Option<Uuid>, key: String, reason: String) {
        self.take_worked(item);
        self.failed(key, reason);
    }

    /// A stage could not finish the item (its provider was out past the
    /// retries' budget): it stays pending, for the next run.
    pub fn postponed(&self, item: Option<Uuid>, key: String, reason: String) {
        self.take_worked(item);
        self.queued.lock().expect("tracker lock").remove(&key);
        self.finished.lock().expect("tracker lock").insert(key.clone());
        self.report.lock().expect("tracker lock").pending.push((key, reason));
        self.progress.inc(1);
    }

    /// A stage handed the item to a provider's batch (`--batch-api`): it
    /// goes on when the batch's result is stored, in this run or the next.
    /// The request is kept in the database, so for [`Tracker::settle`] the
    /// item is through; if no result is stored before the run ends, it is
    /// reported pending.
    pub fn queued(&self, item: Option<Uuid>, key: String, reason: String) {
        self.mark_worked(item);
        self.finished.lock().expect("tracker lock").insert(key.clone());
        self.queued.lock().expect("tracker lock").insert(key, reason);
    }

    /// Nothing waits at the provider any more: items still queued here have
    /// no request left (deleted while their batch ran); they are skipped.
    pub fn nothing_queued(&self, reason: &str) {
        let left: Vec<String> = self.queued.lock().expect("tracker lock").drain().map(|(key, _)| key).collect();
        for key in left {
            self.skipped(key, reason.to_owned());
        }
    }

    /// Says on the progress bar (and once on stderr) when a provider is
    /// out: what it answered, how many calls go at once, when the next try
    /// is. Runs until aborted.
    pub fn watch(self: &Arc<Self>, limits: Vec<Arc<AdaptiveLimit>>) -> JoinHandle<()> {
        let tracker = self.clone();
        tokio::spawn(async move {
            let mut out = vec![false; limits.len()];
            loop {
                let mut message = Vec::new();
                for (limit, was_out) in limits.iter().zip(out.iter_mut()) {
                    let outage = limit.outage();
                    if let Some(outage) = &outage {
                        let next = outage.retry_at.saturating_duration_since(tokio::time::Instant::now());
                        let line = format!(
                            "{} is out ({}); {} of {} calls at once, next try in {} s",
                            limit.provider(),
                            printable(&outage.reason),
                            limit.current(),
                            limit.ceiling(),
                            next.as_secs_f64().ceil()
                        );
                        if !*was_out {
                            tracker.progress.suspend(|| eprintln!("waiting: {line}"));
                        }
                        message.push(line);
                    } else if *was_out {
                        tracker.progress.suspend(|| eprintln!("{} answers again", limit.provider()));
                    }
                    *was_out = outage.is_some();
                }
                tracker.progress.set_message(message.join("; "));
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        })
    }

    pub fn skipped(&self, key: String, reason: String) {
        self.queued.lock().expect("tracker lock").remove(&key);
        self.finished.lock().expect("tracker lock").insert(key.clone());
        self.report.lock().expect("tracker lock").skipped.push((key, reason));
        self.progress.inc(1);
    }

    /// Whether every one of `keys` has an outcome; if so they are forgotten
    /// here, so asking page by page keeps this set small.
    pub fn settle(&self, keys: &[String]) -> bool {
        let mut finished = self.finished.lock().expect("tracker lock");
        let all = keys.iter().all(|k| finished.contains(k));
        if all {
            keys.iter().for_each(|k| {
                finished.remove(k);
            });
        }
        all
    }

    /// Says `line` on stderr, above the progress bar.
    pub fn say(&self, line: &str) {
        self.progress.suspend(|| eprintln!("{line}"));
    }

    /// A stage met a configuration fault: the run stops at the first.
    pub fn halt(&self, reason: String) {
        if self.halted.set(reason.clone()).is_ok() {
            self.progress.suspend(|| eprintln!("stopping: {}", printable(&reason)));
        }
    }

    /// The configuration fault that stopped the run, if one did.
    pub fn halted(&self) -> Option<&str> {
        self.halted.get().map(String::as_str)
    }

    pub fn finish(&self) -> Report {
        self.progress.finish_and_clear();
        let mut report = self.report.lock().expect("tracker lock").clone();
        report.pending.extend(self.queued.lock().expect("tracker lock").drain());
        report.processed.sort();
        report.skipped.sort();
        report.failed.sort();
        report.pending.sort();
        report
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_groups_skips_and_lists_failures() {
        let report = Report {
            processed: vec!["u/a.jpg".into()],
            skipped: (0..7).map(|i| (format!("u/{i}.txt"), "not an image".to_owned())).collect(),
            failed: vec![("u/bad.jpg".into(), "corrupt JPEG: bad".into())],
            pending: vec![],
        };
        assert_eq!(
            report.summary(),
            "processed 1, skipped 7, failed 1\n  skipped 7 (not an image): u/0.txt, u/1.txt, u/2.txt, u/3.txt, u/4.txt, and 2 more\n  FAILED u/bad.jpg: corrupt JPEG: bad\n"
        );
        let waiting = Report {
            pending: vec![
                ("u/c.jpg".into(), "HTTP 529".into()),
                ("u/d.jpg".into(), "anthropic answered HTTP 529: overloaded".into()),
            ],
            ..Report::default()
        };
        assert_eq!(
            waiting.summary(),
            "processed 0, skipped 0, failed 0, left pending 2\n  left pending 2, not failed (the last: HTTP 529); run the \
             same command again to finish them\n"
        );
        assert!(!waiting.is_complete() && report.is_complete());
    }

    #[tokio::test]
    async fn the_progress_bar_says_which_provider_is_out_and_when_it_tries_again() {
        let tracker = Arc::new(Tracker::hidden());
        let limit = Arc::new(AdaptiveLimit::new("anthropic", 4));
        let watcher = tracker.watch(vec![limit.clone()]);
        limit.acquire().await.met_outage("anthropic answered HTTP 529".into(), Duration::from_secs(8));
        tokio::time::sleep(Duration::from_millis(400)).await;
        let shown = tracker.progress.message();
        assert!(
            shown.starts_with("anthropic is out (anthropic answered HTTP 529); 2 of 4 calls at once, next try in"),
            "{shown}"
        );
        limit.acquire().await.succeeded();
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(tracker.progress.message(), "", "nothing said once it answers again");
        watcher.abort();
    }
}
