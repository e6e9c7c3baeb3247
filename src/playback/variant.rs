//! The H.264 High 4:2:0 variant, for browsers that cannot decode 4:4:4 (Firefox on most systems,
//! Safari): each segment is transcoded from the stored 4:4:4 one when first asked for, and kept
//! in a bounded cache that retention empties of anything whose segment is gone. Storage stays
//! one copy of the footage (docs/storage.md).

use std::time::Duration;

use super::work::{KeyedLocks, Slots};
use super::PlaybackError;
use crate::clock::MINUTE_MS;
use crate::index::{Segment, SharedIndex};
use crate::layout::{parse_variant_key, variant_init_key, variant_segment_key, VARIANT_PREFIX};
use crate::media::ffmpeg::{transcode_segment, Codec, EncodeSettings};
use crate::store::SharedStore;

/// Transcodes and caches 4:2:0 segments and inits. A transcode is CPU-bound: at most `slots`
/// run at once (a request that waits too long for one gets 503), and one per segment at a time,
/// so a second viewer of the same segment waits for the first and then finds it cached.
pub struct Variants {
    store: SharedStore,
    index: SharedIndex,
    settings: EncodeSettings,
    max_bytes: u64,
    slots: Slots,
    per_segment: KeyedLocks<String>,
}

/// The 4:2:0 codec string matching a 4:4:4 one (same level): `avc1.F40028` → `avc1.640028`.
pub fn codec_420(codec_444: &str) -> String {
    let level = codec_444.get(codec_444.len().saturating_sub(2)..).unwrap_or("28");
    format!("avc1.6400{level}")
}

impl Variants {
    pub fn new(store: SharedStore, index: SharedIndex, crf: f32, max_bytes: u64, slots: usize) -> Self {
        let settings = EncodeSettings {
            crf,
            preset: "veryfast".into(),
            threads: 1,
            params: "aq-mode=0:psy=0:force-cfr=1".into(),
            chroma420: true,
            codec: Codec::X264,
        };
        // A 10-minute block takes seconds to transcode: wait up to 20 s for a slot, well inside
        // the request timeout, then answer 503 so the player retries.
        Self { store, index, settings, max_bytes, slots: Slots::new(slots, Duration::from_secs(20)), per_segment: KeyedLocks::default() }
    }

    /// The 4:2:0 media segment of a stored segment. Blocking.
    pub fn segment(&self, seg: &Segment) -> Result<Vec<u8>, PlaybackError> {
        self.cached_or(&variant_segment_key(seg.id), || Ok(self.transcode(seg)?.1))
    }

    /// The 4:2:0 init segment that goes with the device's segments using `init_id`. Blocking.
    pub fn init(&self, device_id: &str, init_id: i64) -> Result<Vec<u8>, PlaybackError> {
        self.cached_or(&variant_init_key(init_id), || {
            // Every segment with this init has the same size and settings, so any one gives it.
            let seg = self.index.first_segment_with_init(device_id, init_id)?.ok_or(PlaybackError::NotFound)?;
            Ok(self.transcode(&seg)?.0)
        })
    }

    /// The cached blob at `key`, or what `make` transcodes (once per key at a time, within the
    /// slot bound; a request that waited finds the blob its predecessor made).
    fn cached_or(&self, key: &str, make: impl FnOnce() -> Result<Vec<u8>, PlaybackError>) -> Result<Vec<u8>, PlaybackError> {
        if let Some(bytes) = self.store.get(key)? {
            return Ok(bytes);
        }
        self.per_segment.with(&key.to_string(), || {
            if let Some(bytes) = self.store.get(key)? {
                return Ok(bytes);
            }
            let _slot = self.slots.acquire().ok_or(PlaybackError::Busy)?;
            make()
        })
    }

    /// Transcodes `seg`, caches its media and (if new) its init; returns both.
    fn transcode(&self, seg: &Segment) -> Result<(Vec<u8>, Vec<u8>), PlaybackError> {
        let init = self.index.init(seg.init_id)?.ok_or(PlaybackError::NotFound)?;
        let init_bytes = self.store.get(&init.file)?.ok_or(PlaybackError::NotFound)?;
        let media = self.store.get(&seg.file)?.ok_or(PlaybackError::NotFound)?;
        let captures = self.index.captures_of_segment(seg.id)?;
        let pts: Vec<i64> = seg.frame_times(captures.iter().map(|f| f.capture_ms)).iter().map(|t| t.pts_ms).collect();
        let out = transcode_segment(&self.settings, init_bytes, media, (seg.width, seg.height), &pts, seg.end_ms, (seg.start_ms / MINUTE_MS) as u32)?;
        self.store.put_cache(&variant_segment_key(seg.id), &out.media)?;
        let init_key = variant_init_key(seg.init_id);
        if !self.store.exists(&init_key)? {
            self.store.put_cache(&init_key, &out.init)?;
        }
        // Only the size here (a listing); retention checks each blob against the index.
        if let Err(e) = self.trim(|_| Ok(true)) {
            tracing::warn!(error = %e, "cannot trim the variant cache");
        }
        Ok((out.init, out.media))
    }

    /// Removes cached blobs whose segment or init no longer exists (expired, or replaced by
    /// compaction), then the oldest until the cache fits. Returns how many it removed. Blocking.
    pub fn sweep(&self) -> Result<usize, PlaybackError> {
        self.trim(|key| match parse_variant_key(key) {
            Some(Ok(segment_id)) => Ok(self.index.segment(segment_id)?.is_some()),
            Some(Err(init_id)) => Ok(self.index.init(init_id)?.is_some()),
            None => Ok(false),
        })
    }

    /// Removes the cached blobs `alive` rejects, then the oldest until the rest fits `max_bytes`.
    fn trim(&self, mut alive: impl FnMut(&str) -> Result<bool, PlaybackError>) -> Result<usize, PlaybackError> {
        let mut kept = Vec::new();
        let mut removed = 0;
        for meta in self.store.list(VARIANT_PREFIX)? {
            if alive(&meta.key)? {
                kept.push((meta.modified, meta.bytes, meta.key));
            } else {
                self.store.delete(&meta.key)?;
                removed += 1;
            }
        }
        kept.sort();
        let mut total: u64 = kept.iter().map(|(_, len, _)| len).sum();
        for (_, len, key) in kept {
            if total <= self.max_bytes {
                break;
            }
            self.store.delete(&key)?;
            total -= len;
            removed += 1;
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_420_codec_keeps_the_level() {
        assert_eq!(codec_420("avc1.F40028"), "avc1.640028");
        assert_eq!(codec_420("avc1.F40032"), "avc1.640032");
    }
}
