//! The H.264 High 4:2:0 variant, for browsers that cannot decode 4:4:4 (Firefox on most systems,
//! Safari): each segment is transcoded from the stored 4:4:4 one when first asked for, and kept
//! in a bounded cache that retention empties of anything whose segment is gone. Storage stays
//! one copy of the footage (docs/storage.md).

use std::path::PathBuf;
use std::sync::Mutex;

use crate::clock::MINUTE_MS;
use crate::index::{Index, Segment};
use crate::layout::Layout;
use crate::media::ffmpeg::{transcode_segment, EncodeSettings};
use crate::media::MediaError;

#[derive(Debug, thiserror::Error)]
pub enum VariantError {
    #[error(transparent)]
    Index(#[from] crate::index::IndexError),
    #[error(transparent)]
    Media(#[from] MediaError),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The segment (or every segment of an init) is gone, e.g. expired meanwhile.
    #[error("not found")]
    NotFound,
}

/// Transcodes and caches 4:2:0 segments and inits. One transcode at a time: it is CPU-bound, and
/// a second viewer of the same segment then finds it cached.
pub struct Variants {
    layout: Layout,
    index: Index,
    settings: EncodeSettings,
    max_bytes: u64,
    busy: Mutex<()>,
}

/// The 4:2:0 codec string matching a 4:4:4 one (same level): `avc1.F40028` → `avc1.640028`.
pub fn codec_420(codec_444: &str) -> String {
    let level = codec_444.get(codec_444.len().saturating_sub(2)..).unwrap_or("28");
    format!("avc1.6400{level}")
}

impl Variants {
    pub fn new(layout: Layout, index: Index, crf: f32, max_bytes: u64) -> Self {
        let settings = EncodeSettings {
            crf,
            preset: "veryfast".into(),
            threads: 1,
            params: "aq-mode=0:psy=0:force-cfr=1".into(),
            chroma420: true,
            codec: crate::media::ffmpeg::Codec::X264,
        };
        Self { layout, index, settings, max_bytes, busy: Mutex::new(()) }
    }

    fn segment_path(&self, id: i64) -> PathBuf {
        self.layout.variant_dir().join(format!("s{id}.m4s"))
    }

    fn init_path(&self, init_id: i64) -> PathBuf {
        self.layout.variant_dir().join(format!("i{init_id}.mp4"))
    }

    /// The 4:2:0 media segment of a stored segment. Blocking.
    pub fn segment(&self, seg: &Segment) -> Result<Vec<u8>, VariantError> {
        self.cached_or(&self.segment_path(seg.id), || Ok(self.transcode(seg)?.1))
    }

    /// The 4:2:0 init segment that goes with the device's segments using `init_id`. Blocking.
    pub fn init(&self, device_id: &str, init_id: i64) -> Result<Vec<u8>, VariantError> {
        self.cached_or(&self.init_path(init_id), || {
            // Every segment with this init has the same size and settings, so any one gives it.
            let seg = self.index.first_segment_with_init(device_id, init_id)?.ok_or(VariantError::NotFound)?;
            Ok(self.transcode(&seg)?.0)
        })
    }

    /// The cached file at `path`, or what `make` transcodes (one at a time; a request that
    /// waited finds the file its predecessor made).
    fn cached_or(&self, path: &std::path::Path, make: impl FnOnce() -> Result<Vec<u8>, VariantError>) -> Result<Vec<u8>, VariantError> {
        if let Some(bytes) = read_cached(path)? {
            return Ok(bytes);
        }
        let _one_at_a_time = self.busy.lock().unwrap_or_else(|p| p.into_inner());
        match read_cached(path)? {
            Some(bytes) => Ok(bytes),
            None => make(),
        }
    }

    /// Transcodes `seg`, caches its media and (if new) its init; returns both.
    fn transcode(&self, seg: &Segment) -> Result<(Vec<u8>, Vec<u8>), VariantError> {
        let init = self.index.init(seg.init_id)?.ok_or(VariantError::NotFound)?;
        let read = |rel: &str| match std::fs::read(self.layout.resolve(rel)) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(VariantError::NotFound),
            other => other.map_err(VariantError::from),
        };
        let (init_bytes, media) = (read(&init.file)?, read(&seg.file)?);
        // Presentation times as written: the segment's start (its carry, or its first capture
        // shown from the start), then its captures.
        let captures: Vec<i64> = self
            .index
            .frames_between(&seg.device_id, seg.start_ms, seg.end_ms)?
            .into_iter()
            .filter(|f| f.segment_id == seg.id)
            .map(|f| f.capture_ms)
            .collect();
        let skip = usize::from(seg.carry_ms.is_none());
        let pts: Vec<i64> = std::iter::once(seg.start_ms).chain(captures.into_iter().skip(skip)).collect();
        let out = transcode_segment(
            &self.settings,
            init_bytes,
            media,
            (seg.width, seg.height),
            &pts,
            seg.end_ms,
            (seg.start_ms / MINUTE_MS) as u32,
        )?;
        std::fs::create_dir_all(self.layout.variant_dir())?;
        write_cached(&self.layout, &self.segment_path(seg.id), &out.media)?;
        if !self.init_path(seg.init_id).exists() {
            write_cached(&self.layout, &self.init_path(seg.init_id), &out.init)?;
        }
        // Only the size here (a directory listing); retention checks each file against the index.
        if let Err(e) = trim_cache(&self.layout, self.max_bytes, |_| Ok(true)) {
            tracing::warn!(error = %e, "cannot trim the variant cache");
        }
        Ok((out.init, out.media))
    }
}

fn read_cached(path: &std::path::Path) -> Result<Option<Vec<u8>>, VariantError> {
    match std::fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// A cache file appears whole or not at all (written aside, then renamed); no fsync: it can be made again.
fn write_cached(layout: &Layout, path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = layout.tmp_dir().join(format!("variant-{:016x}", rand::random::<u64>()));
    std::fs::create_dir_all(layout.tmp_dir())?;
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

/// Removes cached files whose segment or init no longer exists (expired, or replaced by
/// compaction), then the least recently written until the cache fits `max_bytes`.
/// Returns how many files it removed.
pub fn sweep_cache(layout: &Layout, index: &Index, max_bytes: u64) -> Result<usize, VariantError> {
    trim_cache(layout, max_bytes, |name| {
        if let Some(id) = name.strip_prefix('s').and_then(|n| n.strip_suffix(".m4s")).and_then(|n| n.parse().ok()) {
            Ok(index.segment(id)?.is_some())
        } else if let Some(id) = name.strip_prefix('i').and_then(|n| n.strip_suffix(".mp4")).and_then(|n| n.parse().ok()) {
            Ok(index.init(id)?.is_some())
        } else {
            Ok(false)
        }
    })
}

/// Removes the cached files `alive` rejects, then the least recently written until the rest
/// fits `max_bytes`. Returns how many files it removed.
fn trim_cache(
    layout: &Layout,
    max_bytes: u64,
    mut alive: impl FnMut(&str) -> Result<bool, VariantError>,
) -> Result<usize, VariantError> {
    let entries = match std::fs::read_dir(layout.variant_dir()) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e.into()),
    };
    let mut kept = Vec::new();
    let mut removed = 0;
    for entry in entries {
        let entry = entry?;
        if alive(&entry.file_name().to_string_lossy())? {
            let meta = entry.metadata()?;
            kept.push((meta.modified().unwrap_or(std::time::SystemTime::UNIX_EPOCH), meta.len(), entry.path()));
        } else {
            crate::fsutil::remove_if_exists(&entry.path())?;
            removed += 1;
        }
    }
    kept.sort();
    let mut total: u64 = kept.iter().map(|(_, len, _)| len).sum();
    for (_, len, path) in kept {
        if total <= max_bytes {
            break;
        }
        crate::fsutil::remove_if_exists(&path)?;
        total -= len;
        removed += 1;
    }
    Ok(removed)
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
