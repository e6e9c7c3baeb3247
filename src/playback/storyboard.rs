//! Storyboards: per device-hour, one JPEG sprite of small frames every 15 s, so a scrubbing
//! player shows the moment under the pointer from one cached image.

use std::collections::HashMap;
use std::time::UNIX_EPOCH;

use sha2::{Digest, Sha256};

use super::{Playback, PlaybackError, VisibleDevice};
use crate::index::{FrameTime, Segment};
use crate::layout::{parse_storyboard_key, parse_storyboard_name, storyboard_key, storyboard_name, STORYBOARD_PREFIX};
use crate::media::png::RgbImage;
use crate::media::{ffmpeg, MediaError};

pub const HOUR_MS: i64 = 3_600_000;
pub const STORYBOARD_INTERVAL_MS: i64 = 15_000;
pub const STORYBOARD_COLS: u32 = 16;
pub const STORYBOARD_ROWS: u32 = 15;
pub const TILE_WIDTH: u32 = 160;
const TILES: usize = (STORYBOARD_COLS * STORYBOARD_ROWS) as usize;
/// JPEG quality of sprites: small frames for finding a moment, not for reading text.
const JPEG_QUALITY: u8 = 75;
/// A superseded sprite (its hour's footage changed: a new minute, a compaction) stays this long,
/// so a player holding its URL from a moment ago can still fetch it.
const SUPERSEDED_KEEP_MS: i64 = 600_000;
/// Bumped whenever the sprite's look changes, so cached sprites are not reused.
const RENDER_VERSION: &str = "sb1";

/// The storyboard of one hour, as the player asks for it.
#[derive(Debug, serde::Serialize)]
pub struct Storyboard {
    pub start_ms: i64,
    pub interval_ms: i64,
    pub tile_w: u32,
    pub tile_h: u32,
    pub cols: u32,
    pub rows: u32,
    /// The sprite, relative to `/api/v1/devices/{id}/`.
    pub url: String,
    /// Per tile, the capture on screen at `start_ms + i × interval_ms`, or None when nothing was recorded then.
    pub tiles: Vec<Option<i64>>,
}

/// Which capture each tile shows and where it comes from: everything the sprite depends on.
struct Plan {
    hour_ms: i64,
    tile_h: u32,
    segments: Vec<Segment>,
    /// Per tile: (index into `segments`, capture on screen).
    tiles: Vec<Option<(usize, i64)>>,
    version: String,
}

impl Playback {
    /// The storyboard of the hour starting at `hour_ms`. Blocking.
    pub fn storyboard(&self, device: &VisibleDevice, hour_ms: i64) -> Result<Storyboard, PlaybackError> {
        let plan = self.storyboard_plan(device, hour_ms)?;
        Ok(Storyboard {
            start_ms: hour_ms,
            interval_ms: STORYBOARD_INTERVAL_MS,
            tile_w: TILE_WIDTH,
            tile_h: plan.tile_h,
            cols: STORYBOARD_COLS,
            rows: STORYBOARD_ROWS,
            url: format!("storyboard/{}.jpg", storyboard_name(hour_ms, &plan.version)),
            tiles: plan.tiles.iter().map(|t| t.map(|(_, capture_ms)| capture_ms)).collect(),
        })
    }

    /// The sprite named `name` (`HOUR-VERSION`), made on first request and then cached; a version
    /// that is neither cached nor current is NotFound. Blocking.
    pub fn storyboard_sprite(&self, device: &VisibleDevice, name: &str) -> Result<Vec<u8>, PlaybackError> {
        let (hour_ms, version) = parse_storyboard_name(name).ok_or(PlaybackError::NotFound)?;
        let key = storyboard_key(&device.id, name);
        if let Some(bytes) = self.store.get(&key)? {
            return Ok(bytes);
        }
        self.storyboard_makes.with(&key, || {
            if let Some(bytes) = self.store.get(&key)? {
                return Ok(bytes);
            }
            let plan = self.storyboard_plan(device, hour_ms)?;
            if plan.version != version {
                return Err(PlaybackError::NotFound);
            }
            let _slot = self.decode_slots.acquire().ok_or(PlaybackError::Busy)?;
            let jpeg = self.render_sprite(&plan)?;
            self.store.put_cache(&key, &jpeg)?;
            Ok(jpeg)
        })
    }

    /// Which capture each tile of the hour shows. NotFound for an hour outside the retention
    /// window or without footage; BadRequest for a time that is not the start of an hour.
    fn storyboard_plan(&self, device: &VisibleDevice, hour_ms: i64) -> Result<Plan, PlaybackError> {
        if hour_ms.rem_euclid(HOUR_MS) != 0 {
            return Err(PlaybackError::BadRequest("bad_hour", "`hour` must be unix milliseconds at the start of an hour (a multiple of 3600000)".into()));
        }
        let now = self.clock.now_ms();
        let window_start = now - self.retention_ms;
        if hour_ms + HOUR_MS <= window_start || hour_ms > now {
            return Err(PlaybackError::NotFound);
        }
        let hour_end = hour_ms + HOUR_MS;
        let segments = self.index.segments_between(&device.id, hour_ms.max(window_start), hour_end)?;
        let last = segments.last().ok_or(PlaybackError::NotFound)?;
        // 160 px wide at the device's aspect (its latest size in the hour), rounded to even.
        let (w, h) = (u64::from(last.width.max(1)), u64::from(last.height));
        let tile_h = ((u64::from(TILE_WIDTH) * h + w) / (2 * w) * 2).clamp(2, 4 * u64::from(TILE_WIDTH)) as u32;
        let mut captures: HashMap<i64, Vec<i64>> = HashMap::new();
        let (first_start, last_end) = (segments[0].start_ms, last.end_ms);
        for f in self.index.frames_between(&device.id, first_start, last_end)? {
            captures.entry(f.segment_id).or_default().push(f.capture_ms);
        }
        let frame_times: Vec<Vec<FrameTime>> =
            segments.iter().map(|s| s.frame_times(captures.get(&s.id).cloned().unwrap_or_default())).collect();
        let tiles: Vec<Option<(usize, i64)>> = (0..TILES as i64)
            .map(|i| {
                let t = hour_ms + i * STORYBOARD_INTERVAL_MS;
                if t < window_start || t > now {
                    return None;
                }
                let n = segments.iter().position(|s| s.start_ms <= t && t < s.end_ms)?;
                let shown = frame_times[n].iter().rfind(|f| f.pts_ms <= t)?;
                Some((n, shown.capture_ms.or(segments[n].carry_ms)?))
            })
            .collect();
        let mut hash = Sha256::new();
        hash.update(RENDER_VERSION);
        hash.update(tile_h.to_le_bytes());
        for s in &segments {
            hash.update(s.id.to_le_bytes());
        }
        for t in &tiles {
            hash.update(t.map_or(-1, |(_, c)| c).to_le_bytes());
        }
        let version = hex::encode(&hash.finalize()[..8]);
        Ok(Plan { hour_ms, tile_h, segments, tiles, version })
    }

    /// Decodes each segment of the hour once, up to its last tile, and lays the tiles out.
    fn render_sprite(&self, plan: &Plan) -> Result<Vec<u8>, PlaybackError> {
        let (tile_w, tile_h) = (TILE_WIDTH as usize, plan.tile_h as usize);
        let sprite_w = tile_w * STORYBOARD_COLS as usize;
        // Tiles with nothing recorded stay dark grey, visibly "no picture" rather than a black screen.
        let mut sprite = RgbImage { width: sprite_w as u32, height: (tile_h * STORYBOARD_ROWS as usize) as u32, data: vec![32; sprite_w * tile_h * STORYBOARD_ROWS as usize * 3] };
        for (n, seg) in plan.segments.iter().enumerate() {
            let wanted: Vec<(usize, i64)> = plan
                .tiles
                .iter()
                .enumerate()
                .filter(|(_, t)| t.is_some_and(|(s, _)| s == n))
                .map(|(i, _)| (i, plan.hour_ms + i as i64 * STORYBOARD_INTERVAL_MS))
                .collect();
            if wanted.is_empty() {
                continue;
            }
            let (init, media) = self.segment_blobs(seg)?;
            let times: Vec<i64> = wanted.iter().map(|w| w.1).collect();
            let mut small: Option<(i64, RgbImage)> = None;
            ffmpeg::frames_on_screen_at(&init, &media, &times, |t, pts, yuv| {
                // Consecutive tiles often show the same frame: scale it once.
                if small.as_ref().is_none_or(|(p, _)| *p != pts) {
                    small = Some((pts, ffmpeg::thumbnail(yuv, TILE_WIDTH)?));
                }
                let tile = wanted.iter().find(|w| w.1 == t).map(|w| w.0).expect("a requested time");
                let (_, picture) = small.as_ref().expect("set above");
                paste(&mut sprite, picture, tile, (tile_w, tile_h));
                Ok(())
            })?;
        }
        let mut jpeg = Vec::with_capacity(256 * 1024);
        let encoder = jpeg_encoder::Encoder::new(&mut jpeg, JPEG_QUALITY);
        encoder
            .encode(&sprite.data, sprite.width as u16, sprite.height as u16, jpeg_encoder::ColorType::Rgb)
            .map_err(|e| MediaError::Source(format!("JPEG encoding: {e}")))?;
        Ok(jpeg)
    }

    /// Removes sprites of hours that left the retention window, and superseded ones after a
    /// while. Returns how many it removed. Blocking.
    pub(super) fn sweep_storyboards(&self) -> Result<usize, PlaybackError> {
        let now = self.clock.now_ms();
        let window_start = now - self.retention_ms;
        let mut current: HashMap<(String, i64), Option<String>> = HashMap::new();
        let mut removed = 0;
        for meta in self.store.list(STORYBOARD_PREFIX)? {
            let keep = match parse_storyboard_key(&meta.key) {
                None => false,
                Some((_, hour_ms, _)) if hour_ms + HOUR_MS <= window_start => false,
                Some((device_id, hour_ms, version)) => {
                    let modified_ms = meta.modified.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
                    let fresh = now - modified_ms < SUPERSEDED_KEEP_MS;
                    fresh || {
                        let device = VisibleDevice { id: device_id.to_string() };
                        let now_version = current
                            .entry((device_id.to_string(), hour_ms))
                            .or_insert_with(|| self.storyboard_plan(&device, hour_ms).ok().map(|p| p.version));
                        now_version.as_deref() == Some(version)
                    }
                }
            };
            if !keep {
                self.store.delete(&meta.key)?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}

/// Copies `picture` (TILE_WIDTH wide, any height) into tile `i` of the sprite, cropped or padded
/// to the tile's height.
fn paste(sprite: &mut RgbImage, picture: &RgbImage, i: usize, (tile_w, tile_h): (usize, usize)) {
    let (col, row) = (i % STORYBOARD_COLS as usize, i / STORYBOARD_COLS as usize);
    let sprite_stride = sprite.width as usize * 3;
    let width = tile_w.min(picture.width as usize);
    for y in 0..tile_h.min(picture.height as usize) {
        let src = &picture.data[y * picture.width as usize * 3..][..width * 3];
        let at = (row * tile_h + y) * sprite_stride + col * tile_w * 3;
        sprite.data[at..at + width * 3].copy_from_slice(src);
    }
}
