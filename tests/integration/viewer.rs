//! The viewer's server side: the activity lane, storyboards, the 4:2:0 download, and exact
//! presentation times at the edges of a device's footage.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};

use screentape::media::png::RgbImage;
use screentape::media::psnr_rgb;

use crate::support::{shot, Server, T0};

const MIN: i64 = 60_000;

/// Decodes a JPEG with the ffmpeg command line into RGB pixels.
fn decode_jpeg(jpeg: &[u8]) -> RgbImage {
    let probe = run_with_input(&["ffprobe", "-v", "error", "-show_entries", "stream=width,height", "-of", "csv=p=0", "-i", "-"], jpeg);
    let dims: Vec<u32> = String::from_utf8(probe).unwrap().trim().split(',').map(|n| n.parse().unwrap()).collect();
    let data = run_with_input(&["ffmpeg", "-v", "error", "-i", "-", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"], jpeg);
    assert_eq!(data.len(), (dims[0] * dims[1] * 3) as usize);
    RgbImage { width: dims[0], height: dims[1], data }
}

fn run_with_input(args: &[&str], input: &[u8]) -> Vec<u8> {
    let mut child = Command::new(args[0]).args(&args[1..]).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().expect("ffmpeg tools are installed");
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().unwrap();
    let _ = writer.join();
    assert!(out.status.success(), "{args:?} failed");
    out.stdout
}

/// `img` shrunk by an integer factor (box filter), like a storyboard tile of it.
fn shrink(img: &RgbImage, factor: u32) -> RgbImage {
    let (w, h) = (img.width / factor, img.height / factor);
    let mut data = Vec::with_capacity((w * h * 3) as usize);
    for y in 0..h {
        for x in 0..w {
            for c in 0..3 {
                let mut sum = 0u32;
                for dy in 0..factor {
                    for dx in 0..factor {
                        sum += img.data[(((y * factor + dy) * img.width + x * factor + dx) * 3 + c) as usize] as u32;
                    }
                }
                data.push((sum / (factor * factor)) as u8);
            }
        }
    }
    RgbImage { width: w, height: h, data }
}

/// Tile `i` of a sprite.
fn tile(sprite: &RgbImage, i: usize, (w, h): (u32, u32), cols: usize) -> RgbImage {
    let (col, row) = ((i % cols) as u32, (i / cols) as u32);
    let mut data = Vec::with_capacity((w * h * 3) as usize);
    for y in 0..h {
        let at = (((row * h + y) * sprite.width + col * w) * 3) as usize;
        data.extend_from_slice(&sprite.data[at..at + (w * 3) as usize]);
    }
    RgbImage { width: w, height: h, data }
}

/// Minute 0 changes at every capture, minute 1 repeats one picture (an idle screen), minute 2
/// is empty, minute 3 holds one capture. The activity lane tells them apart, keeps its values
/// through compaction, and the storyboard of the hour shows the capture on screen every 15 s.
#[test]
fn activity_lane_and_storyboard_show_what_happened() {
    let s = Server::start();
    let ann = s.add_user("ann", false);
    let bob = s.add_user("bob", false);
    let (device, token) = s.add_device("laptop", Some("ann"));
    s.clock.set_ms(T0 + 4 * MIN);
    let mut originals = BTreeMap::new();
    let (idle_png, idle_img) = shot(640, 360, T0, 99);
    let mut times = Vec::new();
    for i in 0..6 {
        let t = T0 + i * 10_000;
        let (png, img) = shot(640, 360, t, i as u64);
        assert_eq!(s.upload(&token, t, &png).status(), 201);
        originals.insert(t, img);
        times.push(t);
    }
    for i in 0..6 {
        let t = T0 + MIN + i * 10_000;
        assert_eq!(s.upload(&token, t, &idle_png).status(), 201);
        originals.insert(t, idle_img.clone());
        times.push(t);
    }
    let (png, img) = shot(640, 360, T0 + 3 * MIN, 50);
    assert_eq!(s.upload(&token, T0 + 3 * MIN, &png).status(), 201);
    originals.insert(T0 + 3 * MIN, img);
    s.advance_and_encode(T0 + 4 * MIN + 15_000);

    // The activity lane: one value per minute from `from` rounded down, null where nothing was recorded.
    let lane = |s: &Server| -> serde_json::Value {
        let tl: serde_json::Value =
            s.get(&ann.token, &format!("/api/v1/devices/{device}/timeline?from={}&to={}", T0 + 1_234, T0 + 5 * MIN)).send().unwrap().json().unwrap();
        tl["activity"].clone()
    };
    let activity = lane(&s);
    assert_eq!(activity["start_ms"], T0);
    assert_eq!(activity["step_ms"], MIN);
    let values: Vec<Option<i64>> = activity["values"].as_array().unwrap().iter().map(|v| v.as_i64()).collect();
    assert_eq!(values.len(), 5, "{activity}");
    let (busy, idle) = (values[0].expect("minute 0 recorded"), values[1].expect("minute 1 recorded"));
    assert!(busy > 20 * idle.max(1), "a changing minute ({busy} B) reads far above an idle one ({idle} B)");
    assert_eq!(values[2], None, "nothing recorded in minute 2");
    assert!(values[3].is_some(), "minute 3 is recorded");
    assert_eq!(values[4], None, "minute 4 is not encoded yet");

    // The storyboard of the hour.
    let board: serde_json::Value = s.get(&ann.token, &format!("/api/v1/devices/{device}/storyboard?hour={T0}")).send().unwrap().json().unwrap();
    assert_eq!(board["start_ms"], T0);
    assert_eq!((board["interval_ms"].as_i64(), board["cols"].as_i64(), board["rows"].as_i64()), (Some(15_000), Some(16), Some(15)));
    assert_eq!((board["tile_w"].as_u64(), board["tile_h"].as_u64()), (Some(160), Some(90)), "160 px at 16:9");
    let tiles: Vec<Option<i64>> = board["tiles"].as_array().unwrap().iter().map(|v| v.as_i64()).collect();
    assert_eq!(tiles.len(), 240);
    let want: Vec<Option<i64>> = (0..240)
        .map(|i| {
            let t = T0 + i * 15_000;
            if (2 * MIN..3 * MIN).contains(&(t - T0)) || t >= T0 + 4 * MIN {
                return None;
            }
            originals.keys().rev().find(|c| **c <= t).copied()
        })
        .collect();
    assert_eq!(tiles, want, "the capture on screen every 15 s, null where nothing was recorded");
    let url = board["url"].as_str().unwrap().to_string();
    assert!(url.starts_with(&format!("storyboard/{T0}-")) && url.ends_with(".jpg"), "{url}");

    let sprite_url = format!("/api/v1/devices/{device}/{url}");
    let r = s.get(&ann.token, &sprite_url).send().unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "image/jpeg");
    assert!(r.headers()["cache-control"].to_str().unwrap().contains("immutable"));
    let jpeg = r.bytes().unwrap().to_vec();
    let sprite = decode_jpeg(&jpeg);
    assert_eq!((sprite.width, sprite.height), (16 * 160, 15 * 90));
    for (i, capture) in tiles.iter().enumerate() {
        let shown = tile(&sprite, i, (160, 90), 16);
        match capture {
            Some(c) => {
                let psnr = psnr_rgb(&shown, &shrink(&originals[c], 4));
                assert!(psnr >= 22.0, "tile {i} shows capture {} ms at {psnr:.1} dB", c - T0);
                // And not some other capture: the changing minute's neighbours differ.
                if let Some(other) = originals.keys().find(|o| *o != c && originals[*o] != originals[c]) {
                    assert!(psnr > psnr_rgb(&shown, &shrink(&originals[other], 4)), "tile {i} matches its own capture best");
                }
            }
            None => {
                // Inside an 8-px margin: JPEG blocks straddle tile edges (90 rows is not a multiple of 16).
                let inner = (8..82).flat_map(|y| (8..152).map(move |x| ((y * 160 + x) * 3) as usize));
                let plain = inner.flat_map(|at| shown.data[at..at + 3].to_vec()).all(|p| p.abs_diff(32) <= 6);
                assert!(plain, "tile {i} (nothing recorded) is plain dark grey");
            }
        }
    }
    // Cached: the same bytes again; a second request is not a second decode.
    assert_eq!(s.get(&ann.token, &sprite_url).send().unwrap().bytes().unwrap().to_vec(), jpeg);

    // Only the owner sees them: another viewer gets 404 for the board and the sprite alike.
    assert_eq!(s.get(&bob.token, &format!("/api/v1/devices/{device}/storyboard?hour={T0}")).send().unwrap().status(), 404);
    assert_eq!(s.get(&bob.token, &sprite_url).send().unwrap().status(), 404);
    // Bad or foreign names and hours.
    assert_eq!(s.get(&ann.token, &format!("/api/v1/devices/{device}/storyboard?hour={}", T0 + 1)).send().unwrap().status(), 400);
    assert_eq!(s.get(&ann.token, &format!("/api/v1/devices/{device}/storyboard?hour={}", T0 - 48 * 60 * MIN)).send().unwrap().status(), 404);
    assert_eq!(s.get(&ann.token, &format!("/api/v1/devices/{device}/storyboard/{T0}-00ff.jpg")).send().unwrap().status(), 404);
    assert_eq!(s.get(&ann.token, &format!("/api/v1/devices/{device}/storyboard/..%2F{T0}.jpg")).send().unwrap().status(), 404);

    // A new minute makes a new sprite URL (the hour grew); the old one stays fetchable a while.
    let (png, _) = shot(640, 360, T0 + 4 * MIN + 20_000, 60);
    assert_eq!(s.upload(&token, T0 + 4 * MIN + 20_000, &png).status(), 201);
    s.advance_and_encode(T0 + 5 * MIN + 15_000);
    let board2: serde_json::Value = s.get(&ann.token, &format!("/api/v1/devices/{device}/storyboard?hour={T0}")).send().unwrap().json().unwrap();
    assert_ne!(board2["url"], board["url"]);
    assert_eq!(board2["tiles"][17], T0 + 3 * MIN, "4:15 still shows 3:00 (carried into minute 4)");
    assert_eq!(board2["tiles"][18], T0 + 4 * MIN + 20_000);
    assert_eq!(s.get(&ann.token, &sprite_url).send().unwrap().status(), 200);

    // Compaction rewrites minutes 0-9 into one segment; the lane keeps its values.
    s.advance_and_encode(T0 + 20 * MIN + 15_000);
    let segs = s.app.index.segments_between(&device, T0, T0 + 10 * MIN).unwrap();
    assert!(segs.iter().all(|s| s.span_ms == 10 * MIN), "compacted: {segs:?}");
    let after = lane(&s);
    assert_eq!(after["values"].as_array().unwrap()[..4], activity["values"].as_array().unwrap()[..4], "values survive compaction");

    // Retention takes the lane and the sprites with the footage.
    s.clock.set_ms(T0 + 25 * 60 * MIN);
    s.app.retention_sweep().unwrap();
    assert!(s.app.index.activity_between(&device, 0, i64::MAX).unwrap().is_empty());
    assert!(s.app.store.list(screentape::layout::STORYBOARD_PREFIX).unwrap().is_empty(), "sprites swept with their hour");
}

/// Regression (issue 11): a device's first capture after a gap was presented from its minute's
/// :00 — `frame.png?t=:05` returned a capture taken at :09.985 with `X-Frame-Time` :00. Every
/// capture is now presented at its capture time, and before a device's first capture there is
/// nothing: 404, a gap entry in the playlist, no frame in the export.
#[test]
fn regression_first_capture_after_a_gap_is_presented_at_its_capture_time() {
    let s = Server::start();
    let v = s.add_user("ann", false);
    let (device, token) = s.add_device("laptop", Some("ann"));
    // The device's first capture at 0:09.985; then a gap of more than carry_max_age; then 3:42.5.
    let (first, after_gap, last) = (T0 + 9_985, T0 + 3 * MIN + 42_500, T0 + 3 * MIN + 50_000);
    s.clock.set_ms(T0 + 4 * MIN);
    let mut originals = BTreeMap::new();
    for (i, t) in [first, T0 + 30_000, after_gap, last].into_iter().enumerate() {
        let (png, img) = shot(640, 360, t, i as u64);
        assert_eq!(s.upload(&token, t, &png).status(), 201);
        originals.insert(t, img);
    }
    s.advance_and_encode(T0 + 4 * MIN + 15_000);
    let frame = |t: i64| s.get(&v.token, &format!("/api/v1/devices/{device}/frame.png?t={t}")).send().unwrap();

    for (t, why) in [(T0, "the minute's :00"), (T0 + 5_000, ":05, before the first capture"), (first - 1, "1 ms before it"), (T0 + 3 * MIN + 10_000, "after the gap, before the next capture")] {
        assert_eq!(frame(t).status(), 404, "{why}: nothing recorded yet");
    }
    for (t, shown) in [(first, first), (T0 + 10_000, first), (T0 + 29_999, first), (after_gap, after_gap), (after_gap + 1, after_gap), (T0 + 4 * MIN - 1, last)] {
        let r = frame(t);
        assert_eq!(r.status(), 200, "t = {} ms", t - T0);
        assert_eq!(r.headers()["x-frame-time"], shown.to_string(), "presented at its capture time (t = {} ms)", t - T0);
        let png = screentape::media::png::decode_rgb(&r.bytes().unwrap(), 8192).unwrap();
        assert!(psnr_rgb(&png, &originals[&shown]) >= 45.0);
    }

    // The playlist: media time is wall-clock time from the first capture; the partial minute
    // before the capture after the gap is a gap entry.
    let text = s.get(&v.token, &format!("/api/v1/devices/{device}/media.m3u8")).send().unwrap().text().unwrap();
    let Ok(m3u8_rs::Playlist::MediaPlaylist(pl)) = m3u8_rs::parse_playlist_res(text.as_bytes()) else { panic!("{text}") };
    let entries: Vec<(i64, i64, bool)> = pl
        .segments
        .iter()
        .map(|e| (e.program_date_time.unwrap().timestamp_millis() - T0, (e.duration as f64 * 1000.0).round() as i64, e.unknown_tags.iter().any(|t| t.tag == "X-GAP")))
        .collect();
    assert_eq!(
        entries,
        vec![(9_985, MIN - 9_985, false), (MIN, MIN, true), (2 * MIN, MIN, true), (3 * MIN, 42_500, true), (3 * MIN + 42_500, 17_500, false)],
        "{text}"
    );
    let tl: serde_json::Value = s.get(&v.token, &format!("/api/v1/devices/{device}/timeline")).send().unwrap().json().unwrap();
    assert_eq!(tl["media_start_ms"], first);
    assert_eq!(tl["recorded"][0]["start_ms"], first);
    assert_eq!(tl["gaps"], serde_json::json!([{ "start_ms": T0 + MIN, "end_ms": after_gap }]));

    // The export starts at the first capture and keeps the gap.
    let r = s.get(&v.token, &format!("/api/v1/devices/{device}/export.mp4?from={T0}&to={}", T0 + 4 * MIN)).send().unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-export-start"], first.to_string());
    let file = r.bytes().unwrap().to_vec();
    let (init, media) = screentape::media::mp4::split_init(&file).unwrap();
    let pts: Vec<i64> = screentape::media::ffmpeg::decode_segment(init, media).unwrap().iter().map(|f| f.0).collect();
    assert_eq!(pts, vec![0, T0 + 30_000 - first, after_gap - first, last - first]);

    // A late frame 50 s before the minute after it: that minute can now open with a carry, and is
    // encoded again so that it does (the late capture stays on screen until the next one).
    let late = T0 + 2 * MIN + 55_000;
    let (png, img) = shot(640, 360, late, 9);
    assert_eq!(s.upload(&token, late, &png).status(), 201);
    originals.insert(late, img);
    s.advance_and_encode(T0 + 4 * MIN + 20_000);
    s.advance_and_encode(T0 + 4 * MIN + 25_000);
    let r = frame(T0 + 3 * MIN + 10_000);
    assert_eq!(r.status(), 200, "the late capture is carried into the next minute");
    assert_eq!(r.headers()["x-frame-time"], (T0 + 3 * MIN).to_string(), "the carry is presented from the minute's start");
    let png = screentape::media::png::decode_rgb(&r.bytes().unwrap(), 8192).unwrap();
    assert!(psnr_rgb(&png, &originals[&late]) >= 45.0);
    assert_eq!(frame(late - 1).status(), 404, "and nothing before the late capture");
}

/// ffprobe's view of an MP4: (profile, pix_fmt, codec tag) of the video stream and every frame's
/// presentation time in ms.
fn probe_mp4(file: &[u8]) -> (String, String, String, Vec<i64>) {
    let out = run_with_input(
        &["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries", "stream=profile,pix_fmt,codec_tag_string:frame=pts_time", "-of", "json", "-i", "-"],
        file,
    );
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    let stream = &v["streams"][0];
    let times = v["frames"].as_array().unwrap().iter().map(|f| (f["pts_time"].as_str().unwrap().parse::<f64>().unwrap() * 1000.0).round() as i64).collect();
    let field = |k: &str| stream[k].as_str().unwrap_or_default().to_string();
    (field("profile"), field("pix_fmt"), field("codec_tag_string"), times)
}

/// The "plays everywhere" download: `chroma=420` is H.264 High 4:2:0 with every capture at its
/// time, across one-minute and compacted segments; the default stays the exact 4:4:4.
#[test]
fn export_420_plays_everywhere_with_every_capture_at_its_time() {
    let s = Server::start();
    let v = s.add_user("ann", false);
    let (device, token) = s.add_device("laptop", Some("ann"));
    let mut originals = BTreeMap::new();
    // 14 minutes, a capture every 20 s from 0:04: the first 10 minutes get compacted.
    let mut t = T0 + 4_000;
    while t < T0 + 14 * MIN {
        s.clock.set_ms(t);
        let (png, img) = shot(642, 362, t, (t - T0) as u64 / 20_000);
        assert_eq!(s.upload(&token, t, &png).status(), 201);
        originals.insert(t, img);
        t += 20_000;
    }
    s.advance_and_encode(T0 + 20 * MIN + 15_000);
    let spans: Vec<i64> = s.app.index.segments_between(&device, 0, i64::MAX).unwrap().iter().map(|s| s.span_ms).collect();
    assert!(spans.contains(&(10 * MIN)) && spans.contains(&MIN), "compacted and one-minute segments: {spans:?}");

    let export = |q: &str| s.get(&v.token, &format!("/api/v1/devices/{device}/export.mp4?from={T0}&to={}{q}", T0 + 15 * MIN)).send().unwrap();
    let r = export("&chroma=420");
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-export-start"], (T0 + 4_000).to_string());
    assert!(r.headers()["content-disposition"].to_str().unwrap().contains("-420.mp4"));
    let file = r.bytes().unwrap().to_vec();
    let (profile, pix_fmt, tag, times) = probe_mp4(&file);
    assert_eq!((profile.as_str(), pix_fmt.as_str(), tag.as_str()), ("High", "yuv420p", "avc1"), "plays everywhere");
    let (init, _) = screentape::media::mp4::split_init(&file).unwrap();
    assert!(screentape::media::mp4::codec_string(init).unwrap().starts_with("avc1.64"));
    // Every capture once at its time from the first; the only other frames are the carries that
    // open one-minute segments (the previous capture repeated at :00).
    let want: Vec<i64> = originals.keys().map(|c| c - (T0 + 4_000)).collect();
    let (captures, carries): (Vec<i64>, Vec<i64>) = times.iter().partition(|t| want.contains(t));
    assert_eq!(captures, want, "every capture once, at its time from the first");
    assert!(carries.iter().all(|t| (t + 4_000) % MIN == 0 && *t >= 10 * MIN - 4_000), "only carries at the one-minute segments' starts: {carries:?}");
    // The pictures are the captures (4:2:0 halves colour detail, so a loose bound).
    let (init, media) = screentape::media::mp4::split_init(&file).unwrap();
    for (pts, yuv) in screentape::media::ffmpeg::decode_segment(init, media).unwrap() {
        if let Some(original) = originals.get(&(pts + T0 + 4_000)) {
            let psnr = psnr_rgb(&screentape::media::ffmpeg::yuv_to_rgb(&yuv).unwrap(), original);
            assert!(psnr >= 28.0, "capture {} ms at {psnr:.1} dB", pts + 4_000);
        }
    }

    // The default is the exact 4:4:4, and a bad value is refused.
    let exact = export("").bytes().unwrap().to_vec();
    let (profile, pix_fmt, _, times) = probe_mp4(&exact);
    assert_eq!((profile.as_str(), pix_fmt.as_str()), ("High 4:4:4 Predictive", "yuv444p"));
    assert_eq!(times.iter().filter(|t| want.contains(t)).count(), want.len());
    assert_eq!(export("&chroma=422").status(), 400);
    let r = s.get(&v.token, &format!("/api/v1/devices/{device}/export.mp4?from={T0}&to={}&chroma=420", T0 + 121 * MIN)).send().unwrap();
    assert_eq!(r.status(), 422, "a 4:2:0 export covers at most 2 h");
}

/// CPU seconds (user + system) this process has used so far, from /proc (USER_HZ is 100 on Linux).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
    (fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap()) / 100.0
}

/// Figures for docs/api.md: a full hour of 1080p footage (a capture every 10 s, compacted as a
/// final hour is): the storyboard's generation CPU time and sprite size, and the 4:2:0 export's.
/// Run with `cargo test --release --test integration measure_ -- --ignored --nocapture`.
#[test]
#[ignore]
fn measure_storyboard_and_420_export_of_a_full_hour() {
    let s = Server::start();
    let v = s.add_user("ann", false);
    let (device, token) = s.add_device("laptop", Some("ann"));
    let mut t = T0 + 5_000;
    while t < T0 + 60 * MIN {
        s.clock.set_ms(t);
        let (png, _) = shot(1920, 1080, t, (t - T0) as u64 / 10_000);
        assert_eq!(s.upload(&token, t, &png).status(), 201);
        if (t - T0) % MIN == 5_000 {
            s.app.run_due_now();
        }
        t += 10_000;
    }
    s.advance_and_encode(T0 + 80 * MIN);
    s.advance_and_encode(T0 + 80 * MIN + 1_000);
    let segs = s.app.index.segments_between(&device, T0, T0 + 60 * MIN).unwrap();
    eprintln!("segments in the hour: {} (spans {:?})", segs.len(), segs.iter().map(|s| s.span_ms / 1000).collect::<Vec<_>>());

    let board: serde_json::Value = s.get(&v.token, &format!("/api/v1/devices/{device}/storyboard?hour={T0}")).send().unwrap().json().unwrap();
    let url = format!("/api/v1/devices/{device}/{}", board["url"].as_str().unwrap());
    let (cpu, wall) = (cpu_seconds(), std::time::Instant::now());
    let r = s.get(&v.token, &url).send().unwrap();
    assert_eq!(r.status(), 200);
    let jpeg = r.bytes().unwrap();
    eprintln!("storyboard of a full 1080p hour: {:.2} s CPU, {:.2} s wall, sprite {} bytes ({}x{} tiles of 160x{})",
        cpu_seconds() - cpu, wall.elapsed().as_secs_f64(), jpeg.len(), board["cols"], board["rows"], board["tile_h"]);
    let (cpu, wall) = (cpu_seconds(), std::time::Instant::now());
    assert_eq!(s.get(&v.token, &url).send().unwrap().status(), 200);
    eprintln!("cached sprite: {:.3} s CPU, {:.3} s wall", cpu_seconds() - cpu, wall.elapsed().as_secs_f64());

    for (q, what) in [("", "4:4:4 export"), ("&chroma=420", "4:2:0 export, nothing cached"), ("&chroma=420", "4:2:0 export, cached")] {
        let (cpu, wall) = (cpu_seconds(), std::time::Instant::now());
        let r = s.get(&v.token, &format!("/api/v1/devices/{device}/export.mp4?from={T0}&to={}{q}", T0 + 60 * MIN)).send().unwrap();
        assert_eq!(r.status(), 200);
        let len = r.bytes().unwrap().len();
        eprintln!("{what} of the hour: {:.2} s CPU, {:.2} s wall, {len} bytes", cpu_seconds() - cpu, wall.elapsed().as_secs_f64());
    }
}
