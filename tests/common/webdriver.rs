//! Headless Chromium for the console tests, driven through Debian's chromedriver with the
//! W3C WebDriver protocol (a few JSON requests over loopback HTTP; no client crate).
//! The test fails (it is not skipped) when chromium or chromedriver is missing:
//! scripts/test.sh installs them.

use super::{free_port, http_request, unique_dir};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The key WebDriver names element references by (W3C WebDriver, 12.1).
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

pub struct Browser {
    driver: Child,
    addr: SocketAddr,
    session: String,
    profile: std::path::PathBuf,
}

fn binary(name: &str) -> String {
    let path = format!("/usr/bin/{name}");
    assert!(
        std::path::Path::new(&path).exists(),
        "{path} is missing: run scripts/test.sh (it installs chromium and chromium-driver)"
    );
    path
}

impl Browser {
    /// Starts chromedriver and a headless Chromium session (1280x900).
    pub fn start() -> Browser {
        let driver_bin = binary("chromedriver");
        let chromium = binary("chromium");
        let port = free_port();
        let profile = unique_dir("chromium");
        let driver = Command::new(driver_bin)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                let (status, body) = http_request(addr, "GET", "/status", None, "");
                if status == 200 && body.contains("\"ready\":true") {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "chromedriver did not become ready");
            std::thread::sleep(Duration::from_millis(100));
        }
        let caps = serde_json::json!({
            "capabilities": { "alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": {
                    "binary": chromium,
                    "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                             "--window-size=1280,900", "--no-first-run", "--disable-extensions",
                             format!("--user-data-dir={}", profile.display())],
                }
            }}
        });
        let mut b = Browser {
            driver,
            addr,
            session: String::new(),
            profile,
        };
        let v = b.call("POST", "/session", Some(caps));
        b.session = v["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {v}"))
            .to_string();
        b
    }

    /// One WebDriver command; its `value`. Panics with the driver's error.
    fn call(&self, method: &str, path: &str, body: Option<serde_json::Value>) -> serde_json::Value {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let (status, text) = http_request(self.addr, method, path, None, &body);
        let v: serde_json::Value =
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("chromedriver answered {status}: {text}"));
        assert!(status == 200, "WebDriver {method} {path} failed ({status}): {v}");
        v.get("value").cloned().unwrap_or(v)
    }

    fn session_path(&self, rest: &str) -> String {
        format!("/session/{}{rest}", self.session)
    }

    pub fn open(&self, url: &str) {
        self.call(
            "POST",
            &self.session_path("/url"),
            Some(serde_json::json!({ "url": url })),
        );
    }

    /// Runs `script` in the page (its `return` value).
    pub fn run(&self, script: &str) -> serde_json::Value {
        self.call(
            "POST",
            &self.session_path("/execute/sync"),
            Some(serde_json::json!({ "script": script, "args": [] })),
        )
    }

    /// The element references matching a CSS selector.
    pub fn find_all(&self, css: &str) -> Vec<String> {
        let v = self.call(
            "POST",
            &self.session_path("/elements"),
            Some(serde_json::json!({ "using": "css selector", "value": css })),
        );
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|e| e[ELEMENT].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn text(&self, element: &str) -> String {
        self.call("GET", &self.session_path(&format!("/element/{element}/text")), None)
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    pub fn click(&self, element: &str) {
        self.call(
            "POST",
            &self.session_path(&format!("/element/{element}/click")),
            Some(serde_json::json!({})),
        );
    }

    /// Waits up to `within` for `css` to match at least `n` elements; returns them.
    pub fn wait_for(&self, css: &str, n: usize, within: Duration) -> Vec<String> {
        let deadline = Instant::now() + within;
        loop {
            let found = self.find_all(css);
            if found.len() >= n {
                return found;
            }
            assert!(
                Instant::now() < deadline,
                "the page never showed {n} of `{css}` (found {}): {}",
                found.len(),
                self.run("return document.body ? document.body.innerText : ''")
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A PNG of the window.
    pub fn screenshot(&self) -> Vec<u8> {
        use base64::Engine;
        let v = self.call("GET", &self.session_path("/screenshot"), None);
        base64::engine::general_purpose::STANDARD
            .decode(v.as_str().expect("screenshot data"))
            .expect("base64 screenshot")
    }

    /// The page's cookies as WebDriver reports them (name, httpOnly, sameSite...).
    pub fn cookies(&self) -> serde_json::Value {
        self.call("GET", &self.session_path("/cookie"), None)
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = http_request(self.addr, "DELETE", &self.session_path(""), None, "");
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}
