//! Pictures and codecs: encoding a run of frames into one fMP4 segment, decoding it back, MP4 boxes.

pub mod ffmpeg;
pub mod png;
pub mod mp4;

pub use self::png::RgbImage;

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

/// A frame to encode: straight from an uploaded PNG, decoded from a segment we stored earlier,
/// or the same pixels as the frame before it (an unchanged screen: no PNG decode, no colour
/// conversion).
#[derive(Debug, Clone)]
pub enum Picture {
    Rgb(RgbImage),
    Yuv(Yuv444),
    /// Identical to the previous frame of the same segment; carries its (width, height).
    Repeat((u32, u32)),
}

impl Picture {
    pub fn dimensions(&self) -> (u32, u32) {
        match self {
            Picture::Rgb(i) => (i.width, i.height),
            Picture::Yuv(i) => (i.width, i.height),
            Picture::Repeat(dims) => *dims,
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

/// Mean SSIM over the R, G and B planes, on 8×8 windows (step 4), with the usual constants
/// (K1 = 0.01, K2 = 0.03, L = 255). 1 means identical.
pub fn ssim_rgb(a: &RgbImage, b: &RgbImage) -> f64 {
    assert_eq!((a.width, a.height), (b.width, b.height), "ssim of images of different sizes");
    let (w, h) = (a.width as usize, a.height as usize);
    let (c1, c2) = ((0.01f64 * 255.0).powi(2), (0.03f64 * 255.0).powi(2));
    let (mut sum, mut n) = (0.0, 0usize);
    for c in 0..3 {
        for y0 in (0..h.saturating_sub(7)).step_by(4) {
            for x0 in (0..w.saturating_sub(7)).step_by(4) {
                let (mut sa, mut sb, mut saa, mut sbb, mut sab) = (0u64, 0u64, 0u64, 0u64, 0u64);
                for y in y0..y0 + 8 {
                    let row = (y * w + x0) * 3 + c;
                    for x in 0..8 {
                        let (p, q) = (a.data[row + x * 3] as u64, b.data[row + x * 3] as u64);
                        sa += p;
                        sb += q;
                        saa += p * p;
                        sbb += q * q;
                        sab += p * q;
                    }
                }
                let k = 64.0;
                let (ma, mb) = (sa as f64 / k, sb as f64 / k);
                let va = saa as f64 / k - ma * ma;
                let vb = sbb as f64 / k - mb * mb;
                let cov = sab as f64 / k - ma * mb;
                sum += ((2.0 * ma * mb + c1) * (2.0 * cov + c2)) / ((ma * ma + mb * mb + c1) * (va + vb + c2));
                n += 1;
            }
        }
    }
    if n == 0 {
        return 1.0;
    }
    sum / n as f64
}

#[cfg(test)]
mod tests {
    use super::ffmpeg::{decode_segment, encode_segment, yuv_to_rgb, EncodeSettings};
    use super::*;
    use crate::synth::screenshot;

    /// The default hot-tier settings (config.rs), spelled out: media knows nothing of config.
    fn hot_settings() -> EncodeSettings {
        EncodeSettings {
            crf: 20.0,
            preset: "veryfast".into(),
            threads: 1,
            params: "aq-mode=0:psy=0:force-cfr=1".into(),
            chroma420: false,
            codec: Default::default(),
        }
    }

    #[test]
    fn round_trip_keeps_text_and_exact_times() {
        let base = 1_764_151_200_000i64;
        let times = [base, base + 7_250, base + 17_250, base + 33_001];
        let pics: Vec<Picture> = times.iter().enumerate().map(|(i, t)| Picture::Rgb(screenshot(641, 361, *t, i as u64, 1))).collect();

        let settings = hot_settings();
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

    /// An unchanged screen is encoded from a copy of the previous frame, not from a second
    /// decode and colour conversion, and the segment comes out byte for byte the same.
    #[test]
    fn a_repeated_picture_encodes_exactly_like_the_same_picture_again() {
        let base = 1_764_151_200_000i64;
        let times = [base, base + 10_000, base + 20_000, base + 30_000];
        let (a, b) = (screenshot(320, 180, base, 1, 1), screenshot(320, 180, base + 20_000, 2, 1));
        let settings = hot_settings();
        let full = [Picture::Rgb(a.clone()), Picture::Rgb(a.clone()), Picture::Rgb(b.clone()), Picture::Rgb(b.clone())];
        let repeated = [Picture::Rgb(a), Picture::Repeat((320, 180)), Picture::Rgb(b), Picture::Repeat((320, 180))];
        let one = encode_segment(&settings, (320, 180), &times, base + 60_000, 1, |i| Ok(full[i].clone())).unwrap();
        let two = encode_segment(&settings, (320, 180), &times, base + 60_000, 1, |i| Ok(repeated[i].clone())).unwrap();
        assert_eq!((one.init, one.media), (two.init, two.media));
        let first = encode_segment(&settings, (320, 180), &times[..1], base + 60_000, 1, |_| Ok(Picture::Repeat((320, 180))));
        assert!(first.is_err(), "a segment cannot start with a repeat");
    }

    #[test]
    fn av1_444_round_trip_keeps_times_and_names_its_codec() {
        let base = 1_764_151_200_000i64;
        let times = [base, base + 10_000, base + 20_500];
        let pics: Vec<Picture> = times.iter().enumerate().map(|(i, t)| Picture::Rgb(screenshot(322, 182, *t, i as u64, 1))).collect();
        let settings = EncodeSettings {
            crf: 20.0,
            preset: "8".into(),
            threads: 1,
            params: String::new(),
            chroma420: false,
            codec: super::ffmpeg::Codec::Av1,
        };
        let seg = encode_segment(&settings, (322, 182), &times, base + 60_000, 3, |i| Ok(pics[i].clone())).unwrap();
        assert!(seg.codec.starts_with("av01.1."), "AV1 profile 1 (4:4:4): {}", seg.codec);
        let frames = decode_segment(&seg.init, &seg.media).unwrap();
        assert_eq!(frames.iter().map(|f| f.0).collect::<Vec<_>>(), times.to_vec());
        for ((_, yuv), pic) in frames.iter().zip(&pics) {
            let Picture::Rgb(orig) = pic else { unreachable!() };
            let p = psnr_rgb(&yuv_to_rgb(yuv).unwrap(), orig);
            assert!(p >= 40.0, "AV1 frame at {p:.1} dB");
        }
    }

    #[test]
    fn ssim_is_one_for_identical_and_drops_with_noise() {
        let a = screenshot(64, 48, 0, 1, 1);
        assert!((ssim_rgb(&a, &a) - 1.0).abs() < 1e-12);
        let mut b = a.clone();
        for (i, v) in b.data.iter_mut().enumerate() {
            *v = v.wrapping_add(if i % 7 == 0 { 40 } else { 0 });
        }
        let s = ssim_rgb(&a, &b);
        assert!(s < 0.99 && s > 0.0, "{s}");
    }
}
