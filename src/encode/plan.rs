//! Pure planning of one device-minute: which segments, which frames, at which presentation times.

use crate::clock::MINUTE_MS;

/// Where a planned frame's pixels come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The device's latest capture before this minute, repeated at the minute's start.
    Carry,
    /// The i-th capture of the minute.
    Capture(usize),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedSegment {
    pub start_ms: i64,
    pub end_ms: i64,
    /// (presentation time, source)
    pub frames: Vec<(i64, Source)>,
}

impl PlannedSegment {
    pub fn has_carry(&self) -> bool {
        self.frames.first().is_some_and(|f| f.1 == Source::Carry)
    }
}

/// Plans the segments of the minute starting at `minute_ms` (see [`plan_block`]).
pub fn plan_minute(
    minute_ms: i64,
    captures: &[(i64, (u32, u32))],
    carry: Option<(i64, (u32, u32))>,
    carry_max_age_ms: i64,
) -> Vec<PlannedSegment> {
    plan_block((minute_ms, minute_ms + MINUTE_MS), captures, carry, carry_max_age_ms, usize::MAX)
}

/// Plans the segments of the block `[start, end)`: a minute, or a compaction span.
/// `captures` are (capture_ms, (width, height)) sorted by time, all inside the minute;
/// `carry` is the device's latest earlier capture, if any.
///
/// Rules (docs/media-facts.md, "Timeline rules for frame-exact seeking"): every segment starts
/// with a keyframe. The first starts on the minute repeating `carry` when the first capture is
/// later than :00 and `carry` is recent enough and of the same size; otherwise it starts at the
/// first capture, so every capture is presented at its capture time and nothing is shown before
/// a device's first capture after a gap (a gap entry covers the rest). Each frame lasts until the
/// next capture, the last until the block's end. A size change starts a new segment, and so does
/// a segment reaching `max_frames` (each segment is one keyframe interval: a seek decodes at most that many).
pub fn plan_block(
    (minute_ms, block_end_ms): (i64, i64),
    captures: &[(i64, (u32, u32))],
    carry: Option<(i64, (u32, u32))>,
    carry_max_age_ms: i64,
    max_frames: usize,
) -> Vec<PlannedSegment> {
    let mut segments: Vec<PlannedSegment> = Vec::new();
    for (i, (capture_ms, dims)) in captures.iter().enumerate() {
        let same_size = i > 0 && captures[i - 1].1 == *dims;
        let full = segments.last().is_some_and(|s| s.frames.len() >= max_frames.max(2));
        if same_size && !full {
            segments.last_mut().expect("a segment is open").frames.push((*capture_ms, Source::Capture(i)));
            continue;
        }
        if let Some(prev) = segments.last_mut() {
            prev.end_ms = *capture_ms;
        }
        // Only the block's first segment may start before its first capture, and only with a
        // carry: without one, the footage starts when the capture was taken.
        let carried = segments.is_empty()
            && minute_ms < *capture_ms
            && carry.is_some_and(|(carry_ms, carry_dims)| {
                carry_dims == *dims && carry_ms < minute_ms && minute_ms - carry_ms <= carry_max_age_ms
            });
        let (start_ms, frames) = if carried {
            (minute_ms, vec![(minute_ms, Source::Carry), (*capture_ms, Source::Capture(i))])
        } else {
            (*capture_ms, vec![(*capture_ms, Source::Capture(i))])
        };
        segments.push(PlannedSegment { start_ms, end_ms: block_end_ms, frames });
    }
    segments
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: i64 = 1_764_151_200_000;
    const HD: (u32, u32) = (1920, 1080);

    #[test]
    fn carry_repeats_a_recent_previous_capture() {
        let plan = plan_minute(M, &[(M + 7_000, HD), (M + 17_000, HD)], Some((M - 3_000, HD)), 60_000);
        assert_eq!(
            plan,
            vec![PlannedSegment {
                start_ms: M,
                end_ms: M + 60_000,
                frames: vec![(M, Source::Carry), (M + 7_000, Source::Capture(0)), (M + 17_000, Source::Capture(1))],
            }]
        );
    }

    #[test]
    fn without_a_usable_carry_the_segment_starts_at_its_first_capture() {
        for carry in [Some((M - 61_000, HD)), Some((M - 1_000, (800, 600))), None] {
            let plan = plan_minute(M, &[(M + 7_000, HD), (M + 9_000, HD)], carry, 60_000);
            assert_eq!(plan[0].start_ms, M + 7_000, "{carry:?}");
            assert_eq!(plan[0].frames, vec![(M + 7_000, Source::Capture(0)), (M + 9_000, Source::Capture(1))], "{carry:?}");
        }
    }

    #[test]
    fn capture_on_the_minute_needs_no_carry() {
        let plan = plan_minute(M, &[(M, HD)], Some((M - 1_000, HD)), 60_000);
        assert_eq!(plan[0].frames, vec![(M, Source::Capture(0))]);
    }

    #[test]
    fn size_change_starts_a_new_segment_at_its_capture() {
        let small = (1281, 721);
        let plan = plan_minute(M, &[(M + 5_000, HD), (M + 20_000, small), (M + 30_000, small), (M + 40_000, HD)], None, 60_000);
        let spans: Vec<(i64, i64, usize)> = plan.iter().map(|s| (s.start_ms - M, s.end_ms - M, s.frames.len())).collect();
        assert_eq!(spans, vec![(5_000, 20_000, 1), (20_000, 40_000, 2), (40_000, 60_000, 1)]);
    }

    #[test]
    fn a_block_splits_into_segments_of_at_most_max_frames() {
        // Ten minutes, a capture every 10 s from :05, carry at the start: 61 frames, 25 a segment.
        let captures: Vec<(i64, (u32, u32))> = (0..60).map(|i| (M + 5_000 + i * 10_000, HD)).collect();
        let plan = plan_block((M, M + 600_000), &captures, Some((M - 5_000, HD)), 60_000, 25);
        let spans: Vec<(i64, i64, usize)> = plan.iter().map(|s| (s.start_ms - M, s.end_ms - M, s.frames.len())).collect();
        assert_eq!(spans, vec![(0, 245_000, 25), (245_000, 495_000, 25), (495_000, 600_000, 11)]);
        assert!(plan[0].has_carry() && !plan[1].has_carry());
        let frames: usize = plan.iter().map(|s| s.frames.len()).sum();
        assert_eq!(frames, 61, "every capture once, plus the carry");
    }
}
