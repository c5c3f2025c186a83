//! One virtual user's requests: a page load in each mode, the writes, and
//! the read after each write that must see it. With several instances a
//! user has a home instance for its page loads and writes; the read that
//! checks a write goes to the next instance, polled until it shows the
//! write (the cross-instance delivery a user sees).

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use hdrhistogram::Histogram;
use rand::{rngs::StdRng, RngExt};
use serde_json::{json, Value};

use super::{measures::Mode, probe::Tally, server::Target};

/// What a read showed, when a write needs checking.
#[derive(Debug, Default)]
pub(super) struct Seen {
    followers: i64,
    stars_received: i64,
    post_ids: Vec<i64>,
}

/// What one virtual user counted while measuring.
#[derive(Default)]
pub(super) struct VuResult {
    pub latency: Option<Histogram<u64>>,
    /// Each write's own request, sent → answered (µs), while measuring.
    pub write_latency: Option<Histogram<u64>>,
    /// Write acknowledged → first read on another instance that shows it (µs).
    pub delivery: Option<Histogram<u64>>,
    pub requests: u64,
    pub writes: u64,
    pub conflicts: u64,
    pub stale: u64,
    pub errors: BTreeMap<String, u64>,
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

/// A virtual user: its target, its mode, its counts.
pub(super) struct Vu<'a> {
    pub t: &'a Target,
    pub mode: Mode,
    pub res: VuResult,
    /// The instance this user's page loads and writes go to.
    pub home: usize,
    /// The instance the next request goes to.
    pub at: usize,
    /// Whether the run is measuring (writes' times are recorded only then).
    pub measuring: bool,
}

/// How long a write may take to show on another instance before its
/// check counts as a stale read.
const DELIVERY_BOUND: Duration = Duration::from_secs(5);

impl Vu<'_> {
    /// A failure of `kind`, also counted into the probe's tally if any.
    pub fn count_error(&mut self, kind: String, tally: Option<&Tally>) {
        *self.res.errors.entry(kind).or_default() += 1;
        if let Some(t) = tally {
            t.error();
        }
    }

    async fn get(&mut self, path: &str, parse: bool) -> Result<Option<Value>, String> {
        let base = &self.t.bases[self.at];
        self.get_from(base, path, parse).await
    }

    async fn get_from(
        &mut self,
        base: &str,
        path: &str,
        parse: bool,
    ) -> Result<Option<Value>, String> {
        self.res.requests += 1;
        let r = self
            .t
            .http
            .get(format!("{base}{path}"))
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
    pub async fn page(&mut self, user: i64, check: bool) -> Result<Option<Seen>, String> {
        match self.mode {
            Mode::Trivial => self.get("/api/ping", false).await.map(|_| None),
            Mode::Ceiling => {
                let t = self.t;
                let base = t.ceilings.get(self.at).ok_or("no_ceiling")?;
                self.get_from(base, "/api/ping", false).await.map(|_| None)
            }
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
                let base = &self.t.bases[self.at];
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
            .request(method, format!("{}{path}", self.t.bases[self.at]))
            .header("X-User-Id", actor.to_string());
        if let Some(b) = body {
            req = req.json(&b);
        }
        let sent = Instant::now();
        let r = req.send().await.map_err(|e| kind_of(&e))?;
        let s = r.status();
        if self.measuring {
            let us = sent.elapsed().as_micros() as u64;
            let h = self
                .res
                .write_latency
                .get_or_insert_with(|| Histogram::new(3).expect("3 significant figures"));
            let _ = h.record(us.max(1));
        }
        if s.is_success() || s == reqwest::StatusCode::CONFLICT {
            Ok(s)
        } else {
            Err(format!("http_{}", s.as_u16()))
        }
    }
}

/// What a checked write came to.
pub(super) enum WriteOutcome {
    Seen,
    Conflict,
    Stale,
}

/// A write, then a read through the mode's own path that must see it.
pub(super) async fn write_and_check(
    vu: &mut Vu<'_>,
    rng: &mut StdRng,
    user: i64,
    n_users: i64,
) -> Result<WriteOutcome, String> {
    let actor = rng.random_range(1..=n_users);
    let before = vu.page(user, true).await?.unwrap_or_default();
    match rng.random_range(0..3) {
        0 if !before.post_ids.is_empty() => {
            let post = before.post_ids[rng.random_range(0..before.post_ids.len())];
            let path = format!("/api/posts/{post}/star");
            let stars = before.stars_received;
            put_and_check(vu, &path, actor, user, move |s| s.stars_received > stars).await
        }
        1 => {
            let path = format!("/api/users/{user}/follow");
            let followers = before.followers;
            put_and_check(vu, &path, actor, user, move |s| s.followers > followers).await
        }
        _ => {
            let body =
                json!({"title": "bench snippet", "language": "rust", "content": "fn main() {}"});
            vu.write(reqwest::Method::POST, "/api/posts", user, Some(body))
                .await?;
            // The new post is the author's newest unless ten others landed meanwhile.
            let old = before.post_ids;
            confirm(vu, user, move |after| {
                after.post_ids.first().is_some_and(|id| !old.contains(id))
            })
            .await
        }
    }
}

/// `actor` PUTs `path` (a star or a follow that raises one of `user`'s
/// counters); the next read of `user`'s page must show it (`seen`).
async fn put_and_check(
    vu: &mut Vu<'_>,
    path: &str,
    actor: i64,
    user: i64,
    seen: impl Fn(&Seen) -> bool,
) -> Result<WriteOutcome, String> {
    if actor == user {
        // Starring your own post or following yourself: not a write we check.
        return Ok(WriteOutcome::Conflict);
    }
    if vu.write(reqwest::Method::PUT, path, actor, None).await? == reqwest::StatusCode::CONFLICT {
        return Ok(WriteOutcome::Conflict);
    }
    confirm(vu, user, seen).await
}

/// After a write: on one instance, the next read must show it. With
/// several, reads on the next instance are polled until one shows it (the
/// delivery time is recorded), and the read after that must show it too; a
/// write not shown within [`DELIVERY_BOUND`], or shown then lost, is a
/// stale read.
async fn confirm(
    vu: &mut Vu<'_>,
    user: i64,
    seen: impl Fn(&Seen) -> bool,
) -> Result<WriteOutcome, String> {
    let fresh = |s: &Option<Seen>| s.as_ref().is_some_and(&seen);
    let n = vu.t.bases.len();
    if n == 1 {
        let after = vu.page(user, true).await?;
        return Ok(if fresh(&after) {
            WriteOutcome::Seen
        } else {
            WriteOutcome::Stale
        });
    }
    let acked = Instant::now();
    vu.at = (vu.home + 1) % n;
    let outcome = loop {
        let after = vu.page(user, true).await;
        match after {
            Err(e) => break Err(e),
            Ok(after) if fresh(&after) => {
                let us = acked.elapsed().as_micros() as u64;
                let h = vu
                    .res
                    .delivery
                    .get_or_insert_with(|| Histogram::new(3).expect("3 significant figures"));
                let _ = h.record(us.max(1));
                let again = vu.page(user, true).await;
                break again.map(|a| {
                    if fresh(&a) {
                        WriteOutcome::Seen
                    } else {
                        WriteOutcome::Stale
                    }
                });
            }
            Ok(_) if acked.elapsed() > DELIVERY_BOUND => break Ok(WriteOutcome::Stale),
            Ok(_) => tokio::time::sleep(Duration::from_millis(1)).await,
        }
    };
    vu.at = vu.home;
    outcome
}
