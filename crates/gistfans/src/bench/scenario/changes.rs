//! `--scenario changes` (issue 21): writes made *around* the servers, at a
//! fixed rate, from a connection of their own (as `psql` or a cron job
//! would), while three instances serve the profiles they touch from cache.
//! For each write: the time from its commit (as the writer's connection
//! sees it) to the first read showing it on *every* instance (each polled
//! every 2 ms), then one more read per instance (stale if it does not show
//! it). The instances consume the change stream (`CHANGE_STREAM=true`), one
//! of them as the leader; its slot is dropped at the end. The consistency
//! monitor's figures over the run (each instance checks a sample of the
//! profiles the stream invalidated, `--consistency-sample`) are reported
//! once its last checks have run (at most [`MONITOR_WAIT`] after the last
//! write).

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context;
use hpdb::changes::{drop_stream, ChangesConfig};
use serde_json::{json, Value};
use sqlx::PgPool;
use std::sync::Mutex;

use super::{write_json, BenchArgs};
use crate::bench::{consistency, server::Target};

/// Instances started.
const INSTANCES: usize = 3;
/// Polling interval of a read waiting for a write.
const POLL: Duration = Duration::from_millis(2);
/// Longest wait for a write to show on an instance.
const GIVE_UP: Duration = Duration::from_secs(10);
/// Longest wait, after the last write, for the monitors' waiting checks
/// (the default second delay is 10 s).
const MONITOR_WAIT: Duration = Duration::from_secs(15);

/// What one write's readers saw.
#[derive(Default)]
struct Outcomes {
    /// Commit → fresh on every instance, in ms.
    delays_ms: Vec<f64>,
    /// Reads after the first fresh one that did not show the write.
    stale: u64,
    /// Writes never seen on some instance within [`GIVE_UP`].
    lost: u64,
}

/// Runs the scenario: `rate` writes per second, `count` writes.
pub(super) async fn run(args: &BenchArgs, direct: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.redis_url().is_some(),
        "--scenario changes starts {INSTANCES} instances: it needs --redis-url (REDIS_URL)"
    );
    let (rate, count) = if args.quick { (50, 100) } else { (200, 1000) };
    let mut a = args.clone();
    a.change_stream = true;
    let target = Target::start(&a, INSTANCES)
        .await
        .context("starting the servers")?;
    let result = measure(&target, direct, rate, count).await;
    let namespace = target.namespace.clone();
    target.stop().await;
    if let Some(ns) = namespace {
        let c = ChangesConfig::new(direct, &ns);
        drop_stream(direct, &c.slot, &c.publication)
            .await
            .context("dropping the bench's replication slot")?;
    }
    let report = result?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    write_json(args, &report)?;
    anyhow::ensure!(
        report["staleReads"] == 0 && report["lost"] == 0,
        "stale reads or lost writes"
    );
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

async fn measure(target: &Target, direct: &str, rate: u64, count: usize) -> anyhow::Result<Value> {
    let started = Instant::now();
    while leader(target).await.is_none() {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(30),
            "no instance consumes the change stream (is wal_level logical?)"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let outside = PgPool::connect(direct).await?;
    let users: Vec<i64> = sqlx::query_scalar("SELECT id FROM users ORDER BY id LIMIT $1 OFFSET 10")
        .bind(count as i64)
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
    let monitors_before = target.instance_statuses().await.unwrap_or_default();
    let outcomes = Arc::new(Mutex::new(Outcomes::default()));
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
    let mut tasks = Vec::with_capacity(count);
    let began = Instant::now();
    for (&user, &was) in users.iter().zip(&before) {
        tick.tick().await;
        let (pool, out) = (outside.clone(), outcomes.clone());
        let (http, bases) = (target.http.clone(), target.bases.clone());
        tasks.push(tokio::spawn(async move {
            let inserted = sqlx::query(
                "INSERT INTO follows (follower_id, followee_id, created_at) \
                 SELECT u.id, $1, 0 FROM users u WHERE u.id <> $1 AND NOT EXISTS \
                 (SELECT 1 FROM follows f WHERE f.follower_id = u.id AND f.followee_id = $1) \
                 LIMIT 1",
            )
            .bind(user)
            .execute(&pool)
            .await;
            let committed = Instant::now();
            if !matches!(inserted, Ok(r) if r.rows_affected() == 1) {
                out.lock().expect("not poisoned").lost += 1;
                return;
            }
            let t = Target::with_bases(http, bases);
            let mut slowest = Duration::ZERO;
            for at in 0..INSTANCES {
                loop {
                    if followers(&t, at, user).await.unwrap_or(-1) > was {
                        slowest = slowest.max(committed.elapsed());
                        break;
                    }
                    if committed.elapsed() > GIVE_UP {
                        out.lock().expect("not poisoned").lost += 1;
                        return;
                    }
                    tokio::time::sleep(POLL).await;
                }
            }
            let mut stale = 0;
            for at in 0..INSTANCES {
                if followers(&t, at, user).await.unwrap_or(-1) <= was {
                    stale += 1;
                }
            }
            let mut o = out.lock().expect("not poisoned");
            o.delays_ms.push(slowest.as_secs_f64() * 1000.0);
            o.stale += stale;
        }));
    }
    let offered = count as f64 / began.elapsed().as_secs_f64();
    for t in tasks {
        t.await?;
    }
    let lead = leader(target).await.unwrap_or(Value::Null);
    let monitors_after = checked(target).await;
    let mut o = std::mem::take(&mut *outcomes.lock().expect("not poisoned"));
    o.delays_ms.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        o.delays_ms
            .get(((o.delays_ms.len() as f64 * p).ceil() as usize).saturating_sub(1))
            .copied()
            .unwrap_or(f64::NAN)
    };
    Ok(json!({
        "scenario": "changes",
        "instances": INSTANCES,
        "writes": count,
        "rateTarget": rate,
        "rateAchieved": (offered * 10.0).round() / 10.0,
        "commitToFreshEverywhereMs": {
            "p50": pct(0.50), "p99": pct(0.99), "max": pct(1.0), "count": o.delays_ms.len(),
        },
        "staleReads": o.stale,
        "lost": o.lost,
        "leader": lead,
        "consistency": consistency::between(&monitors_before, &monitors_after),
    }))
}

/// Each instance's status once no consistency check waits any more (or
/// [`MONITOR_WAIT`] has passed).
async fn checked(target: &Target) -> Vec<Value> {
    let started = Instant::now();
    loop {
        let all = target.instance_statuses().await.unwrap_or_default();
        let waiting = all
            .iter()
            .any(|s| s["consistency"]["pending"].as_u64().unwrap_or(0) > 0);
        if !waiting || started.elapsed() > MONITOR_WAIT {
            // The last checks taken off the queue may still run (a stale
            // finding is looked at twice): a moment for them.
            tokio::time::sleep(Duration::from_secs(1)).await;
            return target.instance_statuses().await.unwrap_or(all);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
