//! Deletes footage older than `retention` (rows first, then files), driven by the injected clock.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::clock::SharedClock;
use crate::fsutil;
use crate::index::Index;
use crate::layout::Layout;
use crate::metrics::Metrics;

/// Retention settings and the pieces it works on.
pub struct Retention {
    pub retention_ms: i64,
    /// Byte budget for stored footage (0 = none).
    pub max_bytes: u64,
    /// How long originals stay after their (compacted, one-minute) segment is written.
    pub keep_originals_ms: (i64, i64),
    pub variant_cache_bytes: u64,
    pub clock: SharedClock,
    pub layout: Layout,
    pub index: Index,
    pub metrics: Arc<Metrics>,
}

/// What one sweep removed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Sweep {
    pub files_removed: usize,
    pub spool_files_removed: usize,
}

impl Retention {
    /// Retention as `config` sets it, working on these parts.
    pub fn new(config: &crate::config::Config, clock: SharedClock, layout: Layout, index: Index, metrics: Arc<Metrics>) -> Self {
        Self {
            retention_ms: config.retention.as_millis() as i64,
            max_bytes: config.max_bytes,
            keep_originals_ms: crate::ingest::keep_windows(config),
            variant_cache_bytes: config.variant_cache_bytes,
            clock,
            layout,
            index,
            metrics,
        }
    }

    /// One sweep: expire index rows (by age, then by the byte budget), unlink their files, and
    /// remove spool files that are past the window or whose originals need no longer be kept.
    /// Blocking.
    pub fn sweep(&self) -> Result<Sweep, crate::index::IndexError> {
        let cutoff_ms = self.clock.now_ms() - self.retention_ms;
        let mut files = self.index.expire_before(cutoff_ms)?;
        if self.max_bytes > 0 {
            if let Some(budget_cutoff) = self.index.budget_cutoff(self.max_bytes)? {
                files = self.index.expire_before(budget_cutoff)?;
            }
        }
        let files_removed = crate::garbage::collect(&self.layout, &self.index, &files);
        // Transcodes of segments that are gone go too: no footage outlives the window in a cache.
        if let Err(e) = crate::variant::sweep_cache(&self.layout, &self.index, self.variant_cache_bytes) {
            tracing::warn!(error = %e, "cannot sweep the variant cache");
        }
        Metrics::add(&self.metrics.files_expired, files_removed as u64);
        self.index.delete_expired_sessions(self.clock.now_ms())?;
        // Spool files older than the window go too (kept originals, a device's carry picture, a frame
        // never encoded): left behind, a restart would take them for pending frames and bring
        // expired footage back. An encode reading one at this moment finds it gone and skips it.
        let mut spool_files_removed = remove_old_spool(&self.layout, cutoff_ms);
        // Originals of encoded frames past the keep window (devices that went quiet).
        let release = crate::ingest::Release::at(self.clock.now_ms(), self.keep_originals_ms);
        for device_id in self.index.device_ids()? {
            match crate::ingest::release_spool(&self.layout, &self.index, &device_id, release) {
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

fn remove_old_spool(layout: &Layout, before_ms: i64) -> usize {
    let mut removed = 0;
    let Ok(devices) = std::fs::read_dir(layout.spool_root()) else { return 0 };
    for dev in devices.flatten() {
        let Ok(files) = std::fs::read_dir(dev.path()) else { continue };
        for f in files.flatten() {
            let old = f.file_name().to_str().and_then(Layout::parse_spool_name).is_some_and(|ms| ms < before_ms);
            if old && fsutil::remove_if_exists(&f.path()).is_ok() {
                removed += 1;
            }
        }
    }
    removed
}
