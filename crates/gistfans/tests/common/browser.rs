//! Headless Chromium driven over WebDriver (fantoccini), for the browser
//! tests. Each [`Browser`] has its own `chromedriver` on a free loopback
//! port and its own Chromium profile directory; dropping it stops both (by
//! pid). A missing `chromedriver` fails the test, never skips it:
//! `scripts/services.sh` installs Debian's `chromium` and `chromium-driver`.
//!
//! ```ignore
//! let browser = Browser::start(Window::Desktop).await;
//! browser.open(&format!("{}/u/1", app.base)).await;
//! browser.wait_for_attr("rendered").await;               // <html data-rendered=…>
//! browser.wait_for("html[data-state=error]").await;      // any CSS selector
//! let title: serde_json::Value = browser.eval("return document.title").await;
//! browser.screenshot("profile-desktop").await;           // target/test-artefacts/profile-desktop.png
//! browser.close().await;
//! ```
//!
//! `CHROMEDRIVER` and `CHROMIUM` name other binaries than `chromedriver`
//! (on the PATH) and `/usr/bin/chromium`.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

/// How long a page may take to set an attribute the test waits for.
pub const WAIT: Duration = Duration::from_secs(30);

/// The window a browser opens with.
#[derive(Clone, Copy, Debug)]
pub enum Window {
    /// A 1280 x 1200 desktop window.
    Desktop,
    /// A phone: Chromium's mobile emulation, 390 x 844 CSS pixels at 2x
    /// (the page's viewport meta applies, as on a phone).
    Phone,
}

/// A `chromedriver` process of ours; killed by its pid on drop, with the
/// Chromium it started (found by our unique profile directory).
struct Chromedriver {
    child: Child,
    url: String,
    profile: PathBuf,
}

impl Chromedriver {
    async fn start() -> Chromedriver {
        let binary = std::env::var("CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".into());
        let port = free_port();
        let profile = std::env::temp_dir().join(testkit::unique("gf_chromium"));
        std::fs::create_dir_all(&profile).unwrap();
        let child = Command::new(&binary)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start `{binary}` ({e}): run `bash scripts/services.sh`, which installs Debian's chromium and chromium-driver")
            });
        let driver = Chromedriver {
            child,
            url: format!("http://127.0.0.1:{port}"),
            profile,
        };
        driver.wait_until_ready().await;
        driver
    }

    /// Polls `/status` until the driver says it is ready.
    async fn wait_until_ready(&self) {
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let status = http.get(format!("{}/status", self.url)).send().await;
            if let Ok(resp) = status {
                let body: Value = resp.json().await.unwrap_or(Value::Null);
                if body["value"]["ready"] == true {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver at {} not ready after 20 s",
                self.url
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Chromedriver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        kill_processes_using(&self.profile);
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// Kills, by pid, the processes whose command line names `dir`: the
/// Chromium a killed chromedriver left behind (only ours use that directory).
fn kill_processes_using(dir: &Path) {
    let needle = dir.to_string_lossy().into_owned();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    for entry in entries.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains(&needle) {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A headless Chromium session.
pub struct Browser {
    /// The WebDriver client, for anything the helpers below do not cover.
    pub client: Client,
    driver: Chromedriver,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium with `window`.
    pub async fn start(window: Window) -> Browser {
        let driver = Chromedriver::start().await;
        let mut args = vec![
            "--headless=new".to_string(),
            "--no-sandbox".into(),
            "--disable-dev-shm-usage".into(),
            "--no-first-run".into(),
            "--disable-extensions".into(),
            format!("--user-data-dir={}", driver.profile.display()),
        ];
        let mut options = json!({});
        match window {
            Window::Desktop => args.push("--window-size=1280,1200".into()),
            Window::Phone => {
                options["mobileEmulation"] =
                    json!({"deviceMetrics": {"width": 390, "height": 844, "pixelRatio": 2.0}})
            }
        }
        options["args"] = json!(args);
        options["binary"] =
            json!(std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into()));
        let mut caps = serde_json::Map::new();
        caps.insert("browserName".into(), json!("chrome"));
        caps.insert("goog:chromeOptions".into(), options);
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&driver.url)
            .await
            .unwrap_or_else(|e| panic!("cannot start Chromium through chromedriver: {e}"));
        Browser { client, driver }
    }

    /// Navigates to `url` and waits for its load event.
    pub async fn open(&self, url: &str) {
        self.client.goto(url).await.unwrap();
    }

    /// Reloads the page.
    pub async fn reload(&self) {
        self.client.refresh().await.unwrap();
    }

    /// Waits (at most [`WAIT`]) until an element matches the CSS `selector`.
    pub async fn wait_for(&self, selector: &str) -> fantoccini::elements::Element {
        self.client
            .wait()
            .at_most(WAIT)
            .for_element(Locator::Css(selector))
            .await
            .unwrap_or_else(|e| panic!("nothing matched `{selector}` within {WAIT:?}: {e}"))
    }

    /// Waits (at most [`WAIT`]) until `<html>` has `data-{name}`, and returns its value.
    pub async fn wait_for_attr(&self, name: &str) -> String {
        let html = self.wait_for(&format!("html[data-{name}]")).await;
        html.attr(&format!("data-{name}"))
            .await
            .unwrap()
            .unwrap_or_default()
    }

    /// The `data-*` attributes of `<html>`, as a JSON object.
    pub async fn html_data(&self) -> Value {
        self.eval("return Object.assign({}, document.documentElement.dataset)")
            .await
    }

    /// Runs `script` (a function body: `return …` gives the result).
    pub async fn eval(&self, script: &str) -> Value {
        self.client.execute(script, vec![]).await.unwrap()
    }

    /// Saves the visible page as `target/test-artefacts/{name}.png`; returns the path.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.client.screenshot().await.unwrap();
        let dir = artefacts_dir();
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        path
    }

    /// Ends the session (Chromium quits), then stops chromedriver.
    pub async fn close(self) {
        let Browser { client, driver } = self;
        let _ = client.close().await;
        drop(driver);
    }
}

/// `target/test-artefacts`: beside the build's profile directories (found
/// from the test binary, `target/debug/deps/…`, so `CARGO_TARGET_DIR` is
/// followed).
pub fn artefacts_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.ancestors()
        .nth(3)
        .expect("the test binary is in <target>/<profile>/deps")
        .join("test-artefacts")
}
