//! The `anthropic` provider: the Messages API, the image sent as base64, and
//! the analysis returned through a forced tool call.

use async_trait::async_trait;
use base64::Engine;
use serde_json::{Value, json};

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
}
