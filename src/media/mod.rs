//! Pictures and codecs: encoding a run of frames into one fMP4 segment, decoding it back, MP4 boxes.

pub mod ffmpeg;
pub mod mp4;

use crate::ingest::png::RgbImage;

/// Planar 8-bit Y'CbCr 4:4:4, BT.709 limited range, rows packed with no padding.
#[derive(Clone, PartialEq, Eq)]
pub struct Yuv444 {
    pub width: u32,
    pub height: u32,
    pub planes: [Vec<u8>; 3],
}

impl std::fmt::Debug for Yuv444 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Yuv444({}x{})", self.width, self.height)
    }
}

/// A frame to encode: straight from an uploaded PNG, or decoded from a segment we stored earlier.
#[derive(Debug, Clone)]
pub enum Picture {
    Rgb(RgbImage),
    Yuv(Yuv444),
}

impl Picture {
    pub fn dimensions(&self) -> (u32, u32) {
        match self {
            Picture::Rgb(i) => (i.width, i.height),
            Picture::Yuv(i) => (i.width, i.height),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    #[error("ffmpeg: {0}")]
    Ffmpeg(#[from] ::ffmpeg_next::Error),
    #[error("libx264 is not available in this FFmpeg build")]
    NoEncoder,
    #[error("unrecognised option(s) {0}")]
    UnusedOptions(String),
    #[error("malformed MP4: {0}")]
    Mp4(String),
    #[error("nothing to encode")]
    Empty,
    #[error("frames of one segment must share one size")]
    MixedSizes,
    #[error("a source picture could not be loaded: {0}")]
    Source(String),
}

/// PSNR in dB between two RGB images of one size (infinite when identical).
pub fn psnr_rgb(a: &RgbImage, b: &RgbImage) -> f64 {
    assert_eq!((a.width, a.height), (b.width, b.height), "psnr of images of different sizes");
    let sq: u64 = a.data.iter().zip(&b.data).map(|(x, y)| (*x as i64 - *y as i64).pow(2) as u64).sum();
    if sq == 0 {
        return f64::INFINITY;
    }
    let mse = sq as f64 / a.data.len() as f64;
    10.0 * (255.0 * 255.0 / mse).log10()
}

#[cfg(test)]
mod tests {
    use super::ffmpeg::{decode_segment, encode_segment, yuv_to_rgb, EncodeSettings};
    use super::*;
    use crate::synth::screenshot;

    #[test]
    fn round_trip_keeps_text_and_exact_times() {
        let base = 1_764_151_200_000i64;
        let times = [base, base + 7_250, base + 17_250, base + 33_001];
        let pics: Vec<Picture> = times.iter().enumerate().map(|(i, t)| Picture::Rgb(screenshot(641, 361, *t, i as u64, 1))).collect();

        let d = crate::config::Config::default().encoder;
        let settings = EncodeSettings { crf: d.crf, preset: d.preset, threads: 1, x264_params: d.x264_params };
        let seg = encode_segment(&settings, pics[0].dimensions(), &times, base + 60_000, 7, |i| Ok(pics[i].clone())).unwrap();
        assert!(seg.codec.starts_with("avc1.F4"), "High 4:4:4: {}", seg.codec);
        assert_eq!(mp4::first_tfdt(&seg.media).unwrap(), base as u64);
        let decoded = decode_segment(&seg.init, &seg.media).unwrap();
        assert_eq!(decoded.iter().map(|d| d.0).collect::<Vec<_>>(), times);
        let mut worst = f64::INFINITY;
        for ((_, yuv), pic) in decoded.iter().zip(&pics) {
            let Picture::Rgb(orig) = pic else { unreachable!() };
            let p = psnr_rgb(&yuv_to_rgb(yuv).unwrap(), orig);
            worst = worst.min(p);
        }
        assert!(worst >= 45.0, "worst frame psnr {worst:.2} dB");
    }
}
