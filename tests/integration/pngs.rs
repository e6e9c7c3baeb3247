//! Hand-made PNGs: every colour type, interlaced, and broken ones, for the bad-input tests.

use std::io::Write;

pub fn chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
    let mut out = (data.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    let mut h = crc32fast::Hasher::new();
    h.update(kind);
    h.update(data);
    out.extend_from_slice(&h.finalize().to_be_bytes());
    out
}

fn ihdr(w: u32, h: u32, depth: u8, colour: u8, interlace: u8) -> Vec<u8> {
    let mut d = w.to_be_bytes().to_vec();
    d.extend_from_slice(&h.to_be_bytes());
    d.extend_from_slice(&[depth, colour, 0, 0, interlace]);
    chunk(b"IHDR", &d)
}

fn zlib(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// Bytes per pixel for the colour types used here (depth 8 or 16).
fn channels(colour: u8) -> usize {
    match colour {
        0 | 3 => 1,
        4 => 2,
        2 => 3,
        6 => 4,
        _ => unreachable!(),
    }
}

/// A PNG of the given type whose sample values come from `f(x, y, channel)`.
pub fn make(w: u32, h: u32, depth: u8, colour: u8, interlaced: bool, f: impl Fn(u32, u32, usize) -> u16) -> Vec<u8> {
    let bpp = channels(colour) * (depth as usize / 8);
    let passes: Vec<(u32, u32, u32, u32)> = if interlaced {
        vec![(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]
    } else {
        vec![(0, 0, 1, 1)]
    };
    let mut raw = Vec::new();
    for (x0, y0, dx, dy) in passes {
        let xs: Vec<u32> = (x0..w).step_by(dx as usize).collect();
        if xs.is_empty() {
            continue;
        }
        for y in (y0..h).step_by(dy as usize) {
            raw.push(0); // filter: none
            for &x in &xs {
                for c in 0..channels(colour) {
                    let v = f(x, y, c);
                    if depth == 16 {
                        raw.extend_from_slice(&v.to_be_bytes());
                    } else {
                        raw.push(v as u8);
                    }
                }
            }
        }
    }
    let _ = bpp;
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    out.extend(ihdr(w, h, depth, colour, interlaced as u8));
    if colour == 3 {
        let palette: Vec<u8> = (0..256u32).flat_map(|i| [i as u8, (255 - i) as u8, (i * 3) as u8]).collect();
        out.extend(chunk(b"PLTE", &palette));
    }
    out.extend(chunk(b"IDAT", &zlib(&raw)));
    out.extend(chunk(b"IEND", &[]));
    out
}

/// A valid PNG whose IHDR claims other dimensions (CRC fixed, so only the size lies).
pub fn lying_header(w: u32, h: u32) -> Vec<u8> {
    let good = make(16, 16, 8, 2, false, |x, y, c| ((x + y) as u16 * 9 + c as u16) % 256);
    let mut out = good[..8].to_vec();
    out.extend(ihdr(w, h, 8, 2, 0));
    out.extend_from_slice(&good[8 + 25..]);
    out
}

/// Rebuilds a PNG from `make` with its chunks transformed (to break or extend it).
pub fn rechunk(png: &[u8], f: impl Fn(&[u8; 4], &[u8]) -> Vec<Vec<u8>>) -> Vec<u8> {
    let mut out = png[..8].to_vec();
    let mut at = 8;
    while at + 8 <= png.len() {
        let len = u32::from_be_bytes(png[at..at + 4].try_into().unwrap()) as usize;
        let kind: [u8; 4] = png[at + 4..at + 8].try_into().unwrap();
        let data = &png[at + 8..at + 8 + len];
        for c in f(&kind, data) {
            out.extend(c);
        }
        at += 12 + len;
    }
    out
}
