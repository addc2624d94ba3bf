//! The providers' batch APIs for vision ([`VisionBatches`]): the same
//! requests as the synchronous calls, sent many at once at a lower price,
//! answered within the provider's window (Anthropic: 24 hours) as lines
//! keyed by the `custom_id` each request was given.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use remote::{ApiError, JsonClient, JsonLines};
use serde_json::Value;

use crate::{ProviderAnalysis, VisionError, VisionRequest};

/// A batch as the provider reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderBatch {
    /// The provider's id (`msgbatch_…`).
    pub id: String,
    /// Every request has an answer (or will never have one): the results can be read.
    pub ended: bool,
    pub created_at: Option<DateTime<Utc>>,
    /// When the provider stops working on it.
    pub expires_at: Option<DateTime<Utc>>,
    /// The requests it holds, all outcomes counted.
    pub requests: u64,
    /// Where its results are, once it has ended (Anthropic: one URL;
    /// OpenAI: the output file's and the error file's ids).
    pub results: Vec<String>,
    /// The label it was created with ([`VisionBatches::create`]), when the
    /// provider keeps one (OpenAI's metadata; Anthropic keeps none).
    pub label: Option<String>,
    /// Why the provider ended it without running its requests, when it did
    /// (a batch that failed validation).
    pub failure: Option<String>,
}

/// Why a request of a batch has no analysis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchFailure {
    /// The request's own fault (an image the provider cannot read, a
    /// refusal, a reply that is not an analysis): it would fail again.
    Request(String),
    /// The provider's fault (overloaded, an internal error), or an answer
    /// that may come right when asked again: worth one more submission.
    Provider(String),
    /// Never run: the batch expired or was canceled first.
    NotRun(String),
}

impl BatchFailure {
    pub fn reason(&self) -> &str {
        match self {
            Self::Request(reason) | Self::Provider(reason) | Self::NotRun(reason) => reason,
        }
    }

    /// Whether submitting it again may give an answer.
    pub fn worth_resubmitting(&self) -> bool {
        !matches!(self, Self::Request(_))
    }
}

/// One line of a batch's results.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchResult {
    pub custom_id: String,
    pub result: Result<ProviderAnalysis, BatchFailure>,
}

/// A batch's results, read a line at a time from one or more documents
/// (OpenAI's output and error files).
#[derive(Debug)]
pub struct BatchResults {
    documents: std::collections::VecDeque<JsonLines>,
    read: fn(&Value) -> Result<BatchResult, ApiError>,
}

impl BatchResults {
    pub fn new(documents: Vec<JsonLines>, read: fn(&Value) -> Result<BatchResult, ApiError>) -> Self {
        Self { documents: documents.into(), read }
    }

    /// The next result; `None` at the end. A line that cannot be read is an
    /// error of its own (its request is not known, so it stays waiting).
    pub async fn next(&mut self) -> Option<Result<BatchResult, ApiError>> {
        loop {
            let document = self.documents.front_mut()?;
            match document.next().await {
                Some(line) => return Some(line.and_then(|line| (self.read)(&line))),
                None => {
                    self.documents.pop_front();
                }
            }
        }
    }
}

/// Most pages of batches looked at when finding a lost submission again.
const LIST_PAGES: usize = 10;

/// The batches listed at `list_url` (newest first, 100 a page, the next
/// page after the `cursor` parameter naming the last id) created since
/// `since`, each read by `read`: Anthropic's and OpenAI's lists page alike.
pub async fn created_since(
    client: &JsonClient,
    headers: &[(&str, &str)],
    (list_url, cursor): (&str, &str),
    since: DateTime<Utc>,
    read: fn(&Value) -> Result<ProviderBatch, VisionError>,
) -> Result<Vec<ProviderBatch>, VisionError> {
    let mut found = Vec::new();
    let mut after: Option<String> = None;
    for _ in 0..LIST_PAGES {
        let url = match &after {
            Some(id) => format!("{list_url}?limit=100&{cursor}={id}"),
            None => format!("{list_url}?limit=100"),
        };
        let reply = client.get(&url, headers).await?;
        let page = reply.body["data"].as_array().ok_or_else(|| {
            VisionError::Api(ApiError::Malformed {
                provider: client.provider(),
                reason: "a list of batches without data".into(),
            })
        })?;
        let mut older = false;
        for batch in page.iter().map(read) {
            let batch = batch?;
            match batch.created_at {
                Some(at) if at >= since => found.push(batch),
                _ => older = true,
            }
        }
        if older || reply.body["has_more"] != true {
            break;
        }
        after = reply.body["last_id"].as_str().map(str::to_owned);
    }
    Ok(found)
}

/// A vision provider's batch API.
#[async_trait]
pub trait VisionBatches: Send + Sync {
    /// `anthropic`: stored as `provider_used`.
    fn provider(&self) -> &'static str;
    /// Stored as `model_used`.
    fn model(&self) -> &str;
    /// One request of a batch, serialised: the synchronous call's request
    /// for `request`, under `custom_id`.
    fn request_line(&self, custom_id: &str, request: &VisionRequest<'_>) -> Vec<u8>;
    /// Submits the requests ([`VisionBatches::request_line`]) as one batch,
    /// labelled `label` where the provider keeps a label.
    async fn create(&self, label: &str, lines: &[Vec<u8>]) -> Result<ProviderBatch, VisionError>;
    async fn retrieve(&self, id: &str) -> Result<ProviderBatch, VisionError>;
    /// The batches created since `since`, newest first: how a submission
    /// whose answer was lost (a kill, a timeout) is found again.
    async fn created_since(&self, since: DateTime<Utc>) -> Result<Vec<ProviderBatch>, VisionError>;
    /// The results of an ended batch.
    async fn results(&self, batch: &ProviderBatch) -> Result<BatchResults, VisionError>;
}
