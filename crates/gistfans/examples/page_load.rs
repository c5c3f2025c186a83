//! Measures the profile page's time to data in headless Chromium: ONE
//! request (`/u/{id}`) against four (`/u/{id}?compose=components`), on a
//! server that is already running (idle, or loaded by `gistfans bench
//! --url …`). A measurement, not a test: it asserts nothing about speed.
//!
//! Time to data is the page's own `data-rendered`: `performance.now()` when
//! the data is in the page, i.e. ms since navigation start (Navigation
//! Timing's time origin). The page's own work is measured from its
//! `data-answered` (`responseEnd` of the last data answer: the page's own
//! in the one-request mode, which carries its data; the last API answer's
//! in the four-request mode) to `data-rendered` (in the DOM) and to
//! `data-painted` (the frame that shows it drawn), and as `render`: from
//! whichever came last, the answer or the script's start (`data-started`),
//! to `data-rendered`, split into `fetch` (to `fetch()` resolving,
//! `data-fetched`; `–` when nothing was fetched) and `parse` (to the
//! body parsed, `data-parsed`); `fetches` is how many API requests the
//! browser made (0 in the one-request mode). Each load opens a new id with
//! `sessionStorage` cleared, so no load is a 304 re-render; loads alternate
//! between the modes so both see the same server conditions.
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
    /// Answer → in the DOM.
    work: Vec<f64>,
    /// Answer → drawn.
    painted: Vec<f64>,
    /// The later of the answer and the script's start → in the DOM.
    render: Vec<f64>,
    /// The later of the answer and the script's start → `fetch()` resolved.
    fetch: Vec<f64>,
    /// `fetch()` resolved → the body parsed.
    parse: Vec<f64>,
    requests: Vec<u32>,
    fetches: Vec<u32>,
}

fn quantile(v: &[f64], q: f64) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * q).round() as usize]
}

/// The median to one decimal, or `–` when nothing was measured (nothing
/// fetched: the page carried its data).
fn median_or_dash(v: &[f64]) -> String {
    if v.is_empty() {
        "–".into()
    } else {
        format!("{:.1}", quantile(v, 0.5))
    }
}

/// One load's figures.
struct Load {
    rendered: f64,
    answered: f64,
    painted: f64,
    started: f64,
    fetched: f64,
    parsed: f64,
    requests: u32,
    fetches: u32,
}

/// Opens `url` on a clean session and reads the page's figures.
async fn load(browser: &Browser, url: &str) -> anyhow::Result<Load> {
    browser.eval("sessionStorage.clear(); return null").await;
    browser.open(url).await;
    browser.wait_for_attr("painted").await;
    let data = browser.html_data().await;
    anyhow::ensure!(data["state"] == "ready", "{url}: {data}");
    let num =
        |k: &str| -> anyhow::Result<f64> { Ok(data[k].as_str().unwrap_or("").parse::<f64>()?) };
    Ok(Load {
        rendered: num("rendered")?,
        answered: num("answered")?,
        painted: num("painted")?,
        started: num("started")?,
        fetched: num("fetched")?,
        parsed: num("parsed")?,
        requests: num("requests")? as u32,
        fetches: num("fetches")? as u32,
    })
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
            let l = load(&browser, &format!("{base}/u/{id}{query}")).await?;
            let s = &mut samples[m];
            s.rendered.push(l.rendered);
            s.work.push(l.rendered - l.answered);
            s.painted.push(l.painted - l.answered);
            s.render.push(l.rendered - l.answered.max(l.started));
            if l.fetched > 0.0 {
                s.fetch.push(l.fetched - l.answered.max(l.started));
                s.parse.push(l.parsed - l.fetched);
            }
            s.requests.push(l.requests);
            s.fetches.push(l.fetches);
        }
    }
    browser.close().await;
    println!(
        "time to data (data-rendered, ms since navigation start), {} loads per mode, {base}",
        args.loads
    );
    println!(
        "{:<14} {:>9} {:>8} {:>9} {:>9} {:>9} {:>14} {:>16} {:>10} {:>9} {:>9}",
        "mode",
        "requests",
        "fetches",
        "median",
        "p95",
        "max",
        "answer→DOM p50",
        "answer→paint p50",
        "render p50",
        "fetch p50",
        "parse p50"
    );
    for ((name, _), s) in modes.iter().zip(&samples) {
        let fetches = s.fetches.iter().max().copied().unwrap_or(0);
        println!(
            "{name:<14} {:>9} {:>8} {:>9.1} {:>9.1} {:>9.1} {:>14.1} {:>16.1} {:>10.1} {:>9} {:>9}",
            s.requests[0],
            fetches,
            quantile(&s.rendered, 0.5),
            quantile(&s.rendered, 0.95),
            quantile(&s.rendered, 1.0),
            quantile(&s.work, 0.5),
            quantile(&s.painted, 0.5),
            quantile(&s.render, 0.5),
            median_or_dash(&s.fetch),
            median_or_dash(&s.parse),
        );
    }
    Ok(())
}
