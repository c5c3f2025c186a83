//! `gistfans bench --soak MINUTES`: one mode at one concurrency for minutes,
//! to see whether the server's memory grows while nothing but the workload
//! asks it anything (no `/metrics` scrape, no admin monitor). The server's
//! RSS is sampled every 10 s; each minute becomes a row (page loads/s, p99,
//! errors, RSS). Growth is reported, not judged: a person reads it.

use gistfans_data::witness::Witness;
use std::{sync::Arc, time::Duration};

use serde::Serialize;

use super::{
    measures::Mode,
    probe::{Interval, Probe, Tally},
    report::ModeReport,
    server::Target,
    workload::{self, Universe},
    BenchArgs,
};

/// How often the server's RSS is sampled.
const TICK: Duration = Duration::from_secs(10);
/// Ticks per minute row.
const TICKS_PER_MINUTE: usize = 6;
const MIB: f64 = 1024.0 * 1024.0;

/// One RSS sample.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RssSample {
    /// Seconds since the measurement started.
    pub seconds: f64,
    /// The server's resident set size, MiB (none for a server bench did not start).
    pub rss_mib: Option<f64>,
}

/// One minute of the soak.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MinuteRow {
    /// 1 for the first minute.
    pub minute: usize,
    /// Measured seconds (60 but for a cut-short last minute).
    pub seconds: f64,
    /// Page loads completed.
    pub page_loads: u64,
    /// Page loads per second.
    pub page_loads_per_sec: f64,
    /// 99th percentile page-load latency, milliseconds.
    pub p99_ms: f64,
    /// Failures (page loads and writes).
    pub errors: u64,
    /// Writes the following read did not see.
    pub stale_reads: u64,
    /// The server's RSS at the end of the minute, MiB.
    pub rss_mib: Option<f64>,
}

/// The figures a person judges the soak by.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    /// RSS after the first minute (caches filled), MiB.
    pub rss_after_first_minute_mib: Option<f64>,
    /// RSS at the end, MiB.
    pub rss_at_end_mib: Option<f64>,
    /// Growth from the first minute to the end, percent.
    pub rss_growth_percent: Option<f64>,
    /// Failures in all minutes.
    pub errors: u64,
    /// Stale reads in all minutes.
    pub stale_reads: u64,
}

/// A whole soak, as printed and as written to JSON.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Soak {
    /// The mode soaked.
    pub mode: Mode,
    /// Virtual users.
    pub concurrency: usize,
    /// Minutes asked for.
    pub minutes: u64,
    /// The server's RSS every 10 s.
    pub rss_samples: Vec<RssSample>,
    /// One row per minute.
    pub per_minute: Vec<MinuteRow>,
    /// RSS growth, errors, stale reads.
    pub summary: Summary,
}

/// Runs the first of `args.mode` at the first of `args.concurrency` for
/// `minutes` after the usual warm-up.
pub async fn run(
    t: &Target,
    witness: &Arc<Witness>,
    universe: &Universe,
    args: &BenchArgs,
    minutes: u64,
) -> anyhow::Result<(ModeReport, Soak)> {
    let (mode, users) = (args.mode[0], args.concurrency[0]);
    let args = BenchArgs {
        duration: minutes * 60,
        requests: None,
        ..args.clone()
    };
    let tally = Tally::default();
    let mut log = Log::default();
    let mut on_tick = |i: Interval| log.tick(i, t.proc_sample().map(|p| p.rss_bytes));
    let probe = Probe {
        every: TICK,
        tally: &tally,
        on_tick: &mut on_tick,
    };
    let report = workload::run_mode(t, witness, universe, &args, mode, users, Some(probe)).await?;
    let (rss_samples, per_minute) = log.finish();
    let summary = summarize(&per_minute);
    let soak = Soak {
        mode,
        concurrency: users,
        minutes,
        rss_samples,
        per_minute,
        summary,
    };
    Ok((report, soak))
}

/// The record being built, one 10-s tick at a time.
#[derive(Default)]
struct Log {
    elapsed: Duration,
    samples: Vec<RssSample>,
    rows: Vec<MinuteRow>,
    minute: Option<Interval>,
    ticks: usize,
}

impl Log {
    fn tick(&mut self, i: Interval, rss_bytes: Option<u64>) {
        self.elapsed += i.span;
        let rss_mib = rss_bytes.map(|b| b as f64 / MIB);
        self.samples.push(RssSample {
            seconds: self.elapsed.as_secs_f64(),
            rss_mib,
        });
        match &mut self.minute {
            Some(m) => m.absorb(&i),
            None => self.minute = Some(i),
        }
        self.ticks += 1;
        if self.ticks == TICKS_PER_MINUTE {
            self.close(rss_mib);
        }
    }

    fn close(&mut self, rss_mib: Option<f64>) {
        if let Some(m) = self.minute.take() {
            self.rows.push(row(self.rows.len() + 1, &m, rss_mib));
        }
        self.ticks = 0;
    }

    /// The samples and the rows, a cut-short last minute included.
    fn finish(mut self) -> (Vec<RssSample>, Vec<MinuteRow>) {
        let last = self.samples.last().and_then(|s| s.rss_mib);
        self.close(last);
        (self.samples, self.rows)
    }
}

/// A minute's row from its figures and the RSS at its end.
fn row(minute: usize, m: &Interval, rss_mib: Option<f64>) -> MinuteRow {
    let seconds = m.span.as_secs_f64();
    let page_loads = m.latency.len();
    MinuteRow {
        minute,
        seconds,
        page_loads,
        page_loads_per_sec: page_loads as f64 / seconds.max(1e-9),
        p99_ms: m.latency.value_at_quantile(0.99) as f64 / 1000.0,
        errors: m.errors,
        stale_reads: m.stale,
        rss_mib,
    }
}

/// Growth from `first` to `end`, percent of `first`.
fn growth_percent(first: f64, end: f64) -> Option<f64> {
    (first > 0.0).then(|| 100.0 * (end - first) / first)
}

fn summarize(rows: &[MinuteRow]) -> Summary {
    let first = rows.first().and_then(|r| r.rss_mib);
    let end = rows.last().and_then(|r| r.rss_mib);
    Summary {
        rss_after_first_minute_mib: first,
        rss_at_end_mib: end,
        rss_growth_percent: first.zip(end).and_then(|(f, e)| growth_percent(f, e)),
        errors: rows.iter().map(|r| r.errors).sum(),
        stale_reads: rows.iter().map(|r| r.stale_reads).sum(),
    }
}

fn mib(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.1}")).unwrap_or_else(|| "-".into())
}

/// Prints one row per minute and the summary line.
pub fn print(s: &Soak) {
    println!();
    println!(
        "soak: {:?} x{} for {} min, RSS sampled every {} s, nothing scraping /metrics",
        s.mode,
        s.concurrency,
        s.minutes,
        TICK.as_secs()
    );
    println!(
        "{:>6} {:>10} {:>8} {:>6} {:>6} {:>8}",
        "minute", "loads/s", "p99 ms", "errors", "stale", "rss MiB"
    );
    for r in &s.per_minute {
        println!(
            "{:>6} {:>10.0} {:>8.2} {:>6} {:>6} {:>8}",
            r.minute,
            r.page_loads_per_sec,
            r.p99_ms,
            r.errors,
            r.stale_reads,
            mib(r.rss_mib)
        );
    }
    let m = &s.summary;
    println!(
        "RSS after minute 1: {} MiB, at end: {} MiB, growth: {}; {} errors, {} stale reads",
        mib(m.rss_after_first_minute_mib),
        mib(m.rss_at_end_mib),
        m.rss_growth_percent
            .map(|g| format!("{g:+.1}%"))
            .unwrap_or_else(|| "-".into()),
        m.errors,
        m.stale_reads
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn interval(loads_us: &[u64], errors: u64, stale: u64) -> Interval {
        let mut i = Interval::empty();
        for &us in loads_us {
            i.latency.record(us).unwrap();
        }
        i.errors = errors;
        i.stale = stale;
        i.span = TICK;
        i
    }

    #[test]
    fn growth_is_relative_to_the_first_minute() {
        assert_eq!(growth_percent(100.0, 110.0), Some(10.0));
        assert_eq!(growth_percent(200.0, 150.0), Some(-25.0));
        assert_eq!(growth_percent(0.0, 10.0), None);
    }

    #[test]
    fn six_ticks_make_a_minute_and_the_rest_a_short_one() {
        let mut log = Log::default();
        for k in 0..8u64 {
            log.tick(
                interval(&[1_000; 10], k % 2, 0),
                Some((100 + k) * 1024 * 1024),
            );
        }
        let (samples, rows) = log.finish();
        assert_eq!(samples.len(), 8);
        assert_eq!(samples[7].seconds, 80.0);
        assert_eq!(rows.len(), 2);
        let first = &rows[0];
        assert_eq!((first.minute, first.page_loads, first.errors), (1, 60, 3));
        assert_eq!(first.seconds, 60.0);
        assert_eq!(first.page_loads_per_sec, 1.0);
        assert_eq!(first.rss_mib, Some(105.0));
        let second = &rows[1];
        assert_eq!(
            (second.minute, second.page_loads, second.seconds),
            (2, 20, 20.0)
        );
        assert_eq!(second.rss_mib, Some(107.0));
    }

    #[test]
    fn a_minute_row_has_the_minutes_p99_in_ms() {
        let loads: Vec<u64> = (1..=100).map(|k| k * 1_000).collect();
        let r = row(3, &interval(&loads, 2, 1), Some(50.0));
        assert_eq!(
            (r.minute, r.page_loads, r.errors, r.stale_reads),
            (3, 100, 2, 1)
        );
        assert!((r.p99_ms - 99.0).abs() < 0.1, "{}", r.p99_ms);
    }

    #[test]
    fn summary_sums_the_minutes_and_compares_end_to_minute_one() {
        let mut rows = Vec::new();
        for (k, rss) in [(1, 200.0), (2, 210.0), (3, 220.0)] {
            rows.push(row(k, &interval(&[500], 1, k as u64 - 1), Some(rss)));
        }
        let s = summarize(&rows);
        assert_eq!(s.rss_after_first_minute_mib, Some(200.0));
        assert_eq!(s.rss_at_end_mib, Some(220.0));
        assert_eq!(s.rss_growth_percent, Some(10.0));
        assert_eq!((s.errors, s.stale_reads), (3, 3));
        assert_eq!(summarize(&[]).rss_growth_percent, None);
    }
}
