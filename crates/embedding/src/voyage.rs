//! The `voyage` provider: Voyage AI's embeddings API, as many texts a
//! request as its per-request text and token limits allow.

use async_trait::async_trait;
use serde_json::{Value, json};

use super::{
    BatchLimits, Embedded, EmbeddingError, EmbeddingProvider, Expected, InputType, parse_embedded, stored_model_name,
};
use remote::{ApiKey, JsonClient};

pub const DEFAULT_BASE_URL: &str = "https://api.voyageai.com/v1";
pub const DEFAULT_MODEL: &str = "voyage-3.5";

#[derive(Debug, Clone)]
pub struct VoyageProvider {
    client: JsonClient,
    url: String,
    key: ApiKey,
    /// The model as Voyage names it.
    api_model: String,
    /// As it is stored (see [`stored_model_name`]).
    model: String,
    dimensions: usize,
}

impl VoyageProvider {
    pub fn new(client: JsonClient, base_url: &str, key: ApiKey, model: String, dimensions: usize) -> Self {
        let url = format!("{}/embeddings", base_url.trim_end_matches('/'));
        let stored = stored_model_name(&model, dimensions);
        Self { client, url, key, api_model: model, model: stored, dimensions }
    }

    /// Voyage's documented per-request limits: 1000 texts, and a total token
    /// count that depends on the model.
    pub fn limits_for(model: &str) -> BatchLimits {
        let max_tokens = match model {
            m if m.ends_with("-lite") => 1_000_000,
            "voyage-3.5" | "voyage-3" | "voyage-2" => 320_000,
            _ => 120_000,
        };
        BatchLimits { max_texts: 1000, max_tokens }
    }

    pub fn request_body(&self, texts: &[String], input_type: InputType) -> Value {
        let mut body = json!({
            "input": texts,
            "model": self.api_model,
            "input_type": match input_type { InputType::Document => "document", InputType::Query => "query" },
        });
        // The voyage-3 generation and later can be asked for a size
        // (256, 512, 1024 or 2048); older models answer their own.
        if self.api_model.starts_with("voyage-3") || self.api_model.starts_with("voyage-4") {
            body["output_dimension"] = json!(self.dimensions);
        }
        body
    }
}

#[async_trait]
impl EmbeddingProvider for VoyageProvider {
    fn provider(&self) -> &'static str {
        "voyage"
    }

    fn model(&self) -> &str {
        &self.model
    }

    fn dimensions(&self) -> usize {
        self.dimensions
    }

    fn limits(&self) -> BatchLimits {
        Self::limits_for(&self.api_model)
    }

    async fn embed(&self, texts: &[String], input_type: InputType) -> Result<Embedded, EmbeddingError> {
        let bearer = format!("Bearer {}", self.key.expose());
        let reply =
            self.client.post(&self.url, &[("authorization", &bearer)], &self.request_body(texts, input_type)).await?;
        let expected =
            Expected { provider: "voyage", model: &self.model, sent: texts.len(), dimensions: self.dimensions };
        parse_embedded(expected, &reply.body)
    }
}
