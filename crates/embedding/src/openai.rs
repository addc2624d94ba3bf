//! The `openai` provider: OpenAI-compatible embeddings (base URL
//! configurable), asked for the configured number of dimensions.

use async_trait::async_trait;
use serde_json::{Value, json};

use super::{
    BatchLimits, Embedded, EmbeddingError, EmbeddingProvider, Expected, InputType, parse_embedded, stored_model_name,
};
use remote::{ApiKey, JsonClient};

pub const DEFAULT_MODEL: &str = "text-embedding-3-small";

#[derive(Debug, Clone)]
pub struct OpenAiEmbeddings {
    client: JsonClient,
    url: String,
    key: Option<ApiKey>,
    /// The model as the server names it.
    api_model: String,
    /// As it is stored (see [`stored_model_name`]).
    model: String,
    dimensions: usize,
}

impl OpenAiEmbeddings {
    pub fn new(client: JsonClient, base_url: &str, key: Option<ApiKey>, model: String, dimensions: usize) -> Self {
        let url = format!("{}/embeddings", base_url.trim_end_matches('/'));
        let stored = stored_model_name(&model, dimensions);
        Self { client, url, key, api_model: model, model: stored, dimensions }
    }

    pub fn request_body(&self, texts: &[String]) -> Value {
        let mut body = json!({"input": texts, "model": self.api_model, "encoding_format": "float"});
        // text-embedding-3 models shorten to any size; others answer their own.
        if self.api_model.starts_with("text-embedding-3") {
            body["dimensions"] = json!(self.dimensions);
        }
        body
    }
}

#[async_trait]
impl EmbeddingProvider for OpenAiEmbeddings {
    fn provider(&self) -> &'static str {
        "openai"
    }

    fn model(&self) -> &str {
        &self.model
    }

    fn dimensions(&self) -> usize {
        self.dimensions
    }

    /// OpenAI's limits: 2048 inputs and 300 000 tokens a request.
    fn limits(&self) -> BatchLimits {
        BatchLimits { max_texts: 2048, max_tokens: 300_000 }
    }

    async fn embed(&self, texts: &[String], _input_type: InputType) -> Result<Embedded, EmbeddingError> {
        let bearer = self.key.as_ref().map(|k| format!("Bearer {}", k.expose()));
        let headers: Vec<(&str, &str)> = bearer.iter().map(|b| ("authorization", b.as_str())).collect();
        let reply = self.client.post(&self.url, &headers, &self.request_body(texts)).await?;
        let expected =
            Expected { provider: "openai", model: &self.model, sent: texts.len(), dimensions: self.dimensions };
        parse_embedded(expected, &reply.body)
    }
}
