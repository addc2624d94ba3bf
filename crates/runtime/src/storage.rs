//! The object storage port (S3 on AWS) and its local adapter, a folder.

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use const_format::concatcp;
use domain::retry::Retriable;
use domain::settings::Setting;
use thiserror::Error;

/// The local bucket's name, unless [`BUCKET_NAME`] says otherwise.
pub const LOCAL_BUCKET: &str = "local";

pub const BUCKET_NAME: Setting = Setting::optional(
    "BUCKET_NAME",
    concatcp!("`", LOCAL_BUCKET, "` locally; on Lambda, the original's bucket"),
    "the bucket (the seed's name): locally, a folder under the data dir; on Lambda, where the thumbnailer \
     writes thumbnails and the search API presigns them",
);

#[derive(Debug, Error)]
pub enum StorageError {
    #[error("s3://{bucket}/{key} does not exist")]
    NotFound { bucket: String, key: String },
    #[error("s3://{bucket}/{key} is {size} bytes, over the limit of {limit} bytes")]
    TooLarge { bucket: String, key: String, size: u64, limit: u64 },
    #[error("s3://{bucket}/{key}: {message}")]
    Remote { bucket: String, key: String, message: String, retriable: bool },
    #[error("s3://{bucket}/{key}: the key would leave the bucket's folder")]
    OutsideBucket { bucket: String, key: String },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

impl Retriable for StorageError {
    /// Whether trying again later may succeed.
    fn is_retriable(&self) -> bool {
        match self {
            Self::NotFound { .. } | Self::TooLarge { .. } | Self::OutsideBucket { .. } => false,
            Self::Remote { retriable, .. } => *retriable,
            Self::Io { .. } => true,
        }
    }
}

/// Where originals are read and thumbnails written.
#[async_trait]
pub trait ObjectStore: Send + Sync {
    /// Reads a whole object, refusing it (before reading) when it is larger than `max_bytes`.
    async fn get(&self, bucket: &str, key: &str, max_bytes: u64) -> Result<Vec<u8>, StorageError>;

    /// Writes a whole object, with object tags (S3 lifecycle rules select by them).
    async fn put(
        &self,
        bucket: &str,
        key: &str,
        body: Vec<u8>,
        content_type: &str,
        tags: &[(&str, &str)],
    ) -> Result<(), StorageError>;

    /// Removes an object; one that is not there is no error.
    async fn delete(&self, bucket: &str, key: &str) -> Result<(), StorageError>;

    /// Whether the object is there now (S3's `HeadObject`).
    async fn exists(&self, bucket: &str, key: &str) -> Result<bool, StorageError>;
}

/// A folder standing in for S3: `{root}/{bucket}/{key}`.
///
/// It does not trust its callers to have parsed keys: every path it
/// touches is checked to stay inside the bucket's folder (see
/// [`FolderStore::path_of`]).
#[derive(Debug, Clone)]
pub struct FolderStore {
    root: PathBuf,
}

impl FolderStore {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The file of `key` in `bucket`, refused when it would leave the
    /// bucket's folder: the bucket must be one plain folder name and every
    /// segment of the key a plain name (no empty, `.` or `..` segment, no
    /// NUL), and the deepest folder of the path that exists must resolve,
    /// symbolic links followed, inside the bucket's folder as resolved (a
    /// link that leads nowhere does not resolve, so it is refused too: a
    /// write through it would create its target, wherever that is).
    pub fn path_of(&self, bucket: &str, key: &str) -> Result<PathBuf, StorageError> {
        let outside = || StorageError::OutsideBucket { bucket: bucket.to_owned(), key: key.to_owned() };
        let plain =
            |segment: &str| !(segment.is_empty() || segment == "." || segment == ".." || segment.contains('\0'));
        if !plain(bucket) || bucket.contains('/') || !key.split('/').all(plain) {
            return Err(outside());
        }
        let folder = self.root.join(bucket);
        let path = folder.join(key);
        let resolved = |p: &Path| deepest_existing(p).canonicalize();
        let folder = resolved(&folder).map_err(io_error(&folder))?;
        match resolved(&path) {
            Ok(inside) if inside.starts_with(&folder) => Ok(path),
            _ => Err(outside()),
        }
    }
}

/// `path` itself, or its nearest ancestor that exists (a symbolic link
/// exists, whether or not what it names does).
fn deepest_existing(path: &Path) -> &Path {
    path.ancestors().find(|p| p.symlink_metadata().is_ok()).unwrap_or(Path::new("/"))
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> StorageError + '_ {
    move |source| StorageError::Io { path: path.to_owned(), source }
}

#[async_trait]
impl ObjectStore for FolderStore {
    async fn get(&self, bucket: &str, key: &str, max_bytes: u64) -> Result<Vec<u8>, StorageError> {
        let path = self.path_of(bucket, key)?;
        let not_found = || StorageError::NotFound { bucket: bucket.to_owned(), key: key.to_owned() };
        let meta = match tokio::fs::metadata(&path).await {
            Ok(meta) if meta.is_file() => meta,
            Ok(_) => return Err(not_found()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(not_found()),
            Err(e) => return Err(io_error(&path)(e)),
        };
        if meta.len() > max_bytes {
            return Err(StorageError::TooLarge {
                bucket: bucket.to_owned(),
                key: key.to_owned(),
                size: meta.len(),
                limit: max_bytes,
            });
        }
        tokio::fs::read(&path).await.map_err(io_error(&path))
    }

    async fn put(
        &self,
        bucket: &str,
        key: &str,
        body: Vec<u8>,
        _content_type: &str,
        _tags: &[(&str, &str)],
    ) -> Result<(), StorageError> {
        let path = self.path_of(bucket, key)?;
        if let Some(parent) = path.parent() {
            tokio::fs::create_dir_all(parent).await.map_err(io_error(parent))?;
        }
        // Write beside, then rename: a reader never sees half a thumbnail.
        let partial = path.with_extension(format!("partial-{}", uuid::Uuid::new_v4().simple()));
        tokio::fs::write(&partial, body).await.map_err(io_error(&partial))?;
        tokio::fs::rename(&partial, &path).await.map_err(io_error(&path))
    }

    async fn delete(&self, bucket: &str, key: &str) -> Result<(), StorageError> {
        let path = self.path_of(bucket, key)?;
        match tokio::fs::remove_file(&path).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io_error(&path)(e)),
            _ => Ok(()),
        }
    }

    async fn exists(&self, bucket: &str, key: &str) -> Result<bool, StorageError> {
        let path = self.path_of(bucket, key)?;
        tokio::fs::metadata(&path).await.map(|m| m.is_file()).or_else(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Ok(false),
            _ => Err(io_error(&path)(e)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn folder_store_round_trips_and_enforces_the_size_limit() {
        let dir = tempfile::tempdir().unwrap();
        let store = FolderStore::new(dir.path());
        store.put("b", "u/thumbnails/a b.jpg", b"12345".to_vec(), "image/jpeg", &[]).await.unwrap();
        assert_eq!(store.get("b", "u/thumbnails/a b.jpg", 5).await.unwrap(), b"12345");
        let err = store.get("b", "u/thumbnails/a b.jpg", 4).await.unwrap_err();
        assert!(matches!(err, StorageError::TooLarge { size: 5, limit: 4, .. }) && !err.is_retriable());
        let missing = store.get("b", "u/none.jpg", 10).await.unwrap_err();
        assert_eq!(missing.to_string(), "s3://b/u/none.jpg does not exist");
        let folder = store.get("b", "u", 10).await.unwrap_err();
        assert!(matches!(folder, StorageError::NotFound { .. }));
    }

    #[tokio::test]
    async fn no_key_leaves_the_bucket_folder() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim.txt");
        std::fs::write(&victim, "keep me").unwrap();
        let store = FolderStore::new(dir.path().join("data"));
        for key in ["../victim.txt", "../../victim.txt", "u/../../victim.txt", "/victim.txt", "u//a.jpg", "u/./a.jpg"] {
            let err = store.delete("b", key).await.unwrap_err();
            assert!(matches!(err, StorageError::OutsideBucket { .. }), "{key}: {err}");
        }
        assert!(matches!(store.delete("..", "victim.txt").await, Err(StorageError::OutsideBucket { .. })));
        assert!(matches!(store.put("b/..", "x.jpg", vec![], "", &[]).await, Err(StorageError::OutsideBucket { .. })));
        // A symbolic link inside the bucket that points out of it is refused too.
        std::fs::create_dir_all(dir.path().join("data/b/u")).unwrap();
        std::os::unix::fs::symlink(dir.path(), dir.path().join("data/b/u/out")).unwrap();
        let err = store.delete("b", "u/out/victim.txt").await.unwrap_err();
        assert!(matches!(err, StorageError::OutsideBucket { .. }), "{err}");
        assert!(matches!(store.get("b", "u/out/victim.txt", 100).await, Err(StorageError::OutsideBucket { .. })));
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep me");
        // So is a link to a file that does not exist yet: writing through it would create it.
        std::os::unix::fs::symlink(dir.path().join("planted.jpg"), dir.path().join("data/b/u/dangling.jpg")).unwrap();
        let err = store.put("b", "u/dangling.jpg", b"x".to_vec(), "", &[]).await.unwrap_err();
        assert!(matches!(err, StorageError::OutsideBucket { .. }), "{err}");
        assert!(!dir.path().join("planted.jpg").exists());
        store.put("b", "u/a.jpg", b"x".to_vec(), "", &[]).await.unwrap();
        store.delete("b", "u/a.jpg").await.unwrap();
    }
}
