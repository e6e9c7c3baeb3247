//! The blob seam: every uploaded PNG, segment, init and cached variant lives under a key here.
//!
//! Designed for an object store as much as for a directory: keys are immutable once written
//! (`put_new` never overwrites), there is no rename and no directory to fsync, and a listing is
//! by key prefix. The rest of the code knows key names (`crate::layout`), never paths.
//! Every method blocks: call from a blocking thread, never from a tokio worker.

mod fsutil;
mod local;
mod s3;

use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

pub use local::{LocalStore, TMP_PREFIX};
pub use s3::S3Store;

use crate::config::{S3Config, StoreLocation};

/// Whether `put_new` created the key or found it already there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Created {
    New,
    AlreadyExists,
}

/// One listed blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    pub key: String,
    pub bytes: u64,
    /// When it was written (caches are trimmed oldest first).
    pub modified: SystemTime,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No space left: uploads answer 507.
    #[error("the store is full")]
    Full,
    #[error("store i/o on {key}: {source}")]
    Io { key: String, source: std::io::Error },
    /// The store cannot be reached or answers with a server error, after bounded retries:
    /// transient, so uploads answer 503 with Retry-After and viewers 503.
    #[error("the store is unavailable ({key}): {message}")]
    Unavailable { key: String, message: String },
    /// The object store refused the request for good (credentials, permissions, a missing
    /// bucket): a configuration error, answered 500 and logged.
    #[error("the object store refused {key}: {message}")]
    Refused { key: String, message: String },
}

impl StoreError {
    /// True when retrying later may succeed (the store was unreachable or overloaded).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable { .. })
    }

    fn io(key: &str, source: std::io::Error) -> Self {
        if fsutil::is_disk_full(&source) {
            StoreError::Full
        } else {
            StoreError::Io { key: key.to_string(), source }
        }
    }
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// Blob storage. Implementations: [`LocalStore`] (a directory; the default) and [`S3Store`]
/// (an S3-compatible bucket, `store = s3://…`).
pub trait Store: Send + Sync {
    /// Stores `bytes` under `key` unless the key exists; when this returns `Created::New` the
    /// bytes are durable (fsynced, or acknowledged by the object store).
    fn put_new(&self, key: &str, bytes: &[u8]) -> Result<Created>;
    /// Stores derived bytes that can be made again (caches): whole or not at all, overwriting,
    /// not necessarily durable.
    fn put_cache(&self, key: &str, bytes: &[u8]) -> Result<()>;
    /// The blob, or `None` when the key does not exist (e.g. removed by retention meanwhile).
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>>;
    fn exists(&self, key: &str) -> Result<bool>;
    /// Removes the key; a key that is already gone counts as removed.
    fn delete(&self, key: &str) -> Result<()>;
    /// Every key under `prefix` (a `/`-terminated folder-like prefix), in no particular order.
    fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>>;
}

pub type SharedStore = Arc<dyn Store>;

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cannot prepare the store directory {path}: {source}")]
    Dir { path: std::path::PathBuf, source: std::io::Error },
    #[error("cannot open the S3 store s3://{bucket}/{prefix}: {message}")]
    S3 { bucket: String, prefix: String, message: String },
}

/// Opens the store `location` names; `data_dir` is the node's own directory (the default store),
/// `s3` the endpoint and credentials set in the config (the rest from `AWS_*`). Blocking.
pub fn open(location: &StoreLocation, data_dir: &Path, s3: &S3Config) -> std::result::Result<SharedStore, OpenError> {
    Ok(match location {
        StoreLocation::DataDir => {
            Arc::new(LocalStore::open(data_dir).map_err(|source| OpenError::Dir { path: data_dir.to_path_buf(), source })?)
        }
        StoreLocation::Dir(path) => {
            Arc::new(LocalStore::open(path).map_err(|source| OpenError::Dir { path: path.clone(), source })?)
        }
        StoreLocation::S3 { bucket, prefix } => Arc::new(S3Store::open(bucket, prefix, s3).map_err(|message| OpenError::S3 {
            bucket: bucket.clone(),
            prefix: prefix.clone(),
            message,
        })?),
    })
}
