//! kill -9 under load, again and again: every acknowledged frame ends up in a segment.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::Rng;
use screentape::app::App;
use screentape::clock::{Clock, ManualClock, SystemClock};
use screentape::config::Config;
use screentape::media::png::encode_rgb;
use screentape::media::{ffmpeg, psnr_rgb};
use crate::support::upload_recording_ack;
use crate::synth::screenshot;
use sha2::{Digest, Sha256};

const BIN: &str = env!("CARGO_BIN_EXE_screentape");

fn start(data_dir: &std::path::Path, retention_ms: i64) -> (Child, String) {
    crate::support::spawn_binary(
        data_dir,
        &[
            ("SCREENTAPE_SEGMENT_GRACE", "0s".to_string()),
            ("SCREENTAPE_RETENTION", format!("{retention_ms}ms")),
            ("SCREENTAPE_ENCODE_WORKERS", "2".to_string()),
        ],
    )
}

#[test]
fn kill_9_under_load_loses_no_acknowledged_frame() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let out = Command::new(BIN).args(["device", "add", "crashy", "--json", "--data-dir"]).arg(&data_dir).output().unwrap();
    assert!(out.status.success());
    let dev: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let (device, token) = (dev["device"].as_str().unwrap().to_string(), dev["token"].as_str().unwrap().to_string());

    // Captures start 20 minutes ago, ten a second (capped 24 minutes later, inside the future limit), so each trial's minutes are due at once and get
    // encoded (and re-encoded, for frames arriving late) while uploads go on.
    let base = SystemClock.now_ms() / 60_000 * 60_000 - 20 * 60_000;
    // The retention window passes the oldest minute's end 3 s into the trials, wherever in the
    // wall-clock minute the test starts (the trials last at least 20 x 300 ms): the later starts
    // sweep footage while uploads and encodes go on, so kills land during retention too.
    let retention_ms = SystemClock.now_ms() + 3_000 - (base + 60_000);
    let acked: Arc<Mutex<BTreeMap<i64, Vec<u8>>>> = Arc::default();
    let next = Arc::new(std::sync::atomic::AtomicI64::new(0));
    let mut rng = rand::thread_rng();
    let trials = 20;
    for trial in 0..trials {
        let (mut child, url) = start(&data_dir, retention_ms);
        let deadline = Instant::now() + Duration::from_millis(rng.gen_range(300..2_500));
        let uploaders: Vec<_> = (0..4)
            .map(|_| {
                let (url, token, acked, next) = (url.clone(), token.clone(), acked.clone(), next.clone());
                std::thread::spawn(move || {
                    let client = reqwest::blocking::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
                    while Instant::now() < deadline {
                        let k = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        let t = base + k * 100;
                        if t >= base + 24 * 60_000 {
                            break;
                        }
                        let png = encode_rgb(&screenshot(240, 136, t, k as u64, 5));
                        match upload_recording_ack(&client, &url, &token, t, &png, &acked, t) {
                            Ok(r) if r.status().is_success() => {} // acknowledged: recorded
                            // Already outside the retention window: refused, not acknowledged.
                            Ok(r) if r.status() == 422 => {}
                            Ok(r) => panic!("unexpected status {}", r.status()),
                            Err(_) => break, // the server died under us: not acknowledged
                        }
                    }
                })
            })
            .collect();
        while Instant::now() < deadline {
            std::thread::yield_now();
            std::thread::sleep(Duration::from_millis(5));
        }
        child.kill().expect("kill -9");
        child.wait().unwrap();
        for u in uploaders {
            u.join().unwrap();
        }
        eprintln!("trial {trial}: {} acknowledged so far", acked.lock().unwrap().len());
    }

    // Retention after the crashes: one more start, left running until its start-up sweep has
    // removed every segment that ended before its window and every original older than it (a
    // kill in the middle of a sweep leaves either for the next start, never for good).
    let window_start_ms = SystemClock.now_ms() - retention_ms;
    let (mut child, _) = start(&data_dir, retention_ms);
    let swept_by = Instant::now() + Duration::from_secs(60);
    // (segments, originals) still there; None while the index cannot be read (the server is
    // opening it).
    let expired_left = || -> Option<(i64, usize)> {
        let db = rusqlite::Connection::open_with_flags(data_dir.join("index.sqlite3"), rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).ok()?;
        let segments = db.query_row("SELECT COUNT(*) FROM segments WHERE end_ms <= ?", [window_start_ms], |r| r.get(0)).ok()?;
        let spool = std::fs::read_dir(data_dir.join("spool").join(&device)).into_iter().flatten().flatten();
        let originals = spool.filter_map(|e| e.file_name().to_str()?.strip_suffix(".png")?.parse::<i64>().ok()).filter(|t| *t < window_start_ms).count();
        Some((segments, originals))
    };
    while expired_left() != Some((0, 0)) {
        assert!(Instant::now() < swept_by, "60 s after a start, expired (segments, originals) are left: {:?}", expired_left());
        std::thread::sleep(Duration::from_millis(100));
    }
    child.kill().expect("kill -9");
    child.wait().unwrap();
    assert_eq!(expired_left(), Some((0, 0)));
    // Captures older than the window still stored now: those of a minute that straddles it.
    let straddling: std::collections::BTreeSet<i64> = {
        let db = rusqlite::Connection::open(data_dir.join("index.sqlite3")).unwrap();
        let mut st = db.prepare("SELECT capture_ms FROM frames WHERE device_id = ? AND capture_ms < ?").unwrap();
        st.query_map(rusqlite::params![device, window_start_ms], |r| r.get(0)).unwrap().map(Result::unwrap).collect()
    };

    // Frames acknowledged early may since have been deleted by retention, legitimately: only
    // those still well inside the window (a minute of margin) must be there.
    let must_keep_from = SystemClock.now_ms() - retention_ms + 60_000;
    // Restart on the same data dir with a clock past every minute, and encode what is due.
    let mut config = Config { data_dir: data_dir.clone(), ..Config::default() };
    config.encoder.workers = 2;
    let app = App::open(config, ManualClock::new(SystemClock.now_ms() + 5 * 60_000)).unwrap();
    app.run_due_now();
    let acked = acked.lock().unwrap();
    assert!(acked.len() >= 40, "the load produced too few frames to mean anything: {}", acked.len());
    let stored = app.index.frames_between(&device, 0, i64::MAX).unwrap();
    let stored: BTreeMap<i64, [u8; 32]> = stored.iter().map(|f| (f.capture_ms, f.sha256)).collect();
    let mut lost = Vec::new();
    let mut checked = 0;
    for (t, png) in acked.range(must_keep_from..) {
        checked += 1;
        let want: [u8; 32] = Sha256::digest(png).into();
        if stored.get(t) != Some(&want) {
            lost.push(*t);
        }
    }
    assert!(lost.is_empty(), "{} of {checked} acknowledged frames lost: {:?}", lost.len(), &lost[..lost.len().min(10)]);
    // Expired footage did not come back after that last kill: the restart (whose own window, the
    // default 24 h, would keep it) found no original to re-encode it from.
    assert!(window_start_ms >= base + 60_000, "the window passed the oldest minute");
    let resurrected: Vec<i64> = stored.keys().filter(|t| **t < window_start_ms && !straddling.contains(t)).copied().collect();
    assert!(resurrected.is_empty(), "{} expired captures came back: {:?}", resurrected.len(), &resurrected[..resurrected.len().min(10)]);
    // And they decode to their originals.
    let mut scores: Vec<(f64, i64)> = Vec::new();
    for seg in app.index.all_segments().unwrap() {
        let init = app.store.get(&app.index.init(seg.init_id).unwrap().unwrap().file).unwrap().unwrap();
        let media = app.store.get(&seg.file).unwrap().unwrap();
        for (pts, yuv) in ffmpeg::decode_segment(&init, &media).unwrap() {
            if let Some(png) = acked.get(&pts) {
                let original = screentape::media::png::decode_rgb(png, 8192).unwrap();
                scores.push((psnr_rgb(&ffmpeg::yuv_to_rgb(&yuv).unwrap(), &original), pts - base));
            }
        }
    }
    scores.sort_by(|a, b| a.0.total_cmp(&b.0));
    let worst = scores.first().map_or(f64::INFINITY, |s| s.0);
    assert!(worst >= 45.0, "worst decoded frames (dB, ms after the first capture): {:.2?}", &scores[..scores.len().min(5)]);
    app.shutdown();
    // `screentape check` (the real command) agrees: index and disk are consistent.
    let out = Command::new(BIN).args(["check", "--json", "--data-dir"]).arg(&data_dir).output().unwrap();
    assert!(out.status.success(), "check failed: {}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for key in ["orphan_files", "missing_files", "garbage_files"] {
        assert_eq!(report[key], serde_json::json!([]), "check: {report}");
    }
    eprintln!(
        "faults: crash: {trials} kill -9 trials during upload, encoding and retention: {} frames acknowledged, \
         {checked} still inside the retention window, 0 lost, expired footage deleted and not resurrected, \
         worst PSNR {worst:.2} dB, check consistent",
        acked.len()
    );
}

/// Sustained overload of the real binary: four agents upload 1080p screenshots as fast as they
/// can to one encoder (compaction included: the captures start 10 minutes back). The spool bound turns the excess into 503 + Retry-After, the
/// server's resident memory stays bounded the whole time, and once the load stops the backlog
/// drains with every acknowledged frame encoded.
#[test]
fn sustained_overload_keeps_memory_bounded_and_drains() {
    const MAX_RSS_MIB: u64 = 400;
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let out = Command::new(BIN).args(["device", "add", "busy", "--json", "--data-dir"]).arg(&data_dir).output().unwrap();
    let dev: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let token = dev["token"].as_str().unwrap().to_string();
    let viewer = Command::new(BIN).args(["user", "add", "ops", "--admin", "--json", "--data-dir"]).arg(&data_dir).output().unwrap();
    let viewer: serde_json::Value = serde_json::from_slice(&viewer.stdout).unwrap();
    let viewer_token = viewer["token"].as_str().unwrap().to_string();
    let mut child = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data_dir)
        .env("SCREENTAPE_SEGMENT_GRACE", "0s")
        .env("SCREENTAPE_ENCODE_WORKERS", "1")
        .env("SCREENTAPE_SPOOL_MAX_FRAMES", "120")
        .env("RUST_LOG", "screentape=warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let url = line.trim().strip_prefix("listening on ").unwrap().to_string();
    let status_file = format!("/proc/{}/status", child.id());
    let rss_mib = |field: &str| -> u64 {
        let status = std::fs::read_to_string(&status_file).unwrap_or_default();
        status.lines().find_map(|l| l.strip_prefix(field)).and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok()).unwrap_or(0) / 1024
    };

    // Captures from 10 minutes ago, one every 100 ms: every minute is due at once.
    let base = SystemClock.now_ms() / 60_000 * 60_000 - 10 * 60_000;
    let pngs: Arc<Vec<Vec<u8>>> = Arc::new((0..8).map(|k| encode_rgb(&screenshot(1920, 1080, base + k * 100, k as u64, 2))).collect());
    let next = Arc::new(std::sync::atomic::AtomicI64::new(0));
    let acked: Arc<Mutex<Vec<i64>>> = Arc::default();
    let refused = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let deadline = Instant::now() + Duration::from_secs(12);
    let uploaders: Vec<_> = (0..4)
        .map(|_| {
            let (url, token, pngs, next, acked, refused) = (url.clone(), token.clone(), pngs.clone(), next.clone(), acked.clone(), refused.clone());
            std::thread::spawn(move || {
                let client = reqwest::blocking::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
                let mut k = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                while Instant::now() < deadline {
                    let t = base + k * 100;
                    let r = client
                        .post(format!("{url}/api/v1/frames"))
                        .bearer_auth(&token)
                        .header("content-type", "image/png")
                        .header("x-capture-time", t.to_string())
                        .body(pngs[k as usize % pngs.len()].clone())
                        .send()
                        .unwrap();
                    match r.status().as_u16() {
                        201 => {
                            acked.lock().unwrap().push(t);
                            k = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        }
                        503 => {
                            // An agent keeps the capture and tries again (sooner than Retry-After says, to keep the pressure on).
                            assert!(r.headers().contains_key("retry-after"), "503 without Retry-After");
                            refused.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            std::thread::sleep(Duration::from_millis(20));
                        }
                        other => panic!("unexpected status {other}: {}", r.text().unwrap_or_default()),
                    }
                }
            })
        })
        .collect();
    // Sample the server's memory while the load lasts (sampling, not synchronisation).
    let mut peak_seen = 0;
    while uploaders.iter().any(|u| !u.is_finished()) {
        peak_seen = peak_seen.max(rss_mib("VmRSS:"));
        std::thread::sleep(Duration::from_millis(20));
    }
    for u in uploaders {
        u.join().unwrap();
    }
    let hwm_under_load = rss_mib("VmHWM:");
    let refused = refused.load(std::sync::atomic::Ordering::SeqCst);
    let acked = acked.lock().unwrap().clone();
    assert!(refused > 0, "the load must exceed what the encoder keeps up with ({} acknowledged, none refused)", acked.len());
    assert!(hwm_under_load <= MAX_RSS_MIB, "server peak RSS {hwm_under_load} MiB under overload (bound {MAX_RSS_MIB} MiB)");

    // The backlog drains: poll /metrics until nothing is pending (bounded), then every
    // acknowledged capture is on the timeline.
    let client = reqwest::blocking::Client::new();
    let drained_by = Instant::now() + Duration::from_secs(300);
    loop {
        let metrics = client.get(format!("{url}/metrics")).bearer_auth(&viewer_token).send().unwrap().text().unwrap();
        let pending: u64 = metrics.lines().find_map(|l| l.strip_prefix("screentape_pending_frames ")).unwrap().trim().parse().unwrap();
        if pending == 0 {
            break;
        }
        assert!(Instant::now() < drained_by, "backlog still {pending} frames after 300 s");
        std::thread::sleep(Duration::from_millis(200));
    }
    let device = dev["device"].as_str().unwrap();
    let timeline: serde_json::Value =
        client.get(format!("{url}/api/v1/devices/{device}/timeline")).bearer_auth(&viewer_token).send().unwrap().json().unwrap();
    let on_timeline: std::collections::BTreeSet<i64> = timeline["captures"].as_array().unwrap().iter().map(|c| c.as_i64().unwrap()).collect();
    let missing: Vec<i64> = acked.iter().filter(|t| !on_timeline.contains(t)).copied().collect();
    assert!(missing.is_empty(), "{} acknowledged frames not encoded after the drain", missing.len());
    let hwm = rss_mib("VmHWM:");
    child.kill().unwrap();
    child.wait().unwrap();
    eprintln!(
        "faults: overload: {} uploads acknowledged, {refused} refused with 503 + Retry-After, server peak RSS {hwm_under_load} MiB \
         under load ({hwm} MiB including the drain, bound {MAX_RSS_MIB}), backlog drained, 0 lost",
        acked.len()
    );
}
