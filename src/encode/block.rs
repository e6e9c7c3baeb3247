//! One block's encode: gather its captures (originals first), plan its segments, encode them.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use super::pictures::{FrameSource, PictureLoader};
use super::plan::{plan_block, PlannedSegment, Source};
use super::{EncodeError, Encoder};
use crate::clock::MINUTE_MS;
use crate::index::NewSegment;
use crate::layout::{init_key, quarantine_key, spool_key};
use crate::media::ffmpeg::{encode_segment, encode_segment_checked, EncodeSettings};
use crate::media::Picture;

/// How often a segment under the quality floor is encoded again, each time at a crf lower by
/// its shortfall in dB plus one (at least `FLOOR_MIN_STEP`).
const FLOOR_RETRIES: u32 = 3;
const FLOOR_MIN_STEP: f32 = 2.0;

/// A block encoded but not yet stored or committed.
pub(super) struct EncodedBlock {
    /// Each new segment with its init and media bytes.
    pub segments: Vec<(NewSegment, Vec<u8>, Vec<u8>)>,
    /// Captures that no segment held before (they leave the pending set on commit).
    pub newly_spooled: Vec<i64>,
    /// The block's latest capture (the carry of the next block).
    pub last_capture_ms: i64,
    /// Frames encoded, carries included.
    pub frames_encoded: usize,
}

/// A block's captures with their sources, and the carry candidate before it.
struct BlockSources {
    /// Every capture of the block; the original PNG wins over a decoded frame.
    captures: BTreeMap<i64, FrameSource>,
    /// The latest capture before the block, recent enough and inside the window.
    carry: Option<(i64, FrameSource)>,
}

impl Encoder {
    /// Encodes everything known for the block `[start_ms, start_ms + span_ms)`; None when it
    /// holds no capture (any more).
    pub(super) fn encode_sources(&self, device_id: &str, (minute_ms, span_ms): (i64, i64)) -> Result<Option<EncodedBlock>, EncodeError> {
        let Some(BlockSources { captures: sources, carry }) = self.block_sources(device_id, (minute_ms, span_ms))? else {
            return Ok(None);
        };
        let mut pictures = PictureLoader::new(self);
        let mut captures = Vec::with_capacity(sources.len());
        // Per capture, beside `captures`: the upload's hash, and whether it is newly out of the spool.
        let mut hashes: Vec<([u8; 32], bool)> = Vec::with_capacity(sources.len());
        for (capture_ms, src) in sources {
            let hash = (src.sha256(), src.is_new());
            match pictures.load(capture_ms, src) {
                Ok(dims) => {
                    captures.push((capture_ms, dims));
                    hashes.push(hash);
                }
                Err(e) => {
                    // Only a spool file can be undecodable here (it was decoded at upload):
                    // keep it aside for an operator rather than deleting or looping on it.
                    tracing::error!(device_id, capture_ms, error = %e, "spool frame cannot be decoded; quarantined");
                    self.quarantine(device_id, capture_ms)?;
                }
            }
        }
        let carry = match carry {
            Some((carry_ms, src)) => pictures.load(carry_ms, src).ok().map(|dims| (carry_ms, dims)),
            None => None,
        };
        let Some(&(last_capture_ms, _)) = captures.last() else { return Ok(None) };
        let cold = span_ms > MINUTE_MS;
        let max_frames = if cold { self.compact_max_frames } else { usize::MAX };
        let plan = plan_block((minute_ms, minute_ms + span_ms), &captures, carry, self.carry_max_age_ms, max_frames);
        let mut segments = Vec::with_capacity(plan.len());
        for planned in &plan {
            segments.push(self.encode_planned(device_id, minute_ms, cold, planned, &captures, &hashes, carry, &mut pictures)?);
        }
        let newly_spooled = captures.iter().zip(&hashes).filter(|(_, (_, new))| *new).map(|((c, _), _)| *c).collect();
        Ok(Some(EncodedBlock {
            segments,
            newly_spooled,
            last_capture_ms,
            frames_encoded: plan.iter().map(|p| p.frames.len()).sum(),
        }))
    }

    /// The block's captures (originals first, else frames of stored segments) and its carry
    /// candidate; None when the block holds no capture inside the retention window.
    fn block_sources(&self, device_id: &str, (minute_ms, span_ms): (i64, i64)) -> Result<Option<BlockSources>, EncodeError> {
        let minute_end = minute_ms + span_ms;
        let spool = crate::ingest::spool_captures(self.store.as_ref(), device_id)?;
        // Nothing older than the retention window is encoded again (retention may have just
        // deleted it; a compaction or late frame must not bring it back).
        let expired_before = self.clock.now_ms() - self.retention_ms;
        let kept_from = expired_before.max(minute_ms);
        let encoded = self.index.frames_between(device_id, kept_from, minute_end)?;
        let mut captures: BTreeMap<i64, FrameSource> = encoded
            .iter()
            .map(|f| (f.capture_ms, FrameSource::Segment { sha256: f.sha256, segment_id: f.segment_id }))
            .collect();
        for &capture_ms in spool.range(kept_from..minute_end.max(kept_from)) {
            if let Some(src) = self.read_spool(device_id, capture_ms, captures.contains_key(&capture_ms))? {
                captures.insert(capture_ms, src);
            }
        }
        if captures.is_empty() {
            return Ok(None);
        }
        // The carry candidate: the latest capture before this block, spooled or encoded.
        let spooled_before = spool.range(..minute_ms).next_back().copied();
        let encoded_before = self.index.last_frame_before(device_id, minute_ms)?;
        let carry = match (spooled_before, encoded_before) {
            (Some(s), Some(e)) if e.capture_ms > s => Some((e.capture_ms, FrameSource::Segment { sha256: e.sha256, segment_id: e.segment_id })),
            (Some(s), _) => self.read_spool(device_id, s, true)?.map(|src| (s, src)),
            (None, Some(e)) => Some((e.capture_ms, FrameSource::Segment { sha256: e.sha256, segment_id: e.segment_id })),
            (None, None) => None,
        }
        .filter(|(capture_ms, _)| minute_ms - capture_ms <= self.carry_max_age_ms && *capture_ms >= expired_before);
        Ok(Some(BlockSources { captures, carry }))
    }

    /// The crfs that last held the quality floor, per (device, compacted tier).
    fn floor_hints(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<(String, bool), f32>> {
        self.floor_crf.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// After a segment held the floor at `crf` (`configured` is the tier's crf): remember a crf
    /// lowered by retries for the device's next segment; where a remembered one held with room to
    /// spare, relax it a step towards the configured crf, so a screen that became easy gets its
    /// bytes back.
    fn learn_floor_hint(&self, key: (String, bool), hinted: bool, retried: bool, (crf, configured): (f32, f32), worst_db: f64) {
        let mut hints = self.floor_hints();
        if retried && crf < configured {
            hints.insert(key, crf);
        } else if hinted && worst_db >= self.floor_db + f64::from(FLOOR_MIN_STEP) {
            if crf + 1.0 >= configured {
                hints.remove(&key);
            } else {
                hints.insert(key, crf + 1.0);
            }
        }
    }

    /// Encodes one planned segment of the block starting at `minute_ms`.
    #[allow(clippy::too_many_arguments)]
    fn encode_planned(
        &self,
        device_id: &str,
        minute_ms: i64,
        cold: bool,
        planned: &PlannedSegment,
        captures: &[(i64, (u32, u32))],
        hashes: &[([u8; 32], bool)],
        carry: Option<(i64, (u32, u32))>,
        pictures: &mut PictureLoader<'_>,
    ) -> Result<(NewSegment, Vec<u8>, Vec<u8>), EncodeError> {
        let settings = if cold { &self.cold_settings } else { &self.settings };
        let carry_of = || carry.expect("planned only with a carry");
        let fragment_index = (planned.start_ms / MINUTE_MS) as u32;
        let source_of = |source: &Source| match source {
            Source::Carry => carry_of().0,
            Source::Capture(i) => captures[*i].0,
        };
        let pts: Vec<i64> = planned.frames.iter().map(|(pts, _)| *pts).collect();
        let dims = match planned.frames[0].1 {
            Source::Carry => carry_of().1,
            Source::Capture(i) => captures[i].1,
        };
        // An upload identical to the one before it (same bytes) is the same picture: repeat the
        // frame instead of decoding and converting it again. About a quarter of consecutive
        // screenshots are identical on real desktops.
        let repeats_previous = |i: usize| match (i.checked_sub(1).map(|p| planned.frames[p].1), planned.frames[i].1) {
            (Some(Source::Capture(a)), Source::Capture(b)) => hashes[a].0 == hashes[b].0,
            _ => false,
        };
        // The quality floor: every frame is checked as it leaves the encoder; a segment whose
        // worst frame is under the floor is encoded again at a lower crf (docs/storage.md).
        let hint_key = (device_id.to_string(), cold);
        let hint = self.floor_hints().get(&hint_key).copied();
        let configured_crf = settings.crf;
        let mut settings = EncodeSettings { crf: hint.map_or(configured_crf, |h| h.min(configured_crf)), ..settings.clone() };
        let mut attempt = 0;
        let encoded = loop {
            let picture = |i: usize| {
                let capture_ms = source_of(&planned.frames[i].1);
                if repeats_previous(i) {
                    return Ok(Picture::Repeat(dims));
                }
                pictures.picture(capture_ms)
            };
            let result = if self.floor_db > 0.0 {
                encode_segment_checked(&settings, dims, &pts, planned.end_ms, fragment_index, picture)
                    .map(|(e, psnr)| (e, psnr.into_iter().fold(f64::INFINITY, f64::min)))
            } else {
                encode_segment(&settings, dims, &pts, planned.end_ms, fragment_index, picture).map(|e| (e, f64::INFINITY))
            };
            match result {
                Ok((_, worst)) if worst < self.floor_db && attempt < FLOOR_RETRIES && settings.crf > 0.0 => {
                    attempt += 1;
                    // About 1 dB per QP step on the busy frames that miss the floor: go down by
                    // the shortfall and one more, at least two.
                    let step = ((self.floor_db - worst).ceil() as f32 + 1.0).max(FLOOR_MIN_STEP);
                    let crf = (settings.crf - step).max(0.0);
                    tracing::info!(device_id, start_ms = planned.start_ms, worst_db = worst, crf_was = settings.crf, crf, "segment under the quality floor; encoding it again");
                    self.metrics.segments_below_floor.inc();
                    settings = EncodeSettings { crf, ..settings };
                }
                Ok((e, worst)) => {
                    self.learn_floor_hint(hint_key, hint.is_some(), attempt > 0, (settings.crf, configured_crf), worst);
                    break Ok(e);
                }
                Err(e) => break Err(e),
            }
        };
        pictures.release(planned.frames.iter().map(|(_, s)| source_of(s)));
        let encoded = match encoded {
            Ok(e) => e,
            Err(e) => {
                // A spool file that no longer decodes (it did at upload): set it aside, retry the block.
                if let Some(bad) = pictures.failed.take() {
                    tracing::error!(device_id, capture_ms = bad, error = %e, "spool frame cannot be decoded; quarantined");
                    self.quarantine(device_id, bad)?;
                }
                return Err(e.into());
            }
        };
        let init_sha: [u8; 32] = Sha256::digest(&encoded.init).into();
        let (width, height) = dims;
        let segment = NewSegment {
            start_ms: planned.start_ms,
            end_ms: planned.end_ms,
            carry_ms: planned.has_carry().then(|| carry_of().0),
            init_sha256: init_sha,
            init_file: init_key(&hex::encode(init_sha)),
            init_bytes: encoded.init.len() as i64,
            file: crate::layout::segment_key(device_id, minute_ms, rand::random()),
            bytes: encoded.media.len() as i64,
            codec: encoded.codec,
            width,
            height,
            frame_count: pts.len() as i64,
            captures: planned
                .frames
                .iter()
                .filter_map(|(_, s)| match s {
                    Source::Capture(i) => Some((captures[*i].0, hashes[*i].0)),
                    Source::Carry => None,
                })
                .collect(),
        };
        Ok((segment, encoded.init, encoded.media))
    }

    /// Sets an undecodable spool file aside (copied to quarantine, then removed from the spool).
    fn quarantine(&self, device_id: &str, capture_ms: i64) -> Result<(), EncodeError> {
        let key = spool_key(device_id, capture_ms);
        if let Some(bytes) = self.store.get(&key)? {
            self.store.put_new(&quarantine_key(device_id, capture_ms), &bytes)?;
            self.store.delete(&key)?;
        }
        self.pending.done(device_id, [capture_ms]);
        Ok(())
    }
}
