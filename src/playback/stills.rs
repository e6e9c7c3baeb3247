//! Single pictures out of stored video: the exact frame on screen at a time (as PNG), and small
//! per-minute previews for the timeline.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

use super::{Playback, PlaybackError, VisibleDevice};
use crate::clock::MINUTE_MS;
use crate::media::ffmpeg;
use crate::media::png::encode_rgb;

/// Width of timeline previews.
const THUMB_WIDTH: u32 = 240;
/// Previews kept in memory (~20 KB each).
const THUMB_CACHE: usize = 2048;

/// A bounded map of encoded previews by (segment id, minute start); the oldest insert goes first.
#[derive(Default)]
pub struct ThumbCache(Mutex<(HashMap<(i64, i64), Arc<Vec<u8>>>, VecDeque<(i64, i64)>)>);

impl ThumbCache {
    fn get(&self, key: (i64, i64)) -> Option<Arc<Vec<u8>>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).0.get(&key).cloned()
    }

    fn put(&self, key: (i64, i64), png: Arc<Vec<u8>>) {
        let mut guard = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let (map, order) = &mut *guard;
        if map.insert(key, png).is_none() {
            order.push_back(key);
        }
        while order.len() > THUMB_CACHE {
            if let Some(old) = order.pop_front() {
                map.remove(&old);
            }
        }
    }
}

/// The exact frame on screen at a time.
pub struct Frame {
    /// Presentation time of the frame shown.
    pub pts_ms: i64,
    pub png: Vec<u8>,
}

impl Playback {
    /// The frame on screen at `t_ms`, as PNG. Blocking.
    pub fn frame(&self, device: &VisibleDevice, t_ms: i64) -> Result<Frame, PlaybackError> {
        let seg = self.segment_at(device, t_ms)?;
        let (init, media) = self.segment_blobs(&seg)?;
        let _slot = self.decode_slots.acquire().ok_or(PlaybackError::Busy)?;
        let (pts_ms, yuv) = ffmpeg::decode_frame_at(&init, &media, t_ms)?.ok_or(PlaybackError::NotFound)?;
        Ok(Frame { pts_ms, png: encode_rgb(&ffmpeg::yuv_to_rgb(&yuv)?) })
    }

    /// A small preview of the minute holding `t_ms` (the frame on screen at its start), cached per
    /// segment and minute. A compacted segment spans several minutes: one decoding pass makes the
    /// previews of all of them, once per segment however many ask at the same time. Blocking.
    pub fn thumbnail(&self, device: &VisibleDevice, t_ms: i64) -> Result<Arc<Vec<u8>>, PlaybackError> {
        let seg = self.segment_at(device, t_ms)?;
        let minute_of = |t: i64| (t.div_euclid(MINUTE_MS) * MINUTE_MS).max(seg.start_ms);
        let key = (seg.id, minute_of(t_ms));
        if let Some(png) = self.thumbs.get(key) {
            return Ok(png);
        }
        self.thumb_decodes.with(&seg.id, || {
            if let Some(png) = self.thumbs.get(key) {
                return Ok(png);
            }
            let (init, media) = self.segment_blobs(&seg)?;
            let minutes: Vec<i64> = std::iter::successors(Some(seg.start_ms), |m| Some(m.div_euclid(MINUTE_MS) * MINUTE_MS + MINUTE_MS))
                .take_while(|m| *m < seg.end_ms)
                .collect();
            let _slot = self.decode_slots.acquire().ok_or(PlaybackError::Busy)?;
            let mut wanted = None;
            ffmpeg::frames_on_screen_at(&init, &media, &minutes, |minute, _, yuv| {
                let png = Arc::new(encode_rgb(&ffmpeg::thumbnail(yuv, THUMB_WIDTH)?));
                if minute == key.1 {
                    wanted = Some(png.clone());
                }
                self.thumbs.put((seg.id, minute), png);
                Ok(())
            })?;
            wanted.ok_or(PlaybackError::NotFound)
        })
    }
}
