//! Upload acceptance: validation, dedupe and the durable spool (no HTTP types here).

pub mod png;
mod pending;

pub use pending::Pending;

use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::clock::SharedClock;
use crate::config::Config;
use crate::fsutil::{self, Created};
use crate::index::Index;
use crate::layout::Layout;

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
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    #[error("index error: {0}")]
    Index(#[from] crate::index::IndexError),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accepted {
    /// Newly stored and fsynced.
    Stored,
    /// The identical frame was already stored: a safe retry.
    Duplicate,
}

/// Accepts uploads into the spool. Cheap to clone; every method blocks (call from a blocking thread).
#[derive(Clone)]
pub struct Ingest {
    layout: Layout,
    index: Index,
    clock: SharedClock,
    pending: Arc<Pending>,
    max_dimension: u32,
    retention_ms: i64,
    max_future_ms: i64,
    spool_max_frames: usize,
}

impl Ingest {
    pub fn new(config: &Config, layout: Layout, index: Index, clock: SharedClock, pending: Arc<Pending>) -> Self {
        Self {
            layout,
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
    /// Returns only once the frame is fsynced (or known to be stored already).
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
        let path = self.layout.spool_file(device_id, capture_ms);
        if path.exists() {
            return self.compare_existing(&path, &sha256);
        }
        if self.pending.frame_count() >= self.spool_max_frames {
            return Err(IngestError::Overloaded);
        }
        // Full decode only now, after the cheap checks: a frame we acknowledge must be encodable.
        png::validate(bytes, self.max_dimension)?;
        match fsutil::write_new_durably(&self.layout.tmp_dir(), &path, bytes) {
            Ok(Created::New) => {
                self.pending.add(device_id, capture_ms);
                Ok(Accepted::Stored)
            }
            Ok(Created::AlreadyExists) => self.compare_existing(&path, &sha256),
            Err(e) if fsutil::is_disk_full(&e) => Err(IngestError::DiskFull),
            Err(e) => Err(e.into()),
        }
    }


    fn compare_existing(&self, path: &std::path::Path, sha256: &[u8; 32]) -> Result<Accepted, IngestError> {
        match std::fs::read(path) {
            Ok(existing) if Sha256::digest(&existing).as_slice() == sha256 => Ok(Accepted::Duplicate),
            Ok(_) => Err(IngestError::Conflict),
            // Encoded and removed between our two looks: the index has it now.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(IngestError::Conflict),
            Err(e) => Err(e.into()),
        }
    }
}

/// Capture times of a device's spool files, oldest first.
pub fn spool_captures(layout: &Layout, device_id: &str) -> std::io::Result<std::collections::BTreeSet<i64>> {
    let entries = match std::fs::read_dir(layout.spool_dir(device_id)) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Default::default()),
        Err(e) => return Err(e),
    };
    let mut out = std::collections::BTreeSet::new();
    for entry in entries {
        if let Some(ms) = entry?.file_name().to_str().and_then(Layout::parse_spool_name) {
            out.insert(ms);
        }
    }
    Ok(out)
}

/// When kept originals may go: frames in a compacted segment written before `compacted_before_ms`,
/// frames in a one-minute segment written before `minute_before_ms` (with compaction on, much
/// later: compaction re-encodes from the originals; a block compaction never reached still lets
/// its originals go eventually).
#[derive(Debug, Clone, Copy)]
pub struct Release {
    pub compacted_before_ms: i64,
    pub minute_before_ms: i64,
}

/// How long originals stay after their segment is written: (compacted, one-minute) in ms.
pub fn keep_windows(config: &Config) -> (i64, i64) {
    let keep = config.keep_originals.as_millis() as i64;
    let minute_keep = if config.compact.enabled() {
        keep + (config.compact.after + config.compact.span).as_millis() as i64 + 3_600_000
    } else {
        keep
    };
    (keep, minute_keep)
}

impl Release {
    pub fn at(now_ms: i64, (keep_compacted_ms, keep_minute_ms): (i64, i64)) -> Self {
        Self { compacted_before_ms: now_ms - keep_compacted_ms, minute_before_ms: now_ms - keep_minute_ms }
    }
}

/// Removes `device_id`'s spool files whose frames are durably in a segment old enough by
/// `release`, except the device's latest capture (the carry picture of its next minute).
/// Until then a late frame re-encodes its minute from these originals, without generation loss.
/// A file is only removed once the index holds its frame. Returns how many were removed.
pub fn release_spool(layout: &Layout, index: &Index, device_id: &str, release: Release) -> Result<usize, IngestError> {
    let latest = index.last_frame_before(device_id, i64::MAX)?.map(|f| f.capture_ms);
    let mut removed = 0;
    for capture_ms in spool_captures(layout, device_id)? {
        if Some(capture_ms) == latest {
            continue;
        }
        let release_it = match index.frame_encoded_at(device_id, capture_ms)? {
            Some((at, true)) => at < release.compacted_before_ms,
            Some((at, false)) => at < release.minute_before_ms,
            None => false,
        };
        if release_it {
            fsutil::remove_if_exists(&layout.spool_file(device_id, capture_ms))?;
            removed += 1;
        }
    }
    Ok(removed)
}
