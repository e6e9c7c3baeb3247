//! Deletes footage older than `retention` (rows first, then blobs), driven by the injected clock.
//! In a cluster one node sweeps at a time (the `retention` lease); every step is idempotent, so
//! a sweep cut short by a crash, or overlapping one whose holder stalled, does no harm.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::clock::SharedClock;
use crate::index::SharedIndex;
use crate::ingest::{release_spool, remove_expired, Pending, Release};
use crate::metrics::Metrics;
use crate::store::SharedStore;

#[derive(Debug, thiserror::Error)]
pub enum RetentionError {
    #[error(transparent)]
    Index(#[from] crate::index::IndexError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// Retention settings and the pieces it works on.
pub struct Retention {
    pub retention_ms: i64,
    /// Byte budget for stored footage (0 = none).
    pub max_bytes: u64,
    /// How long originals stay after their (compacted, one-minute) segment is written.
    pub keep_originals_ms: (i64, i64),
    pub clock: SharedClock,
    pub store: SharedStore,
    pub index: SharedIndex,
    pub pending: Arc<Pending>,
    pub metrics: Arc<Metrics>,
    /// Also sweeps derived caches (the 4:2:0 variant) of anything whose segment is gone.
    pub sweep_caches: Box<dyn Fn() + Send + Sync>,
    /// In a cluster: this node's name in lease rows and the lease length (ms).
    pub lease: Option<(String, i64)>,
}

/// What one sweep removed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Sweep {
    pub files_removed: usize,
    pub spool_files_removed: usize,
}

impl Retention {
    /// One sweep: expire index rows (by age, then by the byte budget), delete their blobs, and
    /// remove spool files that are past the window or whose originals need no longer be kept.
    /// Blocking.
    pub fn sweep(&self) -> Result<Sweep, RetentionError> {
        let Some((holder, ttl_ms)) = &self.lease else { return self.sweep_now() };
        // Another node is sweeping: nothing to do here this time.
        let Some(lease) = self.index.try_lease(crate::index::lease::RETENTION_LEASE, holder, *ttl_ms)? else {
            return Ok(Sweep::default());
        };
        let out = self.sweep_now();
        if let Err(e) = self.index.release_lease(&lease) {
            tracing::warn!(error = %e, "cannot release the retention lease; it expires by itself");
        }
        out
    }

    fn sweep_now(&self) -> Result<Sweep, RetentionError> {
        let cutoff_ms = self.clock.now_ms() - self.retention_ms;
        let mut files = self.index.expire_before(cutoff_ms)?;
        if self.max_bytes > 0 {
            if let Some(budget_cutoff) = self.index.budget_cutoff(self.max_bytes)? {
                files = self.index.expire_before(budget_cutoff)?;
            }
        }
        let files_removed = crate::garbage::collect(self.store.as_ref(), self.index.as_ref(), &files);
        // Transcodes of segments that are gone go too: no footage outlives the window in a cache.
        (self.sweep_caches)();
        self.metrics.files_expired.inc_by(files_removed as u64);
        self.index.delete_expired_sessions(self.clock.now_ms())?;
        // Spool files older than the window go too, and leave the pending set. An encode reading
        // one at this moment finds it gone and skips it.
        let mut spool_files_removed = remove_expired(self.store.as_ref(), &self.pending, cutoff_ms)?;
        self.index.forget_pending_before(cutoff_ms)?;
        // Originals of encoded frames past the keep window (devices that went quiet).
        let release = Release::at(self.clock.now_ms(), self.keep_originals_ms);
        for device_id in self.index.device_ids()? {
            match release_spool(self.store.as_ref(), self.index.as_ref(), &device_id, release) {
                Ok(n) => spool_files_removed += n,
                Err(e) => tracing::warn!(device_id, error = %e, "cannot release spool files"),
            }
        }
        Ok(Sweep { files_removed, spool_files_removed })
    }

    /// Sweeps every `every` until `stop` is set. Runs on its own thread.
    pub fn run(self, every: Duration, stop: Arc<AtomicBool>) {
        while !stop.load(Ordering::SeqCst) {
            match self.sweep() {
                Ok(s) if s != Sweep::default() => tracing::info!(?s, "retention sweep"),
                Ok(_) => {}
                Err(e) => tracing::error!(error = %e, "retention sweep failed"),
            }
            // Check `stop` often so shutdown is quick; sweep every `every`.
            let mut waited = Duration::ZERO;
            while waited < every && !stop.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(200));
                waited += Duration::from_millis(200);
            }
        }
    }
}
