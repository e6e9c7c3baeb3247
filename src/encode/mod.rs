//! Turns spooled frames into segments. `block` encodes one block (a minute or a compaction
//! span) from its sources, `commit` makes it the served version, `scheduler` decides what runs
//! when on the worker threads; `plan` is the pure frame/segment plan.

mod block;
mod commit;
mod pictures;
pub mod plan;
mod scheduler;

pub use scheduler::{JobRunner, Scheduler};

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::clock::{SharedClock, MINUTE_MS};
use crate::config::Config;
use crate::index::SharedIndex;
use crate::ingest::Pending;
use crate::media::ffmpeg::{Codec, EncodeSettings};
use crate::media::MediaError;
use crate::metrics::Metrics;
use crate::store::SharedStore;

#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error(transparent)]
    Index(#[from] crate::index::IndexError),
    #[error(transparent)]
    Media(#[from] MediaError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Ingest(#[from] crate::ingest::IngestError),
    #[error("stored segment {0} does not match its index rows")]
    Inconsistent(i64),
}

/// What one block's encode produced.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    pub segments: usize,
    pub frames: usize,
    pub new_spool_frames: usize,
}

/// Everything a block's encode needs; shared by the workers.
pub struct Encoder {
    pub(crate) store: SharedStore,
    pub(crate) index: SharedIndex,
    pub(crate) clock: SharedClock,
    pub(crate) pending: Arc<Pending>,
    pub(crate) metrics: Arc<Metrics>,
    /// Settings of one-minute (hot) segments.
    pub(crate) settings: EncodeSettings,
    /// Settings of compacted (cold) segments.
    pub(crate) cold_settings: EncodeSettings,
    /// Compaction span in ms (0 = off) and the most frames in one compacted segment.
    pub(crate) compact_span_ms: i64,
    pub(crate) compact_max_frames: usize,
    pub(crate) carry_max_age_ms: i64,
    pub(crate) retention_ms: i64,
    /// How long originals stay after their (compacted, one-minute) segment is written.
    pub(crate) keep_originals_ms: (i64, i64),
    pub(crate) max_dimension: u32,
    /// Every frame of a segment at least this RGB PSNR (dB), checked in the encode loop; 0 = off.
    pub(crate) floor_db: f64,
    /// Per (device, compacted tier): the crf that last held the floor where the configured one
    /// did not, so the next segment of that device starts there instead of failing first
    /// (content that missed the floor usually stays hard). A hint in this node's memory.
    pub(crate) floor_crf: Mutex<HashMap<(String, bool), f32>>,
}

impl Encoder {
    pub fn new(config: &Config, store: SharedStore, index: SharedIndex, clock: SharedClock, pending: Arc<Pending>, metrics: Arc<Metrics>) -> Self {
        Self {
            store,
            index,
            clock,
            pending,
            metrics,
            settings: EncodeSettings {
                crf: config.encoder.crf,
                preset: config.encoder.preset.clone(),
                threads: config.encoder.x264_threads,
                params: config.encoder.x264_params.clone(),
                chroma420: false,
                codec: Codec::X264,
            },
            cold_settings: EncodeSettings {
                crf: config.compact.crf,
                preset: config.compact.preset.clone(),
                threads: config.encoder.x264_threads,
                params: config.compact.x264_params.clone(),
                chroma420: false,
                codec: config.compact.codec,
            },
            compact_span_ms: config.compact.span.as_millis() as i64,
            compact_max_frames: config.compact.max_frames,
            retention_ms: config.retention.as_millis() as i64,
            carry_max_age_ms: config.carry_max_age.as_millis() as i64,
            keep_originals_ms: crate::ingest::keep_windows(config),
            max_dimension: config.max_dimension,
            floor_db: f64::from(config.encoder.floor_db),
            floor_crf: Mutex::default(),
        }
    }

    /// Encodes (or re-encodes) everything known for `device_id`'s minute starting at `minute_ms`:
    /// the minute itself, or the whole compacted block that holds it (a late frame).
    pub fn encode_minute(&self, device_id: &str, minute_ms: i64) -> Result<Outcome, EncodeError> {
        let block = self.index.block_of(device_id, minute_ms)?;
        self.encode_block(device_id, block)
    }

    /// Re-encodes the compaction span starting at `block_ms` into long-GOP segments.
    pub fn compact(&self, device_id: &str, block_ms: i64) -> Result<Outcome, EncodeError> {
        if self.compact_span_ms <= MINUTE_MS {
            return Ok(Outcome::default());
        }
        self.encode_block(device_id, (block_ms, self.compact_span_ms))
    }

    /// Encodes everything known for the block `[start_ms, start_ms + span_ms)`, then commits it.
    fn encode_block(&self, device_id: &str, block: (i64, i64)) -> Result<Outcome, EncodeError> {
        match self.encode_sources(device_id, block)? {
            Some(encoded) => self.commit(device_id, block, encoded),
            None => Ok(Outcome::default()),
        }
    }
}
