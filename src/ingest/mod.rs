//! Upload acceptance: validation, dedupe and the durable spool (no HTTP types here).

mod pending;
mod spool;

pub use pending::Pending;
pub use spool::{keep_windows, recover, release_spool, remove_expired, spool_captures, Release};

use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::clock::SharedClock;
use crate::config::Config;
use crate::index::SharedIndex;
use crate::layout::spool_key;
use crate::media::png;
use crate::store::{Created, SharedStore, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error(transparent)]
    Png(#[from] png::PngError),
    #[error("a different image is already stored for this device at this capture time")]
    Conflict,
    #[error("the capture time is older than the retention window")]
    TooOld,
    #[error("the capture time is too far in the future")]
    TooFarInFuture,
    #[error("too many frames are waiting to be encoded; retry later")]
    Overloaded,
    #[error("the disk is full")]
    DiskFull,
    #[error("store error: {0}")]
    Store(StoreError),
    #[error("index error: {0}")]
    Index(#[from] crate::index::IndexError),
}

impl From<StoreError> for IngestError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Full => IngestError::DiskFull,
            other => IngestError::Store(other),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accepted {
    /// Newly stored and durable.
    Stored,
    /// The identical frame was already stored: a safe retry.
    Duplicate,
}

/// Accepts uploads into the spool. Cheap to clone; every method blocks (call from a blocking thread).
#[derive(Clone)]
pub struct Ingest {
    store: SharedStore,
    index: SharedIndex,
    clock: SharedClock,
    pending: Arc<Pending>,
    max_dimension: u32,
    retention_ms: i64,
    max_future_ms: i64,
    spool_max_frames: usize,
}

impl Ingest {
    pub fn new(config: &Config, store: SharedStore, index: SharedIndex, clock: SharedClock, pending: Arc<Pending>) -> Self {
        Self {
            store,
            index,
            clock,
            pending,
            max_dimension: config.max_dimension,
            retention_ms: config.retention.as_millis() as i64,
            max_future_ms: config.max_future.as_millis() as i64,
            spool_max_frames: config.spool_max_frames,
        }
    }

    /// Validates `bytes` and stores them durably as `device_id`'s capture at `capture_ms`.
    /// Returns only once the frame is durable (or known to be stored already).
    pub fn accept(&self, device_id: &str, capture_ms: i64, bytes: &[u8]) -> Result<Accepted, IngestError> {
        let now_ms = self.clock.now_ms();
        if capture_ms < now_ms - self.retention_ms {
            return Err(IngestError::TooOld);
        }
        if capture_ms > now_ms + self.max_future_ms {
            return Err(IngestError::TooFarInFuture);
        }
        png::probe(bytes, self.max_dimension)?;
        let sha256: [u8; 32] = Sha256::digest(bytes).into();

        // Already encoded? The index remembers the hash of every encoded frame.
        if let Some(stored) = self.index.frame_sha256(device_id, capture_ms)? {
            return if stored == sha256 { Ok(Accepted::Duplicate) } else { Err(IngestError::Conflict) };
        }
        let key = spool_key(device_id, capture_ms);
        // No look at the store first: `put_new` says whether the key was there (one request
        // per upload fewer on S3). A retry of a frame stored but not yet encoded is therefore
        // decoded again, and waits like any upload while the spool is full.
        if self.pending.frame_count() >= self.spool_max_frames {
            return Err(IngestError::Overloaded);
        }
        // Full decode only now, after the cheap checks: a frame we acknowledge must be encodable.
        png::validate(bytes, self.max_dimension)?;
        match self.store.put_new(&key, bytes)? {
            Created::New => {
                self.record_pending(device_id, capture_ms)?;
                self.pending.add(device_id, capture_ms);
                Ok(Accepted::Stored)
            }
            Created::AlreadyExists => {
                let accepted = self.compare_existing(&key, &sha256)?;
                // A retry after the index refused the first attempt: record it now.
                self.record_pending(device_id, capture_ms)?;
                Ok(accepted)
            }
        }
    }

    /// In a cluster, the capture's row in the index is what lets any node encode it: the upload
    /// is acknowledged only once it is committed (while the index is down: 503, and the client's
    /// retry records it). A single node keeps its pending set in memory (rebuilt from the spool).
    fn record_pending(&self, device_id: &str, capture_ms: i64) -> Result<(), IngestError> {
        if self.pending.is_cluster() {
            self.index.add_pending(device_id, capture_ms)?;
        }
        Ok(())
    }

    fn compare_existing(&self, key: &str, sha256: &[u8; 32]) -> Result<Accepted, IngestError> {
        match self.store.get(key)? {
            Some(existing) if Sha256::digest(&existing).as_slice() == sha256 => Ok(Accepted::Duplicate),
            Some(_) => Err(IngestError::Conflict),
            // Encoded and removed between our two looks: the index has it now.
            None => Err(IngestError::Conflict),
        }
    }
}
