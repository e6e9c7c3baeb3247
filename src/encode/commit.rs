//! Making an encoded block the served version: store its blobs, replace the block's rows in one
//! transaction, collect what it replaced, release originals that are now safe.

use std::collections::BTreeMap;

use super::block::EncodedBlock;
use crate::clock::MINUTE_MS;
use super::{EncodeError, Encoder, Outcome};
use crate::index::{NewSegment, Segment};
use crate::ingest::{release_spool, Release};

impl Encoder {
    /// Stores and commits `encoded` as the block `(start_ms, span_ms)` of `device_id`.
    pub(super) fn commit(&self, device_id: &str, (minute_ms, span_ms): (i64, i64), encoded: EncodedBlock) -> Result<Outcome, EncodeError> {
        let EncodedBlock { segments, newly_spooled, last_capture_ms, frames_encoded } = encoded;
        let mut new_segments = Vec::with_capacity(segments.len());
        let mut activity: BTreeMap<i64, i64> = BTreeMap::new();
        for (segment, init, media) in segments {
            add_activity(&mut activity, &segment, &media);
            // Inits are keyed by content: an existing one is the same bytes.
            self.store.put_new(&segment.init_file, &init)?;
            self.store.put_new(&segment.file, &media)?;
            new_segments.push(segment);
        }
        // Retention may have moved on while this encoded: a segment already past the window is not committed.
        let expired_before = self.clock.now_ms() - self.retention_ms;
        let (new_segments, late): (Vec<NewSegment>, Vec<NewSegment>) = new_segments.into_iter().partition(|s| s.end_ms > expired_before);
        for seg in &late {
            self.store.delete(&seg.file)?;
        }
        // The commit point: from here the block is served from the new segments.
        let (_, replaced) = self.index.replace_block(device_id, (minute_ms, span_ms), &new_segments, self.clock.now_ms())?;
        let removed = crate::garbage::collect(self.store.as_ref(), self.index.as_ref(), &replaced);
        // The activity lane keeps the one-minute encode's measure through compaction (a compacted
        // block only fills minutes that have none), so one scale holds across the whole window.
        let activity: Vec<(i64, i64)> = activity.into_iter().filter(|(m, _)| *m + MINUTE_MS > expired_before).collect();
        if let Err(e) = self.index.put_activity(device_id, &activity, span_ms <= MINUTE_MS) {
            tracing::warn!(device_id, minute_ms, error = %e, "cannot record the activity of a block");
        }
        self.metrics.files_expired.inc_by(removed as u64);

        let new_spool_frames = newly_spooled.len();
        self.pending.done(device_id, newly_spooled);
        let release = Release::at(self.clock.now_ms(), self.keep_originals_ms);
        release_spool(self.store.as_ref(), self.index.as_ref(), device_id, release)?;
        self.recheck_next_block(device_id, minute_ms + span_ms, last_capture_ms)?;

        self.metrics.frames_encoded.inc_by(frames_encoded as u64);
        self.metrics.segments_written.inc_by(new_segments.len() as u64);
        self.metrics.segment_bytes_written.inc_by(new_segments.iter().map(|s| s.bytes as u64).sum());
        Ok(Outcome { segments: new_segments.len(), frames: new_segments.iter().map(|s| s.captures.len()).sum(), new_spool_frames })
    }

    /// If the block starting at `next` was encoded with a carry that is no longer the latest
    /// earlier capture, or without one that it could now have (a late frame arrived), queue it
    /// for re-encoding.
    fn recheck_next_block(&self, device_id: &str, next: i64, last_capture_ms: i64) -> Result<(), EncodeError> {
        // Its first segment starts at `next` with a carry, or later (at its first capture) without one.
        let first_next = self.index.segments_between(device_id, next, next + MINUTE_MS)?.into_iter().find(|s| s.minute_ms == next);
        if let Some(Segment { carry_ms, start_ms, .. }) = first_next {
            let stale_carry = carry_ms.is_some_and(|c| c != last_capture_ms);
            let carry_now_possible = carry_ms.is_none() && start_ms > next && next - last_capture_ms <= self.carry_max_age_ms;
            if stale_carry || carry_now_possible {
                self.pending.add_minute(device_id, next);
            }
        }
        Ok(())
    }
}

/// Adds a segment's measure of change to `per_minute`: the bytes of every frame but its first
/// (the keyframe, which shows a picture rather than a change), by the minute it is presented in.
/// Every minute a segment starts in gets an entry, so a recorded minute without change reads 0.
fn add_activity(per_minute: &mut BTreeMap<i64, i64>, segment: &NewSegment, media: &[u8]) {
    let minute_of = |t: i64| t.div_euclid(MINUTE_MS) * MINUTE_MS;
    per_minute.entry(minute_of(segment.start_ms)).or_insert(0);
    let sizes = match crate::media::mp4::sample_sizes(media) {
        Ok(sizes) => sizes,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the sample sizes of a new segment");
            return;
        }
    };
    // Presentation order is decode order (no B-frames): the carry, then every capture.
    let times: Vec<i64> = segment.carry_ms.map(|_| segment.start_ms).into_iter().chain(segment.captures.iter().map(|c| c.0)).collect();
    if times.len() != sizes.len() {
        tracing::warn!(frames = times.len(), samples = sizes.len(), "a new segment's samples do not match its frames");
        return;
    }
    for (t, size) in times.iter().zip(&sizes).skip(1) {
        *per_minute.entry(minute_of(*t)).or_insert(0) += i64::from(*size);
    }
}
