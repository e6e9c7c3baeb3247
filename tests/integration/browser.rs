//! A real headless Chromium driven over WebDriver (chromedriver), for the player tests.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::blocking::Client;
use serde_json::{json, Value};

pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    client: Client,
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
        let port = free_port();
        let driver = Command::new("/usr/bin/chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let base = format!("http://127.0.0.1:{port}");
        let client = Client::builder().timeout(Duration::from_secs(120)).build().unwrap();
        // chromedriver answers /status once it listens.
        let deadline = Instant::now() + Duration::from_secs(20);
        while client.get(format!("{base}/status")).send().is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
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
        let b = Self { driver, base, session, client };
        b.cmd("timeouts", json!({"script": 90_000, "pageLoad": 30_000}));
        // Before any page script runs, in every document: record Content-Security-Policy
        // violations where a test can read them, across navigations in this tab.
        b.cmd("goog/cdp/execute", json!({ "cmd": "Page.addScriptToEvaluateOnNewDocument", "params": { "source": WATCH_CSP } }));
        b
    }

    /// The CSP violations every page of this origin has reported since the browser started.
    pub fn csp_violations(&self) -> Value {
        self.run(&format!("return JSON.parse(sessionStorage.getItem('{CSP_KEY}') || '[]');"), json!({}))
    }

    /// The browser console's messages since the last call (chromedriver's log).
    pub fn console(&self) -> Vec<String> {
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
