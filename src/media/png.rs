//! Untrusted PNG bytes → checked dimensions → RGB8 pixels, in safe Rust only.

use std::io::Cursor;

pub const SIGNATURE: &[u8; 8] = b"\x89PNG\r\n\x1a\n";

/// A decoded picture, 3 bytes per pixel, rows packed with no padding.
#[derive(Clone, PartialEq, Eq)]
pub struct RgbImage {
    pub width: u32,
    pub height: u32,
    pub data: Vec<u8>,
}

impl std::fmt::Debug for RgbImage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RgbImage({}x{})", self.width, self.height)
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PngError {
    #[error("the body is not a PNG (no PNG signature)")]
    NotPng,
    #[error("the PNG header is missing or malformed")]
    BadHeader,
    #[error("the PNG is {width}x{height}; the limit is {max}x{max}")]
    TooLarge { width: u32, height: u32, max: u32 },
    #[error("the PNG cannot be decoded: {0}")]
    Undecodable(String),
}

/// Width and height from the IHDR chunk, checked against `max_dimension`, without decoding anything.
pub fn probe(bytes: &[u8], max_dimension: u32) -> Result<(u32, u32), PngError> {
    if bytes.len() < 8 || &bytes[..8] != SIGNATURE {
        return Err(PngError::NotPng);
    }
    // IHDR must be the first chunk: length 13, type "IHDR", width, height (big endian).
    let ihdr = bytes.get(8..8 + 8 + 13).ok_or(PngError::BadHeader)?;
    if ihdr[0..4] != [0, 0, 0, 13] || &ihdr[4..8] != b"IHDR" {
        return Err(PngError::BadHeader);
    }
    let width = u32::from_be_bytes([ihdr[8], ihdr[9], ihdr[10], ihdr[11]]);
    let height = u32::from_be_bytes([ihdr[12], ihdr[13], ihdr[14], ihdr[15]]);
    if width == 0 || height == 0 {
        return Err(PngError::BadHeader);
    }
    if width > max_dimension || height > max_dimension {
        return Err(PngError::TooLarge { width, height, max: max_dimension });
    }
    Ok((width, height))
}

/// Decodes any PNG colour type and bit depth (grey, palette, 16-bit, alpha, interlaced) to RGB8.
/// Alpha is dropped: screenshots are opaque, and the colour under a transparent pixel is kept as is.
pub fn decode_rgb(bytes: &[u8], max_dimension: u32) -> Result<RgbImage, PngError> {
    let (width, height) = probe(bytes, max_dimension)?;
    let mut decoder = decoder(bytes, (width as usize) * (height as usize) * 8);
    decoder.set_transformations(png::Transformations::normalize_to_color8());
    let mut reader = decoder.read_info().map_err(undecodable)?;
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).map_err(undecodable)?;
    if (info.width, info.height) != (width, height) {
        return Err(PngError::BadHeader);
    }
    let pixels = (width as usize) * (height as usize);
    let data = match info.color_type {
        png::ColorType::Rgb => {
            buf.truncate(pixels * 3);
            buf
        }
        png::ColorType::Rgba => buf.chunks_exact(4).take(pixels).flat_map(|p| [p[0], p[1], p[2]]).collect(),
        png::ColorType::Grayscale => buf.iter().take(pixels).flat_map(|&g| [g, g, g]).collect(),
        png::ColorType::GrayscaleAlpha => buf.chunks_exact(2).take(pixels).flat_map(|p| [p[0], p[0], p[0]]).collect(),
        png::ColorType::Indexed => return Err(PngError::Undecodable("palette was not expanded".into())),
    };
    if data.len() != pixels * 3 {
        return Err(PngError::Undecodable("short pixel data".into()));
    }
    Ok(RgbImage { width, height, data })
}

/// A decoder whose allocations are capped at `image_bytes` (what the header says the pixels need)
/// plus what the chunks themselves may take: the png crate buffers every non-image chunk whole
/// (for its CRC) and charges the buffer's doublings to the limit without crediting them back, so
/// ancillary chunks can cost up to twice the body, which the caller has already size-checked.
/// Text and ICC chunks are not parsed: pixels are treated as sRGB and no metadata is kept.
fn decoder(bytes: &[u8], image_bytes: usize) -> png::Decoder<Cursor<&[u8]>> {
    let limit = image_bytes + 2 * bytes.len() + (1 << 20);
    let mut decoder = png::Decoder::new_with_limits(Cursor::new(bytes), png::Limits { bytes: limit });
    decoder.set_ignore_text_chunk(true);
    decoder.set_ignore_iccp_chunk(true);
    decoder
}

fn undecodable(e: png::DecodingError) -> PngError {
    match e {
        png::DecodingError::LimitsExceeded => PngError::Undecodable("image needs more memory than its size allows".into()),
        other => PngError::Undecodable(other.to_string()),
    }
}

/// Checks that the whole image decodes (every chunk, CRC and row), holding one row at a time:
/// uploads are validated without allocating a full frame.
pub fn validate(bytes: &[u8], max_dimension: u32) -> Result<(u32, u32), PngError> {
    let (width, height) = probe(bytes, max_dimension)?;
    let mut decoder = decoder(bytes, (width as usize) * 8 * 2);
    decoder.set_transformations(png::Transformations::IDENTITY);
    let mut reader = decoder.read_info().map_err(undecodable)?;
    let mut rows = 0u64;
    while reader.next_row().map_err(undecodable)?.is_some() {
        rows += 1;
    }
    let expected: u64 = if reader.info().interlaced {
        // Adam7 passes: rows of each pass that has at least one column.
        let (w, h) = (width as u64, height as u64);
        [(0u64, 0u64, 8u64, 8u64), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]
            .iter()
            .filter(|(x0, _, _, _)| *x0 < w)
            .map(|(_, y0, _, dy)| if *y0 < h { (h - y0).div_ceil(*dy) } else { 0 })
            .sum()
    } else {
        height as u64
    };
    if rows != expected {
        return Err(PngError::Undecodable(format!("{rows} rows decoded, {expected} expected")));
    }
    reader.finish().map_err(undecodable)?;
    Ok((width, height))
}

/// Encodes RGB8 as PNG (fast compression: this serves `frame.png`, not storage).
pub fn encode_rgb(image: &RgbImage) -> Vec<u8> {
    let mut out = Vec::with_capacity(image.data.len() / 4);
    {
        let mut encoder = png::Encoder::new(&mut out, image.width, image.height);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        encoder.set_compression(png::Compression::Fast);
        let mut writer = encoder.write_header().expect("writing to a Vec cannot fail");
        writer.write_image_data(&image.data).expect("buffer size matches the header");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(w: u32, h: u32) -> RgbImage {
        let data = (0..w * h).flat_map(|i| [(i % 251) as u8, (i * 7 % 256) as u8, 200]).collect();
        RgbImage { width: w, height: h, data }
    }

    #[test]
    fn round_trip_and_limits() {
        let img = sample(33, 17);
        let bytes = encode_rgb(&img);
        assert_eq!(decode_rgb(&bytes, 8192).unwrap(), img);
        assert_eq!(probe(&bytes, 32), Err(PngError::TooLarge { width: 33, height: 17, max: 32 }));
        assert_eq!(probe(b"GIF89a.........................", 100), Err(PngError::NotPng));
        assert!(matches!(decode_rgb(&bytes[..bytes.len() / 2], 8192), Err(PngError::Undecodable(_))));
        assert_eq!(validate(&bytes, 8192), Ok((33, 17)));
        assert!(matches!(validate(&bytes[..bytes.len() / 2], 8192), Err(PngError::Undecodable(_))));
    }
}
