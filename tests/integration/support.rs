//! Test harness: the real server on 127.0.0.1:0 with a manual clock, real SQLite and ffmpeg.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use reqwest::blocking::{Client, RequestBuilder, Response};
use screentape::app::{self, App};
use screentape::auth;
use screentape::clock::ManualClock;
use screentape::config::Config;
use screentape::media::png::{encode_rgb, RgbImage};
use crate::synth::screenshot;

/// 2025-11-26T10:00:00Z: a fixed "now" for the manual clock, on a minute boundary.
pub const T0: i64 = 1_764_151_200_000;

pub struct Server {
    pub app: Arc<App>,
    pub clock: Arc<ManualClock>,
    pub base: String,
    pub client: Client,
    _dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

pub struct Viewer {
    pub token: String,
    pub password: String,
}

impl Server {
    pub fn start() -> Self {
        Self::start_with(|_| {})
    }

    pub fn start_with(tweak: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        Self::start_in(dir, tweak)
    }

    pub fn start_in(dir: tempfile::TempDir, tweak: impl FnOnce(&mut Config)) -> Self {
        let mut config = Config { data_dir: dir.path().join("data"), ..Config::default() };
        config.encoder.workers = 2;
        tweak(&mut config);
        let clock = ManualClock::new(T0);
        let app = App::open(config, clock.clone()).expect("app opens");
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let app2 = app.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
                addr_tx.send(listener.local_addr().expect("addr")).expect("send addr");
                app::serve(app2, listener, async {
                    let _ = stop_rx.await;
                })
                .await
                .expect("serve");
            });
        });
        let addr = addr_rx.recv().expect("server address");
        Self {
            app,
            clock,
            base: format!("http://{addr}"),
            client: Client::builder().timeout(std::time::Duration::from_secs(60)).build().expect("client"),
            _dir: dir,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// A device as `device add` makes it; returns (id, token).
    pub fn add_device(&self, name: &str, owner: Option<&str>) -> (String, String) {
        let id = auth::new_device_id();
        let (token, hash) = auth::new_token(auth::DEVICE_TOKEN_PREFIX);
        self.app.index.create_device(&id, name, owner, &hash, T0).expect("device");
        (id, token)
    }

    pub fn add_user(&self, name: &str, admin: bool) -> Viewer {
        let (token, hash) = auth::new_token(auth::VIEWER_TOKEN_PREFIX);
        let password = auth::new_password();
        self.app.index.create_user(name, admin, &hash, &auth::hash_password(&password), T0).expect("user");
        Viewer { token, password }
    }

    pub fn upload(&self, token: &str, capture_ms: i64, png: &[u8]) -> Response {
        post_frame(&self.client, &self.base, token, capture_ms, png).expect("upload request")
    }

    pub fn get(&self, token: &str, path: &str) -> RequestBuilder {
        let url = if path.starts_with("http") { path.to_string() } else { self.url(path) };
        self.client.get(url).bearer_auth(token)
    }

    /// Moves the clock to `now_ms` and encodes everything then due.
    pub fn advance_and_encode(&self, now_ms: i64) {
        self.clock.set_ms(now_ms);
        self.app.run_due_now();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// An agent's upload of one capture to the server at `base` (`http://HOST:PORT`).
pub fn post_frame(client: &Client, base: &str, token: &str, capture_ms: i64, png: &[u8]) -> reqwest::Result<Response> {
    client
        .post(format!("{base}/api/v1/frames"))
        .bearer_auth(token)
        .header("content-type", "image/png")
        .header("x-capture-time", capture_ms.to_string())
        .body(png.to_vec())
        .send()
}

/// An agent's upload as the fault tests' agents make it: the capture is recorded in `acked`
/// under `key` only if the server acknowledged it (2xx). Any other answer, or none (a server
/// killed under us), is the caller's to judge: it is not acknowledged.
pub fn upload_recording_ack<K: Ord>(
    client: &Client,
    base: &str,
    token: &str,
    capture_ms: i64,
    png: &[u8],
    acked: &Mutex<BTreeMap<K, Vec<u8>>>,
    key: K,
) -> reqwest::Result<Response> {
    let r = post_frame(client, base, token, capture_ms, png)?;
    if r.status().is_success() {
        acked.lock().unwrap().insert(key, png.to_vec());
    }
    Ok(r)
}

/// A generated screenshot with real text, as PNG bytes, and its pixels.
pub fn shot(width: u32, height: u32, capture_ms: i64, step: u64) -> (Vec<u8>, RgbImage) {
    let img = screenshot(width, height, capture_ms, step, 2);
    (encode_rgb(&img), img)
}

/// The real binary serving `data_dir` on an ephemeral loopback port, with extra environment;
/// returns the child and its base URL (read from its "listening on" line).
pub fn spawn_binary(data_dir: &std::path::Path, env: &[(&str, String)]) -> (std::process::Child, String) {
    use std::io::BufRead;
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_screentape"));
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"]).arg(data_dir).env("RUST_LOG", "screentape=warn");
    for (key, value) in env {
        cmd.env(key, value);
    }
    let mut child = cmd.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::null()).spawn().expect("start the server");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("read the listen line");
    let url = line.trim().strip_prefix("listening on ").unwrap_or_else(|| panic!("unexpected first line {line:?}")).to_string();
    (child, url)
}
