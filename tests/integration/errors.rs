//! Every upload status in API.md, each provoked by a hostile or odd input; and PNG variety accepted.

use crate::pngs;
use crate::support::{shot, Server, T0};

struct Case {
    name: &'static str,
    token: Option<String>,
    content_type: &'static str,
    capture: Option<String>,
    body: Vec<u8>,
    status: u16,
    code: &'static str,
}

#[test]
fn upload_errors_answer_as_documented_and_harm_nothing_else() {
    let s = Server::start_with(|c| c.max_body_bytes = 1 << 20);
    let (device, token) = s.add_device("laptop", None);
    let viewer = s.add_user("ann", true);
    s.clock.set_ms(T0 + 30_000);
    let (good, _) = shot(320, 200, T0, 0);
    let (other, _) = shot(320, 200, T0 + 1, 1);
    assert_eq!(s.upload(&token, T0, &good).status(), 201);

    let mut bad_crc = good.clone();
    let at = bad_crc.len() - 20;
    bad_crc[at] ^= 0xff;
    let t = |ms: i64| Some(ms.to_string());
    let ok = Some(token.clone());
    let case = |name, token: &Option<String>, content_type, capture: Option<String>, body: Vec<u8>, status, code| Case {
        name,
        token: token.clone(),
        content_type,
        capture,
        body,
        status,
        code,
    };
    let cases = vec![
        case("no token", &None, "image/png", t(T0 + 2), good.clone(), 401, "unauthorized"),
        case("wrong token", &Some("stdev_0000".into()), "image/png", t(T0 + 2), good.clone(), 401, "unauthorized"),
        case("viewer token cannot upload", &Some(viewer.token.clone()), "image/png", t(T0 + 2), good.clone(), 401, "unauthorized"),
        case("text content type", &ok, "text/plain", t(T0 + 2), good.clone(), 415, "unsupported_media_type"),
        case("jpeg sent as png", &ok, "image/png", t(T0 + 2), b"\xff\xd8\xff\xe0\x00\x10JFIF\x00".to_vec(), 415, "unsupported_media_type"),
        case("empty body", &ok, "image/png", t(T0 + 2), vec![], 415, "unsupported_media_type"),
        case("bad capture time", &ok, "image/png", Some("yesterday".into()), good.clone(), 400, "bad_capture_time"),
        case("negative capture time", &ok, "image/png", Some("-5".into()), good.clone(), 400, "bad_capture_time"),
        case("truncated png", &ok, "image/png", t(T0 + 2), good[..good.len() / 2].to_vec(), 400, "bad_png"),
        case("bad crc", &ok, "image/png", t(T0 + 2), bad_crc, 400, "bad_png"),
        case("signature only", &ok, "image/png", t(T0 + 2), good[..8].to_vec(), 400, "bad_png"),
        case("decompression bomb header", &ok, "image/png", t(T0 + 2), pngs::lying_header(60_000, 60_000), 413, "image_too_large"),
        case("8193 wide", &ok, "image/png", t(T0 + 2), pngs::lying_header(8193, 8193), 413, "image_too_large"),
        case("body over the limit", &ok, "image/png", t(T0 + 2), vec![0x89; (1 << 20) + 1], 413, "body_too_large"),
        case("same time, other image", &ok, "image/png", t(T0), other.clone(), 409, "conflict"),
        case("older than retention", &ok, "image/png", t(T0 - 25 * 3_600_000), good.clone(), 422, "capture_too_old"),
        case("far future", &ok, "image/png", t(T0 + 3_600_000), good.clone(), 422, "capture_in_future"),
    ];
    for c in &cases {
        let mut req = s.client.post(s.url("/api/v1/frames")).header("content-type", c.content_type).body(c.body.clone());
        if let Some(tok) = &c.token {
            req = req.bearer_auth(tok);
        }
        if let Some(cap) = &c.capture {
            req = req.header("x-capture-time", cap.as_str());
        }
        let r = req.send().unwrap();
        assert_eq!(r.status().as_u16(), c.status, "{}", c.name);
        let body: serde_json::Value = r.json().unwrap_or_else(|e| panic!("{}: not JSON: {e}", c.name));
        assert_eq!(body["error"], c.code, "{}", c.name);
        assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()), "{}", c.name);
    }
    // The identical retry is a 200; RFC 3339 works as well as milliseconds.
    let r = s
        .client
        .post(s.url("/api/v1/frames"))
        .bearer_auth(&token)
        .header("content-type", "image/png")
        .header("x-capture-time", "2025-11-26T10:00:00.000Z")
        .body(good.clone())
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<serde_json::Value>().unwrap(), serde_json::json!({ "device": device, "capture_ms": T0 }));
    // Nothing else was stored, and the server still works.
    s.advance_and_encode(T0 + 2 * 60_000);
    let frames = s.app.index.frames_between(&device, 0, i64::MAX).unwrap();
    assert_eq!(frames.iter().map(|f| f.capture_ms).collect::<Vec<_>>(), vec![T0]);
    assert_eq!(s.client.get(s.url("/healthz")).send().unwrap().status(), 200);
}

#[test]
fn every_png_colour_type_and_depth_is_accepted_and_encoded() {
    let s = Server::start();
    let (device, token) = s.add_device("laptop", None);
    s.clock.set_ms(T0 + 60_000);
    let variants: Vec<(&str, Vec<u8>)> = vec![
        ("grey 8", pngs::make(33, 17, 8, 0, false, |x, y, _| ((x * 7 + y * 3) % 256) as u16)),
        ("grey+alpha", pngs::make(33, 17, 8, 4, false, |x, _, c| if c == 0 { (x * 5) as u16 } else { 255 })),
        ("palette", pngs::make(33, 17, 8, 3, false, |x, y, _| ((x + y * 2) % 256) as u16)),
        ("rgb 16-bit", pngs::make(33, 17, 16, 2, false, |x, y, c| (x * 1999 + y * 97 + c as u32 * 5000) as u16)),
        ("rgba", pngs::make(33, 17, 8, 6, false, |x, y, c| if c == 3 { 128 } else { ((x + y + c as u32 * 40) % 256) as u16 })),
        ("interlaced rgb", pngs::make(33, 17, 8, 2, true, |x, y, c| ((x * 3 + y * 11 + c as u32 * 70) % 256) as u16)),
        ("1x1", pngs::make(1, 1, 8, 2, false, |_, _, c| c as u16 * 100)),
    ];
    for (i, (name, png)) in variants.iter().enumerate() {
        let r = s.upload(&token, T0 + i as i64 * 1_000, png);
        assert_eq!(r.status(), 201, "{name}: {}", r.text().unwrap());
    }
    s.advance_and_encode(T0 + 2 * 60_000);
    let frames = s.app.index.frames_between(&device, 0, i64::MAX).unwrap();
    assert_eq!(frames.len(), variants.len(), "every variant is in a segment");
}

#[test]
fn overload_answers_503_with_retry_after() {
    let s = Server::start_with(|c| c.spool_max_frames = 3);
    let (_, token) = s.add_device("laptop", None);
    s.clock.set_ms(T0 + 30_000);
    for i in 0..3 {
        let (png, _) = shot(64, 64, T0 + i, i as u64);
        assert_eq!(s.upload(&token, T0 + i, &png).status(), 201);
    }
    let (png, _) = shot(64, 64, T0 + 9, 9);
    let r = s.upload(&token, T0 + 9, &png);
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    // Once the backlog is encoded, uploads are accepted again.
    s.advance_and_encode(T0 + 2 * 60_000);
    assert_eq!(s.upload(&token, T0 + 60_000 + 9, &png).status(), 201);
}

/// Mounts a tmpfs of `bytes` at a new temp dir (the test runs as root, as CI does).
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn new(bytes: u64) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("run mount");
        assert!(status.success(), "mounting a tmpfs failed: the disk-full test needs root (as CI has)");
        Self { dir }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(self.dir.path()).status();
    }
}

#[test]
fn a_full_disk_answers_507_and_recovers_when_space_returns() {
    let disk = SmallDisk::new(3 << 20);
    let data_dir = disk.dir.path().join("data");
    let s = Server::start_with(|c| c.data_dir = data_dir.clone());
    let (device, token) = s.add_device("laptop", None);
    s.clock.set_ms(T0 + 30_000);
    let (first, _) = shot(320, 200, T0, 0);
    assert_eq!(s.upload(&token, T0, &first).status(), 201);
    // Fill the disk with something else.
    let filler = disk.dir.path().join("filler");
    let mut f = std::fs::File::create(&filler).unwrap();
    let _ = std::io::Write::write_all(&mut f, &vec![7u8; 4 << 20]);
    drop(f);
    let (png, _) = shot(320, 200, T0 + 1_000, 1);
    let r = s.upload(&token, T0 + 1_000, &png);
    assert_eq!(r.status(), 507);
    assert_eq!(r.json::<serde_json::Value>().unwrap()["error"], "disk_full");
    // Space returns: uploads work, and the first frame was never harmed.
    std::fs::remove_file(&filler).unwrap();
    assert_eq!(s.upload(&token, T0 + 1_000, &png).status(), 201);
    s.advance_and_encode(T0 + 2 * 60_000);
    assert_eq!(s.app.index.frames_between(&device, 0, i64::MAX).unwrap().len(), 2);
    let report = screentape::check::check(&s.app.layout, &s.app.index, false).unwrap();
    assert!(report.is_consistent(), "{report:?}");
    drop(s);
}
