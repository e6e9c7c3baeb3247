//! Where a block's pictures come from: an original PNG in the spool, or a frame of a segment we
//! stored earlier (decoded once per segment, only when the original is gone).

use std::collections::{BTreeSet, HashMap};

use sha2::{Digest, Sha256};

use super::{EncodeError, Encoder};
use crate::layout::spool_key;
use crate::media::png::{decode_rgb, probe, PngError};
use crate::media::{MediaError, Picture};

/// A frame's pixels: the original PNG in the spool, or a frame of a segment we wrote before.
#[derive(Debug, Clone)]
pub(super) enum FrameSource {
    Spool { sha256: [u8; 32], bytes: Vec<u8>, was_encoded: bool },
    Segment { sha256: [u8; 32], segment_id: i64 },
}

impl FrameSource {
    pub(super) fn sha256(&self) -> [u8; 32] {
        match self {
            FrameSource::Spool { sha256, .. } | FrameSource::Segment { sha256, .. } => *sha256,
        }
    }

    /// An upload that no segment holds yet.
    pub(super) fn is_new(&self) -> bool {
        matches!(self, FrameSource::Spool { was_encoded: false, .. })
    }
}

impl Encoder {
    /// The spool original of a capture, if it is still there.
    pub(super) fn read_spool(&self, device_id: &str, capture_ms: i64, was_encoded: bool) -> Result<Option<FrameSource>, EncodeError> {
        Ok(self
            .store
            .get(&spool_key(device_id, capture_ms))?
            .map(|bytes| FrameSource::Spool { sha256: Sha256::digest(&bytes).into(), bytes, was_encoded }))
    }
}

/// Hands out the pictures one block needs, one at a time: spool PNGs are decoded when the
/// encoder asks for them; a stored segment is decoded at most once, only for the frames it must give.
pub(super) struct PictureLoader<'a> {
    enc: &'a Encoder,
    png: HashMap<i64, Vec<u8>>,
    decoded: HashMap<i64, Picture>,
    segments_done: BTreeSet<i64>,
    /// The spool capture whose PNG failed to decode, if any.
    pub(super) failed: Option<i64>,
}

impl<'a> PictureLoader<'a> {
    pub(super) fn new(enc: &'a Encoder) -> Self {
        Self { enc, png: HashMap::new(), decoded: HashMap::new(), segments_done: BTreeSet::new(), failed: None }
    }

    /// Takes a frame's source and returns its size, without decoding a spool PNG.
    pub(super) fn load(&mut self, capture_ms: i64, src: FrameSource) -> Result<(u32, u32), EncodeError> {
        match src {
            FrameSource::Spool { bytes, .. } => {
                let dims = probe(&bytes, self.enc.max_dimension).map_err(|e: PngError| MediaError::Source(e.to_string()))?;
                self.png.insert(capture_ms, bytes);
                Ok(dims)
            }
            FrameSource::Segment { segment_id, .. } => {
                self.decode_into_cache(segment_id)?;
                self.decoded.get(&capture_ms).map(|p| p.dimensions()).ok_or(EncodeError::Inconsistent(segment_id))
            }
        }
    }

    /// Decodes a stored segment and files its frames under their capture times.
    fn decode_into_cache(&mut self, segment_id: i64) -> Result<(), EncodeError> {
        if !self.segments_done.insert(segment_id) {
            return Ok(());
        }
        let (index, store) = (&self.enc.index, &self.enc.store);
        let seg = index.segment(segment_id)?.ok_or(EncodeError::Inconsistent(segment_id))?;
        let init = index.init(seg.init_id)?.ok_or(EncodeError::Inconsistent(segment_id))?;
        let init_bytes = store.get(&init.file)?.ok_or(EncodeError::Inconsistent(segment_id))?;
        let media_bytes = store.get(&seg.file)?.ok_or(EncodeError::Inconsistent(segment_id))?;
        let frames = crate::media::ffmpeg::decode_segment(&init_bytes, &media_bytes)?;
        let captures = index.captures_of_segment(segment_id)?;
        let times = seg.frame_times(captures.iter().map(|f| f.capture_ms));
        if frames.len() != times.len() {
            return Err(EncodeError::Inconsistent(segment_id));
        }
        for (time, (_, yuv)) in times.iter().zip(frames) {
            if let Some(capture_ms) = time.capture_ms {
                self.decoded.entry(capture_ms).or_insert(Picture::Yuv(yuv));
            }
        }
        Ok(())
    }

    /// Drops the picture of `capture_ms` unused (the encoder repeats the frame before it).
    pub(super) fn skip(&mut self, capture_ms: i64) {
        self.png.remove(&capture_ms);
        self.decoded.remove(&capture_ms);
    }

    /// The picture of `capture_ms`, decoded now. It stays available (a segment under the quality
    /// floor is encoded again: its PNG is decoded again then) until `release`.
    pub(super) fn picture(&mut self, capture_ms: i64) -> Result<Picture, MediaError> {
        if let Some(png) = self.png.get(&capture_ms) {
            return decode_rgb(png, self.enc.max_dimension).map(Picture::Rgb).map_err(|e| {
                self.failed = Some(capture_ms);
                MediaError::Source(e.to_string())
            });
        }
        self.decoded.get(&capture_ms).cloned().ok_or_else(|| MediaError::Source(format!("no picture for capture {capture_ms}")))
    }

    /// Drops the pictures of captures whose segment is final.
    pub(super) fn release(&mut self, captures: impl IntoIterator<Item = i64>) {
        for c in captures {
            self.skip(c);
        }
    }
}
