//! The `openai` provider: OpenAI-compatible chat completions (OpenAI, Ollama,
//! vLLM, … through the base URL), the image as a data URL, and the analysis
//! as a strict JSON-schema response.

use async_trait::async_trait;
use base64::Engine;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::batch::{self, BatchFailure, BatchResult, BatchResults, ProviderBatch, VisionBatches};
use super::{Analysis, ProviderAnalysis, VisionError, VisionProvider, VisionRequest, prompt};
use remote::{ApiError, ApiKey, JsonClient};

pub const DEFAULT_MODEL: &str = "gpt-4.1-mini";
/// The name of the response schema.
pub const SCHEMA_NAME: &str = "image_analysis";

const PROVIDER: &str = "openai";

#[derive(Debug, Clone)]
pub struct OpenAiProvider {
    client: JsonClient,
    url: String,
    /// Local servers such as Ollama need none.
    key: Option<ApiKey>,
    model: String,
    max_tokens: u32,
}

impl OpenAiProvider {
    pub fn new(client: JsonClient, base_url: &str, key: Option<ApiKey>, model: String, max_tokens: u32) -> Self {
        let url = format!("{}/chat/completions", base_url.trim_end_matches('/'));
        Self { client, url, key, model, max_tokens }
    }

    pub fn request_body(&self, request: &VisionRequest<'_>) -> Value {
        let data = base64::engine::general_purpose::STANDARD.encode(request.image);
        json!({
            "model": self.model,
            "max_tokens": self.max_tokens,
            "messages": [{
                "role": "user",
                "content": [
                    {"type": "text", "text": prompt::instructions(request.info)},
                    {"type": "image_url", "image_url": {"url": format!("data:{};base64,{data}", request.media_type)}},
                ]
            }],
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": SCHEMA_NAME, "strict": true, "schema": Analysis::json_schema()}
            }
        })
    }

    fn malformed(reason: impl Into<String>) -> VisionError {
        VisionError::Api(ApiError::Malformed { provider: PROVIDER, reason: reason.into() })
    }

    /// The analysis in a chat completion.
    pub fn parse_reply(body: &Value) -> Result<Analysis, VisionError> {
        let choice = body.pointer("/choices/0").ok_or_else(|| Self::malformed("no choices"))?;
        if let Some(refusal) = choice.pointer("/message/refusal").and_then(Value::as_str) {
            return Err(VisionError::Refused { provider: PROVIDER, reason: refusal.to_owned() });
        }
        if choice["finish_reason"] == "length" {
            return Err(Self::malformed("the reply was cut off at max_tokens"));
        }
        if choice["finish_reason"] == "content_filter" {
            return Err(VisionError::Refused { provider: PROVIDER, reason: "stopped by the content filter".into() });
        }
        let content = choice
            .pointer("/message/content")
            .and_then(Value::as_str)
            .ok_or_else(|| Self::malformed("no message content"))?;
        let content: serde_json::Value = serde_json::from_str(&domain::text::replace_lone_surrogates(content))
            .map_err(|e| Self::malformed(format!("the content is not JSON: {e}")))?;
        Analysis::from_reply(content, PROVIDER).map_err(|source| VisionError::Invalid { provider: PROVIDER, source })
    }
}

#[async_trait]
impl VisionProvider for OpenAiProvider {
    fn provider(&self) -> &'static str {
        PROVIDER
    }

    fn model(&self) -> &str {
        &self.model
    }

    async fn analyze(&self, request: VisionRequest<'_>) -> Result<ProviderAnalysis, VisionError> {
        let bearer = self.key.as_ref().map(|k| format!("Bearer {}", k.expose()));
        let headers: Vec<(&str, &str)> = bearer.iter().map(|b| ("authorization", b.as_str())).collect();
        let reply = self.client.post(&self.url, &headers, &self.request_body(&request)).await?;
        let analysis = Self::parse_reply(&reply.body)?;
        let request_id = reply.header("x-request-id").or_else(|| reply.body["id"].as_str().map(str::to_owned));
        let usage = domain::usage::Usage::of_reply(&reply.body);
        Ok(ProviderAnalysis { analysis, raw_response: reply.body, request_id, usage })
    }
}

/// OpenAI's Batch API on `/v1/chat/completions`: the same requests as
/// [`OpenAiProvider`] makes, in a JSON Lines file uploaded for the batch, at
/// half the price, answered within 24 hours in an output and an error file.
#[derive(Debug, Clone)]
pub struct OpenAiBatches {
    chat: OpenAiProvider,
    base: String,
    /// `Bearer {key}`, when there is a key.
    bearer: Option<String>,
}

/// The metadata key our batch id goes under: how a submission whose answer
/// was lost is found again.
pub const BATCH_LABEL: &str = "collections_batch";

impl OpenAiBatches {
    pub fn new(chat: OpenAiProvider) -> Self {
        let base = chat.url.trim_end_matches("/chat/completions").to_owned();
        let bearer = chat.key.as_ref().map(|k| format!("Bearer {}", k.expose()));
        Self { chat, base, bearer }
    }

    fn headers(&self) -> Vec<(&'static str, &str)> {
        self.bearer.iter().map(|b| ("authorization", b.as_str())).collect()
    }

    /// A Batch object.
    fn batch(body: &Value) -> Result<ProviderBatch, VisionError> {
        let id = body["id"].as_str().ok_or_else(|| Self::malformed_batch("no id"))?;
        let time = |field: &str| body[field].as_i64().and_then(|t| DateTime::<Utc>::from_timestamp(t, 0));
        let status = body["status"].as_str().unwrap_or_default();
        let failure = (status == "failed").then(|| {
            let errors: Vec<&str> = body
                .pointer("/errors/data")
                .and_then(Value::as_array)
                .map(|errors| errors.iter().filter_map(|e| e["message"].as_str()).collect())
                .unwrap_or_default();
            format!("the batch failed: {}", errors.join("; "))
        });
        Ok(ProviderBatch {
            id: id.to_owned(),
            ended: matches!(status, "completed" | "failed" | "expired" | "cancelled"),
            created_at: time("created_at"),
            expires_at: time("expires_at"),
            requests: body.pointer("/request_counts/total").and_then(Value::as_u64).unwrap_or_default(),
            results: ["output_file_id", "error_file_id"]
                .iter()
                .filter_map(|field| body[field].as_str().map(str::to_owned))
                .collect(),
            label: body["metadata"][BATCH_LABEL].as_str().map(str::to_owned),
            failure,
        })
    }

    fn malformed_batch(reason: &str) -> VisionError {
        OpenAiProvider::malformed(format!("a batch with {reason}"))
    }

    /// One line of a batch's output or error file.
    pub fn read_result(line: &Value) -> Result<BatchResult, ApiError> {
        let malformed = |reason: String| ApiError::Malformed { provider: PROVIDER, reason };
        let custom_id =
            line["custom_id"].as_str().ok_or_else(|| malformed("a batch result with no custom_id".into()))?.to_owned();
        let status = line.pointer("/response/status_code").and_then(Value::as_u64);
        let body = &line["response"]["body"];
        let error = if line["error"].is_object() { &line["error"] } else { &body["error"] };
        let message = error["message"].as_str().unwrap_or_default();
        let outcome = match (status, error["code"].as_str()) {
            (Some(200), _) => match OpenAiProvider::parse_reply(body) {
                Ok(analysis) => Ok(ProviderAnalysis {
                    analysis,
                    raw_response: body.clone(),
                    request_id: line
                        .pointer("/response/request_id")
                        .or(body.get("id"))
                        .and_then(Value::as_str)
                        .map(str::to_owned),
                    usage: domain::usage::Usage::of_reply(body),
                }),
                Err(e @ VisionError::Invalid { .. }) => Err(BatchFailure::Provider(e.to_string())),
                Err(e) => Err(BatchFailure::Request(e.to_string())),
            },
            (_, Some("batch_expired")) => {
                Err(BatchFailure::NotRun("the batch expired (its 24 hours ran out) before this request ran".into()))
            }
            (_, Some("batch_cancelled")) => {
                Err(BatchFailure::NotRun("the batch was canceled before this request ran".into()))
            }
            (Some(status), _) => {
                let reason = format!("{PROVIDER} errored in the batch: HTTP {status}: {message}");
                Err(if (400..500).contains(&status) && status != 429 {
                    BatchFailure::Request(reason)
                } else {
                    BatchFailure::Provider(reason)
                })
            }
            (None, code) if line["error"].is_object() => Err(BatchFailure::Provider(format!(
                "{PROVIDER} errored in the batch: {}: {message}",
                code.unwrap_or("error")
            ))),
            (None, _) => return Err(malformed("a batch result with neither a response nor an error".into())),
        };
        Ok(BatchResult { custom_id, result: outcome })
    }
}

#[async_trait]
impl VisionBatches for OpenAiBatches {
    fn provider(&self) -> &'static str {
        PROVIDER
    }

    fn model(&self) -> &str {
        &self.chat.model
    }

    fn request_line(&self, custom_id: &str, request: &VisionRequest<'_>) -> Vec<u8> {
        let line = json!({"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions",
                          "body": self.chat.request_body(request)});
        serde_json::to_vec(&line).expect("a request serialises")
    }

    async fn create(&self, label: &str, lines: &[Vec<u8>]) -> Result<ProviderBatch, VisionError> {
        let headers = self.headers();
        let file = lines.join(&b'\n');
        let name = format!("{label}.jsonl");
        let uploaded = self
            .chat
            .client
            .post_multipart(&format!("{}/files", self.base), &headers, &[("purpose", "batch")], ("file", &name, file))
            .await?;
        let file_id = uploaded.body["id"].as_str().ok_or_else(|| Self::malformed_batch("an upload without an id"))?;
        let body = json!({"input_file_id": file_id, "endpoint": "/v1/chat/completions", "completion_window": "24h",
                          "metadata": {BATCH_LABEL: label}});
        let reply = self.chat.client.post(&format!("{}/batches", self.base), &headers, &body).await?;
        Self::batch(&reply.body)
    }

    async fn retrieve(&self, id: &str) -> Result<ProviderBatch, VisionError> {
        let headers = self.headers();
        let reply = self.chat.client.get(&format!("{}/batches/{id}", self.base), &headers).await?;
        Self::batch(&reply.body)
    }

    async fn created_since(&self, since: DateTime<Utc>) -> Result<Vec<ProviderBatch>, VisionError> {
        let headers = self.headers();
        let list = format!("{}/batches", self.base);
        batch::created_since(&self.chat.client, &headers, (&list, "after"), since, Self::batch).await
    }

    async fn results(&self, batch: &ProviderBatch) -> Result<BatchResults, VisionError> {
        let headers = self.headers();
        let mut documents = Vec::with_capacity(batch.results.len());
        for file in &batch.results {
            documents.push(self.chat.client.get_lines(&format!("{}/files/{file}/content", self.base), &headers).await?);
        }
        Ok(BatchResults::new(documents, Self::read_result))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(message: Value, finish: &str) -> Value {
        json!({"id": "chatcmpl-1", "choices": [{"index": 0, "message": message, "finish_reason": finish}]})
    }

    #[test]
    fn reads_the_json_content() {
        let content = json!({"category": "nature", "summary": "A fern."}).to_string();
        let a = OpenAiProvider::parse_reply(&reply(json!({"role": "assistant", "content": content}), "stop")).unwrap();
        assert_eq!(a.category, "nature");
    }

    #[test]
    fn refusal_truncation_and_garbage_are_errors() {
        let refused = reply(json!({"role": "assistant", "content": null, "refusal": "I can't."}), "stop");
        assert_eq!(
            OpenAiProvider::parse_reply(&refused),
            Err(VisionError::Refused { provider: "openai", reason: "I can't.".into() })
        );
        let cut = reply(json!({"content": "{\"category\": \"na"}), "length");
        assert!(matches!(OpenAiProvider::parse_reply(&cut), Err(VisionError::Api(ApiError::Malformed { .. }))));
        let garbage = reply(json!({"content": "not json"}), "stop");
        assert!(matches!(OpenAiProvider::parse_reply(&garbage), Err(VisionError::Api(ApiError::Malformed { .. }))));
        assert!(OpenAiProvider::parse_reply(&json!({"choices": []})).is_err());
    }

    #[test]
    fn batch_results_of_every_kind() {
        let completion = |content: Value| {
            json!({"id": "chatcmpl-1", "choices": [{"index": 0, "finish_reason": "stop",
            "message": {"role": "assistant", "content": content.to_string(), "refusal": null}}],
            "usage": {"prompt_tokens": 900, "completion_tokens": 80}})
        };
        let ok = json!({"id": "batch_req_1", "custom_id": "a", "error": null, "response": {"status_code": 200,
            "request_id": "req_1", "body": completion(json!({"category": "food", "summary": "Ramen."}))}});
        let read = OpenAiBatches::read_result(&ok).unwrap();
        let answer = read.result.unwrap();
        assert_eq!((read.custom_id.as_str(), answer.analysis.category.as_str()), ("a", "food"));
        assert_eq!(answer.request_id.as_deref(), Some("req_1"));
        let failed = |status: u64| {
            json!({"custom_id": "b", "error": null, "response": {"status_code": status,
            "body": {"error": {"message": "no", "type": "x"}}}})
        };
        assert!(
            matches!(OpenAiBatches::read_result(&failed(400)).unwrap().result, Err(BatchFailure::Request(r)) if r.contains("HTTP 400: no"))
        );
        assert!(matches!(OpenAiBatches::read_result(&failed(500)).unwrap().result, Err(BatchFailure::Provider(_))));
        assert!(matches!(OpenAiBatches::read_result(&failed(429)).unwrap().result, Err(BatchFailure::Provider(_))));
        let expired = json!({"custom_id": "c", "response": null, "error": {"code": "batch_expired", "message": "x"}});
        assert!(matches!(OpenAiBatches::read_result(&expired).unwrap().result, Err(BatchFailure::NotRun(_))));
        assert!(OpenAiBatches::read_result(&json!({"custom_id": "d"})).is_err());
    }

    #[test]
    fn a_batch_object_names_its_files_its_label_and_why_it_failed() {
        let batch = OpenAiBatches::batch(&json!({"id": "batch_1", "status": "failed", "created_at": 1_700_000_000,
            "request_counts": {"total": 3, "completed": 0, "failed": 0}, "metadata": {"collections_batch": "ours"},
            "errors": {"data": [{"code": "invalid_json", "message": "line 2 is not JSON"}]},
            "output_file_id": null, "error_file_id": "file-err"}))
        .unwrap();
        assert!(batch.ended);
        assert_eq!(
            (batch.requests, batch.label.as_deref(), batch.results.clone()),
            (3, Some("ours"), vec!["file-err".to_owned()])
        );
        assert_eq!(batch.failure.as_deref(), Some("the batch failed: line 2 is not JSON"));
    }
}
