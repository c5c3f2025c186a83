//! The results: one row per mode and concurrency, and the ratios that
//! matter (optimised / baseline) at each concurrency.

use std::{collections::BTreeMap, time::Duration};

use hdrhistogram::Histogram;
use serde::Serialize;
use serde_json::Value;

use super::measures::{Counts, Mode, Snapshot};

/// Latency percentiles, milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    /// Median.
    pub p50: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Slowest.
    pub max: f64,
}

/// One mode at one concurrency.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ModeReport {
    /// How pages were loaded.
    pub mode: Mode,
    /// Virtual users.
    pub concurrency: usize,
    /// Measured seconds.
    pub seconds: f64,
    /// Page loads completed while measuring.
    pub page_loads: u64,
    /// Page loads per second.
    pub page_loads_per_sec: f64,
    /// Page-load latency.
    pub latency_ms: Latency,
    /// HTTP requests sent (page loads, writes, checks).
    pub http_requests: u64,
    /// Writes sent.
    pub writes: u64,
    /// Writes refused as conflicts (not errors).
    pub write_conflicts: u64,
    /// Writes that the following read did not see.
    pub stale_reads: u64,
    /// Failures by kind.
    pub errors: BTreeMap<String, u64>,
    /// Statements PostgreSQL executed while measuring (pg_stat_statements).
    pub db_statements: Option<i64>,
    /// The same per page load.
    pub db_statements_per_page_load: Option<f64>,
    /// Queries the manager ran while measuring (admin monitor).
    pub manager_queries: Option<i64>,
    /// Peak client connections of the path under test that PostgreSQL saw
    /// (pg_stat_activity by application name, sampled every 100 ms).
    pub peak_db_connections: Option<i64>,
    /// Cache hit rate while measuring, percent (admin monitor).
    pub cache_hit_rate: Option<f64>,
    /// Server CPU seconds per 10,000 page loads (/proc).
    pub cpu_seconds_per_10k: Option<f64>,
    /// Server resident memory at the end, MiB (/proc).
    pub rss_mib: Option<f64>,
}

fn field(v: &Option<Value>, name: &str) -> Option<i64> {
    v.as_ref()?.get(name)?.as_i64()
}

impl ModeReport {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn build(
        mode: Mode,
        concurrency: usize,
        elapsed: Duration,
        h: &Histogram<u64>,
        c: &Counts,
        errors: BTreeMap<String, u64>,
        before: &Snapshot,
        after: &Snapshot,
        peak_db_connections: Option<i64>,
    ) -> ModeReport {
        let ms = |us: u64| us as f64 / 1000.0;
        let loads = h.len();
        let seconds = elapsed.as_secs_f64();
        let db_statements = after.statements.zip(before.statements).map(|(a, b)| a - b);
        let delta = |name: &str| {
            field(&after.monitor, name)
                .zip(field(&before.monitor, name))
                .map(|(a, b)| a - b)
        };
        let (hits, misses) = (delta("cacheHits"), delta("cacheMisses"));
        // Only the optimised route reads through the cache; in other modes the
        // manager sees only the writes' own lookups.
        let cache_hit_rate = hits
            .zip(misses)
            .filter(|(h, m)| mode == Mode::Optimized && h + m > 0)
            .map(|(h, m)| 100.0 * h as f64 / (h + m) as f64);
        let cpu = after
            .process
            .zip(before.process)
            .map(|(a, b)| a.cpu_seconds - b.cpu_seconds);
        ModeReport {
            mode,
            concurrency,
            seconds,
            page_loads: loads,
            page_loads_per_sec: loads as f64 / seconds.max(1e-9),
            latency_ms: Latency {
                p50: ms(h.value_at_quantile(0.50)),
                p95: ms(h.value_at_quantile(0.95)),
                p99: ms(h.value_at_quantile(0.99)),
                max: ms(h.max()),
            },
            http_requests: c.requests,
            writes: c.writes,
            write_conflicts: c.conflicts,
            stale_reads: c.stale,
            errors,
            db_statements,
            db_statements_per_page_load: db_statements
                .filter(|_| loads > 0)
                .map(|s| s as f64 / loads as f64),
            manager_queries: delta("databaseQueries"),
            peak_db_connections,
            cache_hit_rate,
            cpu_seconds_per_10k: cpu
                .filter(|_| loads > 0)
                .map(|c| c * 10_000.0 / loads as f64),
            rss_mib: after
                .process
                .map(|p| p.rss_bytes as f64 / (1024.0 * 1024.0)),
        }
    }

    /// Failures of any kind.
    pub fn errors_total(&self) -> u64 {
        self.errors.values().sum()
    }

    /// A progress line.
    pub fn one_line(&self) -> String {
        format!(
            "  {:?} x{}: {:.0} page loads/s, p99 {:.2} ms, {} errors, {} stale reads",
            self.mode,
            self.concurrency,
            self.page_loads_per_sec,
            self.latency_ms.p99,
            self.errors_total(),
            self.stale_reads
        )
    }
}

fn opt(v: Option<f64>, prec: usize) -> String {
    v.map(|v| format!("{v:.prec$}"))
        .unwrap_or_else(|| "-".into())
}

/// Prints the table and, per concurrency, the optimised/baseline ratios.
pub fn print_table(reports: &[ModeReport], process_measured: bool) {
    println!();
    println!(
        "{:<10} {:>5} {:>10} {:>8} {:>8} {:>8} {:>9} {:>6} {:>6} {:>10} {:>6} {:>6} {:>8} {:>9} {:>7}",
        "mode", "users", "loads/s", "p50 ms", "p95 ms", "p99 ms", "max ms", "errors", "stale", "stmts/load", "peakDB", "hit%", "writes", "cpu/10k", "rss MiB"
    );
    for r in reports {
        println!(
            "{:<10} {:>5} {:>10.0} {:>8.2} {:>8.2} {:>8.2} {:>9.2} {:>6} {:>6} {:>10} {:>6} {:>6} {:>8} {:>9} {:>7}",
            format!("{:?}", r.mode).to_lowercase(),
            r.concurrency,
            r.page_loads_per_sec,
            r.latency_ms.p50,
            r.latency_ms.p95,
            r.latency_ms.p99,
            r.latency_ms.max,
            r.errors_total(),
            r.stale_reads,
            opt(r.db_statements_per_page_load, 3),
            r.peak_db_connections.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
            opt(r.cache_hit_rate, 1),
            r.writes,
            opt(r.cpu_seconds_per_10k, 2),
            opt(r.rss_mib, 0),
        );
        if !r.errors.is_empty() {
            println!("{:<10} errors by kind: {:?}", "", r.errors);
        }
    }
    let mut concurrencies: Vec<usize> = reports.iter().map(|r| r.concurrency).collect();
    concurrencies.dedup();
    for c in concurrencies {
        let find = |m: Mode| reports.iter().find(|r| r.concurrency == c && r.mode == m);
        if let (Some(b), Some(o)) = (find(Mode::Baseline), find(Mode::Optimized)) {
            if b.page_loads == 0 {
                println!(
                    "\nat {c} users, the baseline completed no page load in {:.0} s (every load took longer); optimized: {:.0} page loads/s, p99 {:.2} ms",
                    b.seconds, o.page_loads_per_sec, o.latency_ms.p99
                );
                continue;
            }
            let stmts = b
                .db_statements_per_page_load
                .zip(o.db_statements_per_page_load)
                .map(|(b, o)| if o > 0.0 { b / o } else { f64::INFINITY });
            println!(
                "\nat {c} users, optimized vs baseline: {:.1}x page loads/s, p99 {:.3}x ({:.2} vs {:.2} ms), {} fewer DB statements per page load",
                o.page_loads_per_sec / b.page_loads_per_sec.max(1e-9),
                o.latency_ms.p99 / b.latency_ms.p99.max(1e-9),
                o.latency_ms.p99,
                b.latency_ms.p99,
                stmts.map(|s| format!("{s:.0}x")).unwrap_or_else(|| "n/a (not PostgreSQL)".into()),
            );
            if let Some(t) = find(Mode::Trivial) {
                println!(
                    "at {c} users, optimized page loads/s are {:.0}% of the trivial route's",
                    100.0 * o.page_loads_per_sec / t.page_loads_per_sec.max(1e-9)
                );
            }
        }
    }
    if !process_measured {
        println!("(server CPU and memory are measured only when bench starts the server)");
    }
}
