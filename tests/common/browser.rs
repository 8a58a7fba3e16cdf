//! A real headless Chromium for the dashboard tests, driven over WebDriver (fantoccini) through
//! Debian's `chromedriver`, which is built as a matched pair with `chromium`. Each browser gets
//! its own driver on a free port and a fresh profile directory; both go away on drop. A machine
//! without them fails the test with the command that installs them — never a silent pass.

use crate::common::{free_port, within};
use fantoccini::wd::WebDriverCompatibleCommand;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// One browser at a time across the test binary: two Chromiums on a 2-core machine make each
/// other's timeouts flaky, and the tests are about the pages, not parallelism.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

pub struct Browser {
    pub client: Client,
    driver: Child,
    _profile: tempfile::TempDir,
    _turn: tokio::sync::MutexGuard<'static, ()>,
}

fn find(names: &[&str]) -> Option<String> {
    names.iter().find(|p| std::path::Path::new(p).exists()).map(|p| p.to_string())
}

/// A WebDriver command fantoccini has no method for: `method` on `/session/{id}/{path}`.
#[derive(Debug)]
struct Raw {
    path: &'static str,
    body: Value,
}

impl WebDriverCompatibleCommand for Raw {
    fn endpoint(&self, base: &url::Url, session: Option<&str>) -> Result<url::Url, url::ParseError> {
        base.join(&format!("session/{}/{}", session.unwrap_or(""), self.path))
    }
    fn method_and_body(&self, _: &url::Url) -> (http::Method, Option<String>) {
        (http::Method::POST, Some(self.body.to_string()))
    }
}

impl Browser {
    pub async fn start() -> Browser {
        let turn = ONE_AT_A_TIME.lock().await;
        let chromium = find(&["/usr/bin/chromium", "/usr/bin/chromium-browser"]).unwrap_or_else(|| {
            panic!("no Chromium: install it with `apt-get install chromium chromium-driver fonts-noto-cjk` (scripts/test.sh does)")
        });
        let driver_bin = find(&["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"]).unwrap_or_else(|| {
            panic!("no chromedriver: install it with `apt-get install chromium-driver` (scripts/test.sh does)")
        });
        let port = free_port();
        let driver = Command::new(&driver_bin)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{driver_bin} would not start ({e}); reinstall chromium-driver"));
        let profile = tempfile::tempdir().unwrap();
        let caps = json!({
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-sync", "--disable-component-update",
                    "--disable-dev-shm-usage", "--window-size=1280,900",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            },
            "goog:loggingPrefs": { "browser": "ALL" },
        });
        let caps: serde_json::Map<String, Value> = serde_json::from_value(caps).unwrap();
        let url = format!("http://127.0.0.1:{port}");
        let client = within(60, "chromedriver and Chromium start", async {
            let mut last = String::new();
            for _ in 0..200 {
                match ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
                    .capabilities(caps.clone())
                    .connect(&url)
                    .await
                {
                    Ok(c) => return c,
                    Err(e) => last = e.to_string(),
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            panic!("Chromium did not start through chromedriver: {last}");
        })
        .await;
        Browser { client, driver, _profile: profile, _turn: turn }
    }

    /// Lets the current page's origin read back what a Copy button wrote (WebDriver's
    /// permissions extension; a permission is granted to the origin of the page that is open).
    pub async fn grant_clipboard(&self) {
        for name in ["clipboard-read", "clipboard-write"] {
            let cmd = Raw { path: "permissions", body: json!({"descriptor": {"name": name}, "state": "granted"}) };
            self.client.issue_cmd(cmd).await.unwrap_or_else(|e| panic!("granting {name}: {e}"));
        }
    }

    pub async fn goto(&self, url: &str) {
        within(30, "page load", self.client.goto(url)).await.unwrap_or_else(|e| panic!("goto {url}: {e}"));
    }

    pub async fn find(&self, css: &str) -> fantoccini::elements::Element {
        match within(15, "element", self.client.wait().for_element(Locator::Css(css))).await {
            Ok(e) => e,
            Err(e) => panic!("no element {css} on {:?}: {e}", self.client.current_url().await.ok()),
        }
    }

    pub async fn count(&self, css: &str) -> usize {
        self.client.find_all(Locator::Css(css)).await.map(|v| v.len()).unwrap_or(0)
    }

    pub async fn click(&self, css: &str) {
        within(15, "click", self.find(css).await.click()).await.unwrap_or_else(|e| panic!("click {css}: {e}"));
    }

    pub async fn fill(&self, css: &str, text: &str) {
        let e = self.find(css).await;
        e.clear().await.unwrap();
        e.send_keys(text).await.unwrap();
    }

    /// The page's visible text.
    pub async fn text(&self) -> String {
        self.find("body").await.text().await.unwrap()
    }

    pub async fn path(&self) -> String {
        let u = self.client.current_url().await.unwrap();
        match u.query() {
            Some(q) => format!("{}?{q}", u.path()),
            None => u.path().to_owned(),
        }
    }

    /// Runs `script` (which must call its last argument with the result) in the page.
    pub async fn run_async(&self, script: &str) -> Value {
        within(15, "script", self.client.execute_async(script, vec![])).await.unwrap_or_else(|e| panic!("script: {e}"))
    }

    /// The browser console's entries since the last call (chromedriver's log endpoint).
    pub async fn console(&self) -> Vec<String> {
        let v = self.client.issue_cmd(Raw { path: "se/log", body: json!({"type": "browser"}) }).await.unwrap();
        v.as_array().into_iter().flatten().map(|e| e["message"].as_str().unwrap_or("").to_owned()).collect()
    }

    /// Saves a screenshot under `target/screenshots/` (not committed; looked at by people).
    pub async fn screenshot(&self, name: &str) {
        let png = within(30, "screenshot", self.client.screenshot()).await.unwrap();
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
    }

    pub async fn set_width(&self, width: u32) {
        self.client.set_window_size(width, 900).await.unwrap();
    }

    pub async fn close(mut self) {
        let _ = within(15, "browser close", self.client.clone().close()).await;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
