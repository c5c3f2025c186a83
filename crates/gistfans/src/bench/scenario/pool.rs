//! The `pool` scenario: fixed pool sizes against the automatic one.
//!
//! Each configuration gets a server of its own and the same four phases:
//! 16 users, 256 users, 16 users again, then 256 users while two
//! connections keep PostgreSQL's CPUs busy with heavy queries (in another
//! database, so they count in none of the figures). The servers cache for
//! 1 ms only: with the product's cache almost no page load reaches the
//! database and the pool's size would not matter; this measures the pool.

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use gistfans_data::witness::{SlowDown, Witness};
use serde::Serialize;
use serde_json::json;

use super::{start, write_json};
use crate::bench::{
    measures::Mode, report::ModeReport, server::Target, workload::run_mode, BenchArgs,
};

/// The server's cache TTL in this scenario (ms): page loads reach the database.
const TTL_MS: u64 = 1;
/// Connections running heavy queries in the slowed phase.
const SLOWING_WORKERS: u32 = 2;

/// One pool configuration.
struct Config {
    name: &'static str,
    max: u32,
    auto: bool,
}

const CONFIGS: [Config; 4] = [
    Config {
        name: "fixed 5",
        max: 5,
        auto: false,
    },
    Config {
        name: "fixed 10",
        max: 10,
        auto: false,
    },
    Config {
        name: "fixed 50",
        max: 50,
        auto: false,
    },
    Config {
        name: "auto (2..50)",
        max: 50,
        auto: true,
    },
];

/// One phase: users, and whether the database is slowed down.
const PHASES: [(&str, usize, bool); 4] = [
    ("16 users", 16, false),
    ("256 users", 256, false),
    ("16 users again", 16, false),
    ("256 users, database slowed", 256, true),
];

/// One configuration in one phase.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Row {
    config: &'static str,
    phase: &'static str,
    page_loads_per_sec: f64,
    p99_ms: f64,
    peak_db_connections: Option<i64>,
    db_statements_per_page_load: Option<f64>,
    /// The automatic limit: first, lowest, highest and last seen in the phase.
    limits: Option<[usize; 4]>,
    /// Seconds from the phase's start until the limit stayed within one
    /// (or 10 %) of where it ended.
    settle_seconds: Option<f64>,
    errors: u64,
    stale_reads: u64,
}

pub(super) async fn run(
    args: &BenchArgs,
    witness: &Arc<Witness>,
    direct: &str,
) -> anyhow::Result<()> {
    eprintln!(
        "bench: pool scenario: {} s per phase, cache TTL {TTL_MS} ms, writes {:.0}%",
        args.duration,
        args.write_ratio * 100.0
    );
    let mut rows = Vec::new();
    for config in &CONFIGS {
        let (target, universe, a) = start(args, |a| {
            a.manager.set(&hpdb::env::POOL_MAX, config.max);
            a.manager.set(&hpdb::env::POOL_AUTO, config.auto);
            a.manager.set(&hpdb::env::CACHE_TTL, TTL_MS);
        })
        .await?;
        for (i, &(phase, users, slowed)) in PHASES.iter().enumerate() {
            let mut p = a.clone();
            // Only the first phase warms up: the others start from where
            // the previous left the server, which is what settling means.
            p.warmup = if i == 0 { args.warmup } else { 0 };
            let _slow = match slowed {
                true => Some(SlowDown::start(direct, SLOWING_WORKERS).await?),
                false => None,
            };
            let done = AtomicBool::new(!config.auto);
            let (r, seen) = tokio::join!(
                async {
                    let r = run_mode(
                        &target,
                        witness,
                        &universe,
                        &p,
                        Mode::Optimized,
                        users,
                        None,
                    )
                    .await;
                    done.store(true, Ordering::Relaxed);
                    r
                },
                watch_limit(&target, &done, p.warmup)
            );
            let r = r?;
            rows.push(row(config.name, phase, &r, &seen));
        }
        target.stop().await;
    }
    print(&rows);
    write_json(
        args,
        &json!({ "scenario": "pool", "cacheTtlMs": TTL_MS, "rows": rows }),
    )?;
    let bad: u64 = rows.iter().map(|r| r.errors + r.stale_reads).sum();
    anyhow::ensure!(bad == 0, "{bad} errors and stale reads");
    Ok(())
}

fn row(config: &'static str, phase: &'static str, r: &ModeReport, seen: &[(f64, usize)]) -> Row {
    let limits = (!seen.is_empty()).then(|| {
        let l = seen.iter().map(|(_, l)| *l);
        [
            seen[0].1,
            l.clone().min().unwrap_or(0),
            l.max().unwrap_or(0),
            seen[seen.len() - 1].1,
        ]
    });
    Row {
        config,
        phase,
        page_loads_per_sec: r.page_loads_per_sec,
        p99_ms: r.latency_ms.p99,
        peak_db_connections: r.peak_db_connections,
        db_statements_per_page_load: r.db_statements_per_page_load,
        limits,
        settle_seconds: settle(seen),
        errors: r.errors_total(),
        stale_reads: r.stale_reads,
    }
}

/// Seconds until the limit stayed within one (or 10 %) of its last value.
fn settle(seen: &[(f64, usize)]) -> Option<f64> {
    let last = seen.last()?.1;
    let band = (last / 10).max(1);
    let unsettled = seen.iter().rposition(|(_, l)| l.abs_diff(last) > band);
    Some(match unsettled {
        None => 0.0,
        Some(i) => seen.get(i + 1).map_or(seen[i].0, |(t, _)| *t),
    })
}

/// The automatic limit, read from the server's monitor every 250 ms after
/// `skip_secs` (the warm-up), until `done`: (seconds, limit) pairs.
async fn watch_limit(target: &Target, done: &AtomicBool, skip_secs: u64) -> Vec<(f64, usize)> {
    tokio::time::sleep(Duration::from_secs(skip_secs)).await;
    let started = Instant::now();
    let mut seen = Vec::new();
    while !done.load(Ordering::Relaxed) {
        let limit = target
            .monitor()
            .await
            .and_then(|v| v["status"]["tuning"]["pool"]["limit"].as_u64());
        if let Some(l) = limit {
            seen.push((started.elapsed().as_secs_f64(), l as usize));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    seen
}

fn print(rows: &[Row]) {
    println!(
        "\n{:<14} {:<28} {:>9} {:>9} {:>6} {:>8} {:>18} {:>8}",
        "pool", "phase", "loads/s", "p99 ms", "conns", "stmts", "limit (1st/lo/hi/end)", "settle"
    );
    for r in rows {
        let limits = r.limits.map_or("-".to_string(), |l| {
            format!("{}/{}/{}/{}", l[0], l[1], l[2], l[3])
        });
        println!(
            "{:<14} {:<28} {:>9.0} {:>9.1} {:>6} {:>8} {:>18} {:>8}",
            r.config,
            r.phase,
            r.page_loads_per_sec,
            r.p99_ms,
            r.peak_db_connections.map_or("-".into(), |c| c.to_string()),
            r.db_statements_per_page_load
                .map_or("-".into(), |s| format!("{s:.3}")),
            limits,
            r.settle_seconds.map_or("-".into(), |s| format!("{s:.1} s")),
        );
    }
    println!();
    for &(phase, _, _) in &PHASES {
        let of = |name: &str| rows.iter().find(|r| r.phase == phase && r.config == name);
        let best = rows
            .iter()
            .filter(|r| r.phase == phase && !r.config.starts_with("auto"))
            .max_by(|a, b| a.page_loads_per_sec.total_cmp(&b.page_loads_per_sec));
        if let (Some(auto), Some(best), Some(f50)) = (of(CONFIGS[3].name), best, of("fixed 50")) {
            println!(
                "{phase}: auto {:.0}% of the best fixed ({}), peak connections {} vs {} for fixed 50",
                100.0 * auto.page_loads_per_sec / best.page_loads_per_sec.max(f64::MIN_POSITIVE),
                best.config,
                auto.peak_db_connections.map_or("-".into(), |c| c.to_string()),
                f50.peak_db_connections.map_or("-".into(), |c| c.to_string()),
            );
        }
    }
}
