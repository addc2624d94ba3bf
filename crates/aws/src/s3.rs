//! S3 as the object store: originals read, thumbnails written (tagged).

use async_trait::async_trait;
use aws_config::SdkConfig;
use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;

use domain::text::percent_encode;
use runtime::storage::{ObjectStore, StorageError};

use crate::{custom_endpoint, describe, is_retriable};

#[derive(Debug, Clone)]
pub struct S3Store {
    client: Client,
}

/// One object as a listing shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub key: String,
    pub etag: Option<String>,
    pub size: u64,
}

/// One page of a listing.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ListPage {
    pub objects: Vec<Listed>,
    /// More keys follow the last one.
    pub truncated: bool,
}

/// An S3 ETag without its quotes.
pub fn bare_etag(etag: &str) -> String {
    etag.trim_matches('"').to_owned()
}

impl S3Store {
    pub fn new(config: &SdkConfig) -> Self {
        let conf = aws_sdk_s3::config::Builder::from(config).force_path_style(custom_endpoint(config)).build();
        Self { client: Client::from_conf(conf) }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// One page (up to `max_keys`, at most 1000) of `bucket` under
    /// `prefix`, in key order after `start_after`.
    pub async fn list_page(
        &self,
        bucket: &str,
        prefix: Option<&str>,
        start_after: Option<&str>,
        max_keys: i32,
    ) -> Result<ListPage, StorageError> {
        let out = self
            .client
            .list_objects_v2()
            .bucket(bucket)
            .set_prefix(prefix.map(str::to_owned))
            .set_start_after(start_after.map(str::to_owned))
            .max_keys(max_keys)
            .send()
            .await
            .map_err(|e| StorageError::Remote {
                bucket: bucket.to_owned(),
                key: prefix.unwrap_or_default().to_owned(),
                message: format!("listing failed: {}", describe(&e)),
                retriable: is_retriable(&e),
            })?;
        let objects = out
            .contents()
            .iter()
            .filter_map(|o| {
                Some(Listed {
                    key: o.key()?.to_owned(),
                    etag: o.e_tag().map(bare_etag),
                    size: o.size().and_then(|s| u64::try_from(s).ok()).unwrap_or(0),
                })
            })
            .collect();
        Ok(ListPage { objects, truncated: out.is_truncated() == Some(true) })
    }
}

#[async_trait]
impl ObjectStore for S3Store {
    async fn get(&self, bucket: &str, key: &str, max_bytes: u64) -> Result<Vec<u8>, StorageError> {
        let remote = |message: String, retriable: bool| StorageError::Remote {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            message,
            retriable,
        };
        let out = match self.client.get_object().bucket(bucket).key(key).send().await {
            Ok(out) => out,
            Err(e) => {
                let status = e.raw_response().map(|r| r.status().as_u16());
                return Err(match (e.as_service_error(), status) {
                    (Some(s), _) if s.is_no_such_key() => {
                        StorageError::NotFound { bucket: bucket.to_owned(), key: key.to_owned() }
                    }
                    (_, Some(404)) => StorageError::NotFound { bucket: bucket.to_owned(), key: key.to_owned() },
                    // Without s3:ListBucket, S3 answers 403 for a missing key too.
                    (_, Some(403)) => remote("access denied (or the object does not exist)".to_owned(), false),
                    _ => remote(describe(&e), is_retriable(&e)),
                });
            }
        };
        let size = out.content_length().and_then(|s| u64::try_from(s).ok()).unwrap_or(0);
        if size > max_bytes {
            return Err(StorageError::TooLarge {
                bucket: bucket.to_owned(),
                key: key.to_owned(),
                size,
                limit: max_bytes,
            });
        }
        let body = out.body.collect().await.map_err(|e| remote(format!("reading the body failed: {e}"), true))?;
        Ok(body.into_bytes().to_vec())
    }

    async fn put(
        &self,
        bucket: &str,
        key: &str,
        body: Vec<u8>,
        content_type: &str,
        tags: &[(&str, &str)],
    ) -> Result<(), StorageError> {
        let tagging = tags
            .iter()
            .map(|(k, v)| format!("{}={}", percent_encode(k), percent_encode(v)))
            .collect::<Vec<_>>()
            .join("&");
        self.client
            .put_object()
            .bucket(bucket)
            .key(key)
            .content_type(content_type)
            .set_tagging((!tagging.is_empty()).then_some(tagging))
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| remote_error(bucket, key, &e))?;
        Ok(())
    }

    async fn delete(&self, bucket: &str, key: &str) -> Result<(), StorageError> {
        // S3 answers a delete of a missing key with success.
        self.client.delete_object().bucket(bucket).key(key).send().await.map_err(|e| remote_error(bucket, key, &e))?;
        Ok(())
    }

    async fn exists(&self, bucket: &str, key: &str) -> Result<bool, StorageError> {
        match self.client.head_object().bucket(bucket).key(key).send().await {
            Ok(_) => Ok(true),
            Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 404) => Ok(false),
            // Without s3:ListBucket a missing key is a 403 too: the
            // thumbnailer, which asks, is granted it on its bucket.
            Err(e) => Err(remote_error(bucket, key, &e)),
        }
    }
}

/// A failed S3 call on an object, retriable when the SDK error is.
fn remote_error<E, R>(bucket: &str, key: &str, e: &aws_sdk_s3::error::SdkError<E, R>) -> StorageError
where
    E: aws_sdk_s3::error::ProvideErrorMetadata + std::error::Error,
    R: std::fmt::Debug,
{
    StorageError::Remote {
        bucket: bucket.to_owned(),
        key: key.to_owned(),
        message: describe(e),
        retriable: is_retriable(e),
    }
}
