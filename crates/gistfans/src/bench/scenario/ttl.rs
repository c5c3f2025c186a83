//! The `ttl` scenario: fixed TTLs against adaptive ones, on the same
//! workload (Zipf page loads with writes, each write checked by a read),
//! each on a fresh server: the product's 5 min, a short fixed TTL
//! (--cache-ttl-ms, default 2 s), and adaptive TTLs starting from that
//! short one. Invalidation keeps every configuration at zero stale reads;
//! what differs is how often the cache has the page, and so how many
//! statements a page load costs.

use std::sync::Arc;

use gistfans_data::witness::Witness;
use serde::Serialize;
use serde_json::{json, Value};

use super::{start, write_json};
use crate::bench::{measures::Mode, workload::run_mode, BenchArgs};

/// The short TTL when --cache-ttl-ms is not given (ms).
const SHORT_TTL_MS: u64 = 2_000;

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Row {
    config: String,
    page_loads_per_sec: f64,
    p99_ms: f64,
    cache_hit_rate: Option<f64>,
    db_statements_per_page_load: Option<f64>,
    stale_reads: u64,
    errors: u64,
    /// The adaptive classes at the end (class, TTL), if adaptive.
    classes: Option<Value>,
}

pub(super) async fn run(args: &BenchArgs, witness: &Arc<Witness>) -> anyhow::Result<()> {
    let short = args
        .manager
        .get(&hpdb::env::CACHE_TTL)
        .and_then(|ms| ms.parse().ok())
        .unwrap_or(SHORT_TTL_MS);
    let users = args.concurrency[0];
    eprintln!(
        "bench: ttl scenario: {users} users, {} s each after {} s warm-up, writes {:.0}%",
        args.duration,
        args.warmup,
        args.write_ratio * 100.0
    );
    let configs: [(String, Option<u64>, bool); 3] = [
        ("fixed, product default".into(), None, false),
        (format!("fixed {short} ms"), Some(short), false),
        (format!("adaptive from {short} ms"), Some(short), true),
    ];
    let mut rows = Vec::new();
    for (name, ttl, adaptive) in configs {
        let (target, universe, a) = start(args, |a| {
            match ttl {
                Some(ms) => a.manager.set(&hpdb::env::CACHE_TTL, ms),
                None => a.manager.unset(&hpdb::env::CACHE_TTL),
            }
            a.manager.set(&hpdb::env::CACHE_ADAPTIVE_TTL, adaptive);
        })
        .await?;
        let r = run_mode(
            &target,
            witness,
            &universe,
            &a,
            Mode::Optimized,
            users,
            None,
        )
        .await?;
        let classes = match adaptive {
            true => target
                .monitor()
                .await
                .map(|v| v["status"]["tuning"]["ttlClasses"].clone()),
            false => None,
        };
        rows.push(Row {
            config: name,
            page_loads_per_sec: r.page_loads_per_sec,
            p99_ms: r.latency_ms.p99,
            cache_hit_rate: r.cache_hit_rate,
            db_statements_per_page_load: r.db_statements_per_page_load,
            stale_reads: r.stale_reads,
            errors: r.errors_total(),
            classes,
        });
        target.stop().await;
    }
    println!(
        "\n{:<28} {:>9} {:>9} {:>8} {:>8} {:>6}",
        "TTL", "loads/s", "p99 ms", "hit %", "stmts", "stale"
    );
    for r in &rows {
        println!(
            "{:<28} {:>9.0} {:>9.1} {:>8} {:>8} {:>6}",
            r.config,
            r.page_loads_per_sec,
            r.p99_ms,
            r.cache_hit_rate.map_or("-".into(), |h| format!("{h:.1}")),
            r.db_statements_per_page_load
                .map_or("-".into(), |s| format!("{s:.3}")),
            r.stale_reads
        );
        if let Some(Value::Array(classes)) = &r.classes {
            for c in classes {
                println!(
                    "    class {}: {:.0} reads, {:.0} writes (decayed), TTL {}",
                    c["class"].as_str().unwrap_or("?"),
                    c["reads"].as_f64().unwrap_or(0.0),
                    c["writes"].as_f64().unwrap_or(0.0),
                    c["ttlMs"]
                        .as_u64()
                        .map_or("not cached".into(), |ms| format!("{ms} ms"))
                );
            }
        }
    }
    write_json(
        args,
        &json!({ "scenario": "ttl", "users": users, "rows": rows }),
    )?;
    let bad: u64 = rows.iter().map(|r| r.errors + r.stale_reads).sum();
    anyhow::ensure!(bad == 0, "{bad} errors and stale reads");
    Ok(())
}
