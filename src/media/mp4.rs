//! Pure ISO-BMFF box handling: split init from media, read the codec string, join segments into one export.
//!
//! Boxes are parsed and written as types with `mp4-atom` (moov, moof, sample entries); only the
//! top-level walk (`boxes`) and the NAL units inside H.264 samples are read by hand, every index
//! checked. Nothing here panics on any input: a damaged file is an error value.

use std::ops::Range;

use mp4_atom::{Avc3, Codec, Decode, Encode, Header, Mehd, Mfhd, Moof, Moov, Tfdt, Tfhd, Traf, Trex, Trun, TrunEntry, TrunSamples};

use super::MediaError;

/// A top-level (or child) box: its type and byte range within the buffer it was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BoxRef {
    pub kind: [u8; 4],
    pub start: usize,
    pub header: usize,
    pub end: usize,
}

/// Why an export (or a parse) failed.
#[derive(Debug, thiserror::Error)]
pub enum Mp4Error {
    /// Stored bytes that are not what the encoder writes: a bug or a damaged file.
    #[error("malformed MP4: {0}")]
    Malformed(String),
    /// One MP4 track has one codec: H.264 and AV1 cannot be joined without re-encoding.
    #[error("the range holds {first} and {other} video, and one MP4 track cannot hold two codecs")]
    MixedCodecs { first: String, other: String },
    /// A change that one sample entry cannot carry (AV1 configuration, NAL length size, timescale).
    #[error("the range changes {0} part-way, which one MP4 track cannot carry")]
    FormatChange(&'static str),
}

impl From<mp4_atom::Error> for Mp4Error {
    fn from(e: mp4_atom::Error) -> Self {
        Mp4Error::Malformed(e.to_string())
    }
}

impl From<Mp4Error> for MediaError {
    fn from(e: Mp4Error) -> Self {
        match e {
            Mp4Error::Malformed(what) => MediaError::Mp4(what),
            other => MediaError::Mp4(other.to_string()),
        }
    }
}

fn bad(what: impl Into<String>) -> Mp4Error {
    Mp4Error::Malformed(what.into())
}

/// The boxes laid one after another in `data`.
pub fn boxes(data: &[u8]) -> Result<Vec<BoxRef>, MediaError> {
    Ok(walk(data)?)
}

fn walk(data: &[u8]) -> Result<Vec<BoxRef>, Mp4Error> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < data.len() {
        let head = data.get(pos..pos + 8).ok_or_else(|| bad("truncated box header"))?;
        let size32 = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as u64;
        let kind = [head[4], head[5], head[6], head[7]];
        let (size, header) = match size32 {
            0 => ((data.len() - pos) as u64, 8),
            1 => {
                let ext = data.get(pos + 8..pos + 16).ok_or_else(|| bad("truncated large size"))?;
                let mut be = [0u8; 8];
                be.copy_from_slice(ext);
                (u64::from_be_bytes(be), 16)
            }
            n => (n, 8),
        };
        if size < header as u64 || pos as u64 + size > data.len() as u64 {
            return Err(bad("box size out of range"));
        }
        let end = pos + size as usize;
        out.push(BoxRef { kind, start: pos, header, end });
        pos = end;
    }
    Ok(out)
}

/// Splits a fragmented MP4 into its init part (ftyp+moov) and media part (everything after moov).
pub fn split_init(data: &[u8]) -> Result<(&[u8], &[u8]), MediaError> {
    let all = boxes(data)?;
    let moov = all.iter().find(|b| &b.kind == b"moov").ok_or_else(|| bad("no moov box"))?;
    Ok((&data[..moov.end], &data[moov.end..]))
}

/// The RFC 6381 codec string of an init segment: H.264 (`avc1.PPCCLL` from avcC) or AV1
/// (`av01.P.LLT.DD` from av1C).
pub fn codec_string(init: &[u8]) -> Result<String, MediaError> {
    Ok(entry_codec_string(&Init::parse(init)?.entry)?)
}

fn entry_codec_string(entry: &Codec) -> Result<String, Mp4Error> {
    let avc = |kind: &str, c: &mp4_atom::Avcc| {
        format!("{kind}.{:02X}{:02X}{:02X}", c.avc_profile_indication, c.profile_compatibility, c.avc_level_indication)
    };
    match entry {
        Codec::Avc1(a) => Ok(avc("avc1", &a.avcc)),
        Codec::Avc3(a) => Ok(avc("avc3", &a.avcc)),
        Codec::Av01(a) => {
            let c = &a.av1c;
            let tier = if c.seq_tier_0 { 'H' } else { 'M' };
            let depth = match (c.high_bitdepth, c.twelve_bit) {
                (true, true) => 12,
                (true, false) => 10,
                _ => 8,
            };
            Ok(format!("av01.{}.{:02}{tier}.{depth:02}", c.seq_profile, c.seq_level_idx_0))
        }
        _ => Err(bad("a sample entry other than avc1, avc3 or av01")),
    }
}

/// Reads the first `tfdt` of a media segment.
pub fn first_tfdt(media: &[u8]) -> Result<u64, MediaError> {
    let all = walk(media)?;
    let moof = all.iter().find(|b| &b.kind == b"moof").ok_or_else(|| bad("no moof"))?;
    let moof = decode_exact::<Moof>(media, moof)?;
    let tfdt = moof.traf.first().and_then(|t| t.tfdt.as_ref()).ok_or_else(|| bad("no tfdt"))?;
    Ok(tfdt.base_media_decode_time)
}

/// The size in bytes of every sample of a media segment we wrote, in decode order (sizes from
/// each trun entry, else the fragment's default). Used to measure how much a screen changed.
pub fn sample_sizes(media: &[u8]) -> Result<Vec<u32>, MediaError> {
    let mut sizes = Vec::new();
    for moof_box in walk(media)?.iter().filter(|b| &b.kind == b"moof") {
        let moof = decode_exact::<Moof>(media, moof_box)?;
        for traf in &moof.traf {
            for trun in &traf.trun {
                for sample in trun.samples.iter() {
                    sizes.push(sample.size.or(traf.tfhd.default_sample_size).ok_or_else(|| bad("a sample without a size"))?);
                }
            }
        }
    }
    Ok(sizes)
}

/// Decodes the box `at` of `data` as `T`; the box must be exactly one `T`.
fn decode_exact<T: Decode>(data: &[u8], at: &BoxRef) -> Result<T, Mp4Error> {
    let mut body = data.get(at.start..at.end).ok_or_else(|| bad("box out of range"))?;
    let value = T::decode(&mut body)?;
    if !body.is_empty() {
        return Err(bad("trailing bytes after a box"));
    }
    Ok(value)
}

/// An init segment, parsed: its ftyp bytes, its moov, and the one video track's particulars.
struct Init<'a> {
    ftyp: &'a [u8],
    moov: Moov,
    entry: Codec,
    track_id: u32,
    timescale: u32,
    trex: Option<Trex>,
}

impl<'a> Init<'a> {
    fn parse(init: &'a [u8]) -> Result<Self, Mp4Error> {
        let all = walk(init)?;
        let ftyp = all.iter().find(|b| &b.kind == b"ftyp").ok_or_else(|| bad("no ftyp box"))?;
        let moov_box = all.iter().find(|b| &b.kind == b"moov").ok_or_else(|| bad("no moov box"))?;
        let moov = decode_exact::<Moov>(init, moov_box)?;
        let [trak] = moov.trak.as_slice() else {
            return Err(bad("expected exactly one track"));
        };
        let [entry] = trak.mdia.minf.stbl.stsd.codecs.as_slice() else {
            return Err(bad("expected exactly one sample entry"));
        };
        let track_id = trak.tkhd.track_id;
        let timescale = trak.mdia.mdhd.timescale;
        if timescale == 0 {
            return Err(bad("media timescale 0"));
        }
        let trex = moov.mvex.as_ref().and_then(|m| m.trex.iter().find(|t| t.track_id == track_id)).cloned();
        let entry = entry.clone();
        Ok(Init { ftyp: &init[ftyp.start..ftyp.end], moov, entry, track_id, timescale, trex })
    }
}

/// One stored segment to export: its init segment (ftyp+moov) and its media (moof+mdat…).
#[derive(Debug, Clone, Copy)]
pub struct ExportPart<'a> {
    pub init: &'a [u8],
    pub media: &'a [u8],
}

/// Joins `parts` (in time order) into one fragmented MP4 whose time 0 is `start_ms` (unix ms).
/// See [`Export`].
pub fn export_fmp4(parts: &[ExportPart<'_>], start_ms: i64) -> Result<Vec<u8>, Mp4Error> {
    let inits: Vec<&[u8]> = parts.iter().map(|p| p.init).collect();
    let mut export = Export::new(&inits, start_ms)?;
    for (i, part) in parts.iter().enumerate() {
        export.push(i, part.media)?;
    }
    export.finish()
}

/// How the samples of one input init are carried into the export.
struct Source {
    track_id: u32,
    trex: Trex,
    /// H.264 only: the NAL length size and this init's SPS (+ SPS extension) and PPS, each
    /// length-prefixed, ready to put in front of a keyframe.
    h264: Option<(usize, Vec<u8>)>,
}

/// One downloadable fragmented MP4 made of stored segments, without re-encoding.
///
/// One-minute and compacted segments are encoded with different x264 settings (and a resolution
/// change makes a new init), so their SPS/PPS differ and no single `avc1` sample entry describes
/// them all. When the inits' avcC differ, the export's sample entry is `avc3` (ISO/IEC 14496-15:
/// parameter sets may be in-band) with the first init's avcC, and every keyframe gets its own
/// segment's SPS and PPS in front of it, so a decoder follows each change at the keyframe that
/// starts it (measured: ffmpeg decodes every frame, Chromium's `<video src>` plays, seeks back
/// and forth and switches size), and a seek to any keyframe has the right ones. That
/// costs a few dozen bytes per keyframe and no re-encode; several sample entries would instead
/// need `sample_description_index` switching, which players follow poorly, and a re-mux through
/// libavformat cannot change extradata mid-stream. When one avcC covers every part, the entry
/// stays `avc1` and the samples are copied unchanged (the widest player support).
///
/// AV1 carries its sequence header in-band already, but its sample entry must match it, so an
/// AV1 range whose sample entries differ is refused, as is a range mixing H.264 and AV1.
///
/// Every fragment gets a new sequence number, its tfdt rebased to the export start, one trun
/// with explicit sizes, durations and flags, and its data offset recomputed. The output is built
/// as parts are pushed, so only one input segment need be in memory beside it.
pub struct Export {
    sources: Vec<Source>,
    in_band: bool,
    moov: Moov,
    out_track_id: u32,
    movie_timescale: u32,
    media_timescale: u32,
    /// ftyp + moov as first written (with a placeholder duration), then the fragments.
    out: Vec<u8>,
    ftyp_len: usize,
    init_len: usize,
    start_ts: u64,
    end_ts: Option<u64>,
    sequence: u32,
}

impl Export {
    /// Checks that `inits` can share one track and writes the export's init segment.
    /// `push` then names an init by its index in `inits`.
    pub fn new(inits: &[&[u8]], start_ms: i64) -> Result<Self, Mp4Error> {
        let parsed = inits.iter().map(|i| Init::parse(i)).collect::<Result<Vec<_>, _>>()?;
        let first = parsed.first().ok_or_else(|| bad("nothing to export"))?;
        let start_ms = u64::try_from(start_ms).map_err(|_| bad("export start before 1970"))?;
        let start_ts = u64::try_from(start_ms as u128 * first.timescale as u128 / 1000).map_err(|_| bad("export start overflows"))?;
        if parsed.iter().any(|p| p.timescale != first.timescale) {
            return Err(Mp4Error::FormatChange("the media timescale"));
        }
        let first_name = entry_codec_string(&first.entry)?;
        let (entry, in_band) = match &first.entry {
            Codec::Avc1(_) | Codec::Avc3(_) => {
                let mut configs = Vec::with_capacity(parsed.len());
                for p in &parsed {
                    match &p.entry {
                        Codec::Avc1(a) => configs.push(&a.avcc),
                        Codec::Avc3(a) => configs.push(&a.avcc),
                        other => return Err(Mp4Error::MixedCodecs { first: first_name, other: entry_codec_string(other)? }),
                    }
                }
                if configs.iter().any(|c| c.length_size != configs[0].length_size) {
                    return Err(Mp4Error::FormatChange("the H.264 NAL length size"));
                }
                let in_band = matches!(first.entry, Codec::Avc3(_)) || configs.iter().any(|c| *c != configs[0]);
                let entry = match (&first.entry, in_band) {
                    (Codec::Avc1(a), true) => Codec::Avc3(Avc3 {
                        visual: a.visual.clone(),
                        avcc: a.avcc.clone(),
                        btrt: a.btrt.clone(),
                        colr: a.colr.clone(),
                        pasp: a.pasp.clone(),
                        taic: a.taic.clone(),
                        fiel: a.fiel.clone(),
                        spatial: a.spatial.clone(),
                    }),
                    (other, _) => other.clone(),
                };
                (entry, in_band)
            }
            Codec::Av01(_) => {
                for p in &parsed {
                    match &p.entry {
                        Codec::Av01(_) if p.entry == first.entry => {}
                        Codec::Av01(_) => return Err(Mp4Error::FormatChange("the AV1 sequence header (settings or size)")),
                        other => return Err(Mp4Error::MixedCodecs { first: first_name, other: entry_codec_string(other)? }),
                    }
                }
                (first.entry.clone(), false)
            }
            _ => return Err(bad("a sample entry other than avc1, avc3 or av01")),
        };

        let mut sources = Vec::with_capacity(parsed.len());
        for p in &parsed {
            let trex = p.trex.clone().ok_or_else(|| bad("not a fragmented MP4 (no trex)"))?;
            let h264 = match &p.entry {
                Codec::Avc1(a) => Some(parameter_sets(&a.avcc)?),
                Codec::Avc3(a) => Some(parameter_sets(&a.avcc)?),
                _ => None,
            };
            sources.push(Source { track_id: p.track_id, trex, h264 });
        }

        let mut moov = first.moov.clone();
        let out_track_id = first.track_id;
        let movie_timescale = moov.mvhd.timescale;
        let trak = moov.trak.first_mut().ok_or_else(|| bad("no track"))?;
        trak.mdia.minf.stbl.stsd.codecs = vec![entry];
        let mvex = moov.mvex.as_mut().ok_or_else(|| bad("no mvex"))?;
        // Filled in by `finish`; its size is fixed (version 1), so the init is written once now.
        mvex.mehd = Some(Mehd { fragment_duration: 0 });
        for trex in &mut mvex.trex {
            trex.default_sample_description_index = 1;
        }
        let mut out = first.ftyp.to_vec();
        let ftyp_len = out.len();
        moov.encode(&mut out)?;
        let init_len = out.len();
        Ok(Export {
            sources,
            in_band,
            moov,
            out_track_id,
            movie_timescale,
            media_timescale: first.timescale,
            out,
            ftyp_len,
            init_len,
            start_ts,
            end_ts: None,
            sequence: 0,
        })
    }

    /// Appends the fragments of one media segment described by init `init`; segments must come
    /// in time order and not overlap.
    pub fn push(&mut self, init: usize, media: &[u8]) -> Result<(), Mp4Error> {
        let source = self.sources.get(init).ok_or_else(|| bad("no such init"))?;
        let all = walk(media)?;
        let mdats: Vec<Range<usize>> = all.iter().filter(|b| &b.kind == b"mdat").map(|b| b.start + b.header..b.end).collect();
        let mut first_sample = true;
        let mut fragments = Vec::new();
        for moof_box in all.iter().filter(|b| &b.kind == b"moof") {
            let moof = decode_exact::<Moof>(media, moof_box)?;
            let [traf] = moof.traf.as_slice() else {
                return Err(bad("expected one track fragment per moof"));
            };
            let tfhd = &traf.tfhd;
            if tfhd.track_id != source.track_id {
                return Err(bad("a fragment of another track"));
            }
            if tfhd.base_data_offset.is_some() || tfhd.sample_description_index.is_some_and(|i| i != 1) {
                return Err(bad("unsupported tfhd (absolute data offset or second sample entry)"));
            }
            let tfdt = traf.tfdt.as_ref().ok_or_else(|| bad("fragment without tfdt"))?.base_media_decode_time;
            let decode_time = tfdt.checked_sub(self.start_ts).ok_or_else(|| bad("a fragment before the export start"))?;
            if self.end_ts.is_some_and(|end| tfdt < end) {
                return Err(bad("fragments overlap in time"));
            }

            let mut entries = Vec::new();
            let mut data = Vec::new();
            let mut duration: u64 = 0;
            let mut next: Option<usize> = None;
            for trun in &traf.trun {
                let mut at = match trun.data_offset {
                    Some(off) => moof_box.start.checked_add_signed(off as isize).ok_or_else(|| bad("data offset out of range"))?,
                    // No offset: right after the previous run, or at the base (the moof) for the first.
                    None => next.unwrap_or(moof_box.start),
                };
                for sample in trun.samples.iter() {
                    let size = sample.size.or(tfhd.default_sample_size).unwrap_or(source.trex.default_sample_size) as usize;
                    let sample_duration = sample.duration.or(tfhd.default_sample_duration).unwrap_or(source.trex.default_sample_duration);
                    let flags = sample.flags.or(tfhd.default_sample_flags).unwrap_or(source.trex.default_sample_flags);
                    let end = at.checked_add(size).ok_or_else(|| bad("sample size overflows"))?;
                    // Also bounds a run's sample count by the bytes there are.
                    if size == 0 || !mdats.iter().any(|m| m.start <= at && end <= m.end) {
                        return Err(bad("a sample outside every mdat"));
                    }
                    let bytes = &media[at..end];
                    let before = data.len();
                    match &source.h264 {
                        Some((length_size, sets)) if self.in_band => {
                            // Non-sync flag clear: a sync sample, which a seek may start from.
                            let sync = first_sample || flags & 0x0001_0000 == 0;
                            append_with_parameter_sets(&mut data, bytes, *length_size, sets, sync)?;
                        }
                        _ => data.extend_from_slice(bytes),
                    }
                    let new_size = u32::try_from(data.len() - before).map_err(|_| bad("sample too large"))?;
                    entries.push(TrunEntry { duration: Some(sample_duration), size: Some(new_size), flags: Some(flags), cts: sample.cts });
                    duration += sample_duration as u64;
                    first_sample = false;
                    at = end;
                }
                next = Some(at);
            }
            if !entries.is_empty() {
                fragments.push((decode_time, entries, data));
            }
            self.end_ts = Some(tfdt.checked_add(duration).ok_or_else(|| bad("fragment end overflows"))?);
        }
        if fragments.is_empty() {
            return Err(bad("a media segment without samples"));
        }
        for (decode_time, entries, data) in fragments {
            self.write_fragment(decode_time, entries, &data)?;
        }
        Ok(())
    }

    fn write_fragment(&mut self, decode_time: u64, entries: Vec<TrunEntry>, data: &[u8]) -> Result<(), Mp4Error> {
        self.sequence = self.sequence.checked_add(1).ok_or_else(|| bad("too many fragments"))?;
        let mut moof = Moof {
            mfhd: Mfhd { sequence_number: self.sequence },
            traf: vec![Traf {
                tfhd: Tfhd { track_id: self.out_track_id, default_base_is_moof: true, ..Default::default() },
                tfdt: Some(Tfdt { base_media_decode_time: decode_time }),
                trun: vec![Trun { data_offset: Some(0), samples: TrunSamples::Explicit(entries) }],
                ..Default::default()
            }],
        };
        let mut sized = Vec::new();
        moof.encode(&mut sized)?;
        let mdat_header = if data.len() + 8 > u32::MAX as usize { 16 } else { 8 };
        let offset = i32::try_from(sized.len() + mdat_header).map_err(|_| bad("moof too large"))?;
        if let Some(trun) = moof.traf.first_mut().and_then(|t| t.trun.first_mut()) {
            trun.data_offset = Some(offset);
        }
        let before = self.out.len();
        moof.encode(&mut self.out)?;
        if self.out.len() - before != sized.len() {
            return Err(bad("moof size changed with its data offset"));
        }
        Header { kind: mdat_atom(), size: Some(data.len()) }.encode(&mut self.out)?;
        self.out.extend_from_slice(data);
        Ok(())
    }

    /// The whole file: the init (now with the total duration in mehd) and every fragment.
    pub fn finish(mut self) -> Result<Vec<u8>, Mp4Error> {
        let end = self.end_ts.filter(|_| self.sequence > 0).ok_or_else(|| bad("nothing to export"))?;
        let media_duration = end.saturating_sub(self.start_ts) as u128;
        let movie_duration = media_duration * self.movie_timescale as u128 / self.media_timescale as u128;
        if let Some(mvex) = self.moov.mvex.as_mut() {
            mvex.mehd = Some(Mehd { fragment_duration: u64::try_from(movie_duration).unwrap_or(u64::MAX) });
        }
        let mut moov = Vec::new();
        self.moov.encode(&mut moov)?;
        let slot = self.out.get_mut(self.ftyp_len..self.init_len).ok_or_else(|| bad("init out of range"))?;
        if slot.len() != moov.len() {
            return Err(bad("moov size changed with its duration"));
        }
        slot.copy_from_slice(&moov);
        Ok(self.out)
    }
}

fn mdat_atom() -> mp4_atom::FourCC {
    mp4_atom::FourCC::new(b"mdat")
}

/// An init's SPS (+ extension) and PPS NAL units, each behind a `length_size`-byte length.
fn parameter_sets(avcc: &mp4_atom::Avcc) -> Result<(usize, Vec<u8>), Mp4Error> {
    let length_size = avcc.length_size as usize;
    if !(1..=4).contains(&length_size) {
        return Err(bad("NAL length size outside 1-4"));
    }
    let ext = avcc.ext.iter().flat_map(|e| e.sequence_parameter_sets_ext.iter());
    let mut out = Vec::new();
    for nal in avcc.sequence_parameter_sets.iter().chain(ext).chain(avcc.picture_parameter_sets.iter()) {
        if nal.is_empty() || (length_size < 4 && nal.len() >> (8 * length_size) != 0) {
            return Err(bad("a parameter set does not fit the NAL length size"));
        }
        out.extend_from_slice(&(nal.len() as u32).to_be_bytes()[4 - length_size..]);
        out.extend_from_slice(nal);
    }
    if avcc.sequence_parameter_sets.is_empty() || avcc.picture_parameter_sets.is_empty() {
        return Err(bad("avcC without SPS or PPS"));
    }
    Ok((length_size, out))
}

/// Appends one H.264 sample, with `sets` in front of its first slice when it is a keyframe
/// (`sync`, or it holds an IDR slice) that does not carry an SPS of its own. An access unit
/// delimiter, which must come first, stays first.
fn append_with_parameter_sets(out: &mut Vec<u8>, sample: &[u8], length_size: usize, sets: &[u8], sync: bool) -> Result<(), Mp4Error> {
    let (mut pos, mut after_aud) = (0, 0);
    let (mut idr, mut sps) = (false, false);
    while pos < sample.len() {
        let len = sample
            .get(pos..pos + length_size)
            .ok_or_else(|| bad("truncated NAL length"))?
            .iter()
            .fold(0usize, |n, b| (n << 8) | *b as usize);
        let start = pos + length_size;
        let end = start.checked_add(len).filter(|e| *e <= sample.len()).ok_or_else(|| bad("NAL unit past its sample"))?;
        let header = sample.get(start).ok_or_else(|| bad("empty NAL unit"))?;
        match header & 0x1f {
            5 => idr = true,
            7 => sps = true,
            9 if pos == 0 => after_aud = end,
            _ => {}
        }
        pos = end;
    }
    if (sync || idr) && !sps {
        out.extend_from_slice(&sample[..after_aud]);
        out.extend_from_slice(sets);
        out.extend_from_slice(&sample[after_aud..]);
    } else {
        out.extend_from_slice(sample);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bx(kind: &[u8; 4], body: &[u8]) -> Vec<u8> {
        let mut v = ((body.len() + 8) as u32).to_be_bytes().to_vec();
        v.extend_from_slice(kind);
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn reads_tfdt_splits_init_and_rejects_garbage() {
        let mut tfdt_body = vec![1, 0, 0, 0];
        tfdt_body.extend_from_slice(&1_764_151_200_000u64.to_be_bytes());
        let traf = bx(b"traf", &[bx(b"tfhd", &[0, 2, 0, 0, 0, 0, 0, 1]), bx(b"tfdt", &tfdt_body)].concat());
        let media = [bx(b"moof", &[bx(b"mfhd", &[0, 0, 0, 0, 0, 0, 0, 1]), traf].concat()), bx(b"mdat", b"xyz")].concat();
        assert_eq!(first_tfdt(&media).unwrap(), 1_764_151_200_000);
        assert!(boxes(&[0, 0, 0, 99, b'm', b'o', b'o', b'f']).is_err());
        // An empty tfdt was read past its end before.
        let short = [bx(b"moof", &[bx(b"mfhd", &[0; 8]), bx(b"traf", &[bx(b"tfhd", &[0; 8]), bx(b"tfdt", &[])].concat())].concat())].concat();
        assert!(first_tfdt(&short).is_err());
        let init = [bx(b"ftyp", b"iso5"), bx(b"moov", b"..avcC\x01\xF4\x00\x28")].concat();
        let all = [init.clone(), media.clone()].concat();
        let (i, m) = split_init(&all).unwrap();
        assert_eq!((i, m), (&init[..], &media[..]));
        assert!(codec_string(i).is_err(), "bytes that merely contain `avcC` are not an init");
    }

    use crate::media::ffmpeg::{decode_segment, encode_segment, yuv_to_rgb, Codec as VideoCodec, EncodeSettings, EncodedSegment};
    use crate::media::{psnr_rgb, Picture};
    use crate::synth::screenshot;

    const T0: i64 = 1_764_151_200_000;

    /// The one-minute (hot) or compacted (cold) x264 settings of the default config (config.rs),
    /// spelled out: media knows nothing of config.
    fn settings(cold: bool) -> EncodeSettings {
        let (crf, preset, params) = if cold {
            (22.0, "medium", "aq-mode=0:psy=0:force-cfr=1:me=umh:merange=128:ref=8:rc-lookahead=10:no-deblock=1")
        } else {
            (20.0, "veryfast", "aq-mode=0:psy=0:force-cfr=1")
        };
        EncodeSettings { crf, preset: preset.into(), threads: 1, params: params.into(), chroma420: false, codec: VideoCodec::X264 }
    }

    /// A segment of `size` frames at `times` (unix ms), ending at `end_ms`; returns the pictures too.
    fn segment(settings: &EncodeSettings, size: (u32, u32), times: &[i64], end_ms: i64, index: u32) -> (EncodedSegment, Vec<crate::media::png::RgbImage>) {
        let pics: Vec<_> = times.iter().enumerate().map(|(i, t)| screenshot(size.0, size.1, *t, i as u64 + index as u64 * 10, 1)).collect();
        let seg = encode_segment(settings, size, times, end_ms, index, |i| Ok(Picture::Rgb(pics[i].clone()))).unwrap();
        (seg, pics)
    }

    fn parts(segs: &[EncodedSegment]) -> Vec<ExportPart<'_>> {
        segs.iter().map(|s| ExportPart { init: &s.init, media: &s.media }).collect()
    }

    /// (sequence number, tfdt) of every fragment of a whole file.
    fn fragments(file: &[u8]) -> Vec<(u32, u64)> {
        walk(file)
            .unwrap()
            .iter()
            .filter(|b| &b.kind == b"moof")
            .map(|b| {
                let moof = decode_exact::<Moof>(file, b).unwrap();
                (moof.mfhd.sequence_number, moof.traf[0].tfdt.as_ref().unwrap().base_media_decode_time)
            })
            .collect()
    }

    #[test]
    fn export_joins_other_settings_and_sizes_with_in_band_parameter_sets() {
        // A compacted block, then one-minute segments, one of them at another size: three inits.
        let (cold, hot, small) = (settings(true), settings(false), (320, 200));
        let plan = [
            (&cold, small, vec![T0, T0 + 10_000, T0 + 70_000, T0 + 100_000], T0 + 120_000),
            (&hot, small, vec![T0 + 120_000, T0 + 150_000], T0 + 180_000),
            (&hot, (400, 242), vec![T0 + 180_000, T0 + 181_000, T0 + 239_999], T0 + 240_000),
        ];
        let (mut segs, mut originals) = (Vec::new(), Vec::new());
        for (i, (settings, size, times, end)) in plan.iter().enumerate() {
            let (seg, pics) = segment(settings, *size, times, *end, i as u32 + 1);
            segs.push(seg);
            originals.extend(times.iter().copied().zip(pics));
        }
        assert!(segs[0].init != segs[1].init && segs[1].init != segs[2].init, "three different inits");

        let file = export_fmp4(&parts(&segs), T0).unwrap();
        let (init, media) = split_init(&file).unwrap();
        let out = Init::parse(init).unwrap();
        assert!(matches!(out.entry, Codec::Avc3(_)), "in-band parameter sets: {:?}", entry_codec_string(&out.entry));
        assert_eq!(out.moov.mvex.as_ref().unwrap().mehd.as_ref().unwrap().fragment_duration, 240_000, "whole duration");
        let frags = fragments(&file);
        assert_eq!(frags.iter().map(|f| f.0).collect::<Vec<_>>(), (1..=frags.len() as u32).collect::<Vec<_>>(), "sequence numbers 1, 2, …");
        assert_eq!(frags.first().map(|f| f.1), Some(0), "times from 0");

        let frames = decode_segment(init, media).unwrap();
        let pts: Vec<i64> = frames.iter().map(|f| f.0).collect();
        assert_eq!(pts, originals.iter().map(|(t, _)| t - T0).collect::<Vec<_>>(), "every frame, each at its time");
        for ((t, yuv), (_, original)) in frames.iter().zip(&originals) {
            let rgb = yuv_to_rgb(yuv).unwrap();
            assert_eq!((rgb.width, rgb.height), (original.width, original.height), "size of the frame at {t}");
            let p = psnr_rgb(&rgb, original);
            assert!(p >= 45.0, "frame at {t}: {p:.1} dB");
        }
    }

    #[test]
    fn export_under_one_init_keeps_avc1_and_the_coded_samples() {
        let hot = settings(false);
        let (a, _) = segment(&hot, (160, 100), &[T0 + 5_000, T0 + 30_000], T0 + 60_000, 1);
        let (b, _) = segment(&hot, (160, 100), &[T0 + 60_000], T0 + 120_000, 2);
        assert_eq!(a.init, b.init);
        let file = export_fmp4(&parts(&[a.clone(), b.clone()]), T0 + 5_000).unwrap();
        let (init, media) = split_init(&file).unwrap();
        assert!(matches!(Init::parse(init).unwrap().entry, Codec::Avc1(_)), "one avcC: the entry stays avc1");
        // Same coded bytes: every mdat of the inputs appears unchanged.
        for m in walk(&a.media).unwrap().iter().chain(walk(&b.media).unwrap().iter()).filter(|x| &x.kind == b"mdat") {
            let body = if m.start < a.media.len() && a.media.get(m.start..m.end).is_some_and(|x| &x[4..8] == b"mdat") { &a.media } else { &b.media };
            let needle = &body[m.start + m.header..m.end];
            assert!(media.windows(needle.len()).any(|w| w == needle), "samples copied unchanged");
        }
        let pts: Vec<i64> = decode_segment(init, media).unwrap().iter().map(|f| f.0).collect();
        assert_eq!(pts, vec![0, 25_000, 55_000]);
        assert_eq!(fragments(&file).iter().map(|f| f.1).collect::<Vec<_>>(), vec![0, 55_000]);
        assert!(matches!(export_fmp4(&parts(std::slice::from_ref(&a)), T0 + 6_000), Err(Mp4Error::Malformed(_))), "a fragment before the start");
        assert!(matches!(export_fmp4(&parts(&[b, a]), T0), Err(Mp4Error::Malformed(_))), "out of order");
    }

    #[test]
    fn export_refuses_to_mix_h264_and_av1() {
        let av1 = EncodeSettings { crf: 30.0, preset: "8".into(), threads: 1, params: String::new(), chroma420: false, codec: VideoCodec::Av1 };
        let (a, _) = segment(&settings(false), (64, 48), &[T0], T0 + 60_000, 1);
        let (b, _) = segment(&av1, (64, 48), &[T0 + 60_000], T0 + 120_000, 2);
        let err = export_fmp4(&parts(&[a.clone(), b.clone()]), T0).unwrap_err();
        assert!(matches!(&err, Mp4Error::MixedCodecs { first, other } if first.starts_with("avc1.F4") && other.starts_with("av01.1")), "{err}");
        assert!(matches!(export_fmp4(&parts(&[b.clone(), a]), T0), Err(Mp4Error::MixedCodecs { .. })));
        // AV1 alone, under one sample entry, joins.
        let (c, _) = segment(&av1, (64, 48), &[T0 + 120_000], T0 + 180_000, 3);
        let file = export_fmp4(&parts(&[b.clone(), c]), T0 + 60_000).unwrap();
        let (init, media) = split_init(&file).unwrap();
        assert_eq!(decode_segment(init, media).unwrap().iter().map(|f| f.0).collect::<Vec<_>>(), vec![0, 60_000]);
        let (d, _) = segment(&av1, (80, 48), &[T0 + 120_000], T0 + 180_000, 3);
        assert!(matches!(export_fmp4(&parts(&[b, d]), T0 + 60_000), Err(Mp4Error::FormatChange(_))));
    }

    #[test]
    fn damaged_input_is_an_error_never_a_panic() {
        let (a, _) = segment(&settings(true), (64, 48), &[T0, T0 + 20_000], T0 + 60_000, 1);
        let (b, _) = segment(&settings(false), (64, 48), &[T0 + 60_000], T0 + 120_000, 2);
        assert!(export_fmp4(&parts(&[a.clone(), b.clone()]), T0).is_ok());
        assert!(export_fmp4(&[], T0).is_err());
        // A deterministic walk over single-byte damage and truncation of either part.
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let (mut ok, mut refused) = (0, 0);
        for round in 0..3000 {
            let (mut init, mut media) = (b.init.clone(), b.media.clone());
            let target = if round % 2 == 0 { &mut init } else { &mut media };
            let at = (next() as usize) % target.len();
            match round % 3 {
                0 => target.truncate(at),
                _ => target[at] = next() as u8,
            }
            let damaged = [ExportPart { init: &a.init, media: &a.media }, ExportPart { init: &init, media: &media }];
            match export_fmp4(&damaged, T0) {
                Ok(_) => ok += 1,
                Err(_) => refused += 1,
            }
            let _ = codec_string(&init);
            let _ = first_tfdt(&media);
        }
        assert!(refused > 100 && ok > 100, "{ok} exported, {refused} refused");
    }
}
