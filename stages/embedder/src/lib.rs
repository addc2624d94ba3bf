//! The embedder stage: loads the batch's analyses in one query, embeds their
//! documents in as few provider requests as the provider's limits allow, and
//! stores the vectors in one statement.

pub mod config;
pub mod embed;

pub use config::EmbedderConfig;
pub use embed::Embedder;
