//! The `voyage` provider: Voyage AI's embeddings API, as many texts a
//! request as its per-request text and token limits allow.

use async_trait::async_trait;
use serde_json::{Value, json};

use super::{
    BatchLimits, EMBEDDING_DIMENSIONS, Embedded, EmbeddingError, EmbeddingProvider, InputType, parse_embedded,
};
use crate::api::{ApiKey, JsonClient};

pub const DEFAULT_BASE_URL: &str = "https://api.voyageai.com/v1";
pub const DEFAULT_MODEL: &str = "voyage-3.5";

#[derive(Debug, Clone)]
pub struct VoyageProvider {
    client: JsonClient,
    url: String,
    key: ApiKey,
    model: String,
}

impl VoyageProvider {
    pub fn new(client: JsonClient, base_url: &str, key: ApiKey, model: String) -> Self {
        let url = format!("{}/embeddings", base_url.trim_end_matches('/'));
        Self { client, url, key, model }
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
            "model": self.model,
            "input_type": match input_type { InputType::Document => "document", InputType::Query => "query" },
        });
        // The voyage-3 generation and later can be asked for the stored size.
        if self.model.starts_with("voyage-3") || self.model.starts_with("voyage-4") {
            body["output_dimension"] = json!(EMBEDDING_DIMENSIONS);
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

    fn limits(&self) -> BatchLimits {
        Self::limits_for(&self.model)
    }

    async fn embed(&self, texts: &[String], input_type: InputType) -> Result<Embedded, EmbeddingError> {
        let bearer = format!("Bearer {}", self.key.expose());
        let reply =
            self.client.post(&self.url, &[("authorization", &bearer)], &self.request_body(texts, input_type)).await?;
        parse_embedded("voyage", &self.model, texts.len(), &reply.body)
    }
}
