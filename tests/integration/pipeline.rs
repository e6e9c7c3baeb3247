//! Upload → segment → playlist → decode, checked pixel by pixel and millisecond by millisecond.

use std::collections::BTreeMap;

use m3u8_rs::{MediaPlaylist, Playlist};
use screentape::media::png::RgbImage;
use screentape::media::{ffmpeg, mp4, psnr_rgb};

use crate::support::{shot, Server, Viewer, T0};

const MIN: i64 = 60_000;

/// A media segment as the browser would see it: its playlist position and decoded frames.
#[derive(Debug)]
struct Fetched {
    uri: String,
    extinf_ms: i64,
    pdt_ms: Option<i64>,
    gap: bool,
    discontinuity: bool,
    tfdt: u64,
    frames: Vec<(i64, RgbImage)>,
}

fn media_playlist(s: &Server, v: &Viewer, device: &str) -> (MediaPlaylist, String) {
    let base = format!("/api/v1/devices/{device}/");
    let master = s.get(&v.token, &format!("{base}playlist.m3u8")).send().unwrap();
    assert_eq!(master.status(), 200);
    assert_eq!(master.headers()["cache-control"], "no-store");
    let master = master.bytes().unwrap();
    let Ok(Playlist::MasterPlaylist(mp)) = m3u8_rs::parse_playlist_res(&master) else { panic!("not a multivariant playlist") };
    let variant = &mp.variants[0];
    assert!(variant.codecs.as_deref().unwrap().starts_with("avc1.F4"), "High 4:4:4 codec string");
    let text = s.get(&v.token, &format!("{base}{}", variant.uri)).send().unwrap().text().unwrap();
    let Ok(Playlist::MediaPlaylist(pl)) = m3u8_rs::parse_playlist_res(text.as_bytes()) else { panic!("bad media playlist:\n{text}") };
    (pl, text)
}

/// Fetches every segment of the device's playlist over HTTP and decodes it.
fn fetch_all(s: &Server, v: &Viewer, device: &str) -> Vec<Fetched> {
    let base = format!("/api/v1/devices/{device}/");
    let (pl, _) = media_playlist(s, v, device);
    let mut init_uri = String::new();
    let mut out = Vec::new();
    for seg in &pl.segments {
        if let Some(map) = &seg.map {
            init_uri = map.uri.clone();
        }
        let gap = seg.unknown_tags.iter().any(|t| t.tag == "X-GAP");
        let pdt_ms = seg.program_date_time.map(|d| d.timestamp_millis());
        let extinf_ms = (seg.duration as f64 * 1000.0).round() as i64;
        if gap {
            out.push(Fetched { uri: seg.uri.clone(), extinf_ms, pdt_ms, gap, discontinuity: seg.discontinuity, tfdt: 0, frames: vec![] });
            continue;
        }
        let init = s.get(&v.token, &format!("{base}{init_uri}")).send().unwrap();
        assert_eq!(init.status(), 200, "init {init_uri}");
        let init = init.bytes().unwrap().to_vec();
        let media = s.get(&v.token, &format!("{base}{}", seg.uri)).send().unwrap();
        assert_eq!(media.status(), 200);
        assert!(media.headers()["cache-control"].to_str().unwrap().contains("immutable"));
        let media = media.bytes().unwrap().to_vec();
        let frames = ffmpeg::decode_segment(&init, &media)
            .unwrap()
            .into_iter()
            .map(|(pts, yuv)| (pts, ffmpeg::yuv_to_rgb(&yuv).unwrap()))
            .collect();
        out.push(Fetched {
            uri: seg.uri.clone(),
            extinf_ms,
            pdt_ms,
            gap,
            discontinuity: seg.discontinuity,
            tfdt: mp4::first_tfdt(&media).unwrap(),
            frames,
        });
    }
    out
}

/// The frame on screen at `t`: the last decoded frame at or before it.
fn frame_at(segments: &[Fetched], t: i64) -> Option<(i64, &RgbImage)> {
    segments.iter().flat_map(|s| s.frames.iter()).rfind(|(pts, _)| *pts <= t).map(|(p, i)| (*p, i))
}

fn assert_all_captures_match(segments: &[Fetched], originals: &BTreeMap<i64, RgbImage>) {
    let psnr: Vec<(i64, f64)> = originals
        .iter()
        .map(|(capture_ms, original)| {
            let (_, shown) = frame_at(segments, *capture_ms).unwrap_or_else(|| panic!("nothing on screen at {capture_ms}"));
            (*capture_ms - T0, psnr_rgb(shown, original))
        })
        .collect();
    assert!(psnr.iter().all(|(_, p)| *p >= 45.0), "every capture must be ≥ 45 dB; (ms after T0, dB): {psnr:.2?}");
}

#[test]
fn captures_become_exact_frames_on_an_absolute_timeline() {
    exact_frames_on_an_absolute_timeline(Server::start());
}

/// Uploads → minutes with carries and a gap → playlist, segments, timeline, frames and an
/// export, every frame checked against its upload. Also run with the index in PostgreSQL.
pub fn exact_frames_on_an_absolute_timeline(s: Server) {
    let v = s.add_user("ann", false);
    let (device, token) = s.add_device("laptop", Some("ann"));
    // Minute 0: captures at :00.000, :10.250 …; minute 1 starts at :07 so it opens with a carry;
    // minute 2 is empty (a gap); minute 3 has captures again. Odd dimensions throughout.
    let times: Vec<i64> = vec![
        T0, T0 + 10_250, T0 + 20_000, T0 + 35_500, T0 + 52_999,
        T0 + MIN + 7_000, T0 + MIN + 17_000, T0 + MIN + 59_999,
        T0 + 3 * MIN + 1, T0 + 3 * MIN + 30_000,
    ];
    s.clock.set_ms(T0 + 4 * MIN);
    let mut originals = BTreeMap::new();
    for (i, t) in times.iter().enumerate() {
        let (png, img) = shot(641, 361, *t, i as u64);
        let r = s.upload(&token, *t, &png);
        assert_eq!(r.status(), 201, "{}", r.text().unwrap());
        originals.insert(*t, img);
    }
    s.advance_and_encode(T0 + 4 * MIN + 15_000);

    let segments = fetch_all(&s, &v, &device);
    let summary: Vec<(bool, i64)> = segments.iter().map(|f| (f.gap, f.extinf_ms)).collect();
    // Minute 3's first capture (3:00.001) follows a gap: its segment starts at that capture, and
    // a gap entry of 1 ms keeps media time equal to wall-clock time.
    assert_eq!(summary, vec![(false, MIN), (false, MIN), (true, MIN), (true, 1), (false, MIN - 1)], "three minutes and one gap");
    let starts = [T0, T0 + MIN, T0 + 2 * MIN, T0 + 3 * MIN, T0 + 3 * MIN + 1];
    for (n, f) in segments.iter().enumerate() {
        assert_eq!(f.pdt_ms, Some(starts[n]), "PROGRAM-DATE-TIME of entry {n}");
        if !f.gap {
            assert_eq!(f.tfdt, starts[n] as u64, "tfdt is the segment's start in ms");
            assert_eq!(f.frames[0].0, starts[n], "every segment starts at its PROGRAM-DATE-TIME");
        }
    }
    // Presentation times are the capture times, to the millisecond.
    let pts: Vec<Vec<i64>> = segments.iter().filter(|f| !f.gap).map(|f| f.frames.iter().map(|x| x.0).collect()).collect();
    assert_eq!(pts[0], times[..5].to_vec());
    assert_eq!(pts[1], vec![T0 + MIN, T0 + MIN + 7_000, T0 + MIN + 17_000, T0 + MIN + 59_999], "carry at :00");
    // The carry frame repeats the previous minute's last capture, and a capture after a gap longer
    // than carry_max_age is presented at its own time, never earlier.
    assert!(psnr_rgb(&segments[1].frames[0].1, &originals[&(T0 + 52_999)]) >= 45.0);
    assert_eq!(pts[2], vec![T0 + 3 * MIN + 1, T0 + 3 * MIN + 30_000]);
    assert_all_captures_match(&segments, &originals);

    // The timeline lists every capture and the gap.
    let tl: serde_json::Value = s.get(&v.token, &format!("/api/v1/devices/{device}/timeline")).send().unwrap().json().unwrap();
    let captures: Vec<i64> = tl["captures"].as_array().unwrap().iter().map(|c| c.as_i64().unwrap()).collect();
    assert_eq!(captures, times);
    assert_eq!(tl["gaps"], serde_json::json!([{ "start_ms": T0 + 2 * MIN, "end_ms": T0 + 3 * MIN + 1 }]));
    assert_eq!(tl["media_start_ms"], T0);

    // frame.png is the exact frame on screen at t.
    let r = s.get(&v.token, &format!("/api/v1/devices/{device}/frame.png?t={}", T0 + 15_000)).send().unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-frame-time"], (T0 + 10_250).to_string());
    let png = screentape::media::png::decode_rgb(&r.bytes().unwrap(), 8192).unwrap();
    assert!(psnr_rgb(&png, &originals[&(T0 + 10_250)]) >= 45.0);
    let r = s.get(&v.token, &format!("/api/v1/devices/{device}/frame.png?t={}", T0 + 2 * MIN + 5)).send().unwrap();
    assert_eq!(r.status(), 404, "no frame inside a gap");
    let r = s.get(&v.token, &format!("/api/v1/devices/{device}/frame.png?t={}", T0 + 3 * MIN)).send().unwrap();
    assert_eq!(r.status(), 404, "nor before the first capture after it");

    // Export: one MP4 with times starting at 0, every frame kept.
    let r = s
        .get(&v.token, &format!("/api/v1/devices/{device}/export.mp4?from={}&to={}", T0 + 30_000, T0 + 2 * MIN))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let file = r.bytes().unwrap().to_vec();
    let (init, media) = mp4::split_init(&file).unwrap();
    let frames = ffmpeg::decode_segment(init, media).unwrap();
    let export_pts: Vec<i64> = frames.iter().map(|f| f.0).collect();
    assert_eq!(export_pts, vec![0, 10_250, 20_000, 35_500, 52_999, 60_000, 67_000, 77_000, 119_999]);
    // A `<video src>` seeks in an export by Range requests.
    let r = s
        .get(&v.token, &format!("/api/v1/devices/{device}/export.mp4?from={}&to={}", T0 + 30_000, T0 + 2 * MIN))
        .header("range", "bytes=100-199")
        .send()
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(r.headers()["content-range"], format!("bytes 100-199/{}", file.len()).as_str());
    assert_eq!(&r.bytes().unwrap()[..], &file[100..200]);
}

#[test]
fn a_late_frame_re_encodes_its_minute_from_the_kept_originals() {
    late_frame_re_encodes_its_minute_under_a_new_uri(true);
}

/// Without originals the minute's other frames come from decoding its stored segment. With
/// compaction on, originals stay until their block is compacted, so this needs it off (and no
/// keep time) to reach that path: the spool is checked empty before the late frame arrives.
#[test]
fn a_late_frame_after_originals_are_gone_re_encodes_from_the_stored_video() {
    late_frame_re_encodes_its_minute_under_a_new_uri(false);
}

fn late_frame_re_encodes_its_minute_under_a_new_uri(originals_kept: bool) {
    let s = Server::start_with(|c| {
        if !originals_kept {
            c.keep_originals = std::time::Duration::ZERO;
            c.compact.span = std::time::Duration::ZERO;
        }
    });
    let v = s.add_user("ann", true);
    let (device, token) = s.add_device("laptop", None);
    s.clock.set_ms(T0 + 2 * MIN);
    let mut originals = BTreeMap::new();
    for (i, t) in [T0 + 5_000, T0 + 25_000, T0 + 45_000].iter().enumerate() {
        let (png, img) = shot(640, 360, *t, i as u64);
        assert_eq!(s.upload(&token, *t, &png).status(), 201);
        originals.insert(*t, img);
    }
    // The device's latest encoded capture stays in the spool (the next minute's carry picture):
    // a capture in the next minute, encoded too, lets every original of this minute go.
    let (png, _) = shot(640, 360, T0 + MIN + 5_000, 7);
    assert_eq!(s.upload(&token, T0 + MIN + 5_000, &png).status(), 201);
    s.advance_and_encode(T0 + 2 * MIN + 15_000);
    let before = fetch_all(&s, &v, &device);
    assert_eq!(before.len(), 2);
    // A second later a sweep releases the originals past keep_originals (or keeps them).
    s.clock.set_ms(T0 + 2 * MIN + 16_000);
    s.app.retention_sweep().unwrap();
    for t in originals.keys() {
        let spooled = s.app.store.exists(&screentape::layout::spool_key(&device, *t)).unwrap();
        assert_eq!(spooled, originals_kept, "original of {} ms in the spool before the late frame", t - T0);
    }

    let late = T0 + 35_000;
    let (png, img) = shot(640, 360, late, 9);
    assert_eq!(s.upload(&token, late, &png).status(), 201, "a frame for an encoded minute is accepted");
    assert_eq!(s.upload(&token, late, &png).status(), 200, "an identical retry is a 200");
    originals.insert(late, img);
    s.advance_and_encode(T0 + 2 * MIN + 17_000);

    let after = fetch_all(&s, &v, &device);
    assert_eq!(after.len(), 2);
    assert_ne!(after[0].uri, before[0].uri, "a re-encoded minute gets a new URI");
    assert_eq!(after[1].uri, before[1].uri, "the next minute is untouched");
    let pts: Vec<i64> = after[0].frames.iter().map(|f| f.0).collect();
    assert_eq!(pts, vec![T0 + 5_000, T0 + 25_000, T0 + 35_000, T0 + 45_000], "the first capture at its own time, not from :00");
    // Every capture's pixels, those decoded from the stored video included.
    assert_all_captures_match(&after, &originals);
    // The replaced segment is gone from disk and from the index.
    let old = s.get(&v.token, &format!("/api/v1/devices/{device}/{}", before[0].uri)).send().unwrap();
    assert_eq!(old.status(), 404);
    let report = screentape::check::check(s.app.store.as_ref(), s.app.index.as_ref(), false).unwrap();
    assert!(report.is_consistent(), "{report:?}");
}

#[test]
fn a_resolution_change_starts_a_new_segment_with_a_discontinuity() {
    let s = Server::start();
    let v = s.add_user("ann", true);
    let (device, token) = s.add_device("laptop", None);
    s.clock.set_ms(T0 + MIN);
    let plan = [(T0 + 3_000, 640, 360), (T0 + 20_000, 481, 271), (T0 + 30_000, 481, 271), (T0 + 50_000, 640, 360)];
    let mut originals = BTreeMap::new();
    for (i, (t, w, h)) in plan.iter().enumerate() {
        let (png, img) = shot(*w, *h, *t, i as u64);
        assert_eq!(s.upload(&token, *t, &png).status(), 201);
        originals.insert(*t, img);
    }
    s.advance_and_encode(T0 + MIN + 15_000);
    let segments = fetch_all(&s, &v, &device);
    let spans: Vec<(i64, i64, bool)> = segments.iter().map(|f| (f.pdt_ms.unwrap() - T0, f.extinf_ms, f.discontinuity)).collect();
    assert_eq!(spans, vec![(3_000, 17_000, false), (20_000, 30_000, true), (50_000, 10_000, true)]);
    let sizes: Vec<(u32, u32)> = segments.iter().map(|f| (f.frames[0].1.width, f.frames[0].1.height)).collect();
    assert_eq!(sizes, vec![(640, 360), (481, 271), (640, 360)], "no frame rescaled");
    assert_all_captures_match(&segments, &originals);
}

#[test]
fn retention_deletes_rows_then_files_by_the_injected_clock() {
    // One-minute segments only: this checks minute-exact expiry (compacted blocks expire whole).
    let s = Server::start_with(|c| {
        c.retention = std::time::Duration::from_secs(3600);
        c.compact.span = std::time::Duration::ZERO;
    });
    let v = s.add_user("ann", true);
    let (device, token) = s.add_device("laptop", None);
    s.clock.set_ms(T0 + 3 * MIN);
    for m in 0..3 {
        let (png, _) = shot(320, 200, T0 + m * MIN + 1_000, m as u64);
        assert_eq!(s.upload(&token, T0 + m * MIN + 1_000, &png).status(), 201);
    }
    s.advance_and_encode(T0 + 3 * MIN + 15_000);
    assert_eq!(fetch_all(&s, &v, &device).len(), 3);
    let files_before = s.app.index.all_segments().unwrap();

    // An hour after the first minute ended, only that minute is expired.
    s.clock.set_ms(T0 + MIN + 3_600_000);
    let sweep = s.app.retention_sweep().unwrap();
    assert!(sweep.files_removed >= 1);
    let left = fetch_all(&s, &v, &device);
    assert_eq!(left.iter().map(|f| f.pdt_ms.unwrap()).collect::<Vec<_>>(), vec![T0 + MIN, T0 + 2 * MIN]);
    assert!(!s.app.store.exists(&files_before[0].file).unwrap(), "the expired file is unlinked");
    assert!(s.app.store.exists(&files_before[1].file).unwrap());
    // A frame older than the window is refused.
    let (png, _) = shot(320, 200, T0, 0);
    assert_eq!(s.upload(&token, T0 - 1, &png).status(), 422);
    // Past everything: nothing left, nothing orphaned.
    s.clock.set_ms(T0 + 10 * 3_600_000);
    s.app.retention_sweep().unwrap();
    assert!(s.app.index.all_segments().unwrap().is_empty());
    assert!(s.app.index.all_inits().unwrap().is_empty());
    let report = screentape::check::check(s.app.store.as_ref(), s.app.index.as_ref(), false).unwrap();
    assert!(report.is_consistent() && report.segments == 0, "{report:?}");
}

#[test]
fn segments_answer_range_requests() {
    let s = Server::start();
    let v = s.add_user("ann", true);
    let (device, token) = s.add_device("laptop", None);
    s.clock.set_ms(T0 + MIN);
    let (png, _) = shot(320, 200, T0 + 1, 0);
    assert_eq!(s.upload(&token, T0 + 1, &png).status(), 201);
    s.advance_and_encode(T0 + MIN + 15_000);
    let (_, text) = media_playlist(&s, &v, &device);
    let uri = text.lines().find(|l| l.starts_with("segments/")).unwrap();
    let url = format!("/api/v1/devices/{device}/{uri}");
    let whole = s.get(&v.token, &url).send().unwrap().bytes().unwrap();
    let part = s.get(&v.token, &url).header("range", "bytes=8-23").send().unwrap();
    assert_eq!(part.status(), 206);
    assert_eq!(part.headers()["content-range"], format!("bytes 8-23/{}", whole.len()));
    assert_eq!(part.bytes().unwrap(), whole.slice(8..24));
    let bad = s.get(&v.token, &url).header("range", format!("bytes={}-", whole.len())).send().unwrap();
    assert_eq!(bad.status(), 416);
}

#[test]
fn a_byte_budget_deletes_the_oldest_footage_first() {
    let s = Server::start();
    let v = s.add_user("ann", true);
    let (a, token_a) = s.add_device("a", None);
    let (_, token_b) = s.add_device("b", None);
    s.clock.set_ms(T0 + 6 * MIN);
    for m in 0..6 {
        let token = if m % 2 == 0 { &token_a } else { &token_b };
        let (png, _) = shot(320, 200, T0 + m * MIN + 5, m as u64);
        assert_eq!(s.upload(token, T0 + m * MIN + 5, &png).status(), 201);
    }
    s.advance_and_encode(T0 + 6 * MIN + 15_000);
    let all = s.app.index.all_segments().unwrap();
    assert_eq!(all.len(), 6);
    let inits: i64 = s.app.index.all_inits().unwrap().iter().map(|i| i.bytes).sum();
    // Room for the newest three segments only.
    let mut newest: Vec<_> = all.iter().map(|x| (x.end_ms, x.bytes)).collect();
    newest.sort();
    let budget = (inits + newest[3..].iter().map(|x| x.1).sum::<i64>()) as u64;
    let mut config = s.app.config.clone();
    config.max_bytes = budget;
    config.keep_originals = std::time::Duration::ZERO;
    s.app.retention_for(&config)
        .sweep()
        .unwrap();
    let left: Vec<i64> = s.app.index.all_segments().unwrap().iter().map(|x| x.start_ms - T0).collect::<std::collections::BTreeSet<_>>().into_iter().collect();
    assert_eq!(left, vec![3 * MIN + 5, 4 * MIN + 5, 5 * MIN + 5], "the three oldest minutes went, across devices");
    let stored: i64 = s.app.index.all_segments().unwrap().iter().map(|x| x.bytes).sum::<i64>()
        + s.app.index.all_inits().unwrap().iter().map(|i| i.bytes).sum::<i64>();
    assert!(stored as u64 <= budget);
    assert!(screentape::check::check(s.app.store.as_ref(), s.app.index.as_ref(), false).unwrap().is_consistent());
    // What remains still plays.
    assert!(!fetch_all(&s, &v, &a).is_empty());
}

#[test]
fn readers_racing_retention_get_whole_files_or_clean_404s() {
    let s = Server::start();
    let v = s.add_user("ann", true);
    let (device, token) = s.add_device("laptop", None);
    s.clock.set_ms(T0 + 10 * MIN);
    for m in 0..10 {
        let (png, _) = shot(320, 200, T0 + m * MIN + 5, m as u64);
        assert_eq!(s.upload(&token, T0 + m * MIN + 5, &png).status(), 201);
    }
    s.advance_and_encode(T0 + 10 * MIN + 15_000);
    let urls: Vec<(String, Vec<u8>)> = s
        .app
        .index
        .all_segments()
        .unwrap()
        .iter()
        .map(|seg| {
            let url = s.url(&format!("/api/v1/devices/{device}/segments/{}.m4s", seg.id));
            let body = s.get(&v.token, &url).send().unwrap().bytes().unwrap().to_vec();
            (url, body)
        })
        .collect();
    let export = s.url(&format!("/api/v1/devices/{device}/export.mp4?from={T0}&to={}", T0 + 10 * MIN));
    let export_len = s.get(&v.token, &export).send().unwrap().bytes().unwrap().len();
    // Expire everything while readers hammer the files.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers: Vec<_> = (0..3)
        .map(|_| {
            let (urls, export, token, stop) = (urls.clone(), export.clone(), v.token.clone(), stop.clone());
            std::thread::spawn(move || {
                let client = reqwest::blocking::Client::new();
                let (mut whole, mut gone) = (0, 0);
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    for (url, body) in &urls {
                        let r = client.get(url).bearer_auth(&token).send().unwrap();
                        match r.status().as_u16() {
                            200 => {
                                assert_eq!(&r.bytes().unwrap()[..], &body[..], "a 200 carries the whole file");
                                whole += 1;
                            }
                            404 => {
                                assert_eq!(r.json::<serde_json::Value>().unwrap()["error"], "not_found");
                                gone += 1;
                            }
                            other => panic!("segment answered {other}"),
                        }
                    }
                    let r = client.get(&export).bearer_auth(&token).send().unwrap();
                    match r.status().as_u16() {
                        200 => {
                            // A whole MP4 of what remained when the request was served: it parses.
                            let file = r.bytes().unwrap().to_vec();
                            assert!(file.len() <= export_len);
                            let (init, media) = mp4::split_init(&file).expect("a complete MP4");
                            assert!(!init.is_empty() && mp4::boxes(media).is_ok(), "no truncated box");
                        }
                        404 => gone += 1,
                        other => panic!("export answered {other}"),
                    }
                }
                (whole, gone)
            })
        })
        .collect();
    for minute in 1..=10 {
        s.clock.set_ms(T0 + minute * MIN + 24 * 3_600_000);
        s.app.retention_sweep().unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (mut whole, mut gone) = (0, 0);
    for r in readers {
        let (w, g) = r.join().unwrap();
        whole += w;
        gone += g;
    }
    assert!(gone > 0, "the readers saw files disappear ({whole} whole, {gone} gone)");
    eprintln!("faults: retention under reading: {whole} whole files and {gone} clean 404s, no 5xx, no truncated 200");
    // A compaction that was running meanwhile commits nothing past the window; the next sweep
    // takes whatever it committed just inside it.
    s.app.run_due_now();
    s.app.retention_sweep().unwrap();
    assert!(s.app.index.all_segments().unwrap().is_empty());
}

/// Retention deleted a minute's rows while its originals were still kept in the spool; a restart
/// took those files for pending frames and re-encoded footage that had expired.
#[test]
fn regression_expired_footage_is_not_resurrected_from_kept_originals() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let configure = |c: &mut screentape::config::Config| {
        c.data_dir = data_dir.clone();
        c.retention = std::time::Duration::from_secs(3600);
        c.keep_originals = std::time::Duration::from_secs(24 * 3600);
    };
    let device;
    {
        let s = Server::start_with(configure);
        let (id, token) = s.add_device("laptop", None);
        device = id;
        s.clock.set_ms(T0 + 2 * MIN);
        for m in 0..2 {
            let (png, _) = shot(160, 100, T0 + m * MIN + 5, m as u64);
            assert_eq!(s.upload(&token, T0 + m * MIN + 5, &png).status(), 201);
        }
        s.advance_and_encode(T0 + 2 * MIN + 15_000);
        s.clock.set_ms(T0 + MIN + 3_600_000); // the first minute is past the window
        s.app.retention_sweep().unwrap();
        assert_eq!(s.app.index.frames_between(&device, 0, i64::MAX).unwrap().len(), 1);
    }
    // Restart on the same data dir at the same time: the expired minute must stay gone.
    let mut config = screentape::config::Config::default();
    configure(&mut config);
    let app = screentape::app::App::open(config, screentape::clock::ManualClock::new(T0 + MIN + 3_600_000)).unwrap();
    app.run_due_now();
    let frames: Vec<i64> = app.index.frames_between(&device, 0, i64::MAX).unwrap().iter().map(|f| f.capture_ms - T0).collect();
    assert_eq!(frames, vec![MIN + 5], "only the unexpired minute is there");
    app.shutdown();
}

/// Compaction: minutes older than `compact_after` become one long-GOP segment per 10-minute block,
/// frame-exact, under new URIs, with the originals released afterwards; the newest minutes stay
/// one-minute segments; a late frame into a compacted block re-encodes the block.
#[test]
fn compaction_rewrites_old_minutes_into_long_segments_with_exact_frames() {
    let s = Server::start_with(|c| c.keep_originals = std::time::Duration::from_secs(60));
    let v = s.add_user("ann", true);
    let (device, token) = s.add_device("laptop", None);
    let mut originals = BTreeMap::new();
    let mut t = T0 + 3_000;
    let mut i = 0;
    let mut hot_bytes = 0;
    // Like an agent: each capture uploaded at its time, the server encoding as the clock moves.
    while t < T0 + 25 * MIN {
        s.clock.set_ms(t);
        let (png, img) = shot(320, 200, t, i);
        assert_eq!(s.upload(&token, t, &png).status(), 201);
        originals.insert(t, img);
        if t < T0 + 19 * MIN && t + 10_000 >= T0 + 19 * MIN {
            // Block [0, 10) min is due for compaction at 20:00 (its end + compact_after): not yet.
            s.app.run_due_now();
            let first = s.app.index.segments_between(&device, T0, T0 + 10 * MIN).unwrap();
            assert!(first.iter().all(|s| s.span_ms == MIN) && first.len() == 10, "one-minute segments until then");
            hot_bytes = first.iter().map(|s| s.bytes).sum();
        }
        t += 10_000;
        i += 1;
    }
    s.advance_and_encode(T0 + 30 * MIN + 15_000);
    let segs = s.app.index.segments_between(&device, 0, i64::MAX).unwrap();
    let spans: Vec<(i64, i64, i64)> = segs.iter().map(|s| ((s.start_ms - T0) / 1000, (s.end_ms - T0) / 1000, s.span_ms / 1000)).collect();
    assert_eq!(&spans[..2], &[(3, 600, 600), (600, 1200, 600)], "two compacted blocks, the first from the first capture");
    assert!(spans[2..].iter().all(|(a, b, span)| b - a == 60 && *span == 60), "the rest stay one-minute: {spans:?}");
    assert_eq!(segs[0].frame_count, 60, "one keyframe interval for the block");
    assert!(segs[0].bytes < hot_bytes, "compacted {} B < one-minute {} B", segs[0].bytes, hot_bytes);

    let (pl, text) = media_playlist(&s, &v, &device);
    assert!(text.contains("#EXT-X-TARGETDURATION:600\n"), "{text}");
    let fetched = fetch_all(&s, &v, &device);
    assert_eq!(fetched[0].extinf_ms, 597_000);
    assert_eq!(fetched[0].pdt_ms, Some(T0 + 3_000));
    assert_eq!(fetched[0].tfdt, (T0 + 3_000) as u64);
    assert_eq!(fetched[1].tfdt, (T0 + 10 * MIN) as u64);
    let decoded: Vec<i64> = fetched.iter().flat_map(|f| f.frames.iter().map(|(pts, _)| *pts)).collect();
    let want: Vec<i64> = originals.keys().copied().collect();
    // Minute starts with a carry repeat the previous capture at :00 in one-minute segments.
    let decoded_captures: Vec<i64> = decoded.iter().copied().filter(|p| originals.contains_key(p)).collect();
    assert_eq!(decoded_captures, want, "every capture at its exact time");
    assert_all_captures_match(&fetched, &originals);
    assert_eq!(pl.segments.len(), 2 + spans.len() - 2);
    // Timeline previews stay per minute inside a compacted block.
    let thumb = |t: i64| {
        let r = s.get(&v.token, &format!("/api/v1/devices/{device}/thumb.png?t={t}")).send().unwrap();
        assert_eq!(r.status(), 200);
        r.bytes().unwrap().to_vec()
    };
    let (m2, m7, m7_again) = (thumb(T0 + 2 * MIN + 30_000), thumb(T0 + 7 * MIN + 5_000), thumb(T0 + 7 * MIN + 59_000));
    assert_ne!(m2, m7, "two minutes of one compacted segment have their own previews");
    assert_eq!(m7, m7_again, "one preview per minute");
    let shown = screentape::media::png::decode_rgb(&m7, 1000).unwrap();
    assert_eq!(shown.width, 240, "a 240-px preview");
    // The replaced one-minute segments are gone; the compacted blocks' originals are released.
    s.clock.set_ms(T0 + 32 * MIN);
    s.app.retention_sweep().unwrap();
    let spool = screentape::ingest::spool_captures(s.app.store.as_ref(), &device).unwrap();
    assert!(spool.iter().all(|c| *c >= T0 + 20 * MIN), "originals of compacted blocks released: {:?}", spool.iter().next());
    let report = screentape::check::check(s.app.store.as_ref(), s.app.index.as_ref(), false).unwrap();
    assert!(report.is_consistent(), "{report:?}");

    // A late frame into the first block: the block is encoded again, under a new URI.
    let late = T0 + 4 * MIN + 5_500;
    let (png, img) = shot(320, 200, late, 999);
    assert_eq!(s.upload(&token, late, &png).status(), 201);
    originals.insert(late, img);
    s.advance_and_encode(T0 + 32 * MIN + 30_000);
    let after = fetch_all(&s, &v, &device);
    assert_ne!(after[0].uri, fetched[0].uri);
    assert_eq!(after[0].extinf_ms, 597_000);
    assert!(after[0].frames.iter().any(|(pts, _)| *pts == late));
    // Its neighbours now come from decoded video (their originals were released): one generation.
    assert_all_captures_match(&after, &originals);
}

/// Browsers without 4:4:4 get a High 4:2:0 variant, transcoded when first asked for, cached, and
/// swept with its segment.
#[test]
fn the_420_variant_is_transcoded_on_demand_cached_and_swept() {
    let s = Server::start_with(|c| c.retention = std::time::Duration::from_secs(3600));
    let v = s.add_user("ann", true);
    let (device, token) = s.add_device("laptop", None);
    s.clock.set_ms(T0 + 3 * MIN);
    let mut originals = BTreeMap::new();
    for (i, t) in [T0 + 2_000, T0 + 31_000, T0 + MIN + 7_000, T0 + MIN + 40_000, T0 + 2 * MIN].iter().enumerate() {
        let (png, img) = shot(642, 362, *t, i as u64);
        assert_eq!(s.upload(&token, *t, &png).status(), 201);
        originals.insert(*t, img);
    }
    s.advance_and_encode(T0 + 3 * MIN + 15_000);
    let base = format!("/api/v1/devices/{device}/");
    let master = s.get(&v.token, &format!("{base}playlist.m3u8")).send().unwrap().bytes().unwrap();
    let Ok(Playlist::MasterPlaylist(mp)) = m3u8_rs::parse_playlist_res(&master) else { panic!("multivariant") };
    assert_eq!(mp.variants.len(), 2);
    assert!(mp.variants[0].codecs.as_deref().unwrap().starts_with("avc1.F4"));
    let codec_420 = mp.variants[1].codecs.clone().unwrap();
    assert!(codec_420.starts_with("avc1.64"), "{codec_420}");
    let text = s.get(&v.token, &format!("{base}{}", mp.variants[1].uri)).send().unwrap().text().unwrap();
    let Ok(Playlist::MediaPlaylist(pl)) = m3u8_rs::parse_playlist_res(text.as_bytes()) else { panic!("{text}") };
    let init_uri = pl.segments[0].map.as_ref().unwrap().uri.clone();
    assert!(init_uri.starts_with("init420/"), "{init_uri}");
    let init = s.get(&v.token, &format!("{base}{init_uri}")).send().unwrap();
    assert_eq!(init.status(), 200);
    let init = init.bytes().unwrap().to_vec();
    assert_eq!(mp4::codec_string(mp4::split_init(&init).unwrap().0).unwrap(), codec_420, "CODECS names what is served");
    let (mut pts, mut worst) = (Vec::new(), f64::INFINITY);
    for seg in &pl.segments {
        assert!(seg.uri.starts_with("segments420/"));
        let first = s.get(&v.token, &format!("{base}{}", seg.uri)).send().unwrap().bytes().unwrap().to_vec();
        let again = s.get(&v.token, &format!("{base}{}", seg.uri)).send().unwrap().bytes().unwrap().to_vec();
        assert_eq!(first, again, "the second request is served from the cache");
        for (t, yuv) in ffmpeg::decode_segment(&init, &first).unwrap() {
            let rgb = ffmpeg::yuv_to_rgb(&yuv).unwrap();
            assert_eq!((rgb.width, rgb.height), (642, 362));
            if let Some(orig) = originals.get(&t) {
                worst = worst.min(psnr_rgb(&rgb, orig));
            }
            pts.push(t);
        }
    }
    let want: Vec<i64> = vec![T0 + 2_000, T0 + 31_000, T0 + MIN, T0 + MIN + 7_000, T0 + MIN + 40_000, T0 + 2 * MIN];
    assert_eq!(pts, want, "the same presentation times as the 4:4:4 segments");
    assert!(worst >= 28.0, "4:2:0 halves colour detail but keeps the picture: worst {worst:.1} dB");
    eprintln!("4:2:0 variant: worst capture {worst:.1} dB");
    let cached = s.app.store.list(screentape::layout::VARIANT_PREFIX).unwrap().len();
    assert_eq!(cached, 3 + 1, "three segments and one init cached");
    // Retention takes the transcodes with their segments.
    s.clock.set_ms(T0 + 3 * MIN + 3_600_000);
    s.app.retention_sweep().unwrap();
    assert_eq!(s.app.store.list(screentape::layout::VARIANT_PREFIX).unwrap().len(), 0, "no footage outlives the window in the cache");
}

/// GETs an export and decodes it: (X-Export-Start, frames as (ms from the start, picture)).
fn export_frames(s: &Server, v: &Viewer, device: &str, from: i64, to: i64) -> (i64, Vec<(i64, RgbImage)>) {
    let r = s.get(&v.token, &format!("/api/v1/devices/{device}/export.mp4?from={from}&to={to}")).send().unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "video/mp4");
    let start: i64 = r.headers()["x-export-start"].to_str().unwrap().parse().unwrap();
    let file = r.bytes().unwrap().to_vec();
    let (init, media) = mp4::split_init(&file).unwrap();
    let frames = ffmpeg::decode_segment(init, media).unwrap().into_iter().map(|(pts, yuv)| (pts, ffmpeg::yuv_to_rgb(&yuv).unwrap())).collect();
    (start, frames)
}

/// Every capture in the export, at its time from the export start, at its own size, ≥ 45 dB.
fn assert_export_holds(start: i64, frames: &[(i64, RgbImage)], originals: &BTreeMap<i64, RgbImage>) {
    let pts: Vec<i64> = frames.iter().map(|f| f.0).collect();
    let want: Vec<i64> = originals.keys().map(|t| t - start).collect();
    assert_eq!(pts.len(), want.len(), "one frame per capture");
    assert_eq!(pts, want, "each frame at its capture time − export start");
    let worst = frames
        .iter()
        .zip(originals.values())
        .map(|((pts, shown), original)| {
            assert_eq!((shown.width, shown.height), (original.width, original.height), "size of the frame at {pts}");
            (*pts, psnr_rgb(shown, original))
        })
        .fold((0, f64::INFINITY), |w, p| if p.1 < w.1 { p } else { w });
    assert!(worst.1 >= 45.0, "every frame ≥ 45 dB; worst at {} ms: {:.2} dB", worst.0, worst.1);
}

/// Compacted blocks and one-minute segments have different x264 settings, so different inits;
/// the export stopped at the first change and still answered 200 (150 captures in, 122 out).
#[test]
fn regression_export_across_the_compaction_boundary_holds_every_capture() {
    let s = Server::start();
    let v = s.add_user("ann", true);
    let (device, token) = s.add_device("laptop", None);
    let mut originals = BTreeMap::new();
    // Every 10 s for 25 minutes from :00, so each minute opens on a capture (no carry frames).
    for (i, t) in (T0..T0 + 25 * MIN).step_by(10_000).enumerate() {
        s.clock.set_ms(t);
        let (png, img) = shot(320, 200, t, i as u64);
        assert_eq!(s.upload(&token, t, &png).status(), 201);
        originals.insert(t, img);
        if t % MIN == 50_000 {
            s.app.run_due_now();
        }
    }
    s.advance_and_encode(T0 + 30 * MIN + 15_000);
    let segs = s.app.index.segments_between(&device, 0, i64::MAX).unwrap();
    let spans: Vec<i64> = segs.iter().map(|g| g.span_ms / 1000).collect();
    assert_eq!(spans, [vec![600, 600], vec![60; 5]].concat(), "two compacted blocks, then five minutes");
    let inits: std::collections::BTreeSet<i64> = segs.iter().map(|g| g.init_id).collect();
    assert!(inits.len() >= 2, "compacted and one-minute segments have their own inits");

    // The range starts inside the first block: the export holds that whole block.
    let (start, frames) = export_frames(&s, &v, &device, T0 + 5 * MIN, T0 + 25 * MIN);
    assert_eq!(start, T0, "X-Export-Start is the first segment's start");
    assert_eq!(originals.len(), 150);
    assert_export_holds(start, &frames, &originals);
}

/// A resolution change starts a new segment with its own init; the export held only the frames
/// before it.
#[test]
fn regression_export_across_resolution_changes_holds_every_capture_at_its_size() {
    let s = Server::start();
    let v = s.add_user("ann", true);
    let (device, token) = s.add_device("laptop", None);
    s.clock.set_ms(T0 + 3 * MIN);
    let plan = [
        (T0, 640, 360),
        (T0 + 20_000, 640, 360),
        (T0 + 30_000, 481, 271),
        (T0 + 45_000, 481, 271),
        (T0 + MIN, 481, 271),
        (T0 + MIN + 30_000, 481, 271),
        (T0 + 2 * MIN, 640, 360),
        (T0 + 2 * MIN + 10_500, 640, 360),
    ];
    let mut originals = BTreeMap::new();
    for (i, (t, w, h)) in plan.iter().enumerate() {
        let (png, img) = shot(*w, *h, *t, i as u64);
        assert_eq!(s.upload(&token, *t, &png).status(), 201);
        originals.insert(*t, img);
    }
    s.advance_and_encode(T0 + 3 * MIN + 15_000);
    let (start, frames) = export_frames(&s, &v, &device, T0, T0 + 3 * MIN);
    assert_eq!(start, T0);
    assert_export_holds(start, &frames, &originals);
}

/// One MP4 track has one codec: H.264 minutes after AV1 blocks are refused with a 422 and a
/// stable code, never a short 200; the AV1 blocks alone export whole.
#[test]
fn an_export_mixing_h264_and_av1_is_a_422() {
    let s = Server::start_with(|c| {
        c.compact.codec = screentape::media::ffmpeg::Codec::Av1;
        (c.compact.crf, c.compact.preset, c.compact.x264_params) = (30.0, "8".into(), String::new());
        (c.compact.span, c.compact.after) = (std::time::Duration::from_secs(120), std::time::Duration::from_secs(60));
    });
    let v = s.add_user("ann", true);
    let (device, token) = s.add_device("laptop", None);
    s.clock.set_ms(T0 + 5 * MIN);
    let mut originals = BTreeMap::new();
    for (i, t) in (T0..T0 + 5 * MIN).step_by(30_000).enumerate() {
        let (png, img) = shot(160, 100, t, i as u64);
        assert_eq!(s.upload(&token, t, &png).status(), 201);
        originals.insert(t, img);
    }
    s.advance_and_encode(T0 + 5 * MIN + 15_000);
    let codecs: Vec<(i64, String)> = s.app.index.segments_between(&device, 0, i64::MAX).unwrap().iter().map(|g| (g.span_ms / 1000, g.codec[..4].to_string())).collect();
    assert_eq!(codecs, vec![(120, "av01".into()), (120, "av01".into()), (60, "avc1".into())]);

    let r = s.get(&v.token, &format!("/api/v1/devices/{device}/export.mp4?from={T0}&to={}", T0 + 5 * MIN)).send().unwrap();
    assert_eq!(r.status(), 422);
    let body: serde_json::Value = r.json().unwrap();
    assert_eq!(body["error"], "export_mixed_codecs", "{body}");

    let (start, frames) = export_frames(&s, &v, &device, T0, T0 + 4 * MIN);
    originals.retain(|t, _| *t < T0 + 4 * MIN);
    let pts: Vec<i64> = frames.iter().map(|f| f.0).collect();
    assert_eq!(pts, originals.keys().map(|t| t - start).collect::<Vec<_>>(), "both AV1 blocks, every frame");
}

/// A grainy photo-like picture (every block busy), panned with `step`.
fn grainy_shot(width: u32, height: u32, step: u64) -> (Vec<u8>, RgbImage) {
    let mut data = Vec::with_capacity((width * height * 3) as usize);
    let mut state = (step + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for y in 0..height {
        for x in 0..width {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let fx = (x as u64 + step * 5) as f64;
            let noise = (state % 9) as f64 - 4.0;
            for k in [1.0, 1.7, 0.6] {
                let base = 128.0 + 90.0 * ((fx * k * 0.031).sin() * (y as f64 * 0.023 / k).cos());
                data.push((base + noise * k).clamp(0.0, 255.0) as u8);
            }
        }
    }
    let img = RgbImage { width, height, data };
    (screentape::media::png::encode_rgb(&img), img)
}

/// Uploads `count` grainy captures 10 s apart from T0 + 3 s (the clock following them).
fn upload_grainy(s: &Server, token: &str, count: u64) -> BTreeMap<i64, RgbImage> {
    let mut originals = BTreeMap::new();
    for k in 0..count {
        let t = T0 + 3_000 + k as i64 * 10_000;
        s.clock.set_ms(t);
        let (png, img) = grainy_shot(320, 200, k);
        assert_eq!(s.upload(token, t, &png).status(), 201);
        originals.insert(t, img);
    }
    originals
}

/// The worst RGB PSNR over `originals` of the frames on screen at their capture times.
fn worst_db(fetched: &[Fetched], originals: &BTreeMap<i64, RgbImage>) -> f64 {
    originals.iter().map(|(t, orig)| psnr_rgb(frame_at(fetched, *t).expect("on screen").1, orig)).fold(f64::INFINITY, f64::min)
}

/// The quality floor: grainy pictures that the configured crf would store under 45 dB are
/// encoded again at a lower crf until every frame is over the floor (as a viewer decodes it),
/// in the one-minute segments and in the compacted block; with the check off, they fall under it.
#[test]
fn the_quality_floor_encodes_a_block_under_it_again_at_a_lower_crf() {
    let run = |floor: f32| -> (f64, u64) {
        let s = Server::start_with(|c| {
            c.encoder.crf = 33.0;
            c.compact.crf = 33.0;
            c.encoder.floor_db = floor;
        });
        let v = s.add_user("ann", true);
        let (device, token) = s.add_device("laptop", None);
        let originals = upload_grainy(&s, &token, 8);
        s.advance_and_encode(T0 + 2 * MIN + 15_000);
        let minute = fetch_all(&s, &v, &device);
        // Compaction: the block ended `compact_after` (10 min) ago.
        s.advance_and_encode(T0 + 21 * MIN);
        let spans: Vec<i64> = s.app.index.segments_between(&device, 0, i64::MAX).unwrap().iter().map(|g| g.span_ms).collect();
        assert_eq!(spans, vec![10 * MIN], "compacted");
        let block = fetch_all(&s, &v, &device);
        let worst = worst_db(&minute, &originals).min(worst_db(&block, &originals));
        (worst, s.app.metrics.segments_below_floor.get())
    };
    let (unchecked, _) = run(0.0);
    assert!(unchecked < 45.0, "crf 33 on grain, no floor: worst frame {unchecked:.2} dB");
    let (held, retries) = run(45.0);
    assert!(held >= 45.0, "with the floor: worst frame {held:.2} dB (unchecked {unchecked:.2} dB)");
    assert!(retries >= 2, "the minute and the block were encoded again: {retries}");
}

/// A device whose screen missed the floor starts its next segment at the crf that held it, so
/// the next minute of the same hard content is encoded once, not first too coarse and then again.
#[test]
fn a_device_that_missed_the_floor_starts_its_next_segment_at_the_crf_that_held_it() {
    let s = Server::start_with(|c| {
        c.encoder.crf = 33.0;
        c.compact.span = std::time::Duration::ZERO;
    });
    let v = s.add_user("ann", true);
    let (device, token) = s.add_device("laptop", None);
    // Six captures in minute 0, six in minute 1.
    let originals = upload_grainy(&s, &token, 12);
    s.advance_and_encode(T0 + MIN + 15_000);
    let first = s.app.metrics.segments_below_floor.get();
    assert!(first >= 1, "minute 0 was encoded again under the floor");
    s.advance_and_encode(T0 + 2 * MIN + 15_000);
    assert_eq!(s.app.metrics.segments_below_floor.get(), first, "minute 1 started at the crf that held minute 0");
    let worst = worst_db(&fetch_all(&s, &v, &device), &originals);
    assert!(worst >= 45.0, "every frame over the floor: {worst:.2} dB");
}
