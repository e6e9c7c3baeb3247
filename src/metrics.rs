//! Process counters, rendered in the Prometheus text format at /metrics.

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct Metrics {
    pub uploads_stored: AtomicU64,
    pub uploads_duplicate: AtomicU64,
    pub uploads_rejected: AtomicU64,
    pub frames_encoded: AtomicU64,
    pub segments_written: AtomicU64,
    pub segment_bytes_written: AtomicU64,
    pub encode_errors: AtomicU64,
    pub encode_micros: AtomicU64,
    pub files_expired: AtomicU64,
    pub blocks_compacted: AtomicU64,
    pub compact_micros: AtomicU64,
}

impl Metrics {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn render(&self, pending_frames: usize) -> String {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut out = String::new();
        let mut counter = |name: &str, help: &str, labels: &str, v: u64| {
            out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} counter\n{name}{labels} {v}\n"));
        };
        counter("screentape_uploads_total", "Uploads by outcome.", "{outcome=\"stored\"}", get(&self.uploads_stored));
        counter("screentape_uploads_duplicate_total", "Uploads that repeated a stored frame.", "", get(&self.uploads_duplicate));
        counter("screentape_uploads_rejected_total", "Uploads answered with an error.", "", get(&self.uploads_rejected));
        counter("screentape_frames_encoded_total", "Frames written into segments (re-encodes included).", "", get(&self.frames_encoded));
        counter("screentape_segments_written_total", "Media segments written.", "", get(&self.segments_written));
        counter("screentape_segment_bytes_written_total", "Bytes of media segments written.", "", get(&self.segment_bytes_written));
        counter("screentape_encode_errors_total", "Minutes whose encode failed and will be retried.", "", get(&self.encode_errors));
        counter("screentape_blocks_compacted_total", "Blocks re-encoded into long-GOP segments.", "", get(&self.blocks_compacted));
        counter("screentape_files_expired_total", "Files deleted by retention or replacement.", "", get(&self.files_expired));
        out.push_str(&format!(
            "# HELP screentape_encode_seconds_total Wall time spent encoding minutes.\n# TYPE screentape_encode_seconds_total counter\nscreentape_encode_seconds_total {:.3}\n",
            get(&self.encode_micros) as f64 / 1e6
        ));
        out.push_str(&format!(
            "# HELP screentape_compact_seconds_total Wall time spent compacting blocks.\n# TYPE screentape_compact_seconds_total counter\nscreentape_compact_seconds_total {:.3}\n",
            get(&self.compact_micros) as f64 / 1e6
        ));
        out.push_str(&format!(
            "# HELP screentape_pending_frames Acknowledged frames not yet in a segment.\n# TYPE screentape_pending_frames gauge\nscreentape_pending_frames {pending_frames}\n"
        ));
        out
    }
}
