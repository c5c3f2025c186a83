//! The results: one row per mode and concurrency, and the ratios that
//! matter (optimised / baseline) at each concurrency.

use std::{collections::BTreeMap, time::Duration};

use hdrhistogram::Histogram;
use serde::Serialize;
use serde_json::Value;

use super::{
    consistency::{self, Nines},
    measures::{Counts, Mode, Snapshot},
    replicas::{self, Routing},
};

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
    /// Server instances the virtual users were spread over.
    pub instances: usize,
    /// With several instances: write acknowledged → first read on another
    /// instance that shows it, as the virtual users saw it.
    pub delivery_ms: Option<Latency>,
    /// The bus's own lag (publish → applied) on the first instance, p99,
    /// since it started (its monitor's histogram).
    pub bus_lag_p99_ms: Option<f64>,
    /// Lookups served by the in-process or the shared level, percent of
    /// all lookups (admin monitors, all instances).
    pub combined_hit_rate: Option<f64>,
    /// Shared-level (Redis) hits, percent of its lookups.
    pub shared_hit_rate: Option<f64>,
    /// Redis commands the servers sent, per page load.
    pub redis_commands_per_page_load: Option<f64>,
    /// Times each instance's circuit opened while measuring (a healthy
    /// database: none).
    pub circuit_opens: Vec<i64>,
    /// Redis calls each instance had no answer to within their whole
    /// budget while measuring (a healthy Redis: none).
    pub redis_budget_misses: Vec<i64>,
    /// Readers' Redis calls each instance answered after the reader had
    /// gone on to the database (slow, not failed: a load signal).
    pub redis_slow_calls: Vec<i64>,
    /// The writes' own requests (sent → answered), apart from page loads.
    pub write_latency_ms: Option<Latency>,
    /// The consistency monitor's checks that fell due while measuring, per
    /// delay, all instances (empty without the admin monitor).
    pub consistency: Vec<Nines>,
    /// Reads on replicas while measuring (`--replica-urls`; `None` without).
    pub replicas: Option<Routing>,
}

fn latency_of(h: &Histogram<u64>) -> Latency {
    let ms = |us: u64| us as f64 / 1000.0;
    Latency {
        p50: ms(h.value_at_quantile(0.50)),
        p95: ms(h.value_at_quantile(0.95)),
        p99: ms(h.value_at_quantile(0.99)),
        max: ms(h.max()),
    }
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
            instances: 1,
            delivery_ms: None,
            bus_lag_p99_ms: None,
            combined_hit_rate: None,
            shared_hit_rate: None,
            circuit_opens: Vec::new(),
            redis_budget_misses: Vec::new(),
            redis_slow_calls: Vec::new(),
            redis_commands_per_page_load: None,
            write_latency_ms: None,
            consistency: consistency::between(&before.instances, &after.instances),
            replicas: replicas::between(before, after),
        }
    }

    /// Adds the writes' own latency.
    pub(crate) fn add_writes(&mut self, writes: Option<&Histogram<u64>>) {
        self.write_latency_ms = writes.filter(|h| !h.is_empty()).map(latency_of);
    }

    /// Adds the figures of several instances and the shared level: the
    /// delivery the virtual users measured, and the servers' own counts.
    pub(crate) fn add_instances(
        &mut self,
        instances: usize,
        delivery: Option<&Histogram<u64>>,
        before: &Snapshot,
        after: &Snapshot,
    ) {
        let ms = |us: u64| us as f64 / 1000.0;
        self.instances = instances;
        self.delivery_ms = delivery.filter(|h| !h.is_empty()).map(|h| Latency {
            p50: ms(h.value_at_quantile(0.50)),
            p95: ms(h.value_at_quantile(0.95)),
            p99: ms(h.value_at_quantile(0.99)),
            max: ms(h.max()),
        });
        let shared =
            |snap: &Snapshot, name: &str| snap.monitor.as_ref()?.get("shared")?.get(name)?.as_i64();
        let delta = |name: &str| {
            shared(after, name)
                .zip(shared(before, name))
                .map(|(a, b)| a - b)
        };
        let top = |name: &str| {
            field(&after.monitor, name)
                .zip(field(&before.monitor, name))
                .map(|(a, b)| a - b)
        };
        let per_instance = |get: fn(&Value) -> Option<i64>| -> Vec<i64> {
            after
                .instances
                .iter()
                .zip(&before.instances)
                .map(|(a, b)| get(a).unwrap_or(0) - get(b).unwrap_or(0))
                .collect()
        };
        self.circuit_opens = per_instance(|s| s.get("circuitOpens")?.as_i64());
        self.redis_budget_misses =
            per_instance(|s| s.get("shared")?.get("redisTimeouts")?.as_i64());
        self.redis_slow_calls = per_instance(|s| s.get("shared")?.get("redisSlow")?.as_i64());
        let (hits, misses) = (delta("hits"), delta("misses"));
        self.shared_hit_rate = hits
            .zip(misses)
            .filter(|(h, m)| self.mode == Mode::Optimized && h + m > 0)
            .map(|(h, m)| 100.0 * h as f64 / (h + m) as f64);
        self.combined_hit_rate = top("cacheHits")
            .zip(top("cacheMisses"))
            .filter(|(h, m)| self.mode == Mode::Optimized && h + m > 0)
            .map(|(h, m)| 100.0 * (h + hits.unwrap_or(0)) as f64 / (h + m) as f64);
        self.redis_commands_per_page_load = delta("redisCommands")
            .filter(|_| self.page_loads > 0)
            .map(|c| c as f64 / self.page_loads as f64);
        self.bus_lag_p99_ms = after
            .monitor
            .as_ref()
            .and_then(|m| m.get("shared")?.get("deliveryLagMs")?.get("p99")?.as_f64());
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

/// The table's column headings, with the width each takes in the text
/// report (the first is left-aligned). Latency columns are page loads';
/// `w p50` and `w p99` are the writes' own.
pub const COLUMNS: [(&str, usize); 22] = [
    ("mode", 10),
    ("inst", 4),
    ("users", 5),
    ("loads/s", 10),
    ("p50 ms", 8),
    ("p95 ms", 8),
    ("p99 ms", 8),
    ("max ms", 9),
    ("errors", 6),
    ("stale", 6),
    ("stmts/load", 10),
    ("peakDB", 6),
    ("hit%", 6),
    ("both%", 6),
    ("L2 hit%", 7),
    ("deliv p99", 9),
    ("writes", 8),
    ("w p50", 8),
    ("w p99", 8),
    ("cpu/10k", 9),
    ("rss MiB", 7),
    ("redis/load", 10),
];

/// One row of the table, in the order of [`COLUMNS`].
pub fn cells(r: &ModeReport) -> [String; 22] {
    [
        format!("{:?}", r.mode).to_lowercase(),
        r.instances.to_string(),
        r.concurrency.to_string(),
        format!("{:.0}", r.page_loads_per_sec),
        format!("{:.2}", r.latency_ms.p50),
        format!("{:.2}", r.latency_ms.p95),
        format!("{:.2}", r.latency_ms.p99),
        format!("{:.2}", r.latency_ms.max),
        r.errors_total().to_string(),
        r.stale_reads.to_string(),
        opt(r.db_statements_per_page_load, 3),
        r.peak_db_connections
            .map(|p| p.to_string())
            .unwrap_or_else(|| "-".into()),
        opt(r.cache_hit_rate, 1),
        opt(r.combined_hit_rate, 1),
        opt(r.shared_hit_rate, 1),
        opt(r.delivery_ms.as_ref().map(|d| d.p99), 2),
        r.writes.to_string(),
        opt(r.write_latency_ms.as_ref().map(|w| w.p50), 2),
        opt(r.write_latency_ms.as_ref().map(|w| w.p99), 2),
        opt(r.cpu_seconds_per_10k, 2),
        opt(r.rss_mib, 0),
        opt(r.redis_commands_per_page_load, 3),
    ]
}

fn text_row(values: impl IntoIterator<Item = impl std::fmt::Display>) -> String {
    let mut line = String::new();
    for (i, (v, (_, width))) in values.into_iter().zip(COLUMNS).enumerate() {
        if i == 0 {
            line.push_str(&format!("{v:<width$}"));
        } else {
            line.push_str(&format!(" {v:>width$}"));
        }
    }
    line
}

/// Prints the table and, per concurrency, the optimised/baseline ratios.
pub fn print_table(reports: &[ModeReport], process_measured: bool) {
    println!();
    println!("{}", text_row(COLUMNS.map(|(name, _)| name)));
    for r in reports {
        println!("{}", text_row(cells(r)));
        if !r.errors.is_empty() {
            println!("{:<10} errors by kind: {:?}", "", r.errors);
        }
    }
    for group in ratios(reports) {
        println!("\n{}", group.join("\n"));
    }
    if !process_measured {
        println!("(server CPU and memory are measured only when bench starts the server)");
    }
}

/// The ratios the report states, as sentences, one group per concurrency:
/// optimised against the baseline, the cached route against the trivial
/// one, and the trivial route against the bare handler (the ceiling).
pub fn ratios(reports: &[ModeReport]) -> Vec<Vec<String>> {
    let mut concurrencies: Vec<usize> = reports.iter().map(|r| r.concurrency).collect();
    concurrencies.dedup();
    let mut groups = Vec::new();
    for c in concurrencies {
        let find = |m: Mode| reports.iter().find(|r| r.concurrency == c && r.mode == m);
        let share =
            |a: &ModeReport, b: &ModeReport| a.page_loads_per_sec / b.page_loads_per_sec.max(1e-9);
        let mut group = Vec::new();
        match (find(Mode::Baseline), find(Mode::Optimized)) {
            (Some(b), Some(o)) if b.page_loads == 0 => group.push(format!(
                "at {c} users, the baseline completed no page load in {:.0} s (every load took longer); optimized: {:.0} page loads/s, p99 {:.2} ms",
                b.seconds, o.page_loads_per_sec, o.latency_ms.p99
            )),
            (Some(b), Some(o)) => {
                let stmts = b
                    .db_statements_per_page_load
                    .zip(o.db_statements_per_page_load)
                    .map(|(b, o)| if o > 0.0 { b / o } else { f64::INFINITY });
                group.push(format!(
                    "at {c} users, optimized vs baseline: {:.1}x page loads/s, p99 {:.3}x ({:.2} vs {:.2} ms), {} fewer DB statements per page load",
                    share(o, b),
                    o.latency_ms.p99 / b.latency_ms.p99.max(1e-9),
                    o.latency_ms.p99,
                    b.latency_ms.p99,
                    stmts.map(|s| format!("{s:.0}x")).unwrap_or_else(|| "n/a (not PostgreSQL)".into()),
                ));
            }
            _ => {}
        }
        if let (Some(o), Some(t)) = (find(Mode::Optimized), find(Mode::Trivial)) {
            group.push(format!(
                "at {c} users, optimized page loads/s are {:.0}% of the trivial route's ({:.2}x)",
                100.0 * share(o, t),
                share(o, t)
            ));
        }
        if let (Some(t), Some(x)) = (find(Mode::Trivial), find(Mode::Ceiling)) {
            group.push(format!(
                "at {c} users, the trivial route's requests/s are {:.0}% of the bare handler's ({:.2}x): the server's stack costs the rest",
                100.0 * share(t, x),
                share(t, x)
            ));
        }
        if let Some(w) = find(Mode::Optimized).and_then(|o| o.write_latency_ms.as_ref()) {
            group.push(format!(
                "at {c} users, writes (optimized mode): p50 {:.2} ms, p99 {:.2} ms",
                w.p50, w.p99
            ));
        }
        if let Some(o) = find(Mode::Optimized).filter(|o| !o.consistency.is_empty()) {
            group.push(format!(
                "at {c} users, consistency monitor (optimized): {}",
                consistency::sentence(&o.consistency)
            ));
        }
        if let Some(r) = find(Mode::Optimized).and_then(|o| o.replicas.as_ref()) {
            group.push(format!(
                "at {c} users, replicas (optimized): {}",
                replicas::sentence(r)
            ));
        }
        if !group.is_empty() {
            groups.push(group);
        }
    }
    groups
}
