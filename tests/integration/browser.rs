//! Real headless browsers driven over W3C WebDriver, for the player tests: Chromium through
//! chromedriver, and Firefox ESR through geckodriver (both installed by scripts/setup --browser).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::blocking::Client;
use serde_json::{json, Value};

pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    client: Client,
    firefox: bool,
}

/// Where Firefox can be driven from: (firefox binary, geckodriver), or why not.
pub enum Firefox {
    Ready(String, String),
    /// scripts/setup --browser tried and left this reason (firefox-unavailable in its cache dir).
    Unavailable(String),
}

fn cache_dir() -> std::path::PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache"))
        .join("screentape")
}

/// Finds Firefox ESR and geckodriver. Missing without a note from scripts/setup is a failure:
/// the Firefox test must never skip silently.
pub fn firefox() -> Firefox {
    let binary = "/usr/bin/firefox-esr";
    let gecko = std::env::var("SCREENTAPE_GECKODRIVER").ok().or_else(|| {
        let cached = cache_dir().join("geckodriver/bin/geckodriver");
        if cached.exists() {
            return Some(cached.display().to_string());
        }
        std::env::var_os("PATH")
            .and_then(|p| std::env::split_paths(&p).map(|d| d.join("geckodriver")).find(|f| f.exists()))
            .map(|f| f.display().to_string())
    });
    match gecko {
        Some(g) if std::path::Path::new(binary).exists() => Firefox::Ready(binary.into(), g),
        _ => match std::fs::read_to_string(cache_dir().join("firefox-unavailable")) {
            Ok(why) => Firefox::Unavailable(why.trim().to_string()),
            Err(_) => panic!("{binary} or geckodriver is missing: run scripts/setup --browser (scripts/test does)"),
        },
    }
}

/// Starts a WebDriver server and waits until it answers /status.
fn start_driver(bin: &str, args: &[String]) -> (Child, String, Client) {
    let driver = Command::new(bin).args(args).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap_or_else(|e| panic!("start {bin}: {e}"));
    let port = args.iter().find_map(|a| a.strip_prefix("--port=")).expect("--port=").to_string();
    let base = format!("http://127.0.0.1:{port}");
    let client = Client::builder().timeout(Duration::from_secs(120)).build().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while client.get(format!("{base}/status")).send().is_err() {
        assert!(Instant::now() < deadline, "{bin} did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    (driver, base, client)
}

fn free_port() -> u16 {
    // chromedriver needs a port number up front; take one the kernel gives us.
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl Browser {
    pub fn start() -> Self {
        for bin in ["/usr/bin/chromium", "/usr/bin/chromedriver"] {
            assert!(std::path::Path::new(bin).exists(), "{bin} is missing: run scripts/setup --browser (scripts/test does)");
        }
        let (driver, base, client) = start_driver("/usr/bin/chromedriver", &[format!("--port={}", free_port())]);
        let profile = tempfile::tempdir().unwrap().keep();
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--disable-background-networking", "--disable-component-update", "--disable-sync",
                         "--no-first-run", "--disable-quic", "--window-size=1280,860",
                         "--autoplay-policy=no-user-gesture-required",
                         format!("--user-data-dir={}", profile.display())]
            },
            "goog:loggingPrefs": { "browser": "ALL" }
        }}});
        let r: Value = client.post(format!("{base}/session")).json(&caps).send().unwrap().json().unwrap();
        let session = r["value"]["sessionId"].as_str().unwrap_or_else(|| panic!("no session: {r}")).to_string();
        let b = Self { driver, base, session, client, firefox: false };
        b.cmd("timeouts", json!({"script": 90_000, "pageLoad": 30_000}));
        // Before any page script runs, in every document: record Content-Security-Policy
        // violations where a test can read them, across navigations in this tab.
        b.cmd("goog/cdp/execute", json!({ "cmd": "Page.addScriptToEvaluateOnNewDocument", "params": { "source": WATCH_CSP } }));
        b
    }

    /// Headless Firefox ESR through geckodriver (see [`firefox`]). Classic WebDriver has no
    /// script-before-page hook, so CSP violations are recorded from each navigation's load on
    /// (the player's own requests come later: stills, segments, workers).
    pub fn start_firefox(binary: &str, geckodriver: &str) -> Self {
        let (driver, base, client) = start_driver(geckodriver, &["--host=127.0.0.1".into(), format!("--port={}", free_port())]);
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "firefox",
            "moz:firefoxOptions": {
                "binary": binary,
                "args": ["-headless"],
                "prefs": {
                    "media.autoplay.default": 0,
                    "media.autoplay.blocking_policy": 0,
                    "browser.shell.checkDefaultBrowser": false,
                    "app.update.enabled": false,
                    "datareporting.policy.dataSubmissionEnabled": false,
                    "toolkit.telemetry.enabled": false,
                    "network.captive-portal-service.enabled": false,
                    "browser.safebrowsing.malware.enabled": false,
                    "browser.safebrowsing.phishing.enabled": false,
                    "layout.css.devPixelsPerPx": "1.0"
                }
            }
        }}});
        let r: Value = client.post(format!("{base}/session")).json(&caps).send().unwrap().json().unwrap();
        let session = r["value"]["sessionId"].as_str().unwrap_or_else(|| panic!("no session: {r}")).to_string();
        let b = Self { driver, base, session, client, firefox: true };
        b.cmd("timeouts", json!({"script": 90_000, "pageLoad": 30_000}));
        b.cmd("window/rect", json!({"width": 1280, "height": 860}));
        b
    }

    pub fn is_firefox(&self) -> bool {
        self.firefox
    }

    /// The CSP violations every page of this origin has reported since the browser started.
    pub fn csp_violations(&self) -> Value {
        self.run(&format!("return JSON.parse(sessionStorage.getItem('{CSP_KEY}') || '[]');"), json!({}))
    }

    /// The browser console's messages since the last call (chromedriver's log).
    pub fn console(&self) -> Vec<String> {
        if self.firefox {
            return Vec::new(); // geckodriver has no log endpoint
        }
        let v = self.cmd("se/log", json!({ "type": "browser" }));
        v.as_array().map(|a| a.iter().map(|e| format!("{} {}", e["level"].as_str().unwrap_or(""), e["message"].as_str().unwrap_or(""))).collect()).unwrap_or_default()
    }

    fn cmd(&self, path: &str, body: Value) -> Value {
        let r: Value = self.client.post(format!("{}/session/{}/{path}", self.base, self.session)).json(&body).send().unwrap().json().unwrap();
        if let Some(err) = r["value"].get("error") {
            panic!("webdriver {path}: {err}: {}", r["value"]["message"]);
        }
        r["value"].clone()
    }

    pub fn goto(&self, url: &str) {
        self.cmd("url", json!({ "url": url }));
        if self.firefox {
            self.cmd("execute/sync", json!({ "script": WATCH_CSP, "args": [] }));
        }
    }

    /// Runs `body` as an async function in the page (its `return` value comes back).
    pub fn run(&self, body: &str, args: Value) -> Value {
        let script = format!(
            "const done = arguments[arguments.length - 1]; const args = arguments[0];\n\
             (async () => {{ {body} }})().then((v) => done({{ ok: v === undefined ? null : v }}), (e) => done({{ err: String(e && e.stack || e) }}));"
        );
        let v = self.cmd("execute/async", json!({ "script": script, "args": [args] }));
        if let Some(e) = v.get("err") {
            panic!("page script failed: {}", e.as_str().unwrap_or_default());
        }
        v["ok"].clone()
    }

    pub fn screenshot_png(&self) -> Vec<u8> {
        use base64_decode::decode;
        let v = self.client.get(format!("{}/session/{}/screenshot", self.base, self.session)).send().unwrap().json::<Value>().unwrap();
        decode(v["value"].as_str().unwrap())
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.client.delete(format!("{}/session/{}", self.base, self.session)).send();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

const CSP_KEY: &str = "screentape-test-csp-violations";

const WATCH_CSP: &str = r#"
document.addEventListener('securitypolicyviolation', (e) => {
  try {
    const key = 'screentape-test-csp-violations';
    const seen = JSON.parse(sessionStorage.getItem(key) || '[]');
    seen.push({ directive: e.effectiveDirective, blocked: e.blockedURI, source: e.sourceFile, line: e.lineNumber, sample: e.sample, page: location.href });
    sessionStorage.setItem(key, JSON.stringify(seen));
  } catch (_) { /* an opaque origin (about:blank) has no storage */ }
}, true);
"#;

/// A tiny base64 decoder (screenshots only), to avoid a dependency for one call.
mod base64_decode {
    pub fn decode(s: &str) -> Vec<u8> {
        let val = |c: u8| match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => 0,
        };
        let bytes: Vec<u8> = s.bytes().filter(|c| *c != b'=' && !c.is_ascii_whitespace()).collect();
        let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
        for chunk in bytes.chunks(4) {
            let n = chunk.iter().enumerate().fold(0u32, |acc, (i, c)| acc | (val(*c) as u32) << (18 - 6 * i));
            out.push((n >> 16) as u8);
            if chunk.len() > 2 {
                out.push((n >> 8) as u8);
            }
            if chunk.len() > 3 {
                out.push(n as u8);
            }
        }
        out
    }
}
