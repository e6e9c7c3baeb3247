//! One MP4 file of a time range, times starting at 0, assembled from the stored segments.

use super::{Playback, PlaybackError, Rendition, VisibleDevice};
use crate::media::mp4;

/// Longest range one export may cover.
pub const MAX_EXPORT_MS: i64 = 6 * 3_600_000;
/// Longest 4:2:0 export: its segments may need transcoding first, about 7 s of CPU per hour of
/// 1080p footage (docs/api.md), and the whole file is made inside one request's timeout.
pub const MAX_EXPORT_420_MS: i64 = 2 * 3_600_000;

/// A whole export file.
pub struct Export {
    pub bytes: Vec<u8>,
    /// Wall-clock time of the file's time 0.
    pub start_ms: i64,
}

impl Playback {
    /// Every segment overlapping `[from_ms, to_ms)` in one file, every capture at its time
    /// (docs/api.md, "The export"). Everything is read before the
    /// answer starts: retention running meanwhile can only make this a clean 404, never a
    /// truncated file. `Rendition::Chroma420` takes each segment's 4:2:0 transcode (from the
    /// variant cache, made where missing) instead of the stored bytes: H.264 High 4:2:0, which
    /// every player opens. Blocking.
    pub fn export(&self, device: &VisibleDevice, from_ms: i64, to_ms: i64, rendition: Rendition) -> Result<Export, PlaybackError> {
        if to_ms <= from_ms {
            return Err(PlaybackError::BadRequest("bad_range", "`to` must be after `from`".into()));
        }
        if to_ms - from_ms > MAX_EXPORT_MS {
            return Err(PlaybackError::Unprocessable("range_too_long", "an export covers at most 6 hours".into()));
        }
        if rendition == Rendition::Chroma420 && to_ms - from_ms > MAX_EXPORT_420_MS {
            return Err(PlaybackError::Unprocessable("range_too_long", "a 4:2:0 export covers at most 2 hours".into()));
        }
        let segments = self.index.segments_between(&device.id, from_ms, to_ms)?;
        let start_ms = segments.first().ok_or(PlaybackError::NotFound)?.start_ms;
        // Every segment, whatever its init (compacted blocks and resolution changes have their
        // own): mp4::Export joins them into one track, or refuses with a reason.
        let mut inits: Vec<(i64, Vec<u8>)> = Vec::new();
        for seg in &segments {
            if !inits.iter().any(|(id, _)| *id == seg.init_id) {
                inits.push((seg.init_id, self.init(device, seg.init_id, rendition)?));
            }
        }
        let init_bytes: Vec<&[u8]> = inits.iter().map(|(_, bytes)| bytes.as_slice()).collect();
        let mut export = mp4::Export::new(&init_bytes, start_ms)?;
        // One stored segment in memory at a time beside the output.
        for seg in &segments {
            let init_index = inits.iter().position(|(id, _)| *id == seg.init_id).ok_or(PlaybackError::NotFound)?;
            let media = match rendition {
                Rendition::Stored => self.store.get(&seg.file)?.ok_or(PlaybackError::NotFound)?,
                Rendition::Chroma420 => self.variants.segment(seg)?,
            };
            export.push(init_index, &media)?;
        }
        Ok(Export { bytes: export.finish()?, start_ms })
    }
}
