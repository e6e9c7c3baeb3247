//! Every upload status in docs/api.md, each provoked by a hostile or odd input; and PNG variety accepted.

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
    upload_errors_answer_as_documented(Server::start_with(|c| c.max_body_bytes = 1 << 20));
}

/// Every bad upload on `s` (whose `max_body_bytes` is 1 MiB) answers its documented status.
/// Also run on the cluster configuration (tests/integration/s3.rs).
pub fn upload_errors_answer_as_documented(s: Server) {
    assert_eq!(s.app.config.max_body_bytes, 1 << 20);
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
        case("same time, other image", &ok, "image/png", t(T0), other.clone(), 409, "conflict"),
        case("older than retention", &ok, "image/png", t(T0 - 25 * 3_600_000), good.clone(), 422, "capture_too_old"),
        case("far future", &ok, "image/png", t(T0 + 3_600_000), good.clone(), 422, "capture_in_future"),
    ];
    let tried = cases.len() + 2; // + the raw-TCP 413 and the identical retry below
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
    // A body over the limit is refused from its Content-Length, before it is read. (A client still
    // sending then sees the connection close, as with any server; raw TCP reads the answer cleanly.)
    {
        use std::io::{Read, Write};
        let mut tcp = std::net::TcpStream::connect(s.base.trim_start_matches("http://")).unwrap();
        write!(
            tcp,
            "POST /api/v1/frames HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Type: image/png\r\nContent-Length: {}\r\n\r\n",
            (1 << 20) + 1
        )
        .unwrap();
        tcp.write_all(&good[..64]).unwrap();
        tcp.set_read_timeout(Some(std::time::Duration::from_secs(20))).unwrap();
        let mut answer = vec![0u8; 4096];
        let n = tcp.read(&mut answer).unwrap();
        let answer = String::from_utf8_lossy(&answer[..n]);
        assert!(answer.starts_with("HTTP/1.1 413") && answer.contains("body_too_large"), "{answer}");
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
    eprintln!("faults: bad input (statuses): {tried} cases tried, {tried} answered as documented, server up");
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
    eprintln!("faults: bad input (PNG variety): {n} cases tried, {n} accepted and encoded", n = variants.len());
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
    eprintln!("faults: overload: 503 + Retry-After beyond the spool bound, accepted again after the backlog drained");
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
    let report = screentape::check::check(s.app.store.as_ref(), s.app.index.as_ref(), false).unwrap();
    assert!(report.is_consistent(), "{report:?}");
    drop(s);
    eprintln!("faults: disk full: 507 on a full 3 MiB tmpfs, stored frame intact, index consistent, uploads work again");
}

/// (name, headers replacing the defaults, body, expected status, expected error code)
type RawCase = (&'static str, Vec<(&'static str, String)>, Vec<u8>, u16, &'static str);

/// One upload with arbitrary headers; returns (status, error code or "", message).
fn raw_upload(s: &Server, headers: &[(&str, &str)], body: Vec<u8>) -> (u16, String, String) {
    let mut req = s.client.post(s.url("/api/v1/frames")).body(body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let r = req.send().unwrap();
    let status = r.status().as_u16();
    let body = r.json::<serde_json::Value>().unwrap_or_default();
    let text = |k: &str| body[k].as_str().unwrap_or_default().to_string();
    (status, text("error"), text("message"))
}

#[test]
fn hostile_and_odd_uploads_answer_as_documented_while_other_devices_upload() {
    let s = Server::start_with(|c| c.max_body_bytes = 2 << 20);
    let (_, token) = s.add_device("laptop", None);
    let (other_device, other_token) = s.add_device("bystander", None);
    s.clock.set_ms(T0 + 50_000);
    let auth = format!("Bearer {token}");
    let base = pngs::make(40, 30, 8, 2, false, |x, y, c| ((x * 5 + y * 3 + c as u32 * 60) % 256) as u16);

    // A bystander device uploads throughout; every one of its frames must be stored.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let bystander = {
        let (url, tok, stop) = (s.url("/api/v1/frames"), other_token.clone(), stop.clone());
        std::thread::spawn(move || {
            let client = reqwest::blocking::Client::new();
            let mut n = 0i64;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) && n < 200 {
                let png = screentape::media::png::encode_rgb(&crate::synth::screenshot(64, 48, T0 + n * 100, n as u64, 9));
                let r = client
                    .post(&url)
                    .bearer_auth(&tok)
                    .header("content-type", "image/png")
                    .header("x-capture-time", (T0 + n * 100).to_string())
                    .body(png)
                    .send()
                    .unwrap();
                assert_eq!(r.status(), 201, "the bystander's upload {n}");
                n += 1;
            }
            n
        })
    };

    let no_iend = pngs::rechunk(&base, |k, d| if k == b"IEND" { vec![] } else { vec![pngs::chunk(k, d)] });
    let no_idat = pngs::rechunk(&base, |k, d| if k == b"IDAT" { vec![] } else { vec![pngs::chunk(k, d)] });
    let bad_zlib = pngs::rechunk(&base, |k, d| if k == b"IDAT" { vec![pngs::chunk(k, &vec![0x78; d.len()])] } else { vec![pngs::chunk(k, d)] });
    let apng = pngs::rechunk(&base, |k, d| {
        if k == b"IDAT" {
            vec![pngs::chunk(b"acTL", &[0, 0, 0, 1, 0, 0, 0, 0]), pngs::chunk(k, d)]
        } else {
            vec![pngs::chunk(k, d)]
        }
    });
    let big_text = pngs::rechunk(&base, |k, d| {
        if k == b"IDAT" {
            let mut text = b"Comment\0".to_vec();
            text.extend(vec![b'x'; 1 << 20]);
            vec![pngs::chunk(b"tEXt", &text), pngs::chunk(k, d)]
        } else {
            vec![pngs::chunk(k, d)]
        }
    });
    let mut trailing = base.clone();
    trailing.extend_from_slice(b"trailing garbage after IEND");
    let zero_width = pngs::lying_header(0, 30);
    let mut bad_colour = base.clone();
    bad_colour[8 + 8 + 9] = 5; // colour type 5 does not exist; CRC now wrong too
    let odd = pngs::make(1921, 1081, 8, 2, false, |x, y, c| ((x ^ y) as u16 + c as u16) % 256);
    let long_token = format!("Bearer stdev_{}", "a".repeat(10_000));

    let mut t = T0;
    let mut next_t = || {
        t += 1_000;
        t.to_string()
    };
    let ct = ("content-type", "image/png");
    #[rustfmt::skip]
    let cases: Vec<RawCase> = vec![
        ("missing IEND", vec![], no_iend, 400, "bad_png"),
        ("no IDAT", vec![], no_idat, 400, "bad_png"),
        ("corrupt zlib stream", vec![], bad_zlib, 400, "bad_png"),
        ("zero width", vec![], zero_width, 400, "bad_png"),
        ("invalid colour type", vec![], bad_colour, 400, "bad_png"),
        ("APNG: the default image is stored", vec![], apng, 201, ""),
        ("trailing garbage after IEND is ignored", vec![], trailing, 201, ""),
        ("1 MiB text chunk within the body limit", vec![], big_text, 201, ""),
        ("odd size 1921x1081", vec![], odd, 201, ""),
        ("RFC 3339 with an offset", vec![("x-capture-time", "2025-11-26T12:00:40.000+02:00".into())], base.clone(), 201, ""),
        ("content type with a parameter", vec![("content-type", "image/png; charset=binary".into())], base.clone(), 201, ""),
        ("content type in capitals", vec![("content-type", "IMAGE/PNG".into())], base.clone(), 201, ""),
        ("duplicate capture-time headers", vec![("x-capture-time", next_t()), ("x-capture-time", next_t())], base.clone(), 400, "bad_capture_time"),
        ("empty capture time", vec![("x-capture-time", String::new())], base.clone(), 400, "bad_capture_time"),
        ("capture time with a unit", vec![("x-capture-time", "1764151200000ms".into())], base.clone(), 400, "bad_capture_time"),
        ("basic auth", vec![("authorization", "Basic YTpi".into())], base.clone(), 401, "unauthorized"),
        ("bearer without a token", vec![("authorization", "Bearer".into())], base.clone(), 401, "unauthorized"),
        ("bearer with spaces only", vec![("authorization", "Bearer    ".into())], base.clone(), 401, "unauthorized"),
        ("a 10 kB token", vec![("authorization", long_token.clone())], base.clone(), 401, "unauthorized"),
        ("no content type", vec![("content-type", String::new())], base.clone(), 415, "unsupported_media_type"),
    ];
    let raw_cases = cases.len() + 1 + 3; // + the trickling body and the three path escapes
    for (name, extra, body, status, code) in cases {
        let capture = next_t();
        let mut headers: Vec<(&str, &str)> = vec![("authorization", auth.as_str()), ct, ("x-capture-time", capture.as_str())];
        // A case's headers replace the defaults of the same name; an empty content type means none.
        for (k, _) in &extra {
            headers.retain(|(hk, _)| hk != k);
        }
        for (k, v) in &extra {
            if !v.is_empty() || *k == "x-capture-time" {
                headers.push((k, v.as_str()));
            }
        }
        let (got, got_code, message) = raw_upload(&s, &headers, body);
        assert_eq!((got, got_code.as_str()), (status, code), "{name}: {message}");
    }

    // A client that trickles its body is cut off, and the server carries on.
    {
        use std::io::Write;
        let s2 = Server::start_with(|c| c.request_timeout = std::time::Duration::from_secs(1));
        let (_, tok) = s2.add_device("slow", None);
        let mut tcp = std::net::TcpStream::connect(s2.base.trim_start_matches("http://")).unwrap();
        write!(tcp, "POST /api/v1/frames HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {tok}\r\nContent-Type: image/png\r\nContent-Length: 100000\r\n\r\n").unwrap();
        tcp.write_all(&base[..10]).unwrap();
        tcp.set_read_timeout(Some(std::time::Duration::from_secs(20))).unwrap();
        let mut answer = String::new();
        let _ = std::io::Read::read_to_string(&mut tcp, &mut answer);
        assert!(answer.starts_with("HTTP/1.1 408"), "a slow body gets 408: {answer:?}");
        assert_eq!(s2.client.get(s2.url("/healthz")).send().unwrap().status(), 200);
    }

    // Paths that try to escape: nothing but a 404 (or 401 without credentials).
    let viewer = s.add_user("root", true);
    for path in ["/api/v1/devices/..%2F..%2Fetc/timeline", "/api/v1/devices/../../etc/passwd", "/api/v1/devices/%00/frame.png?t=1"] {
        let status = s.get(&viewer.token, path).send().unwrap().status().as_u16();
        assert!(status == 404 || status == 400, "{path}: {status}");
    }

    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let sent = bystander.join().unwrap();
    s.advance_and_encode(T0 + 3 * 60_000);
    assert_eq!(s.app.index.frames_between(&other_device, 0, i64::MAX).unwrap().len() as i64, sent, "the bystander lost nothing");
    eprintln!("faults: bad input (hostile): {raw_cases} cases tried, {raw_cases} answered as documented; a bystander device uploaded {sent} frames meanwhile, 0 lost");
}

#[test]
fn device_names_are_checked_and_never_become_paths() {
    let dir = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_screentape");
    let run = |name: &str| std::process::Command::new(bin).args(["device", "add", name, "--json", "--data-dir"]).arg(dir.path()).output().unwrap();
    let out = run("../../etc/passwd");
    assert!(out.status.success(), "an odd name is just a name");
    let id = serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["device"].as_str().unwrap().to_string();
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit()), "ids are generated, never taken from names: {id}");
    assert!(!run(&"x".repeat(65)).status.success(), "over-long name refused");
    assert!(!run("").status.success(), "empty name refused");
    assert!(!run("tab\there").status.success(), "control characters refused");
    eprintln!("faults: bad input (device names): 4 cases tried, 4 answered as documented");
}
