//! One MP4 file of a time range, times starting at 0, assembled from the stored segments.

use super::{Playback, PlaybackError, VisibleDevice};
use crate::media::mp4;

/// Longest range one export may cover.
pub const MAX_EXPORT_MS: i64 = 6 * 3_600_000;

/// A whole export file.
pub struct Export {
    pub bytes: Vec<u8>,
    /// Wall-clock time of the file's time 0.
    pub start_ms: i64,
}

impl Playback {
    /// Every segment overlapping `[from_ms, to_ms)` in one file. Everything is read before the
    /// answer starts: retention running meanwhile can only make this a clean 404, never a
    /// truncated file. Blocking.
    pub fn export(&self, device: &VisibleDevice, from_ms: i64, to_ms: i64) -> Result<Export, PlaybackError> {
        if to_ms <= from_ms {
            return Err(PlaybackError::BadRequest("bad_range", "`to` must be after `from`".into()));
        }
        if to_ms - from_ms > MAX_EXPORT_MS {
            return Err(PlaybackError::Unprocessable("range_too_long", "an export covers at most 6 hours".into()));
        }
        let segments = self.index.segments_between(&device.id, from_ms, to_ms)?;
        let first = segments.first().ok_or(PlaybackError::NotFound)?.clone();
        let mut out = self.segment_blobs(&first)?.0;
        // One file holds one init: the export stops at a resolution change.
        for seg in segments.iter().take_while(|s| s.init_id == first.init_id) {
            let mut media = self.store.get(&seg.file)?.ok_or(PlaybackError::NotFound)?;
            mp4::shift_tfdt(&mut media, first.start_ms as u64)?;
            out.extend_from_slice(&media);
        }
        Ok(Export { bytes: out, start_ms: first.start_ms })
    }
}
