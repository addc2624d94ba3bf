//! The `openai` provider: OpenAI-compatible chat completions (OpenAI, Ollama,
//! vLLM, … through the base URL), the image as a data URL, and the analysis
//! as a strict JSON-schema response.

use async_trait::async_trait;
use base64::Engine;
use serde_json::{Value, json};

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
}
