//! The only file that touches ffmpeg-next: x264 High 4:4:4 into fragmented MP4 in memory, and back.
#![allow(unsafe_code)]

use std::collections::HashMap;
use std::io::{Cursor, Write};
use std::sync::{Arc, Mutex, Once};

use ffmpeg_next as ff;
use ff::format::context::StreamIo;
use ff::software::scaling;
use ff::util::format::Pixel;
use ff::{codec, color, Dictionary, Rational};

use super::{mp4, MediaError, Picture, Yuv444};
use crate::media::png::RgbImage;

const MS: Rational = Rational(1, 1000);

/// Settings of one x264 encode.
#[derive(Debug, Clone, PartialEq)]
pub struct EncodeSettings {
    pub crf: f32,
    pub preset: String,
    pub threads: u32,
    /// Extra encoder options, `key=value:key=value` (empty for none): x264-params for x264,
    /// aom-params for AV1.
    pub params: String,
    pub codec: Codec,
    /// High 4:2:0 instead of High 4:4:4 (the variant for browsers without 4:4:4 decoding).
    pub chroma420: bool,
}

/// The video encoder of a profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Codec {
    /// libx264, High 4:4:4 (or High 4:2:0 for the variant).
    #[default]
    X264,
    /// libaom-av1, profile 1 (4:4:4), `good` usage with the screen-content tools (palette, intra
    /// block copy); `preset` is its cpu-used (0-8). For the cold tier only: 15x the CPU of x264.
    Av1,
}

impl std::fmt::Display for Codec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Codec::X264 => "x264",
            Codec::Av1 => "av1",
        })
    }
}

impl std::str::FromStr for Codec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "x264" | "h264" => Ok(Codec::X264),
            "av1" | "aom" => Ok(Codec::Av1),
            other => Err(format!("unknown codec {other} (x264 or av1)")),
        }
    }
}

/// One encoded segment, split at the top-level boxes.
#[derive(Debug, Clone)]
pub struct EncodedSegment {
    /// ftyp + moov
    pub init: Vec<u8>,
    /// moof + mdat (one fragment per keyframe)
    pub media: Vec<u8>,
    /// RFC 6381 codec string, e.g. `avc1.F40028`.
    pub codec: String,
}

/// Initialises libav once per process and keeps its logging to errors.
pub fn init_libav() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // The process's allocator tuning for libav's large frame buffers is the binary's
        // business (src/main.rs), not this library's.
        ff::init().expect("libav initialises");
        ff::util::log::set_level(ff::util::log::Level::Error);
    });
}

/// Encodes one independent fMP4 segment of `width`×`height` frames presented at `pts_ms`
/// (unix ms, increasing). `picture(i)` supplies frame i when the encoder is ready for it, so a
/// minute's pictures are never all in memory at once. Each frame lasts until the next one; the
/// last until `end_ms`. The first frame is an IDR; the fragment's tfdt is its time (timescale 1000).
pub fn encode_segment(
    settings: &EncodeSettings,
    dims: (u32, u32),
    pts_ms: &[i64],
    end_ms: i64,
    fragment_index: u32,
    picture: impl FnMut(usize) -> Result<Picture, MediaError>,
) -> Result<EncodedSegment, MediaError> {
    encode_inner(settings, dims, pts_ms, end_ms, fragment_index, picture, None)
}

/// [`encode_segment`], and the quality of every frame as a viewer will see it: each packet is
/// decoded as it leaves the encoder and compared with the picture that went in (kept only until
/// then: the encoder's delay, ~12 frames). Returns the segment and, per frame in presentation
/// order, its PSNR in RGB computed from the Y'CbCr errors ([`rgb_psnr_of`]).
/// Costs one decode per frame (~15-20 % of a veryfast encode); used to hold the quality floor.
pub fn encode_segment_checked(
    settings: &EncodeSettings,
    dims: (u32, u32),
    pts_ms: &[i64],
    end_ms: i64,
    fragment_index: u32,
    picture: impl FnMut(usize) -> Result<Picture, MediaError>,
) -> Result<(EncodedSegment, Vec<f64>), MediaError> {
    let mut psnr = Vec::with_capacity(pts_ms.len());
    let seg = encode_inner(settings, dims, pts_ms, end_ms, fragment_index, picture, Some(&mut psnr))?;
    if psnr.len() != pts_ms.len() {
        return Err(MediaError::Source(format!("checked {} of {} frames", psnr.len(), pts_ms.len())));
    }
    Ok((seg, psnr))
}

/// RGB PSNR (8 bits) of a decoded frame against the picture that was encoded, computed from
/// their BT.709 limited-range Y'CbCr planes: per pixel, the RGB error is the Y'CbCr error times
/// the conversion matrix (R = 1.164 Y' + 1.793 Cr, G = 1.164 Y' − 0.213 Cb − 0.533 Cr,
/// B = 1.164 Y' + 2.112 Cb; the offsets cancel), so no RGB picture is needed. What it leaves out
/// is added back as a constant: the colour conversions' own error both ways (swscale's
/// accurate-rounding paths, ~0.25 of MSE on synthetic text: 1.2 dB at 51 dB, 0.5 dB at 45 dB);
/// clipping to 0-255 only lowers the real error. So it errs on the safe side near the floor.
/// 4:4:4 only; other layouts are rated by the luma error alone.
const CONVERSION_MSE: f64 = 0.25;

fn rgb_psnr_of(source: &ff::frame::Video, decoded: &ff::frame::Video) -> f64 {
    let (w, h) = (source.width() as usize, source.height() as usize);
    let mut sum: i64 = 0;
    if source.format() == Pixel::YUV444P && decoded.format() == Pixel::YUV444P {
        fn planes(f: &ff::frame::Video, y: usize, w: usize) -> [&[u8]; 3] {
            [0, 1, 2].map(move |p| &f.data(p)[y * f.stride(p)..y * f.stride(p) + w])
        }
        for y in 0..h {
            let ([sy, su, sv], [dy, du, dv]) = (planes(source, y, w), planes(decoded, y, w));
            let mut row: i64 = 0;
            for x in 0..w {
                // Fixed point, x1024.
                let ey = i64::from(sy[x]) - i64::from(dy[x]);
                let eu = i64::from(su[x]) - i64::from(du[x]);
                let ev = i64::from(sv[x]) - i64::from(dv[x]);
                let r = 1192 * ey + 1836 * ev;
                let g = 1192 * ey - 218 * eu - 546 * ev;
                let b = 1192 * ey + 2163 * eu;
                row += r * r + g * g + b * b;
            }
            sum += row;
        }
    } else {
        for y in 0..h {
            let (a, b) = (&source.data(0)[y * source.stride(0)..][..w], &decoded.data(0)[y * decoded.stride(0)..][..w]);
            sum += a.iter().zip(b).map(|(p, q)| 3 * (1192 * (i64::from(*p) - i64::from(*q))).pow(2)).sum::<i64>();
        }
    }
    let mse = sum as f64 / (1024.0 * 1024.0 * 3.0 * (w * h).max(1) as f64) + CONVERSION_MSE;
    (10.0 * (255.0f64 * 255.0 / mse).log10()).min(99.0)
}

/// The in-loop check of [`encode_segment_checked`]: a decoder fed every packet, and the pictures
/// sent to the encoder whose packets have not come out yet.
struct Check<'a> {
    decoder: ff::decoder::Video,
    sent: std::collections::VecDeque<(i64, ff::frame::Video)>,
    decoded: ff::frame::Video,
    psnr: &'a mut Vec<f64>,
}

impl Check<'_> {
    fn packet(&mut self, packet: Option<&ff::Packet>) -> Result<(), MediaError> {
        match packet {
            Some(p) => self.decoder.send_packet(p)?,
            None => self.decoder.send_eof()?,
        }
        while self.decoder.receive_frame(&mut self.decoded).is_ok() {
            let pts = self.decoded.pts().unwrap_or(i64::MIN);
            // No B-frames: frames come out in the order they went in.
            let (sent_pts, source) = self.sent.pop_front().ok_or_else(|| MediaError::Source("decoded more frames than were encoded".into()))?;
            if sent_pts != pts {
                return Err(MediaError::Source(format!("decoded frame {pts} where {sent_pts} was expected")));
            }
            self.psnr.push(rgb_psnr_of(&source, &self.decoded));
        }
        Ok(())
    }
}

fn encode_inner(
    settings: &EncodeSettings,
    (width, height): (u32, u32),
    pts_ms: &[i64],
    end_ms: i64,
    fragment_index: u32,
    mut picture: impl FnMut(usize) -> Result<Picture, MediaError>,
    check_into: Option<&mut Vec<f64>>,
) -> Result<EncodedSegment, MediaError> {
    init_libav();
    if pts_ms.is_empty() {
        return Err(MediaError::Empty);
    }
    let mut durations: HashMap<i64, i64> = HashMap::with_capacity(pts_ms.len());
    for (i, pts) in pts_ms.iter().enumerate() {
        let next = pts_ms.get(i + 1).copied().unwrap_or(end_ms);
        durations.insert(*pts, (next - pts).max(1));
    }

    let codec = ff::encoder::find_by_name(match settings.codec {
        Codec::X264 => "libx264",
        Codec::Av1 => "libaom-av1",
    })
    .ok_or(MediaError::NoEncoder)?;
    let mut enc = codec::context::Context::new_with_codec(codec).encoder().video()?;
    enc.set_width(width);
    enc.set_height(height);
    let pixel = if settings.chroma420 { Pixel::YUV420P } else { Pixel::YUV444P };
    enc.set_format(pixel);
    enc.set_time_base(MS);
    // A nominal rate is needed or x264 signals level 6.1; the real times are in the pts.
    enc.set_frame_rate(Some(Rational(1, 10)));
    enc.set_max_b_frames(0);
    enc.set_gop(100_000);
    enc.set_colorspace(color::Space::BT709);
    enc.set_color_range(color::Range::MPEG);
    enc.set_color_primaries(color::Primaries::BT709);
    enc.set_color_transfer_characteristic(color::TransferCharacteristic::BT709);
    enc.set_flags(codec::Flags::GLOBAL_HEADER);
    let mut opts = Dictionary::new();
    opts.set("threads", &settings.threads.to_string());
    match settings.codec {
        Codec::X264 => {
            opts.set("preset", &settings.preset);
            opts.set("crf", &format!("{}", settings.crf));
            opts.set("profile", if settings.chroma420 { "high" } else { "high444" });
            opts.set("forced-idr", "1");
            if !settings.params.is_empty() {
                opts.set("x264-params", &settings.params);
            }
        }
        Codec::Av1 => {
            opts.set("usage", "good");
            opts.set("cpu-used", &settings.preset);
            opts.set("crf", &format!("{}", settings.crf.round() as i64));
            opts.set("enable-palette", "1");
            opts.set("enable-intrabc", "1");
            opts.set("aq-mode", "0");
            opts.set("row-mt", "0");
            // Bounded look-ahead: memory, and every frame out soon after it went in.
            opts.set("lag-in-frames", "8");
            let mut aom = String::from("tune-content=screen");
            if !settings.params.is_empty() {
                aom.push(':');
                aom.push_str(&settings.params);
            }
            opts.set("aom-params", &aom);
        }
    }
    let mut encoder = enc.open_with(opts)?;

    let sink = Sink::default();
    let io = StreamIo::from_write(sink.clone())?;
    let mut octx = ff::format::output_to_stream(io, None, Some("mp4"))?;
    {
        let mut stream = octx.add_stream(codec)?;
        stream.set_parameters(&encoder);
        stream.set_time_base(MS);
    }
    let mut mux_opts = Dictionary::new();
    mux_opts.set(
        "movflags",
        "+frag_keyframe+empty_moov+delay_moov+default_base_moof+frag_discont+skip_trailer",
    );
    mux_opts.set("avoid_negative_ts", "disabled");
    mux_opts.set("use_editlist", "0");
    mux_opts.set("video_track_timescale", "1000");
    mux_opts.set("fragment_index", &fragment_index.max(1).to_string());
    // A misspelled muxer option would be silently ignored: refuse it instead.
    let unused: Vec<String> = octx.write_header_with(mux_opts)?.iter().map(|(k, _)| k.to_string()).collect();
    if !unused.is_empty() {
        return Err(MediaError::UnusedOptions(unused.join(", ")));
    }
    let stream_tb = octx.stream(0).expect("stream 0 was added").time_base();
    let mut check = match check_into {
        Some(psnr) => {
            let params = octx.stream(0).expect("stream 0 was added").parameters();
            let mut ctx = codec::context::Context::from_parameters(params)?;
            ctx.set_time_base(MS);
            Some(Check { decoder: ctx.decoder().video()?, sent: Default::default(), decoded: ff::frame::Video::empty(), psnr })
        }
        None => None,
    };

    let mut scaler: Option<scaling::Context> = None;
    // The frame sent last, for `Picture::Repeat` (a copy costs far less than a PNG decode and a
    // colour conversion; the encoder holds its own reference to what it was sent).
    let mut previous: Option<ff::frame::Video> = None;
    for (i, pts) in pts_ms.iter().enumerate() {
        let pic = picture(i)?;
        if pic.dimensions() != (width, height) {
            return Err(MediaError::MixedSizes);
        }
        let mut frame = match (&pic, &previous) {
            (Picture::Repeat(_), Some(previous)) => previous.clone(),
            (Picture::Repeat(_), None) => return Err(MediaError::Source("a repeated frame with no frame before it".into())),
            _ => to_yuv_frame(&pic, pixel, &mut scaler)?,
        };
        drop(pic);
        frame.set_pts(Some(*pts));
        // Only the first frame is forced to be a keyframe (a copy carries its source's type).
        frame.set_kind(if i == 0 { ff::picture::Type::I } else { ff::picture::Type::None });
        encoder.send_frame(&frame)?;
        if let Some(check) = check.as_mut() {
            check.sent.push_back((*pts, frame.clone()));
        }
        previous = Some(frame);
        drain(&mut encoder, &mut octx, &durations, stream_tb, check.as_mut())?;
    }
    encoder.send_eof()?;
    drain(&mut encoder, &mut octx, &durations, stream_tb, check.as_mut())?;
    if let Some(check) = check.as_mut() {
        check.packet(None)?;
    }
    octx.write_trailer()?;
    drop(octx);

    let bytes = sink.take();
    let (init, media) = mp4::split_init(&bytes)?;
    let codec = mp4::codec_string(init)?;
    Ok(EncodedSegment { init: init.to_vec(), media: media.to_vec(), codec })
}

fn drain(
    encoder: &mut ff::encoder::Video,
    octx: &mut ff::format::context::Output,
    durations: &HashMap<i64, i64>,
    stream_tb: Rational,
    mut check: Option<&mut Check<'_>>,
) -> Result<(), MediaError> {
    let mut packet = ff::Packet::empty();
    while encoder.receive_packet(&mut packet).is_ok() {
        // libx264 on FFmpeg 5.1 leaves durations at 0: each frame lasts until the next capture.
        let pts = packet.pts().unwrap_or(0);
        packet.set_duration(durations.get(&pts).copied().unwrap_or(1));
        if let Some(check) = check.as_deref_mut() {
            check.packet(Some(&packet))?;
        }
        packet.set_stream(0);
        packet.rescale_ts(MS, stream_tb);
        packet.write(octx)?;
    }
    Ok(())
}

/// RGB → Y'CbCr (`pixel`: 4:4:4 or 4:2:0) BT.709 limited range with accurate rounding, or a
/// copy (4:4:4) or chroma downsampling (4:2:0) of decoded planes.
fn to_yuv_frame(picture: &Picture, pixel: Pixel, scaler: &mut Option<scaling::Context>) -> Result<ff::frame::Video, MediaError> {
    let (w, h) = picture.dimensions();
    let mut out = ff::frame::Video::new(pixel, w, h);
    match picture {
        Picture::Yuv(yuv) if pixel != Pixel::YUV444P => {
            let mut src = ff::frame::Video::new(Pixel::YUV444P, w, h);
            for (plane, data) in yuv.planes.iter().enumerate() {
                let stride = src.stride(plane);
                copy_rows(data, w as usize, stride, src.data_mut(plane), h as usize);
            }
            if scaler.is_none() {
                // Same matrix and range both sides: only the chroma is resampled.
                let flags = scaling::Flags::BICUBIC | scaling::Flags::ACCURATE_RND | scaling::Flags::FULL_CHR_H_INP;
                *scaler = Some(scaling::Context::get(Pixel::YUV444P, w, h, pixel, w, h, flags)?);
            }
            scaler.as_mut().expect("set above").run(&src, &mut out)?;
        }
        Picture::Yuv(yuv) => {
            for (plane, src) in yuv.planes.iter().enumerate() {
                copy_rows(src, w as usize, out.stride(plane), out.data_mut(plane), h as usize);
            }
        }
        Picture::Repeat(_) => return Err(MediaError::Source("a repeated frame has no pixels of its own".into())),
        Picture::Rgb(rgb) => {
            let mut src = ff::frame::Video::new(Pixel::RGB24, w, h);
            let stride = src.stride(0);
            copy_rows(&rgb.data, w as usize * 3, stride, src.data_mut(0), h as usize);
            if scaler.is_none() {
                *scaler = Some(colour_scaler(Pixel::RGB24, pixel, w, h)?);
            }
            scaler.as_mut().expect("set above").run(&src, &mut out)?;
        }
    }
    out.set_color_space(color::Space::BT709);
    out.set_color_range(color::Range::MPEG);
    out.set_color_primaries(color::Primaries::BT709);
    out.set_color_transfer_characteristic(color::TransferCharacteristic::BT709);
    Ok(out)
}

/// A swscale context for RGB ↔ BT.709 limited-range Y'CbCr at one size, same dimensions both sides.
fn colour_scaler(from: Pixel, to: Pixel, w: u32, h: u32) -> Result<scaling::Context, MediaError> {
    // Never FAST_BILINEAR: it alters luma and blurs text. FULL_CHR_H_INP keeps chroma exact.
    let flags = scaling::Flags::BICUBIC | scaling::Flags::ACCURATE_RND | scaling::Flags::FULL_CHR_H_INP;
    bt709_scaler(from, (w, h), to, (w, h), flags)
}

/// A swscale context converting between RGB (full range) and BT.709 limited-range Y'CbCr.
fn bt709_scaler(from: Pixel, (w, h): (u32, u32), to: Pixel, (tw, th): (u32, u32), flags: scaling::Flags) -> Result<scaling::Context, MediaError> {
    let mut ctx = scaling::Context::get(from, w, h, to, tw, th, flags)?;
    let rgb_is_source = from == Pixel::RGB24;
    // SAFETY: `ctx` owns a valid SwsContext for the duration of the call; sws_getCoefficients
    // returns a pointer to a static table, which sws_setColorspaceDetails only reads.
    let rc = unsafe {
        let coeffs = ff::ffi::sws_getCoefficients(ff::ffi::SWS_CS_ITU709);
        let (src_full, dst_full) = if rgb_is_source { (1, 0) } else { (0, 1) };
        ff::ffi::sws_setColorspaceDetails(ctx.as_mut_ptr(), coeffs, src_full, coeffs, dst_full, 0, 1 << 16, 1 << 16)
    };
    if rc < 0 {
        return Err(MediaError::Ffmpeg(ff::Error::from(rc)));
    }
    Ok(ctx)
}

fn copy_rows(src: &[u8], row_bytes: usize, dst_stride: usize, dst: &mut [u8], rows: usize) {
    for y in 0..rows {
        dst[y * dst_stride..y * dst_stride + row_bytes].copy_from_slice(&src[y * row_bytes..(y + 1) * row_bytes]);
    }
}

/// Re-encodes a stored segment with `settings` (the 4:2:0 variant), frame for frame at the same
/// presentation times (`pts_ms`, as planned when it was written) and the same fragment number.
/// Decoding runs on a helper thread, two frames ahead, so one segment is never all in memory.
pub fn transcode_segment(
    settings: &EncodeSettings,
    init: Vec<u8>,
    media: Vec<u8>,
    (width, height): (u32, u32),
    pts_ms: &[i64],
    end_ms: i64,
    fragment_index: u32,
) -> Result<EncodedSegment, MediaError> {
    let (tx, rx) = std::sync::mpsc::sync_channel::<Result<Yuv444, String>>(2);
    let decoder = std::thread::Builder::new()
        .name("transcode-decode".into())
        .spawn(move || {
            let result = decode_each(&init, &media, |_, yuv| tx.send(Ok(yuv)).is_ok());
            if let Err(e) = result {
                let _ = tx.send(Err(e.to_string()));
            }
        })
        .map_err(|e| MediaError::Source(e.to_string()))?;
    let encoded = encode_segment(settings, (width, height), pts_ms, end_ms, fragment_index, |_| match rx.recv() {
        Ok(Ok(yuv)) => Ok(Picture::Yuv(yuv)),
        Ok(Err(e)) => Err(MediaError::Source(e)),
        Err(_) => Err(MediaError::Source("the segment holds fewer frames than its index rows".into())),
    });
    drop(rx);
    let _ = decoder.join();
    encoded
}

/// Decodes every frame of a segment (init + media), returning (pts in unix ms, picture).
pub fn decode_segment(init: &[u8], media: &[u8]) -> Result<Vec<(i64, Yuv444)>, MediaError> {
    let mut out = Vec::new();
    decode_each(init, media, |pts, frame| {
        out.push((pts, frame));
        true
    })?;
    Ok(out)
}

/// The frame on screen at `t_ms`: the last one whose pts is at or before it.
pub fn decode_frame_at(init: &[u8], media: &[u8], t_ms: i64) -> Result<Option<(i64, Yuv444)>, MediaError> {
    let mut best = None;
    decode_each(init, media, |pts, frame| {
        if pts <= t_ms {
            best = Some((pts, frame));
            true
        } else {
            false
        }
    })?;
    Ok(best)
}

/// The frames on screen at each of `times` (sorted), in one decoding pass: `on_screen(t, pts,
/// frame)` is called once per time whose frame exists (none before the first frame).
pub fn frames_on_screen_at(
    init: &[u8],
    media: &[u8],
    times: &[i64],
    mut on_screen: impl FnMut(i64, i64, &Yuv444) -> Result<(), MediaError>,
) -> Result<(), MediaError> {
    let mut shown: Option<(i64, Yuv444)> = None;
    let mut next = 0;
    let mut failed = None;
    decode_each(init, media, |pts, frame| {
        // Every time before this frame's pts shows the previous frame.
        while next < times.len() && times[next] < pts {
            if let Some((p, f)) = &shown {
                if let Err(e) = on_screen(times[next], *p, f) {
                    failed = Some(e);
                    return false;
                }
            }
            next += 1;
        }
        shown = Some((pts, frame));
        next < times.len()
    })?;
    if let Some(e) = failed {
        return Err(e);
    }
    if let Some((p, f)) = &shown {
        for &t in &times[next..] {
            on_screen(t, *p, f)?;
        }
    }
    Ok(())
}

/// Feeds decoded frames to `each` in presentation order until it returns false.
fn decode_each(init: &[u8], media: &[u8], mut each: impl FnMut(i64, Yuv444) -> bool) -> Result<(), MediaError> {
    init_libav();
    let mut data = Vec::with_capacity(init.len() + media.len());
    data.extend_from_slice(init);
    data.extend_from_slice(media);
    let io = StreamIo::from_read_seek(Cursor::new(data))?;
    let mut ictx = ff::format::input_from_stream(io, Some("segment.mp4"), None)?;
    let stream = ictx.streams().best(ff::media::Type::Video).ok_or(ff::Error::StreamNotFound)?;
    let index = stream.index();
    let tb = stream.time_base();
    let mut decoder = codec::context::Context::from_parameters(stream.parameters())?.decoder().video()?;
    let mut scaler = None;
    let mut frame = ff::frame::Video::empty();
    let mut go_on = true;
    let mut receive = |decoder: &mut ff::decoder::Video, go_on: &mut bool| -> Result<(), MediaError> {
        while *go_on && decoder.receive_frame(&mut frame).is_ok() {
            let pts = frame.timestamp().or(frame.pts()).unwrap_or(0);
            let pts_ms = ff::rescale::Rescale::rescale(&pts, tb, MS);
            let yuv = frame_to_yuv(&frame, &mut scaler)?;
            *go_on = each(pts_ms, yuv);
        }
        Ok(())
    };
    for (s, packet) in ictx.packets() {
        if s.index() != index {
            continue;
        }
        decoder.send_packet(&packet)?;
        receive(&mut decoder, &mut go_on)?;
        if !go_on {
            return Ok(());
        }
    }
    decoder.send_eof()?;
    receive(&mut decoder, &mut go_on)
}

fn frame_to_yuv(frame: &ff::frame::Video, scaler: &mut Option<scaling::Context>) -> Result<Yuv444, MediaError> {
    let (w, h) = (frame.width(), frame.height());
    let converted;
    let src = if frame.format() == Pixel::YUV444P {
        frame
    } else {
        // Not produced by us (we only write 4:4:4), but decode whatever is there.
        if scaler.is_none() {
            let flags = scaling::Flags::BICUBIC | scaling::Flags::ACCURATE_RND | scaling::Flags::FULL_CHR_H_INP;
            *scaler = Some(scaling::Context::get(frame.format(), w, h, Pixel::YUV444P, w, h, flags)?);
        }
        let mut out = ff::frame::Video::new(Pixel::YUV444P, w, h);
        scaler.as_mut().expect("set above").run(frame, &mut out)?;
        converted = out;
        &converted
    };
    let plane = |i: usize| {
        let stride = src.stride(i);
        let data = src.data(i);
        let mut v = Vec::with_capacity((w * h) as usize);
        for y in 0..h as usize {
            v.extend_from_slice(&data[y * stride..y * stride + w as usize]);
        }
        v
    };
    Ok(Yuv444 { width: w, height: h, planes: [plane(0), plane(1), plane(2)] })
}

/// BT.709 limited-range 4:4:4 → full-range RGB8, as a browser would show it.
pub fn yuv_to_rgb(yuv: &Yuv444) -> Result<RgbImage, MediaError> {
    let flags = scaling::Flags::BICUBIC | scaling::Flags::ACCURATE_RND | scaling::Flags::FULL_CHR_H_INP;
    yuv_to_rgb_sized(yuv, (yuv.width, yuv.height), flags)
}

/// A small RGB picture at most `max_width` wide (area-averaged), for timeline previews.
pub fn thumbnail(yuv: &Yuv444, max_width: u32) -> Result<RgbImage, MediaError> {
    let tw = max_width.min(yuv.width).max(1);
    let th = ((yuv.height as u64 * tw as u64) / yuv.width as u64).max(1) as u32;
    yuv_to_rgb_sized(yuv, (tw, th), scaling::Flags::AREA | scaling::Flags::ACCURATE_RND)
}

fn yuv_to_rgb_sized(yuv: &Yuv444, (tw, th): (u32, u32), flags: scaling::Flags) -> Result<RgbImage, MediaError> {
    init_libav();
    let (w, h) = (yuv.width, yuv.height);
    let mut src = ff::frame::Video::new(Pixel::YUV444P, w, h);
    for (plane, data) in yuv.planes.iter().enumerate() {
        let stride = src.stride(plane);
        copy_rows(data, w as usize, stride, src.data_mut(plane), h as usize);
    }
    let mut out = ff::frame::Video::new(Pixel::RGB24, tw, th);
    bt709_scaler(Pixel::YUV444P, (w, h), Pixel::RGB24, (tw, th), flags)?.run(&src, &mut out)?;
    let stride = out.stride(0);
    let mut data = Vec::with_capacity((tw * th * 3) as usize);
    for y in 0..th as usize {
        data.extend_from_slice(&out.data(0)[y * stride..y * stride + tw as usize * 3]);
    }
    Ok(RgbImage { width: tw, height: th, data })
}

/// An in-memory, growable output for the muxer.
#[derive(Clone, Default)]
struct Sink(Arc<Mutex<Vec<u8>>>);

impl Sink {
    fn take(&self) -> Vec<u8> {
        std::mem::take(&mut *self.0.lock().expect("sink lock"))
    }
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("sink lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_round_trip_alone_is_near_lossless() {
        let rgb = crate::synth::screenshot(64, 48, 0, 0, 1);
        let mut scaler = None;
        let frame = to_yuv_frame(&Picture::Rgb(rgb.clone()), Pixel::YUV444P, &mut scaler).unwrap();
        let yuv = frame_to_yuv(&frame, &mut None).unwrap();
        let back = yuv_to_rgb(&yuv).unwrap();
        let p = crate::media::psnr_rgb(&back, &rgb);
        assert!(p > 50.0, "{p}");
    }

    /// A grainy photo-like picture (the content where a uniform crf breaks the floor: every
    /// block busy, nothing for the encoder to reuse), panned by `shift` pixels.
    fn grain(width: u32, height: u32, shift: u32, seed: u64, amp: u64) -> RgbImage {
        let mut data = Vec::with_capacity((width * height * 3) as usize);
        let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        for y in 0..height {
            for x in 0..width {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let (fx, fy) = ((x + shift) as f64, y as f64);
                let base = |k: f64| 128.0 + 90.0 * ((fx * k * 0.031).sin() * (fy * 0.023 / k).cos());
                let noise = (state % (2 * amp + 1)) as f64 - amp as f64;
                for (c, k) in [1.0, 1.7, 0.6].iter().enumerate() {
                    let n = noise * [1.0, 0.8, 1.2][c];
                    data.push((base(*k) + n).clamp(0.0, 255.0) as u8);
                }
            }
        }
        RgbImage { width, height, data }
    }

    /// Every frame of `frames` encoded as one segment with `settings`: (RGB PSNR measured on
    /// the decoded segment as a browser shows it, the in-loop estimate).
    fn frame_quality(settings: &EncodeSettings, frames: &[RgbImage]) -> Vec<(f64, f64)> {
        let (w, h) = (frames[0].width, frames[0].height);
        let pts: Vec<i64> = (0..frames.len() as i64).map(|i| 1_000_000 + i * 10_000).collect();
        let end = pts[pts.len() - 1] + 10_000;
        let (seg, estimates) = encode_segment_checked(settings, (w, h), &pts, end, 1, |i| Ok(Picture::Rgb(frames[i].clone()))).unwrap();
        let decoded = decode_segment(&seg.init, &seg.media).unwrap();
        assert_eq!(decoded.len(), frames.len());
        let plain = encode_segment(settings, (w, h), &pts, end, 1, |i| Ok(Picture::Rgb(frames[i].clone()))).unwrap();
        assert_eq!(plain.media, seg.media, "the check does not change the encode");
        decoded.iter().zip(frames).zip(estimates).map(|(((_, yuv), orig), est)| (crate::media::psnr_rgb(&yuv_to_rgb(yuv).unwrap(), orig), est)).collect()
    }

    fn cold_settings(config: &crate::config::Config) -> EncodeSettings {
        EncodeSettings {
            crf: config.compact.crf,
            preset: config.compact.preset.clone(),
            threads: 1,
            params: config.compact.x264_params.clone(),
            codec: Codec::X264,
            chroma420: false,
        }
    }

    /// The in-loop check that holds the quality floor rates each frame as a viewer gets it: never
    /// better (beyond 0.1 dB), at most 1.5 dB worse (the margin is largest far above the floor),
    /// on text and on grainy pictures, at several rates.
    #[test]
    fn the_in_loop_check_tells_each_frames_quality() {
        let config = crate::config::Config::default();
        let text: Vec<RgbImage> = (0..6).map(|i| crate::synth::screenshot(192, 128, i * 10_000, i as u64, 2)).collect();
        let grainy: Vec<RgbImage> = (0..6).map(|i| grain(192, 128, i * 7, 1 + u64::from(i) % 3, 10)).collect();
        for crf in [18.0, 26.0, 34.0] {
            for frames in [&text, &grainy] {
                let settings = EncodeSettings { crf, ..cold_settings(&config) };
                for (n, (real, est)) in frame_quality(&settings, frames).into_iter().enumerate() {
                    println!("crf {crf} frame {n}: measured {real:.2} dB, estimated {est:.2} dB");
                    assert!(est <= real + 0.1 && real - est < 1.5, "crf {crf} frame {n}: measured {real:.2} dB, estimated {est:.2} dB");
                }
            }
        }
    }
}
