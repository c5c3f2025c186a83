//! Closed-loop virtual users: each opens a profile page, waits for it, and
//! opens the next; a share of operations are writes, each followed by a
//! read that must see it.

use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use rand::{rngs::StdRng, Rng, SeedableRng};
use rand_distr::{Distribution, Zipf};
use serde::Serialize;
use serde_json::{json, Value};

use super::{report::ModeReport, server::Target, witness::Witness, BenchArgs};

/// How a page is loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Four per-component requests in parallel, plain pool.
    Baseline,
    /// One request to the aggregated, cached route.
    Optimized,
    /// One request to a route that touches nothing: the HTTP ceiling.
    Trivial,
}

/// The seeded data's extent.
pub struct Universe {
    /// Users, ids 1..=users.
    pub users: i64,
}

impl Universe {
    /// Finds the number of users by binary search over `/api/users/{id}/stats`
    /// (seeded ids are contiguous).
    pub async fn discover(t: &Target) -> anyhow::Result<Universe> {
        let exists = |id: i64| {
            let url = format!("{}/api/users/{id}/stats", t.base);
            let http = t.http.clone();
            async move { http.get(url).send().await.map(|r| r.status().is_success()) }
        };
        anyhow::ensure!(
            exists(1).await?,
            "user 1 does not exist: seed the database first (`gistfans seed`)"
        );
        let (mut lo, mut hi) = (1i64, 2i64);
        while exists(hi).await? {
            lo = hi;
            hi *= 2;
        }
        while hi - lo > 1 {
            let mid = (lo + hi) / 2;
            if exists(mid).await? {
                lo = mid
            } else {
                hi = mid
            }
        }
        Ok(Universe { users: lo })
    }
}

/// What a read showed, when a write needs checking.
#[derive(Debug, Default)]
struct Seen {
    followers: i64,
    stars_received: i64,
    post_ids: Vec<i64>,
}

#[derive(Default)]
struct VuResult {
    latency: Option<Histogram<u64>>,
    requests: u64,
    writes: u64,
    conflicts: u64,
    stale: u64,
    errors: BTreeMap<String, u64>,
}

fn kind_of(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timeout".into()
    } else if e.is_connect() {
        "connect".into()
    } else {
        "transport".into()
    }
}

struct Vu<'a> {
    t: &'a Target,
    mode: Mode,
    res: VuResult,
}

impl Vu<'_> {
    async fn get(&mut self, path: &str, parse: bool) -> Result<Option<Value>, String> {
        self.res.requests += 1;
        let r = self
            .t
            .http
            .get(format!("{}{path}", self.t.base))
            .send()
            .await
            .map_err(|e| kind_of(&e))?;
        let status = r.status();
        if !status.is_success() {
            return Err(format!("http_{}", status.as_u16()));
        }
        if parse {
            r.json::<Value>().await.map(Some).map_err(|e| kind_of(&e))
        } else {
            r.bytes().await.map(|_| None).map_err(|e| kind_of(&e))
        }
    }

    /// One page load; with `check`, returns what the page showed.
    async fn page(&mut self, user: i64, check: bool) -> Result<Option<Seen>, String> {
        match self.mode {
            Mode::Trivial => self.get("/api/ping", false).await.map(|_| None),
            Mode::Optimized => {
                let v = self
                    .get(&format!("/api/user/stats-optimized?userId={user}"), check)
                    .await?;
                Ok(v.map(|v| Seen {
                    followers: v["stats"]["followers"].as_i64().unwrap_or(-1),
                    stars_received: v["stats"]["starsReceived"].as_i64().unwrap_or(-1),
                    post_ids: v["recentPosts"]
                        .as_array()
                        .map(|a| a.iter().filter_map(|p| p["id"].as_i64()).collect())
                        .unwrap_or_default(),
                }))
            }
            Mode::Baseline => {
                // The four components load in parallel, as a page would.
                let base = &self.t.base;
                let http = &self.t.http;
                let get = |part: &str| {
                    let url = format!("{base}/api/users/{user}/{part}");
                    async move {
                        let r = http.get(url).send().await.map_err(|e| kind_of(&e))?;
                        if !r.status().is_success() {
                            return Err(format!("http_{}", r.status().as_u16()));
                        }
                        r.json::<Value>().await.map_err(|e| kind_of(&e))
                    }
                };
                self.res.requests += 4;
                let (stats, posts, history, social) = tokio::join!(
                    get("stats"),
                    get("posts"),
                    get("star-history"),
                    get("social")
                );
                let (stats, posts) = (stats?, posts?);
                history?;
                social?;
                Ok(check.then(|| Seen {
                    followers: stats["stats"]["followers"].as_i64().unwrap_or(-1),
                    stars_received: stats["stats"]["starsReceived"].as_i64().unwrap_or(-1),
                    post_ids: posts
                        .as_array()
                        .map(|a| a.iter().filter_map(|p| p["id"].as_i64()).collect())
                        .unwrap_or_default(),
                }))
            }
        }
    }

    async fn write(
        &mut self,
        method: reqwest::Method,
        path: &str,
        actor: i64,
        body: Option<Value>,
    ) -> Result<reqwest::StatusCode, String> {
        self.res.requests += 1;
        self.res.writes += 1;
        let mut req = self
            .t
            .http
            .request(method, format!("{}{path}", self.t.base))
            .header("X-User-Id", actor.to_string());
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.map_err(|e| kind_of(&e))?;
        let s = r.status();
        if s.is_success() || s == reqwest::StatusCode::CONFLICT {
            Ok(s)
        } else {
            Err(format!("http_{}", s.as_u16()))
        }
    }
}

/// Runs one mode at one concurrency and reports it.
pub async fn run_mode(
    t: &Target,
    witness: &Arc<Witness>,
    universe: &Universe,
    args: &BenchArgs,
    mode: Mode,
    users: usize,
) -> anyhow::Result<ModeReport> {
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let loads = Arc::new(AtomicU64::new(0));
    let zipf =
        Zipf::new(universe.users as u64, args.zipf).map_err(|e| anyhow::anyhow!("zipf: {e}"))?;
    let write_ratio = if mode == Mode::Trivial {
        0.0
    } else {
        args.write_ratio
    };

    let n_users = universe.users;
    let limit = args.requests;
    // The virtual users borrow the target, so they run as futures joined on
    // this task (tokio drives their I/O concurrently) rather than as spawned tasks.
    let bar = ProgressBar::new_spinner();
    bar.set_style(ProgressStyle::with_template("{spinner} {msg}").expect("valid template"));
    let label = format!("{mode:?} x{users}");
    let ticker = {
        let (bar, loads, measuring, label) =
            (bar.clone(), loads.clone(), measuring.clone(), label.clone());
        tokio::spawn(async move {
            let started = Instant::now();
            loop {
                let phase = if measuring.load(Ordering::Relaxed) {
                    "measuring"
                } else {
                    "warming up"
                };
                bar.set_message(format!(
                    "{label}: {phase}, {} page loads, {:.0} s",
                    loads.load(Ordering::Relaxed),
                    started.elapsed().as_secs_f64()
                ));
                bar.tick();
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };

    let vus = (0..users).map(|vu| {
        let (measuring, stop, loads) = (measuring.clone(), stop.clone(), loads.clone());
        let seed = args.seed ^ ((vu as u64) << 20) ^ ((users as u64) << 40) ^ (mode as u64);
        async move {
            let mut rng = StdRng::seed_from_u64(seed);
            let mut vu = Vu {
                t,
                mode,
                res: VuResult {
                    latency: Some(Histogram::new(3).expect("3 significant figures")),
                    ..Default::default()
                },
            };
            while !stop.load(Ordering::Relaxed) {
                let user = zipf.sample(&mut rng) as i64;
                let on = measuring.load(Ordering::Relaxed);
                if rng.gen_bool(write_ratio) {
                    let outcome = write_and_check(&mut vu, &mut rng, user, n_users).await;
                    if on {
                        match outcome {
                            Ok(WriteOutcome::Seen) => {}
                            Ok(WriteOutcome::Conflict) => vu.res.conflicts += 1,
                            Ok(WriteOutcome::Stale) => vu.res.stale += 1,
                            Err(kind) => *vu.res.errors.entry(kind).or_default() += 1,
                        }
                    }
                    continue;
                }
                let t0 = Instant::now();
                let r = vu.page(user, false).await;
                if on && !stop.load(Ordering::Relaxed) {
                    match r {
                        Ok(_) => {
                            let us = t0.elapsed().as_micros() as u64;
                            // `record` grows the histogram; `saturating_record` would clamp.
                            let _ = vu
                                .res
                                .latency
                                .as_mut()
                                .expect("set above")
                                .record(us.max(1));
                            let n = loads.fetch_add(1, Ordering::Relaxed) + 1;
                            if limit.is_some_and(|l| n >= l) {
                                stop.store(true, Ordering::Relaxed);
                            }
                        }
                        Err(kind) => *vu.res.errors.entry(kind).or_default() += 1,
                    }
                }
            }
            vu.res
        }
    });
    let driver = futures::future::join_all(vus);
    let control = async {
        tokio::time::sleep(Duration::from_secs(args.warmup)).await;
        let before = Snapshot::take(t, witness).await;
        // The connections of the path under test: the manager's pool for the
        // optimised route, the plain pool for the baseline.
        let sampler = witness.sample_connections(match mode {
            Mode::Optimized => Some("gistfans"),
            Mode::Baseline => Some("gistfans_baseline"),
            Mode::Trivial => None,
        });
        let started = Instant::now();
        loads.store(0, Ordering::Relaxed);
        measuring.store(true, Ordering::Relaxed);
        let deadline = started + Duration::from_secs(args.duration);
        while Instant::now() < deadline && !stop.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        stop.store(true, Ordering::Relaxed);
        let elapsed = started.elapsed();
        let after = Snapshot::take(t, witness).await;
        (before, after, sampler.finish(), elapsed)
    };
    let (results, (before, after, peak_connections, elapsed)) = tokio::join!(driver, control);
    ticker.abort();
    bar.finish_and_clear();

    let mut latency = Histogram::<u64>::new(3).expect("3 significant figures");
    let mut total = VuResult::default();
    for r in results {
        if let Some(h) = &r.latency {
            latency.add(h).expect("same bounds");
        }
        total.requests += r.requests;
        total.writes += r.writes;
        total.conflicts += r.conflicts;
        total.stale += r.stale;
        for (k, v) in r.errors {
            *total.errors.entry(k).or_default() += v;
        }
    }
    let report = ModeReport::build(
        mode,
        users,
        elapsed,
        &latency,
        &total_counts(&total),
        total.errors,
        &before,
        &after,
        peak_connections,
    );
    eprintln!("{}", report.one_line());
    Ok(report)
}

/// Counters of a run, for the report.
pub struct Counts {
    /// HTTP requests sent.
    pub requests: u64,
    /// Writes sent.
    pub writes: u64,
    /// Writes that conflicted (already starred, already following): not errors.
    pub conflicts: u64,
    /// Writes a following read did not see.
    pub stale: u64,
}

fn total_counts(r: &VuResult) -> Counts {
    Counts {
        requests: r.requests,
        writes: r.writes,
        conflicts: r.conflicts,
        stale: r.stale,
    }
}

enum WriteOutcome {
    Seen,
    Conflict,
    Stale,
}

/// A write, then a read through the mode's own path that must see it.
async fn write_and_check(
    vu: &mut Vu<'_>,
    rng: &mut StdRng,
    user: i64,
    n_users: i64,
) -> Result<WriteOutcome, String> {
    let actor = rng.gen_range(1..=n_users);
    let before = vu.page(user, true).await?.unwrap_or_default();
    match rng.gen_range(0..3) {
        0 if !before.post_ids.is_empty() => {
            let post = before.post_ids[rng.gen_range(0..before.post_ids.len())];
            let path = format!("/api/posts/{post}/star");
            put_and_check(vu, &path, actor, user, &before, |s| s.stars_received).await
        }
        1 => {
            let path = format!("/api/users/{user}/follow");
            put_and_check(vu, &path, actor, user, &before, |s| s.followers).await
        }
        _ => {
            let body =
                json!({"title": "bench snippet", "language": "rust", "content": "fn main() {}"});
            vu.write(reqwest::Method::POST, "/api/posts", user, Some(body))
                .await?;
            let after = vu.page(user, true).await?.unwrap_or_default();
            // The new post is the author's newest unless ten others landed meanwhile.
            Ok(
                if after
                    .post_ids
                    .first()
                    .is_some_and(|id| !before.post_ids.contains(id))
                {
                    WriteOutcome::Seen
                } else {
                    WriteOutcome::Stale
                },
            )
        }
    }
}

/// `actor` PUTs `path` (a star or a follow that raises one of `user`'s
/// counters); the next read of `user`'s page must show the counter raised.
async fn put_and_check(
    vu: &mut Vu<'_>,
    path: &str,
    actor: i64,
    user: i64,
    before: &Seen,
    counter: impl Fn(&Seen) -> i64,
) -> Result<WriteOutcome, String> {
    if actor == user {
        // Starring your own post or following yourself: not a write we check.
        return Ok(WriteOutcome::Conflict);
    }
    if vu.write(reqwest::Method::PUT, path, actor, None).await? == reqwest::StatusCode::CONFLICT {
        return Ok(WriteOutcome::Conflict);
    }
    let after = vu.page(user, true).await?.unwrap_or_default();
    Ok(if counter(&after) > counter(before) {
        WriteOutcome::Seen
    } else {
        WriteOutcome::Stale
    })
}

/// Counters read before and after a measurement.
pub struct Snapshot {
    /// pg_stat_statements total.
    pub statements: Option<i64>,
    /// The admin monitor's status.
    pub monitor: Option<Value>,
    /// The server process's CPU and memory.
    pub process: Option<super::server::ProcSample>,
}

impl Snapshot {
    async fn take(t: &Target, w: &Witness) -> Snapshot {
        Snapshot {
            statements: w.statements().await,
            monitor: t.monitor_status().await,
            process: t.proc_sample(),
        }
    }
}
