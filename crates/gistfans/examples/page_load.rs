//! Measures the profile page's time to data in headless Chromium: ONE
//! request (`/u/{id}`) against four (`/u/{id}?compose=components`), on a
//! server that is already running (idle, or loaded by `gistfans bench
//! --url …`). A measurement, not a test: it asserts nothing about speed.
//!
//! Time to data is the page's own `data-rendered`: `performance.now()` when
//! the data is on screen, i.e. ms since navigation start (Navigation
//! Timing's time origin). Each load opens a new id with `sessionStorage`
//! cleared, so no load is a 304 re-render; loads alternate between the modes
//! so both see the same server conditions.
//!
//! ```sh
//! cargo run --release -p gistfans -- serve &                       # http://127.0.0.1:3000
//! cargo run --release -p gistfans --example page_load -- --loads 50
//! cargo run --release -p gistfans -- bench --url http://127.0.0.1:3000 --mode optimized \
//!     --concurrency 256 --duration 300 &                           # then, while it runs:
//! cargo run --release -p gistfans --example page_load -- --loads 50
//! ```
//!
//! Needs `chromedriver` and `chromium` (`bash scripts/services.sh`).

#[path = "../tests/common/browser.rs"]
#[allow(dead_code)]
mod browser;

use browser::{Browser, Window};
use clap::Parser;

/// Page-load comparison, one request vs four.
#[derive(Debug, Parser)]
struct Args {
    /// The running server.
    #[arg(long, default_value = "http://127.0.0.1:3000")]
    url: String,
    /// Loads per mode.
    #[arg(long, default_value_t = 50)]
    loads: usize,
    /// First user id opened; loads use consecutive ids from here.
    #[arg(long, default_value_t = 1)]
    first_id: i64,
}

/// One mode's loads, in ms.
#[derive(Debug, Default)]
struct Samples {
    rendered: Vec<f64>,
    requests: Vec<u32>,
}

impl Samples {
    fn quantile(&self, q: f64) -> f64 {
        let mut v = self.rendered.clone();
        v.sort_by(f64::total_cmp);
        v[((v.len() - 1) as f64 * q).round() as usize]
    }
}

/// Opens `url` on a clean session and returns `(data-rendered, data-requests)`.
async fn load(browser: &Browser, url: &str) -> anyhow::Result<(f64, u32)> {
    browser.eval("sessionStorage.clear(); return null").await;
    browser.open(url).await;
    browser.wait_for_attr("rendered").await;
    let data = browser.html_data().await;
    anyhow::ensure!(data["state"] == "ready", "{url}: {data}");
    let rendered = data["rendered"].as_str().unwrap_or("").parse()?;
    let requests = data["requests"].as_str().unwrap_or("").parse()?;
    Ok((rendered, requests))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(args.loads > 0, "--loads must be at least 1");
    let browser = Browser::start(Window::Desktop).await;
    let base = args.url.trim_end_matches('/');
    // Warm the browser's cache of the page's files (and the connection).
    browser.open(&format!("{base}/u/{}", args.first_id)).await;
    browser.wait_for_attr("rendered").await;
    let modes = [
        ("one request", ""),
        ("four requests", "?compose=components"),
    ];
    let mut samples: Vec<Samples> = modes.iter().map(|_| Samples::default()).collect();
    for i in 0..args.loads {
        let id = args.first_id + i as i64;
        for (m, (_, query)) in modes.iter().enumerate() {
            let (rendered, requests) = load(&browser, &format!("{base}/u/{id}{query}")).await?;
            samples[m].rendered.push(rendered);
            samples[m].requests.push(requests);
        }
    }
    browser.close().await;
    println!(
        "time to data (data-rendered, ms since navigation start), {} loads per mode, {base}",
        args.loads
    );
    println!(
        "{:<14} {:>9} {:>9} {:>9} {:>9}",
        "mode", "requests", "median", "p95", "max"
    );
    for ((name, _), s) in modes.iter().zip(&samples) {
        println!(
            "{name:<14} {:>9} {:>9.1} {:>9.1} {:>9.1}",
            s.requests[0],
            s.quantile(0.5),
            s.quantile(0.95),
            s.quantile(1.0)
        );
    }
    Ok(())
}
