//! Where a client fetches a thumbnail: a short-lived presigned S3 URL on AWS,
//! a route of `collections serve` locally.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_s3::presigning::PresigningConfig;
use uuid::Uuid;

/// The thumbnail of an item, as stored on its row.
#[derive(Debug, Clone, Copy)]
pub struct Thumbnail<'a> {
    pub item_id: Uuid,
    /// The original's bucket (the thumbnail's, unless thumbnails go to a bucket of their own).
    pub bucket: &'a str,
    pub key: &'a str,
}

#[async_trait]
pub trait ThumbnailLinks: Send + Sync {
    /// A URL the caller can GET the thumbnail from, or `None` when none can be made.
    async fn url(&self, thumbnail: Thumbnail<'_>) -> Option<String>;
}

/// `collections serve`'s own thumbnail route (see [`crate::gallery`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct LocalLinks;

#[async_trait]
impl ThumbnailLinks for LocalLinks {
    async fn url(&self, thumbnail: Thumbnail<'_>) -> Option<String> {
        Some(format!("/v1/items/{}/thumbnail", thumbnail.item_id))
    }
}

/// Presigned S3 GET URLs, signed with the function's own credentials (which
/// may read thumbnails and nothing else).
#[derive(Debug, Clone)]
pub struct PresignedLinks {
    s3: aws_sdk_s3::Client,
    /// `BUCKET_NAME`: where thumbnails are written, when not in the original's bucket.
    bucket: Option<String>,
    ttl: Duration,
}

impl PresignedLinks {
    /// Links signed by `s3` (the client of [`aws::s3::S3Store`]), valid for `ttl`.
    pub fn new(s3: aws_sdk_s3::Client, bucket: Option<String>, ttl: Duration) -> Self {
        Self { s3, bucket, ttl }
    }
}

#[async_trait]
impl ThumbnailLinks for PresignedLinks {
    async fn url(&self, thumbnail: Thumbnail<'_>) -> Option<String> {
        let presigning = PresigningConfig::expires_in(self.ttl).ok()?;
        let bucket = self.bucket.as_deref().unwrap_or(thumbnail.bucket);
        match self.s3.get_object().bucket(bucket).key(thumbnail.key).presigned(presigning).await {
            Ok(request) => Some(request.uri().to_owned()),
            Err(e) => {
                tracing::warn!(error = %e, item_id = %thumbnail.item_id, "presigning a thumbnail URL failed");
                None
            }
        }
    }
}
