//! A real headless browser for dashboard tests: Debian's Chromium driven over WebDriver
//! (chromedriver, started here on a free 127.0.0.1 port; `fantoccini` as the client).
//!
//! `Browser::start()` answers `Err("skipped: …")` when chromium or chromedriver is not installed
//! (`apt-get install chromium chromium-driver`; `scripts/test` does it), so a test can say why
//! it did not run.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder};

pub struct Browser {
    pub client: Client,
    driver: Child,
    profile: PathBuf,
}

fn find(names: &[&str]) -> Option<PathBuf> {
    names.iter().map(PathBuf::from).find(|p| p.is_file())
}

impl Browser {
    pub async fn start() -> Result<Browser, String> {
        let chromium = find(&["/usr/bin/chromium", "/usr/bin/chromium-browser"])
            .ok_or("skipped: chromium is not installed (apt-get install chromium)")?;
        let driver_bin = find(&["/usr/bin/chromedriver"])
            .ok_or("skipped: chromedriver is not installed (apt-get install chromium-driver)")?;
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("no free port: {e}"))?
            .port();
        let driver = Command::new(driver_bin)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start chromedriver: {e}"))?;
        let profile = std::env::temp_dir().join(format!("blgv-chromium-{}", rand::random::<u64>()));
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                return Err("chromedriver did not open its port within 10 s".into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // The flags keep Chromium off the (closed) network: no background fetches, no updates.
        let caps = serde_json::json!({
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                    "--window-size=1280,1000",
                    format!("--user-data-dir={}", profile.display()),
                ]
            }
        });
        let serde_json::Value::Object(caps) = caps else {
            unreachable!("literal object")
        };
        // Several crates bring rustls with different crypto providers; WebDriver runs over
        // plain HTTP to 127.0.0.1, but rustls still wants the choice made.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = ClientBuilder::rustls()
            .map_err(|e| format!("webdriver client: {e}"))?
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .map_err(|e| format!("cannot open a Chromium session: {e}"))?;
        Ok(Browser {
            client,
            driver,
            profile,
        })
    }

    /// Save a PNG of the page (a test artifact).
    pub async fn screenshot(&self, path: &Path) -> Result<(), String> {
        let png = self
            .client
            .screenshot()
            .await
            .map_err(|e| format!("screenshot: {e}"))?;
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        std::fs::write(path, png).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// The text of the first element matching `css`, or None.
    pub async fn text(&self, css: &str) -> Option<String> {
        let el = self.client.find(fantoccini::Locator::Css(css)).await.ok()?;
        el.text().await.ok()
    }

    /// Polls `css`'s text until `pred` holds or `within` passes; returns the last text seen.
    pub async fn wait_text(
        &self,
        css: &str,
        within: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> Result<String, String> {
        let deadline = Instant::now() + within;
        let mut last = None;
        loop {
            if let Some(t) = self.text(css).await {
                if pred(&t) {
                    return Ok(t);
                }
                last = Some(t);
            }
            if Instant::now() > deadline {
                return Err(format!("{css}: last text {last:?}"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn close(mut self) {
        let _ = self.client.clone().close().await;
        let _ = self.driver.kill();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}
