//! The `anthropic` provider: the Messages API, the image sent as base64, and
//! the analysis returned through a forced tool call.

use async_trait::async_trait;
use base64::Engine;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::batch::{self, BatchFailure, BatchResult, BatchResults, ProviderBatch, VisionBatches};
use super::{Analysis, ProviderAnalysis, VisionError, VisionProvider, VisionRequest, prompt};
use remote::{ApiError, ApiKey, JsonClient};

pub const DEFAULT_BASE_URL: &str = "https://api.anthropic.com";
pub const DEFAULT_MODEL: &str = "claude-haiku-4-5";
/// The API version this client speaks.
pub const API_VERSION: &str = "2023-06-01";
/// The tool the model is made to call; its input is the analysis.
pub const TOOL_NAME: &str = "record_analysis";

const PROVIDER: &str = "anthropic";

#[derive(Debug, Clone)]
pub struct AnthropicProvider {
    client: JsonClient,
    url: String,
    key: ApiKey,
    model: String,
    max_tokens: u32,
}

impl AnthropicProvider {
    pub fn new(client: JsonClient, base_url: &str, key: ApiKey, model: String, max_tokens: u32) -> Self {
        let url = format!("{}/v1/messages", base_url.trim_end_matches('/'));
        Self { client, url, key, model, max_tokens }
    }

    /// The Messages API request for one image.
    pub fn request_body(&self, request: &VisionRequest<'_>) -> Value {
        json!({
            "model": self.model,
            "max_tokens": self.max_tokens,
            "tools": [{
                "name": TOOL_NAME,
                "description": "Record the analysis of the image.",
                "input_schema": Analysis::json_schema(),
            }],
            "tool_choice": {"type": "tool", "name": TOOL_NAME},
            "messages": [{
                "role": "user",
                "content": [
                    {
                        "type": "image",
                        "source": {
                            "type": "base64",
                            "media_type": request.media_type,
                            "data": base64::engine::general_purpose::STANDARD.encode(request.image),
                        }
                    },
                    {"type": "text", "text": prompt::instructions(request.info)},
                ]
            }]
        })
    }

    fn malformed(reason: impl Into<String>) -> VisionError {
        VisionError::Api(ApiError::Malformed { provider: PROVIDER, reason: reason.into() })
    }

    /// The analysis in a Messages API reply.
    pub fn parse_reply(body: &Value) -> Result<Analysis, VisionError> {
        let content =
            body.get("content").and_then(Value::as_array).ok_or_else(|| Self::malformed("no content array"))?;
        let stop_reason = body.get("stop_reason").and_then(Value::as_str).unwrap_or_default();
        let text: Vec<&str> =
            content.iter().filter(|block| block["type"] == "text").filter_map(|block| block["text"].as_str()).collect();
        if stop_reason == "refusal" {
            return Err(VisionError::Refused { provider: PROVIDER, reason: text.join(" ").trim().to_owned() });
        }
        let Some(tool) = content.iter().find(|block| block["type"] == "tool_use" && block["name"] == TOOL_NAME) else {
            if !text.is_empty() {
                return Err(VisionError::Refused { provider: PROVIDER, reason: text.join(" ").trim().to_owned() });
            }
            return Err(Self::malformed(format!("no {TOOL_NAME} tool call (stop_reason {stop_reason:?})")));
        };
        if stop_reason == "max_tokens" {
            return Err(Self::malformed("the reply was cut off at max_tokens"));
        }
        Analysis::from_reply(tool["input"].clone(), PROVIDER)
            .map_err(|source| VisionError::Invalid { provider: PROVIDER, source })
    }
}

#[async_trait]
impl VisionProvider for AnthropicProvider {
    fn provider(&self) -> &'static str {
        PROVIDER
    }

    fn model(&self) -> &str {
        &self.model
    }

    async fn analyze(&self, request: VisionRequest<'_>) -> Result<ProviderAnalysis, VisionError> {
        let headers = [("x-api-key", self.key.expose()), ("anthropic-version", API_VERSION)];
        let reply = self.client.post(&self.url, &headers, &self.request_body(&request)).await?;
        let analysis = Self::parse_reply(&reply.body)?;
        let request_id = reply.header("request-id").or_else(|| reply.body["id"].as_str().map(str::to_owned));
        let usage = domain::usage::Usage::of_reply(&reply.body);
        Ok(ProviderAnalysis { analysis, raw_response: reply.body, request_id, usage })
    }
}

/// Anthropic's Message Batches API: the same requests as
/// [`AnthropicProvider`] makes, at half the price, answered within 24 hours.
#[derive(Debug, Clone)]
pub struct AnthropicBatches {
    messages: AnthropicProvider,
    url: String,
}

impl AnthropicBatches {
    pub fn new(messages: AnthropicProvider) -> Self {
        let url = format!("{}/batches", messages.url);
        Self { messages, url }
    }

    fn headers(&self) -> [(&'static str, &str); 2] {
        [("x-api-key", self.messages.key.expose()), ("anthropic-version", API_VERSION)]
    }

    /// A Message Batch object.
    fn batch(body: &Value) -> Result<ProviderBatch, VisionError> {
        let id = body["id"].as_str().ok_or_else(|| Self::malformed_batch("no id"))?;
        let time = |field: &str| {
            body[field].as_str().and_then(|t| DateTime::parse_from_rfc3339(t).ok()).map(|t| t.with_timezone(&Utc))
        };
        let requests = body["request_counts"].as_object().map(|counts| counts.values().filter_map(Value::as_u64).sum());
        Ok(ProviderBatch {
            id: id.to_owned(),
            ended: body["processing_status"] == "ended",
            created_at: time("created_at"),
            expires_at: time("expires_at"),
            requests: requests.unwrap_or_default(),
            results: body["results_url"].as_str().map(str::to_owned).into_iter().collect(),
            label: None,
            failure: None,
        })
    }

    fn malformed_batch(reason: &str) -> VisionError {
        AnthropicProvider::malformed(format!("a message batch with {reason}"))
    }

    /// One line of a batch's results.
    pub fn read_result(line: &Value) -> Result<BatchResult, ApiError> {
        let malformed = |reason: String| ApiError::Malformed { provider: PROVIDER, reason };
        let custom_id =
            line["custom_id"].as_str().ok_or_else(|| malformed("a batch result with no custom_id".into()))?.to_owned();
        let result = &line["result"];
        let outcome = match result["type"].as_str() {
            Some("succeeded") => {
                let message = &result["message"];
                match AnthropicProvider::parse_reply(message) {
                    Ok(analysis) => Ok(ProviderAnalysis {
                        analysis,
                        raw_response: message.clone(),
                        request_id: message["id"].as_str().map(str::to_owned),
                        usage: domain::usage::Usage::of_reply(message),
                    }),
                    // Asked once more, as the synchronous path asks again.
                    Err(e @ VisionError::Invalid { .. }) => Err(BatchFailure::Provider(e.to_string())),
                    Err(e) => Err(BatchFailure::Request(e.to_string())),
                }
            }
            Some("errored") => {
                let error = result["error"].get("error").unwrap_or(&result["error"]);
                let kind = error["type"].as_str().unwrap_or("error");
                let reason =
                    format!("{PROVIDER} errored in the batch: {kind}: {}", error["message"].as_str().unwrap_or(""));
                Err(match kind {
                    "invalid_request_error" => BatchFailure::Request(reason),
                    _ => BatchFailure::Provider(reason),
                })
            }
            Some("canceled") => Err(BatchFailure::NotRun("the batch was canceled before this request ran".into())),
            Some("expired") => {
                Err(BatchFailure::NotRun("the batch expired (its 24 hours ran out) before this request ran".into()))
            }
            other => return Err(malformed(format!("a batch result of type {other:?}"))),
        };
        Ok(BatchResult { custom_id, result: outcome })
    }
}

#[async_trait]
impl VisionBatches for AnthropicBatches {
    fn provider(&self) -> &'static str {
        PROVIDER
    }

    fn model(&self) -> &str {
        &self.messages.model
    }

    fn request_line(&self, custom_id: &str, request: &VisionRequest<'_>) -> Vec<u8> {
        let line = json!({"custom_id": custom_id, "params": self.messages.request_body(request)});
        serde_json::to_vec(&line).expect("a request serialises")
    }

    async fn create(&self, _label: &str, lines: &[Vec<u8>]) -> Result<ProviderBatch, VisionError> {
        let mut body = Vec::with_capacity(lines.iter().map(|l| l.len() + 1).sum::<usize>() + 16);
        body.extend_from_slice(b"{\"requests\":[");
        for (i, line) in lines.iter().enumerate() {
            if i > 0 {
                body.push(b',');
            }
            body.extend_from_slice(line);
        }
        body.extend_from_slice(b"]}");
        let reply = self.messages.client.post_json_text(&self.url, &self.headers(), body).await?;
        Self::batch(&reply.body)
    }

    async fn retrieve(&self, id: &str) -> Result<ProviderBatch, VisionError> {
        let reply = self.messages.client.get(&format!("{}/{id}", self.url), &self.headers()).await?;
        Self::batch(&reply.body)
    }

    async fn created_since(&self, since: DateTime<Utc>) -> Result<Vec<ProviderBatch>, VisionError> {
        let list = (self.url.as_str(), "after_id");
        batch::created_since(&self.messages.client, &self.headers(), list, since, Self::batch).await
    }

    async fn results(&self, batch: &ProviderBatch) -> Result<BatchResults, VisionError> {
        let url = batch.results.first().cloned().unwrap_or_else(|| format!("{}/{}/results", self.url, batch.id));
        let lines = self.messages.client.get_lines(&url, &self.headers()).await?;
        Ok(BatchResults::new(vec![lines], Self::read_result))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tool_reply(input: Value, stop: &str) -> Value {
        json!({"id": "msg_1", "type": "message", "role": "assistant", "stop_reason": stop,
               "content": [{"type": "tool_use", "id": "toolu_1", "name": TOOL_NAME, "input": input}]})
    }

    #[test]
    fn reads_the_tool_input() {
        let reply = tool_reply(json!({"category": "food", "summary": "Ramen.", "tags": ["Noodles"]}), "tool_use");
        let a = AnthropicProvider::parse_reply(&reply).unwrap();
        assert_eq!((a.category.as_str(), a.tags), ("food", vec!["noodles".to_owned()]));
    }

    #[test]
    fn refusals_and_malformed_replies_are_errors() {
        let refusal =
            json!({"stop_reason": "refusal", "content": [{"type": "text", "text": "I can't help with that."}]});
        assert_eq!(
            AnthropicProvider::parse_reply(&refusal),
            Err(VisionError::Refused { provider: "anthropic", reason: "I can't help with that.".into() })
        );
        let no_tool = json!({"stop_reason": "end_turn", "content": []});
        assert!(matches!(AnthropicProvider::parse_reply(&no_tool), Err(VisionError::Api(ApiError::Malformed { .. }))));
        let wrong = tool_reply(json!({"summary": 3}), "tool_use");
        assert!(matches!(AnthropicProvider::parse_reply(&wrong), Err(VisionError::Invalid { .. })), "asked again");
        let empty = tool_reply(json!({"category": "food", "summary": ""}), "tool_use");
        assert!(matches!(AnthropicProvider::parse_reply(&empty), Err(VisionError::Invalid { .. })));
        let cut = tool_reply(json!({"category": "food", "summary": "x"}), "max_tokens");
        assert!(AnthropicProvider::parse_reply(&cut).is_err());
    }

    #[test]
    fn batch_results_of_every_kind() {
        let ok = json!({"custom_id": "a", "result": {"type": "succeeded",
            "message": tool_reply(json!({"category": "food", "summary": "Ramen."}), "tool_use")}});
        let read = AnthropicBatches::read_result(&ok).unwrap();
        assert_eq!(read.custom_id, "a");
        assert_eq!(read.result.unwrap().analysis.category, "food");
        let errored = |kind: &str| {
            json!({"custom_id": "b", "result": {"type": "errored",
            "error": {"type": "error", "error": {"type": kind, "message": "no"}}}})
        };
        let bad = AnthropicBatches::read_result(&errored("invalid_request_error")).unwrap().result.unwrap_err();
        assert!(matches!(&bad, BatchFailure::Request(r) if r.contains("invalid_request_error: no")), "{bad:?}");
        let busy = AnthropicBatches::read_result(&errored("overloaded_error")).unwrap().result.unwrap_err();
        assert!(matches!(busy, BatchFailure::Provider(_)));
        let expired = json!({"custom_id": "c", "result": {"type": "expired"}});
        assert!(matches!(AnthropicBatches::read_result(&expired).unwrap().result, Err(BatchFailure::NotRun(_))));
        let invalid = json!({"custom_id": "d", "result": {"type": "succeeded",
            "message": tool_reply(json!({"summary": 3}), "tool_use")}});
        assert!(matches!(AnthropicBatches::read_result(&invalid).unwrap().result, Err(BatchFailure::Provider(_))));
        assert!(AnthropicBatches::read_result(&json!({"result": {"type": "expired"}})).is_err());
        assert!(AnthropicBatches::read_result(&json!({"custom_id": "e", "result": {"type": "?"}})).is_err());
    }
}
