//! Pure HLS rendering: the media playlist of a device's window, and its multivariant wrapper.

use std::fmt::Write;

use crate::clock::{format_rfc3339_ms, MINUTE_MS};

/// One line of the timeline: a stored segment, or a stretch with no footage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    Segment { start_ms: i64, end_ms: i64, uri: String, init_uri: String },
    Gap { start_ms: i64, end_ms: i64 },
}

impl Entry {
    pub fn start_ms(&self) -> i64 {
        match self {
            Entry::Segment { start_ms, .. } | Entry::Gap { start_ms, .. } => *start_ms,
        }
    }
    pub fn end_ms(&self) -> i64 {
        match self {
            Entry::Segment { end_ms, .. } | Entry::Gap { end_ms, .. } => *end_ms,
        }
    }
}

/// Fills the holes between consecutive segments with gap entries of at most one minute, so media
/// time stays wall-clock time and gaps never raise the target duration (docs/media-facts.md, "Gaps").
pub fn with_gaps(segments: Vec<Entry>) -> Vec<Entry> {
    let mut out: Vec<Entry> = Vec::with_capacity(segments.len());
    for seg in segments {
        if let Some(prev_end) = out.last().map(Entry::end_ms) {
            let mut t = prev_end;
            while t < seg.start_ms() {
                let end = ((t / MINUTE_MS) + 1) * MINUTE_MS;
                let end = end.min(seg.start_ms());
                out.push(Entry::Gap { start_ms: t, end_ms: end });
                t = end;
            }
        }
        out.push(seg);
    }
    out
}

/// The media playlist. Live (no ENDLIST): new minutes are appended, old ones slide out.
/// Sequence numbers are anchored at the end: the last entry's number is its minute number, so
/// the fresh one-minute entries keep their numbers as the window slides and as older minutes are
/// compacted into longer entries (a compaction renumbers only the entries before it; the
/// player notices a number that now names another URI and reloads).
pub fn media_playlist(entries: &[Entry]) -> String {
    let mut out = String::with_capacity(96 * entries.len() + 256);
    let target = entries.iter().map(|e| (e.end_ms() - e.start_ms() + 999) / 1000).max().unwrap_or(60).max(1);
    let sequence = entries.last().map_or(0, |e| e.start_ms() / MINUTE_MS - (entries.len() as i64 - 1)).max(0);
    let _ = write!(
        out,
        "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:{target}\n#EXT-X-MEDIA-SEQUENCE:{sequence}\n#EXT-X-INDEPENDENT-SEGMENTS\n"
    );
    let mut current_init: Option<&str> = None;
    for entry in entries {
        let secs = (entry.end_ms() - entry.start_ms()) as f64 / 1000.0;
        match entry {
            Entry::Segment { start_ms, uri, init_uri, .. } => {
                if current_init != Some(init_uri.as_str()) {
                    if current_init.is_some() {
                        out.push_str("#EXT-X-DISCONTINUITY\n");
                    }
                    let _ = writeln!(out, "#EXT-X-MAP:URI=\"{init_uri}\"");
                    current_init = Some(init_uri);
                }
                let _ = write!(out, "#EXT-X-PROGRAM-DATE-TIME:{}\n#EXTINF:{secs:.3},\n{uri}\n", format_rfc3339_ms(*start_ms));
            }
            Entry::Gap { start_ms, .. } => {
                let _ = write!(
                    out,
                    "#EXT-X-PROGRAM-DATE-TIME:{}\n#EXT-X-GAP\n#EXTINF:{secs:.3},\ngap/{start_ms}.m4s\n",
                    format_rfc3339_ms(*start_ms)
                );
            }
        }
    }
    out
}

/// One variant of the multivariant playlist.
pub struct Variant<'a> {
    pub codec: &'a str,
    pub bandwidth: u64,
    pub uri: &'a str,
}

/// The multivariant playlist that names each variant's codec, so players check it before loading
/// media (hls.js drops variants whose CODECS the browser's MSE rejects).
pub fn multivariant_playlist(width: u32, height: u32, variants: &[Variant<'_>]) -> String {
    let mut out = String::from("#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-INDEPENDENT-SEGMENTS\n");
    for v in variants {
        let _ = write!(
            out,
            "#EXT-X-STREAM-INF:BANDWIDTH={},CODECS=\"{}\",RESOLUTION={width}x{height}\n{}\n",
            v.bandwidth, v.codec, v.uri
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: i64 = 1_764_151_200_000;

    fn seg(start: i64, end: i64, n: u32, init: &str) -> Entry {
        Entry::Segment { start_ms: start, end_ms: end, uri: format!("s/{n}.m4s"), init_uri: init.into() }
    }

    #[test]
    fn golden_playlist_with_gap_and_resolution_change() {
        let entries = with_gaps(vec![
            seg(M, M + 60_000, 1, "i/a.mp4"),
            seg(M + 180_000, M + 200_000, 2, "i/a.mp4"),
            seg(M + 200_000, M + 240_000, 3, "i/b.mp4"),
        ]);
        let text = media_playlist(&entries);
        let golden = "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:60\n#EXT-X-MEDIA-SEQUENCE:29402519\n#EXT-X-INDEPENDENT-SEGMENTS\n\
#EXT-X-MAP:URI=\"i/a.mp4\"\n#EXT-X-PROGRAM-DATE-TIME:2025-11-26T10:00:00.000Z\n#EXTINF:60.000,\ns/1.m4s\n\
#EXT-X-PROGRAM-DATE-TIME:2025-11-26T10:01:00.000Z\n#EXT-X-GAP\n#EXTINF:60.000,\ngap/1764151260000.m4s\n\
#EXT-X-PROGRAM-DATE-TIME:2025-11-26T10:02:00.000Z\n#EXT-X-GAP\n#EXTINF:60.000,\ngap/1764151320000.m4s\n\
#EXT-X-PROGRAM-DATE-TIME:2025-11-26T10:03:00.000Z\n#EXTINF:20.000,\ns/2.m4s\n\
#EXT-X-DISCONTINUITY\n#EXT-X-MAP:URI=\"i/b.mp4\"\n#EXT-X-PROGRAM-DATE-TIME:2025-11-26T10:03:20.000Z\n#EXTINF:40.000,\ns/3.m4s\n";
        assert_eq!(text, golden);
        // Media time (sum of EXTINF) equals wall-clock time since the first entry.
        let total: i64 = entries.iter().map(|e| e.end_ms() - e.start_ms()).sum();
        assert_eq!(total, 240_000);
    }
}
