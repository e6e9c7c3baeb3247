//! Regression tests for robustness defects: counters that leaked, signals that killed, work
//! that nothing bounded.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::Command;
use std::time::Duration;

use crate::support::{shot, Server, T0};

const BIN: &str = env!("CARGO_BIN_EXE_screentape");

/// Regression: retention removed spool files that were never encoded (a device backfilling at
/// the edge of the window) without taking them off the pending count; past `spool_max_frames`
/// every device got 503 until a restart.
#[test]
fn frames_expired_before_their_encode_leave_the_pending_count() {
    let s = Server::start_with(|c| {
        c.spool_max_frames = 4;
        c.retention = Duration::from_secs(10 * 60);
        // Nothing becomes due during the test: only retention can take these frames away.
        c.segment_grace = Duration::from_secs(3600);
        c.compact.span = Duration::ZERO;
    });
    let (_, backfiller) = s.add_device("backfiller", None);
    let (_, bystander) = s.add_device("bystander", None);
    // Four frames just inside the window's edge fill the spool bound.
    let edge = T0 - 10 * 60_000 + 30_000;
    for i in 0..4 {
        let (png, _) = shot(96, 64, edge + i * 1_000, i as u64);
        assert_eq!(s.upload(&backfiller, edge + i * 1_000, &png).status(), 201);
    }
    let (png, _) = shot(96, 64, T0, 9);
    assert_eq!(s.upload(&bystander, T0, &png).status(), 503, "the spool bound holds");
    // A minute later those frames are outside the window: retention removes them unencoded.
    s.clock.set_ms(T0 + 60_000);
    let sweep = s.app.retention_sweep().unwrap();
    assert_eq!(sweep.spool_files_removed, 4);
    assert_eq!(s.app.pending.frame_count(), 0, "expired frames are no longer pending");
    let (png, _) = shot(96, 64, T0 + 60_000, 10);
    assert_eq!(s.upload(&bystander, T0 + 60_000, &png).status(), 201, "other devices upload again, no restart needed");
}

/// `systemctl stop` and `docker stop` send SIGTERM: an upload in flight is still answered (and
/// stored), then the server exits 0. Before, SIGTERM killed the process mid-request.
#[test]
fn sigterm_lets_the_upload_in_flight_finish_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let out = Command::new(BIN).args(["device", "add", "agent", "--json", "--data-dir"]).arg(&data_dir).output().unwrap();
    assert!(out.status.success());
    let device: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let (id, token) = (device["device"].as_str().unwrap().to_string(), device["token"].as_str().unwrap().to_string());
    let (mut child, url) = crate::support::spawn_binary(&data_dir, &[]);
    let addr = url.strip_prefix("http://").unwrap().to_string();

    // An upload whose handler is running: with `Expect: 100-continue` the server says
    // "100 Continue" only once the handler reads the body, so the request is in flight for sure.
    let capture_ms = screentape::clock::Clock::now_ms(&screentape::clock::SystemClock);
    let (png, _) = shot(160, 90, capture_ms, 1);
    let mut conn = std::net::TcpStream::connect(&addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        conn,
        "POST /api/v1/frames HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nContent-Type: image/png\r\n\
         X-Capture-Time: {capture_ms}\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
        png.len()
    )
    .unwrap();
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut status = String::new();
    reader.read_line(&mut status).unwrap();
    assert!(status.starts_with("HTTP/1.1 100"), "{status:?}");
    reader.read_line(&mut String::new()).unwrap();

    let killed = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(killed.success());
    conn.write_all(&png).unwrap();
    let mut response = String::new();
    reader.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 201"), "the upload in flight is acknowledged: {response:?}");

    let exit = wait_with_deadline(&mut child, Duration::from_secs(60));
    assert_eq!(exit.code(), Some(0), "a clean exit after SIGTERM: {exit:?}");
    assert!(data_dir.join(format!("spool/{id}/{capture_ms}.png")).exists(), "the acknowledged frame is stored");
}

fn wait_with_deadline(child: &mut std::process::Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("the server did not exit within {limit:?} of SIGTERM");
        }
        // Polling a child's exit status: no other way to wait with a deadline in std.
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// /healthz says whether background work keeps failing, not only that the server answers.
#[test]
fn healthz_reports_the_encoder_state() {
    let s = Server::start();
    let r = s.client.get(s.url("/healthz")).send().unwrap();
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().unwrap();
    assert_eq!(body["status"], "ok");
    assert_eq!(body["encoder"]["failing_compactions"], 0);
    assert_eq!(body["encoder"]["devices_in_backoff"], 0);
}
