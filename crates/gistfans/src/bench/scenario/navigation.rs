//! The `navigation` scenario: viewers moving from profile to profile.
//!
//! A viewer opens a profile picked from a Zipf law; then, with
//! probability [`FOLLOW_LINK`], one the page links to: a followee or a
//! follower (even odds), the first ones likelier (weight `1/(i+1)^1.5`,
//! as people click what is on top); else a new Zipf pick, after reading
//! each page for [`THINK_TIME`]. Each view sends
//! the profile it came from (`from`), as the profile page does. Three
//! servers, each fresh: no preloading, the followee rule, and learned
//! preloading with the followee rule. Measured: the hit rate of *first*
//! views (a profile this viewer had not opened yet in the run), which is
//! what preloading is for, and what preloading cost: preloads issued,
//! used by a page, and never used.
//!
//! The aggregate links no starred post's author, so the walk has no such
//! step.

use std::{
    collections::HashSet,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use gistfans_data::Preload;
use rand::{rngs::StdRng, RngExt, SeedableRng};
use rand_distr::{Distribution, Zipf};
use serde::Serialize;
use serde_json::{json, Value};

use super::{start, write_json};
use crate::bench::{server::Target, BenchArgs};

/// Probability that the next view follows a link of the current page.
const FOLLOW_LINK: f64 = 0.8;
/// A viewer reads a page this long before the next click (people read;
/// a preload that has not finished when the next page is opened is no use).
const THINK_TIME: Duration = Duration::from_millis(200);

/// What the viewers of one configuration counted while measuring.
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
struct Counts {
    views: u64,
    hits: u64,
    first_views: u64,
    first_view_hits: u64,
    errors: u64,
}

impl Counts {
    fn add(&mut self, o: &Counts) {
        self.views += o.views;
        self.hits += o.hits;
        self.first_views += o.first_views;
        self.first_view_hits += o.first_view_hits;
        self.errors += o.errors;
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Row {
    preload: Preload,
    views_per_sec: f64,
    counts: Counts,
    /// The server's preloading figures at the end (warm-up included).
    preloads: Value,
}

pub(super) async fn run(args: &BenchArgs) -> anyhow::Result<()> {
    let users = args.concurrency[0];
    eprintln!(
        "bench: navigation scenario: {users} viewers reading each page {} ms, {} s each after {} s warm-up, links followed {:.0}% of the time",
        THINK_TIME.as_millis(), args.duration, args.warmup, FOLLOW_LINK * 100.0
    );
    let mut rows = Vec::new();
    for rule in [Preload::Off, Preload::Followees, Preload::Learned] {
        let (target, universe, a) = start(args, |a| a.preload = Some(rule)).await?;
        let zipf = Zipf::new(universe.users as f64, a.zipf)?;
        let (measuring, stop) = (AtomicBool::new(false), AtomicBool::new(false));
        let viewers = (0..users)
            .map(|i| viewer(&target, &zipf, a.seed ^ (i as u64) << 20, &measuring, &stop));
        let control = async {
            tokio::time::sleep(Duration::from_secs(a.warmup)).await;
            measuring.store(true, Ordering::Relaxed);
            let started = Instant::now();
            tokio::time::sleep(Duration::from_secs(a.duration)).await;
            stop.store(true, Ordering::Relaxed);
            started.elapsed()
        };
        let (results, elapsed) = tokio::join!(futures::future::join_all(viewers), control);
        let mut counts = Counts::default();
        results.iter().for_each(|c| counts.add(c));
        let preloads = target
            .monitor()
            .await
            .map_or(Value::Null, |v| v["preload"].clone());
        rows.push(Row {
            preload: rule,
            views_per_sec: counts.views as f64 / elapsed.as_secs_f64(),
            counts,
            preloads,
        });
        target.stop().await;
    }
    print(&rows);
    write_json(
        args,
        &json!({ "scenario": "navigation", "viewers": users, "followLink": FOLLOW_LINK, "thinkMs": THINK_TIME.as_millis() as u64, "rows": rows }),
    )?;
    let errors: u64 = rows.iter().map(|r| r.counts.errors).sum();
    anyhow::ensure!(errors == 0, "{errors} failed views");
    Ok(())
}

/// One viewer until `stop`; counts only while `measuring`.
async fn viewer(
    t: &Target,
    zipf: &Zipf<f64>,
    seed: u64,
    measuring: &AtomicBool,
    stop: &AtomicBool,
) -> Counts {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut counts = Counts::default();
    let mut seen = HashSet::new();
    let mut at: Option<(i64, Vec<i64>, Vec<i64>)> = None;
    while !stop.load(Ordering::Relaxed) {
        let (next, from) = match &at {
            Some((id, followees, followers)) if rng.random_bool(FOLLOW_LINK) => {
                let list = if rng.random_bool(0.5) {
                    followees
                } else {
                    followers
                };
                match pick(list, &mut rng) {
                    Some(next) => (next, Some(*id)),
                    None => (zipf.sample(&mut rng) as i64, None),
                }
            }
            _ => (zipf.sample(&mut rng) as i64, None),
        };
        let on = measuring.load(Ordering::Relaxed);
        match view(t, next, from).await {
            Ok((hit, page)) => {
                if on {
                    let first = seen.insert(next);
                    counts.views += 1;
                    counts.hits += u64::from(hit);
                    counts.first_views += u64::from(first);
                    counts.first_view_hits += u64::from(first && hit);
                } else {
                    seen.insert(next);
                }
                let ids = |k: &str| -> Vec<i64> {
                    page["social"][k].as_array().map_or_else(Vec::new, |a| {
                        a.iter().filter_map(|u| u["id"].as_i64()).collect()
                    })
                };
                at = Some((next, ids("followingSample"), ids("followerSample")));
                tokio::time::sleep(THINK_TIME).await;
            }
            Err(_) => {
                counts.errors += u64::from(on);
                at = None;
            }
        }
    }
    counts
}

/// A link of `list`, the first ones likelier (weight `1/(i+1)^1.5`).
fn pick(list: &[i64], rng: &mut StdRng) -> Option<i64> {
    let weights: Vec<f64> = (0..list.len())
        .map(|i| 1.0 / ((i + 1) as f64).powf(1.5))
        .collect();
    let total: f64 = weights.iter().sum();
    let mut x = rng.random::<f64>() * total;
    for (id, w) in list.iter().zip(weights) {
        if x < w {
            return Some(*id);
        }
        x -= w;
    }
    list.last().copied()
}

/// One profile view: whether the cache served it, and the page.
async fn view(t: &Target, user: i64, from: Option<i64>) -> Result<(bool, Value), String> {
    let from = from.map_or(String::new(), |f| format!("&from={f}"));
    let url = format!("{}/api/user/stats-optimized?userId={user}{from}", t.base());
    let r = t.http.get(url).send().await.map_err(|e| e.to_string())?;
    if !r.status().is_success() {
        return Err(format!("http_{}", r.status().as_u16()));
    }
    let source = r
        .headers()
        .get("x-cache")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let hit = matches!(source, "cache" | "shared");
    let page = r.json::<Value>().await.map_err(|e| e.to_string())?;
    Ok((hit, page))
}

fn print(rows: &[Row]) {
    println!(
        "\n{:<10} {:>9} {:>10} {:>12} {:>10} {:>9} {:>7} {:>8}",
        "preload", "views/s", "hit %", "first-view %", "first", "issued", "used", "unused"
    );
    for r in rows {
        let c = &r.counts;
        let pct = |a: u64, b: u64| 100.0 * a as f64 / b.max(1) as f64;
        let n = |k: &str| r.preloads[k].as_u64().unwrap_or(0);
        println!(
            "{:<10} {:>9.0} {:>10.1} {:>12.1} {:>10} {:>9} {:>7} {:>8}",
            r.preload.name(),
            r.views_per_sec,
            pct(c.hits, c.views),
            pct(c.first_view_hits, c.first_views),
            c.first_views,
            n("issued"),
            n("used"),
            n("issued").saturating_sub(n("used")),
        );
    }
}
