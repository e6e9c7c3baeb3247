//! Process metrics through `prometheus-client`, rendered in the OpenMetrics text format at /metrics.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum UploadOutcome {
    Stored,
    Duplicate,
    Rejected,
}

// Label values are lower-case words; the derive would spell the variant names as written.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum JobKind {
    Minute,
    Compaction,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailureLabels {
    job: &'static str,
    cause: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// Latency buckets from 1 ms to ~33 s.
fn request_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

/// Every metric of the process; cheap to share (`Arc<Metrics>`), every update lock-free.
pub struct Metrics {
    uploads: Family<OutcomeLabels, Counter>,
    pub frames_encoded: Counter,
    pub segments_written: Counter,
    /// Segments encoded again because a frame was under the quality floor.
    pub segments_below_floor: Counter,
    pub segment_bytes_written: Counter,
    encode_failures: Family<FailureLabels, Counter>,
    pub blocks_compacted: Counter,
    pub files_expired: Counter,
    pub upload_seconds: Histogram,
    pub encode_seconds: Histogram,
    pub compact_seconds: Histogram,
    requests: Histograms<RouteLabels>,
    pending_frames: Gauge,
    failing_compactions: Gauge,
    registry: Registry,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut m = Self {
            uploads: Family::default(),
            frames_encoded: Counter::default(),
            segments_written: Counter::default(),
            segments_below_floor: Counter::default(),
            segment_bytes_written: Counter::default(),
            encode_failures: Family::default(),
            blocks_compacted: Counter::default(),
            files_expired: Counter::default(),
            upload_seconds: request_histogram(),
            encode_seconds: request_histogram(),
            compact_seconds: Histogram::new(exponential_buckets(0.1, 2.0, 14)),
            requests: Family::new_with_constructor(request_histogram),
            pending_frames: Gauge::default(),
            failing_compactions: Gauge::default(),
            registry: Registry::with_prefix("screentape"),
        };
        let r = &mut m.registry;
        r.register("uploads", "Uploads by outcome", m.uploads.clone());
        r.register("frames_encoded", "Frames written into segments (re-encodes included)", m.frames_encoded.clone());
        r.register("segments_written", "Media segments written", m.segments_written.clone());
        r.register("segments_below_floor", "Segments encoded again because a frame was under the quality floor (floor_db)", m.segments_below_floor.clone());
        r.register("segment_bytes_written", "Bytes of media segments written", m.segment_bytes_written.clone());
        r.register("encode_failures", "Encode jobs that failed (and will be retried), by job and cause", m.encode_failures.clone());
        r.register("blocks_compacted", "Blocks re-encoded into long-GOP segments", m.blocks_compacted.clone());
        r.register("files_expired", "Files deleted by retention or replacement", m.files_expired.clone());
        r.register("upload_seconds", "Time to accept one upload, body read to answer", m.upload_seconds.clone());
        r.register("encode_seconds", "Time to encode one device-minute", m.encode_seconds.clone());
        r.register("compact_seconds", "Time to compact one block", m.compact_seconds.clone());
        r.register("http_request_seconds", "HTTP request latency by route template", m.requests.clone());
        r.register("pending_frames", "Acknowledged frames not yet in a segment", m.pending_frames.clone());
        r.register("failing_compactions", "Compaction blocks whose last attempt failed", m.failing_compactions.clone());
        m
    }

    pub fn upload(&self, outcome: UploadOutcome) {
        let outcome = match outcome {
            UploadOutcome::Stored => "stored",
            UploadOutcome::Duplicate => "duplicate",
            UploadOutcome::Rejected => "rejected",
        };
        self.uploads.get_or_create(&OutcomeLabels { outcome }).inc();
    }

    pub fn encode_failed(&self, job: JobKind, panicked: bool) {
        let job = match job {
            JobKind::Minute => "minute",
            JobKind::Compaction => "compaction",
        };
        let cause = if panicked { "panic" } else { "error" };
        self.encode_failures.get_or_create(&FailureLabels { job, cause }).inc();
    }

    /// One request of `route` (a route template, never a raw path) took `seconds`.
    pub fn request(&self, route: &str, seconds: f64) {
        self.requests.get_or_create(&RouteLabels { route: route.to_string() }).observe(seconds);
    }

    pub fn set_failing_compactions(&self, n: usize) {
        self.failing_compactions.set(n as i64);
    }

    /// The OpenMetrics text of every metric, with the gauges read now.
    pub fn render(&self, pending_frames: usize) -> String {
        self.pending_frames.set(pending_frames as i64);
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// What the encoder reports for health checks (filled by the scheduler, shown at /healthz).
#[derive(Debug, Clone, Default, serde::Serialize, PartialEq, Eq)]
pub struct EncoderHealth {
    /// Compaction blocks whose last attempt failed (each is retried a minute later).
    pub failing_compactions: usize,
    /// The most consecutive failures of one block.
    pub worst_compaction_streak: u32,
    /// Devices held back for a minute after a panicking job.
    pub devices_in_backoff: usize,
}

impl EncoderHealth {
    /// Serving, but something keeps failing in the background.
    pub fn is_degraded(&self) -> bool {
        self.failing_compactions > 0 || self.devices_in_backoff > 0
    }
}

/// The content type of `render`'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_family_per_meaning_and_histograms_for_latency() {
        let m = Metrics::new();
        m.upload(UploadOutcome::Stored);
        m.upload(UploadOutcome::Stored);
        m.upload(UploadOutcome::Rejected);
        m.request("/api/v1/devices/{id}/playlist.m3u8", 0.004);
        m.encode_failed(JobKind::Compaction, false);
        let text = m.render(7);
        for line in [
            "screentape_uploads_total{outcome=\"stored\"} 2",
            "screentape_uploads_total{outcome=\"rejected\"} 1",
            "screentape_pending_frames 7",
            "screentape_encode_failures_total{job=\"compaction\",cause=\"error\"} 1",
            "screentape_http_request_seconds_count{route=\"/api/v1/devices/{id}/playlist.m3u8\"} 1",
            "# TYPE screentape_encode_seconds histogram",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
    }
}
