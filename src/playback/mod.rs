//! Every viewing answer: device list, playlists, timeline, segment and init bytes, exact frames,
//! previews, exports. HTTP handlers only extract, call one method here and map its error.
//! Every method blocks (index, store, libav): call from a blocking thread.

mod export;
mod stills;
mod storyboard;
mod variant;
mod work;

pub use export::{Export, MAX_EXPORT_MS};
pub use stills::Frame;
pub use storyboard::{Storyboard, HOUR_MS};
pub use variant::codec_420;

use std::sync::Arc;
use std::time::Duration;

use crate::clock::{SharedClock, MINUTE_MS};
use crate::config::Config;
use crate::hls::{self, Entry};
use crate::index::{DeviceInfo, Segment, SharedIndex, User};
use crate::ingest::Pending;
use crate::store::SharedStore;

#[derive(Debug, thiserror::Error)]
pub enum PlaybackError {
    /// Unknown, not visible to this viewer, gone (expired meanwhile), or a gap.
    #[error("not found")]
    NotFound,
    #[error("{1}")]
    BadRequest(&'static str, String),
    #[error("{1}")]
    Unprocessable(&'static str, String),
    /// Too much expensive work in flight (decodes, transcodes): retry shortly.
    #[error("busy; retry shortly")]
    Busy,
    #[error(transparent)]
    Index(#[from] crate::index::IndexError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Media(#[from] crate::media::MediaError),
    /// Stored segments that one MP4 file cannot join without re-encoding (an export).
    #[error(transparent)]
    Export(#[from] crate::media::mp4::Mp4Error),
}

/// Which rendition of a device's footage (playlists, segments, exports).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rendition {
    /// As stored: H.264 High 4:4:4 (or AV1 4:4:4 blocks).
    Stored,
    /// H.264 High 4:2:0, transcoded on demand, for browsers without 4:4:4.
    Chroma420,
}

impl Rendition {
    /// Path segments of this rendition's segment and init URIs (relative to the playlist).
    fn uri_dirs(self) -> (&'static str, &'static str) {
        match self {
            Rendition::Stored => ("segments", "init"),
            Rendition::Chroma420 => ("segments420", "init420"),
        }
    }
}

/// A device that a viewer may see: the only way into the per-device methods below.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VisibleDevice {
    pub id: String,
}

/// A stretch of time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Span {
    pub start_ms: i64,
    pub end_ms: i64,
}

/// Capture times and gaps of a device, for the slider and frame stepping.
#[derive(Debug, serde::Serialize)]
pub struct Timeline {
    pub device: String,
    pub from_ms: i64,
    pub to_ms: i64,
    /// Media time 0 of the playlist (its first entry's start), for mapping player time to wall clock.
    pub media_start_ms: Option<i64>,
    /// End of the last encoded minute: the live edge.
    pub live_edge_ms: Option<i64>,
    /// Every encoded capture time in the range, oldest first.
    pub captures: Vec<i64>,
    /// Stretches with footage.
    pub recorded: Vec<Span>,
    /// Stretches inside the range without footage (device offline).
    pub gaps: Vec<Span>,
    /// Frames received but not yet encoded (they appear within about a minute).
    pub pending_frames: usize,
    /// How much the screen changed, per minute of the range.
    pub activity: Activity,
}

/// Per minute from `start_ms`: the bytes of the inter frames encoded in that minute (how much
/// the screen changed), or None where nothing was recorded.
#[derive(Debug, serde::Serialize)]
pub struct Activity {
    pub start_ms: i64,
    pub step_ms: i64,
    pub values: Vec<Option<i64>>,
}

/// The viewing service.
pub struct Playback {
    index: SharedIndex,
    store: SharedStore,
    clock: SharedClock,
    pending: Arc<Pending>,
    retention_ms: i64,
    variants: variant::Variants,
    thumbs: stills::ThumbCache,
    /// One preview decode per segment at a time.
    thumb_decodes: work::KeyedLocks<i64>,
    /// Whole-segment decodes (exact frames, previews, storyboards) in flight at once.
    decode_slots: work::Slots,
    /// One storyboard sprite made per key at a time.
    storyboard_makes: work::KeyedLocks<String>,
}

impl Playback {
    pub fn new(config: &Config, index: SharedIndex, store: SharedStore, clock: SharedClock, pending: Arc<Pending>) -> Self {
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        Self {
            variants: variant::Variants::new(store.clone(), index.clone(), config.encoder.crf, config.variant_cache_bytes, cores.div_ceil(2)),
            index,
            store,
            clock,
            pending,
            retention_ms: config.retention.as_millis() as i64,
            thumbs: stills::ThumbCache::default(),
            thumb_decodes: work::KeyedLocks::default(),
            decode_slots: work::Slots::new(cores, Duration::from_secs(10)),
            storyboard_makes: work::KeyedLocks::default(),
        }
    }

    /// The device, if `user` may see it (an unknown device and a foreign one look the same).
    pub fn visible(&self, user: &User, device_id: &str) -> Result<VisibleDevice, PlaybackError> {
        if self.index.can_view(user, device_id)? {
            Ok(VisibleDevice { id: device_id.to_string() })
        } else {
            Err(PlaybackError::NotFound)
        }
    }

    pub fn devices(&self, user: &User) -> Result<Vec<DeviceInfo>, PlaybackError> {
        Ok(self.index.devices_visible_to(user)?)
    }

    /// The device's segments in the retention window, oldest first.
    fn window_segments(&self, device: &VisibleDevice) -> Result<Vec<Segment>, PlaybackError> {
        let from = self.clock.now_ms() - self.retention_ms;
        Ok(self.index.segments_between(&device.id, from, i64::MAX)?)
    }

    /// The multivariant playlist: the stored rendition first (what Chromium plays), then 4:2:0.
    pub fn multivariant(&self, device: &VisibleDevice) -> Result<String, PlaybackError> {
        let segments = self.window_segments(device)?;
        // CODECS names the highest level in the window, so the browser checks what it will really get.
        let codec = segments.iter().map(|s| s.codec.as_str()).max().unwrap_or("avc1.F40028");
        let (width, height) = segments.last().map_or((1920, 1080), |s| (s.width, s.height));
        let bandwidth = segments
            .iter()
            .map(|s| (s.bytes as u64 * 8 * 1000) / (s.end_ms - s.start_ms).max(1) as u64)
            .max()
            .unwrap_or(100_000)
            .max(1_000);
        let codec_420 = codec_420(codec);
        let variants = [
            hls::Variant { codec, bandwidth, uri: "media.m3u8" },
            hls::Variant { codec: &codec_420, bandwidth: bandwidth / 2, uri: "media420.m3u8" },
        ];
        Ok(hls::multivariant_playlist(width, height, &variants))
    }

    /// The media playlist of one rendition: the window's segments, with gaps.
    pub fn media_playlist(&self, device: &VisibleDevice, rendition: Rendition) -> Result<String, PlaybackError> {
        let (segments_dir, init_dir) = rendition.uri_dirs();
        let entries = hls::with_gaps(
            self.window_segments(device)?
                .iter()
                .map(|s| Entry::Segment {
                    start_ms: s.start_ms,
                    end_ms: s.end_ms,
                    uri: format!("{segments_dir}/{}.m4s", s.id),
                    init_uri: format!("{init_dir}/{}.mp4", s.init_id),
                })
                .collect(),
        );
        Ok(hls::media_playlist(&entries))
    }

    /// Captures, recorded stretches and gaps in `[from, to)` (defaults: the window up to a
    /// minute from now).
    pub fn timeline(&self, device: &VisibleDevice, from_ms: Option<i64>, to_ms: Option<i64>) -> Result<Timeline, PlaybackError> {
        let now = self.clock.now_ms();
        let window_start = now - self.retention_ms;
        let from = from_ms.unwrap_or(window_start).max(window_start);
        let to = to_ms.unwrap_or(now + MINUTE_MS);
        if to < from {
            return Err(PlaybackError::BadRequest("bad_range", "`to` is before `from`".into()));
        }
        let segments = self.window_segments(device)?;
        let captures = self.index.frames_between(&device.id, from, to)?;
        let mut recorded: Vec<Span> = Vec::new();
        for s in segments.iter().filter(|s| s.end_ms > from && s.start_ms < to) {
            match recorded.last_mut() {
                Some(last) if last.end_ms == s.start_ms => last.end_ms = s.end_ms,
                _ => recorded.push(Span { start_ms: s.start_ms, end_ms: s.end_ms }),
            }
        }
        let activity = self.activity(device, from, to.min(now + MINUTE_MS))?;
        let gaps = recorded.windows(2).map(|w| Span { start_ms: w[0].end_ms, end_ms: w[1].start_ms }).collect();
        Ok(Timeline {
            device: device.id.clone(),
            from_ms: from,
            to_ms: to,
            media_start_ms: segments.first().map(|s| s.start_ms),
            live_edge_ms: segments.last().map(|s| s.end_ms),
            captures: captures.iter().map(|f| f.capture_ms).collect(),
            recorded,
            gaps,
            pending_frames: self.pending.frame_count(),
            activity,
        })
    }

    /// The activity lane of `[from, to)`, from `from` rounded down to the minute.
    fn activity(&self, device: &VisibleDevice, from: i64, to: i64) -> Result<Activity, PlaybackError> {
        let start_ms = from.div_euclid(MINUTE_MS) * MINUTE_MS;
        let minutes = usize::try_from((to - start_ms + MINUTE_MS - 1).div_euclid(MINUTE_MS)).unwrap_or(0);
        let mut values = vec![None; minutes];
        for (minute_ms, bytes) in self.index.activity_between(&device.id, start_ms, to)? {
            if let Some(v) = usize::try_from((minute_ms - start_ms) / MINUTE_MS).ok().and_then(|i| values.get_mut(i)) {
                *v = Some(bytes);
            }
        }
        Ok(Activity { start_ms, step_ms: MINUTE_MS, values })
    }

    /// Media segment `segment_id` of the device in `rendition`; another device's id is NotFound.
    pub fn segment(&self, device: &VisibleDevice, segment_id: i64, rendition: Rendition) -> Result<Vec<u8>, PlaybackError> {
        let seg = self.index.segment(segment_id)?.filter(|s| s.device_id == device.id).ok_or(PlaybackError::NotFound)?;
        match rendition {
            Rendition::Stored => self.store.get(&seg.file)?.ok_or(PlaybackError::NotFound),
            Rendition::Chroma420 => self.variants.segment(&seg),
        }
    }

    /// Init segment `init_id` in `rendition`, if one of the device's segments uses it.
    pub fn init(&self, device: &VisibleDevice, init_id: i64, rendition: Rendition) -> Result<Vec<u8>, PlaybackError> {
        match rendition {
            Rendition::Stored => {
                if !self.index.device_uses_init(&device.id, init_id)? {
                    return Err(PlaybackError::NotFound);
                }
                let init = self.index.init(init_id)?.ok_or(PlaybackError::NotFound)?;
                self.store.get(&init.file)?.ok_or(PlaybackError::NotFound)
            }
            // The variant finds a segment of this device with that init, or answers NotFound.
            Rendition::Chroma420 => self.variants.init(&device.id, init_id),
        }
    }

    /// Removes cached transcodes whose segment is gone and trims the cache to its size (retention).
    pub fn sweep_caches(&self) {
        if let Err(e) = self.variants.sweep() {
            tracing::warn!(error = %e, "cannot sweep the variant cache");
        }
        if let Err(e) = self.sweep_storyboards() {
            tracing::warn!(error = %e, "cannot sweep the storyboard cache");
        }
    }

    /// The device's segment covering `t`, or NotFound (a gap, or outside the footage).
    fn segment_at(&self, device: &VisibleDevice, t_ms: i64) -> Result<Segment, PlaybackError> {
        self.index.segments_between(&device.id, t_ms, t_ms + 1)?.into_iter().next().ok_or(PlaybackError::NotFound)
    }

    /// A segment's init and media bytes.
    fn segment_blobs(&self, seg: &Segment) -> Result<(Vec<u8>, Vec<u8>), PlaybackError> {
        let init = self.index.init(seg.init_id)?.ok_or(PlaybackError::NotFound)?;
        let init_bytes = self.store.get(&init.file)?.ok_or(PlaybackError::NotFound)?;
        let media = self.store.get(&seg.file)?.ok_or(PlaybackError::NotFound)?;
        Ok((init_bytes, media))
    }
}
