//! `--scenario changes` (issue 21): writes made *around* the servers, at a
//! fixed rate, from a connection of their own (as `psql` or a cron job
//! would), while virtual users read (and write, the usual 2 %) through
//! three instances. Three phases, each on fresh servers over one database
//! and one Redis, each the usual workload (`--mode optimized` at the first
//! `--concurrency`, `--warmup` then `--duration`):
//!
//! 1. the change stream off;
//! 2. the change stream on (`CHANGE_STREAM=true`, one instance the leader):
//!    its hit rate against phase 1's says whether our own writes are
//!    invalidated a second time by the stream (they must not be);
//! 3. the stream on, and after the warm-up the out-of-band writes: for
//!    each, the time from its commit (as the writer's connection sees it)
//!    to the first read showing it on *every* instance (all polled at once,
//!    each every 2 ms), then one more read per instance (stale if it does
//!    not show it).
//!
//! The slot of each phase with the stream on is dropped at its end. Each
//! phase reports the consistency monitor's figures over its measurement
//! (each instance checks a sample of the profiles that invalidations and
//! writes touched, `--consistency-sample`; checks due after the measurement
//! ends are not counted).

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context;
use gistfans_data::witness::Witness;
use hpdb::changes::{drop_stream, ChangesConfig};
use serde_json::{json, Value};
use sqlx::PgPool;
use std::sync::Mutex;

use super::{write_json, BenchArgs};
use crate::bench::{
    consistency,
    measures::Mode,
    report::ModeReport,
    server::Target,
    workload::{run_mode, Universe},
};

/// Instances started.
const INSTANCES: usize = 3;
/// Polling interval of a read waiting for a write.
const POLL: Duration = Duration::from_millis(2);
/// Longest wait for a write to show on an instance.
const GIVE_UP: Duration = Duration::from_secs(10);
/// Lost writes the report names.
const LOST_EXAMPLES: usize = 10;

/// What one write's readers saw.
#[derive(Default)]
struct Outcomes {
    /// Commit → fresh on every instance, in ms.
    delays_ms: Vec<f64>,
    /// Reads after the first fresh one that did not show the write.
    stale: u64,
    /// Writes never seen on some instance within [`GIVE_UP`].
    lost: u64,
    /// The first few of those: the followee, and per instance whether it
    /// was seen (to look into).
    lost_examples: Vec<Value>,
    /// Writes the database refused or found nothing to insert for (not
    /// a failure of the servers; reported apart).
    not_inserted: u64,
    /// The first fresh read's own time (request → answer) on each
    /// instance, in ms: what a miss after the invalidation costs.
    fresh_read_ms: Vec<f64>,
}

/// Out-of-band writes of a phase: so many a second, so many in all.
#[derive(Clone, Copy)]
struct Writes {
    rate: u64,
    count: usize,
}

/// Runs the scenario's three phases and prints their figures.
pub(super) async fn run(
    args: &BenchArgs,
    witness: &Arc<Witness>,
    direct: &str,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.redis_url().is_some(),
        "--scenario changes starts {INSTANCES} instances: it needs --redis-url (REDIS_URL)"
    );
    let writes = match args.quick {
        true => Writes {
            rate: 50,
            count: 100,
        },
        false => Writes {
            rate: 200,
            count: 1000,
        },
    };
    let users = args.concurrency[0];
    eprintln!(
        "bench: changes scenario: {INSTANCES} instances, {users} users, {} s each after {} s \
         warm-up, writes {:.0}%; out-of-band: {} writes at {}/s",
        args.duration,
        args.warmup,
        args.write_ratio * 100.0,
        writes.count,
        writes.rate
    );
    let off = phase(args, witness, direct, false, None).await?;
    let on = phase(args, witness, direct, true, None).await?;
    let with = phase(args, witness, direct, true, Some(writes)).await?;
    let hit = |r: &ModeReport| r.combined_hit_rate.or(r.cache_hit_rate);
    let row = |name: &str, r: &ModeReport| {
        json!({
            "phase": name,
            "pageLoadsPerSec": r.page_loads_per_sec,
            "p99Ms": r.latency_ms.p99,
            "hitRate": hit(r),
            "writes": r.writes,
            "staleReads": r.stale_reads,
            "errors": r.errors_total(),
            "consistency": r.consistency,
        })
    };
    let report = json!({
        "scenario": "changes",
        "instances": INSTANCES,
        "users": users,
        "phases": [
            row("stream off", &off.0),
            row("stream on", &on.0),
            row("stream on, out-of-band writes", &with.0),
        ],
        "hitRatePointsOnMinusOff": hit(&on.0).zip(hit(&off.0)).map(|(a, b)| a - b),
        "outOfBand": with.1,
        "leaderWithoutOutOfBand": on.1["leader"],
    });
    println!(
        "\n{:<32} {:>9} {:>9} {:>7} {:>7} {:>6}",
        "phase", "loads/s", "p99 ms", "hit %", "writes", "stale"
    );
    for r in report["phases"].as_array().into_iter().flatten() {
        println!(
            "{:<32} {:>9.0} {:>9.1} {:>7} {:>7} {:>6}",
            r["phase"].as_str().unwrap_or("?"),
            r["pageLoadsPerSec"].as_f64().unwrap_or(0.0),
            r["p99Ms"].as_f64().unwrap_or(0.0),
            r["hitRate"]
                .as_f64()
                .map_or("-".into(), |h| format!("{h:.1}")),
            r["writes"],
            r["staleReads"]
        );
    }
    for (name, r) in [
        ("stream off", &off.0),
        ("stream on", &on.0),
        ("out-of-band", &with.0),
    ] {
        println!(
            "consistency monitor, {name}: {}",
            consistency::sentence(&r.consistency)
        );
    }
    println!("{}", serde_json::to_string_pretty(&report)?);
    write_json(args, &report)?;
    let bad = [&off.0, &on.0, &with.0]
        .iter()
        .map(|r| r.errors_total() + r.stale_reads)
        .sum::<u64>();
    anyhow::ensure!(
        bad == 0 && report["outOfBand"]["staleReads"] == 0 && report["outOfBand"]["lost"] == 0,
        "errors, stale reads or lost writes"
    );
    Ok(())
}

/// One phase on fresh servers: the workload, and with `writes` the
/// out-of-band writer beside it. Returns the workload's report and the
/// writer's figures (with the leader's status).
async fn phase(
    args: &BenchArgs,
    witness: &Arc<Witness>,
    direct: &str,
    stream: bool,
    writes: Option<Writes>,
) -> anyhow::Result<(ModeReport, Value)> {
    let mut a = args.clone();
    a.change_stream = stream;
    let target = Target::start(&a, INSTANCES)
        .await
        .context("starting the servers")?;
    let result = async {
        let universe = Universe::discover(&target).await?;
        if stream {
            wait_for_leader(&target).await?;
        }
        let users = a.concurrency[0];
        let workload = run_mode(
            &target,
            witness,
            &universe,
            &a,
            Mode::Optimized,
            users,
            None,
        );
        let outside = async {
            match writes {
                Some(w) => {
                    // After the warm-up, like the measurement.
                    tokio::time::sleep(Duration::from_secs(a.warmup)).await;
                    measure(&target, direct, universe.users, w).await
                }
                None => Ok(json!({ "leader": leader(&target).await })),
            }
        };
        let (report, outside) = tokio::join!(workload, outside);
        anyhow::Ok((report?, outside?))
    }
    .await;
    let namespace = target.namespace.clone();
    target.stop().await;
    if let (true, Some(ns)) = (stream, namespace) {
        let c = ChangesConfig::new(direct, &ns);
        drop_stream(direct, &c.slot, &c.publication)
            .await
            .context("dropping the bench's replication slot")?;
    }
    result
}

async fn wait_for_leader(target: &Target) -> anyhow::Result<()> {
    let started = Instant::now();
    while leader(target).await.is_none() {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(30),
            "no instance consumes the change stream (is wal_level logical?)"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

async fn followers(target: &Target, at: usize, user: i64) -> anyhow::Result<i64> {
    let url = format!(
        "{}/api/user/stats-optimized?userId={user}",
        target.bases[at]
    );
    let v: Value = target.http.get(url).send().await?.json().await?;
    v["stats"]["followers"]
        .as_i64()
        .context("a profile has a followers count")
}

/// The instance whose change stream leads, and the leader's figures.
async fn leader(target: &Target) -> Option<Value> {
    let statuses = target.instance_statuses().await?;
    statuses
        .into_iter()
        .map(|s| s["changes"].clone())
        .find(|c| c["mode"] == "leader")
}

/// The out-of-band writer: `w.count` follows inserted at `w.rate` a
/// second, on the least read users (the virtual users' Zipf law reads the
/// lowest ids most, and their own writes only raise counts).
async fn measure(target: &Target, direct: &str, universe: i64, w: Writes) -> anyhow::Result<Value> {
    let Writes { rate, count } = w;
    let outside = PgPool::connect(direct).await?;
    let users: Vec<i64> =
        sqlx::query_scalar("SELECT id FROM users WHERE id <= $2 ORDER BY id DESC LIMIT $1")
            .bind(count as i64)
            .bind(universe)
            .fetch_all(&outside)
            .await?;
    anyhow::ensure!(users.len() == count, "the database has too few users");
    // Every profile cached on every instance before its write.
    let mut before = Vec::with_capacity(count);
    for &u in &users {
        let mut n = 0;
        for at in 0..INSTANCES {
            n = followers(target, at, u).await?;
        }
        before.push(n);
    }
    let outcomes = Arc::new(Mutex::new(Outcomes::default()));
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
    let mut tasks = Vec::with_capacity(count);
    let began = Instant::now();
    for (&user, &was) in users.iter().zip(&before) {
        tick.tick().await;
        let (pool, out) = (outside.clone(), outcomes.clone());
        let (http, bases) = (target.http.clone(), target.bases.clone());
        tasks.push(tokio::spawn(async move {
            // The follower: the first user not yet following, from a point
            // spread over the ids by the followee's, wrapping around (one
            // follower for every write would make that user's aggregate
            // change 200 times a second).
            let from = user.wrapping_mul(7919).rem_euclid(universe) + 1;
            let inserted = sqlx::query(
                "INSERT INTO follows (follower_id, followee_id, created_at) SELECT COALESCE( \
                 (SELECT u.id FROM users u WHERE u.id >= $2 AND u.id <> $1 AND NOT EXISTS \
                  (SELECT 1 FROM follows f WHERE f.follower_id = u.id AND f.followee_id = $1) \
                  ORDER BY u.id LIMIT 1), \
                 (SELECT u.id FROM users u WHERE u.id <> $1 AND NOT EXISTS \
                  (SELECT 1 FROM follows f WHERE f.follower_id = u.id AND f.followee_id = $1) \
                  ORDER BY u.id LIMIT 1)), $1, 0",
            )
            .bind(user)
            .bind(from)
            .execute(&pool)
            .await;
            let committed = Instant::now();
            if !matches!(inserted, Ok(r) if r.rows_affected() == 1) {
                out.lock().expect("not poisoned").not_inserted += 1;
                return;
            }
            let t = Target::with_bases(http, bases);
            // Every instance polled at once: the write is fresh everywhere
            // when the slowest shows it.
            let first_fresh = |at: usize| {
                let t = &t;
                async move {
                    loop {
                        let asked = Instant::now();
                        if followers(t, at, user).await.unwrap_or(-1) > was {
                            return Some((committed.elapsed(), asked.elapsed()));
                        }
                        if committed.elapsed() > GIVE_UP {
                            return None;
                        }
                        tokio::time::sleep(POLL).await;
                    }
                }
            };
            let seen = futures::future::join_all((0..INSTANCES).map(first_fresh)).await;
            let seen_at: Vec<bool> = seen.iter().map(Option::is_some).collect();
            let Some(seen) = seen.into_iter().collect::<Option<Vec<_>>>() else {
                let mut o = out.lock().expect("not poisoned");
                o.lost += 1;
                if o.lost_examples.len() < LOST_EXAMPLES {
                    o.lost_examples
                        .push(json!({ "followee": user, "seenPerInstance": seen_at }));
                }
                return;
            };
            let slowest = seen.iter().map(|(since_commit, _)| *since_commit).max();
            let slowest = slowest.unwrap_or_default();
            let mut stale = 0;
            for at in 0..INSTANCES {
                if followers(&t, at, user).await.unwrap_or(-1) <= was {
                    stale += 1;
                }
            }
            let mut o = out.lock().expect("not poisoned");
            o.delays_ms.push(slowest.as_secs_f64() * 1000.0);
            o.fresh_read_ms
                .extend(seen.iter().map(|(_, read)| read.as_secs_f64() * 1000.0));
            o.stale += stale;
        }));
    }
    let offered = count as f64 / began.elapsed().as_secs_f64();
    for t in tasks {
        t.await?;
    }
    let lead = leader(target).await.unwrap_or(Value::Null);
    let mut o = std::mem::take(&mut *outcomes.lock().expect("not poisoned"));
    let delivery: Vec<Value> = target
        .instance_statuses()
        .await
        .unwrap_or_default()
        .iter()
        .map(|s| s["shared"]["deliveryLagMs"].clone())
        .collect();
    Ok(json!({
        "writes": count,
        "rateTarget": rate,
        "rateAchieved": (offered * 10.0).round() / 10.0,
        "commitToFreshEverywhereMs": percentiles(&mut o.delays_ms),
        "freshReadMs": percentiles(&mut o.fresh_read_ms),
        "busDeliveryLagMsPerInstance": delivery,
        "staleReads": o.stale,
        "lost": o.lost,
        "lostExamples": o.lost_examples,
        "notInserted": o.not_inserted,
        "leader": lead,
    }))
}

/// p50, p99 and the largest of `ms`, and how many.
fn percentiles(ms: &mut [f64]) -> Value {
    ms.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        ms.get(((ms.len() as f64 * p).ceil() as usize).saturating_sub(1))
            .copied()
            .unwrap_or(f64::NAN)
    };
    json!({ "p50": pct(0.50), "p99": pct(0.99), "max": pct(1.0), "count": ms.len() })
}
