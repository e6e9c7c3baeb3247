//! Pure ISO-BMFF box handling: split init from media, read the codec string, rebase fragment times.

use super::MediaError;

/// A top-level (or child) box: its type and byte range within the buffer it was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BoxRef {
    pub kind: [u8; 4],
    pub start: usize,
    pub header: usize,
    pub end: usize,
}

/// The boxes laid one after another in `data`.
pub fn boxes(data: &[u8]) -> Result<Vec<BoxRef>, MediaError> {
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
                (u64::from_be_bytes(ext.try_into().expect("8 bytes")), 16)
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

fn bad(what: &str) -> MediaError {
    MediaError::Mp4(what.to_string())
}

/// Splits a fragmented MP4 into its init part (ftyp+moov) and media part (everything after moov).
pub fn split_init(data: &[u8]) -> Result<(&[u8], &[u8]), MediaError> {
    let all = boxes(data)?;
    let moov = all.iter().find(|b| &b.kind == b"moov").ok_or_else(|| bad("no moov box"))?;
    Ok((&data[..moov.end], &data[moov.end..]))
}

/// `avc1.PPCCLL` from the avcC box inside an init segment.
/// The RFC 6381 codec string of an init segment: H.264 (`avc1.PPCCLL` from avcC) or AV1
/// (`av01.P.LLT.DD` from av1C).
pub fn codec_string(init: &[u8]) -> Result<String, MediaError> {
    if init.windows(4).any(|w| w == b"av1C") {
        av1_codec_string(init)
    } else {
        avc_codec_string(init)
    }
}

/// `av01.<profile>.<level><tier>.<bit depth>` from the av1C box (AV1-ISOBMFF §2.3.3).
pub fn av1_codec_string(init: &[u8]) -> Result<String, MediaError> {
    let at = init.windows(4).position(|w| w == b"av1C").ok_or_else(|| bad("no av1C box"))?;
    let cfg = init.get(at + 4..at + 7).ok_or_else(|| bad("truncated av1C"))?;
    let (profile, level) = (cfg[1] >> 5, cfg[1] & 0x1f);
    let tier = if cfg[2] & 0x80 != 0 { 'H' } else { 'M' };
    let depth = match (cfg[2] & 0x40 != 0, cfg[2] & 0x20 != 0) {
        (true, true) => 12,
        (true, false) => 10,
        _ => 8,
    };
    Ok(format!("av01.{profile}.{level:02}{tier}.{depth:02}"))
}

pub fn avc_codec_string(init: &[u8]) -> Result<String, MediaError> {
    let at = init.windows(4).position(|w| w == b"avcC").ok_or_else(|| bad("no avcC box"))?;
    let cfg = init.get(at + 4..at + 8).ok_or_else(|| bad("truncated avcC"))?;
    Ok(format!("avc1.{:02X}{:02X}{:02X}", cfg[1], cfg[2], cfg[3]))
}

/// Rewrites every `tfdt` in a media segment (moof+mdat…) to `time - offset`, in place.
/// Used to make an export start at 0 without touching the coded frames.
pub fn shift_tfdt(media: &mut [u8], offset: u64) -> Result<(), MediaError> {
    for moof in boxes(media)?.into_iter().filter(|b| &b.kind == b"moof") {
        let moof_body = moof.start + moof.header..moof.end;
        for traf in boxes(&media[moof_body.clone()])?.into_iter().filter(|b| &b.kind == b"traf") {
            let traf_start = moof_body.start + traf.start;
            let traf_body = traf_start + traf.header..moof_body.start + traf.end;
            for tfdt in boxes(&media[traf_body.clone()])?.into_iter().filter(|b| &b.kind == b"tfdt") {
                let at = traf_body.start + tfdt.start + tfdt.header;
                let version = media[at];
                let field = at + 4;
                if version == 1 {
                    let raw = media.get(field..field + 8).ok_or_else(|| bad("truncated tfdt"))?;
                    let t = u64::from_be_bytes(raw.try_into().expect("8 bytes"));
                    let new = t.checked_sub(offset).ok_or_else(|| bad("tfdt before the export start"))?;
                    media[field..field + 8].copy_from_slice(&new.to_be_bytes());
                } else {
                    let raw = media.get(field..field + 4).ok_or_else(|| bad("truncated tfdt"))?;
                    let t = u32::from_be_bytes(raw.try_into().expect("4 bytes")) as u64;
                    let new = t.checked_sub(offset).ok_or_else(|| bad("tfdt before the export start"))?;
                    let new = u32::try_from(new).map_err(|_| bad("tfdt overflows 32 bits"))?;
                    media[field..field + 4].copy_from_slice(&new.to_be_bytes());
                }
            }
        }
    }
    Ok(())
}

/// Reads the first `tfdt` of a media segment.
pub fn first_tfdt(media: &[u8]) -> Result<u64, MediaError> {
    let moof = boxes(media)?.into_iter().find(|b| &b.kind == b"moof").ok_or_else(|| bad("no moof"))?;
    let body = &media[moof.start + moof.header..moof.end];
    let traf = boxes(body)?.into_iter().find(|b| &b.kind == b"traf").ok_or_else(|| bad("no traf"))?;
    let tbody = &body[traf.start + traf.header..traf.end];
    let tfdt = boxes(tbody)?.into_iter().find(|b| &b.kind == b"tfdt").ok_or_else(|| bad("no tfdt"))?;
    let at = tfdt.start + tfdt.header;
    let v = tbody[at];
    let field = &tbody[at + 4..tfdt.end];
    Ok(if v == 1 {
        u64::from_be_bytes(field.get(..8).ok_or_else(|| bad("short tfdt"))?.try_into().expect("8"))
    } else {
        u32::from_be_bytes(field.get(..4).ok_or_else(|| bad("short tfdt"))?.try_into().expect("4")) as u64
    })
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
    fn shifts_v1_tfdt_and_rejects_garbage() {
        let mut tfdt_body = vec![1, 0, 0, 0];
        tfdt_body.extend_from_slice(&1_764_151_200_000u64.to_be_bytes());
        let traf = bx(b"traf", &[bx(b"tfhd", &[0; 8]), bx(b"tfdt", &tfdt_body)].concat());
        let mut media = [bx(b"moof", &[bx(b"mfhd", &[0; 8]), traf].concat()), bx(b"mdat", b"xyz")].concat();
        assert_eq!(first_tfdt(&media).unwrap(), 1_764_151_200_000);
        shift_tfdt(&mut media, 1_764_151_140_000).unwrap();
        assert_eq!(first_tfdt(&media).unwrap(), 60_000);
        assert!(boxes(&[0, 0, 0, 99, b'm', b'o', b'o', b'f']).is_err());
        let init = [bx(b"ftyp", b"iso5"), bx(b"moov", b"..avcC\x01\xF4\x00\x28")].concat();
        let all = [init.clone(), media.clone()].concat();
        let (i, m) = split_init(&all).unwrap();
        assert_eq!((i, m), (&init[..], &media[..]));
        assert_eq!(avc_codec_string(i).unwrap(), "avc1.F40028");
    }
}
