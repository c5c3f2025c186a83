//! Counters and latency histograms (the figures [`Status`](crate::Status)
//! reports are read from them in `control::status`).
//!
//! Plain atomics and two hdrhistograms, read on demand by
//! [`Control::status`](crate::Control::status); nothing is pushed anywhere, so
//! the hot path costs a few atomic adds and one histogram record. A server
//! exports the status to Prometheus at scrape time.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use hdrhistogram::Histogram;
use parking_lot::Mutex;
use serde::Serialize;

/// Upper bounds (ms) of the latency and acquire-wait histogram buckets.
pub const BUCKETS_MS: [f64; 12] = [
    0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 1000.0, 10000.0,
];

pub(crate) fn histogram() -> Histogram<u64> {
    // Microseconds up to 10 minutes, 3 significant figures.
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) requests: AtomicU64,
    pub(crate) db_queries: AtomicU64,
    pub(crate) cache_hits: AtomicU64,
    pub(crate) cache_misses: AtomicU64,
    pub(crate) stale_served: AtomicU64,
    pub(crate) errors: AtomicU64,
    pub(crate) timeouts: AtomicU64,
    pub(crate) joins: AtomicU64,
    pub(crate) batches: AtomicU64,
    pub(crate) batched_keys: AtomicU64,
    pub(crate) circuit_opens: AtomicU64,
    pub(crate) limit_refusals: AtomicU64,
}

pub(crate) struct Metrics {
    pub(crate) c: Counters,
    last_limit_refusal: Mutex<Option<std::time::Instant>>,
    latency: LatencyRecorder,
    wait: LatencyRecorder,
}

/// Durations recorded into a histogram (µs, up to 10 minutes, 3
/// significant figures) with their sum: what `Status` reports as
/// percentiles and Prometheus buckets. Public so that an application can
/// time its own steps the same way (the GistFans data layer times a
/// write's phases with it).
pub struct LatencyRecorder {
    histogram: Mutex<Histogram<u64>>,
    sum_us: AtomicU64,
}

impl Default for LatencyRecorder {
    fn default() -> Self {
        Self {
            histogram: Mutex::new(histogram()),
            sum_us: AtomicU64::new(0),
        }
    }
}

impl std::fmt::Debug for LatencyRecorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LatencyRecorder")
            .field("count", &self.histogram.lock().len())
            .finish()
    }
}

impl LatencyRecorder {
    /// Records one duration.
    pub fn record(&self, d: Duration) {
        let us = d.as_micros() as u64;
        self.sum_us.fetch_add(us, Ordering::Relaxed);
        self.histogram.lock().saturating_record(us.max(1));
    }

    /// Forgets everything recorded.
    pub fn reset(&self) {
        self.sum_us.store(0, Ordering::Relaxed);
        self.histogram.lock().reset();
    }

    /// What was recorded: percentiles, cumulative buckets, sum.
    pub fn read(&self) -> Distribution {
        Distribution::of(&self.histogram.lock(), self.sum_us.load(Ordering::Relaxed))
    }
}

impl Metrics {
    /// Records that the database refused a connection for being full.
    pub(crate) fn limit_refused(&self) {
        inc(&self.c.limit_refusals);
        *self.last_limit_refusal.lock() = Some(std::time::Instant::now());
    }

    /// Seconds since the last refusal for being full, if any.
    pub(crate) fn since_limit_refusal(&self) -> Option<f64> {
        self.last_limit_refusal
            .lock()
            .map(|at| at.elapsed().as_secs_f64())
    }
}

pub(crate) fn inc(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl Metrics {
    pub(crate) fn new() -> Self {
        Self {
            c: Counters::default(),
            last_limit_refusal: Mutex::new(None),
            latency: LatencyRecorder::default(),
            wait: LatencyRecorder::default(),
        }
    }

    /// Records the end-to-end time of one `execute_query` call.
    pub(crate) fn record_latency(&self, d: Duration) {
        self.latency.record(d);
    }

    /// Records how long an execution waited for admission and a connection.
    pub(crate) fn record_wait(&self, d: Duration) {
        self.wait.record(d);
    }

    pub(crate) fn reset(&self) {
        let c = &self.c;
        for a in [
            &c.requests,
            &c.db_queries,
            &c.cache_hits,
            &c.cache_misses,
            &c.stale_served,
            &c.errors,
            &c.timeouts,
            &c.joins,
            &c.batches,
            &c.batched_keys,
            &c.circuit_opens,
            &c.limit_refusals,
        ] {
            a.store(0, Ordering::Relaxed);
        }
        self.latency.reset();
        self.wait.reset();
    }

    pub(crate) fn latency(&self) -> Distribution {
        self.latency.read()
    }

    pub(crate) fn wait(&self) -> Distribution {
        self.wait.read()
    }
}

/// A histogram read out: percentiles, cumulative buckets ([`BUCKETS_MS`]
/// and `+Inf`), and the sum of the samples (in ms).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Distribution {
    /// Percentiles in ms.
    pub percentiles: Percentiles,
    /// Cumulative buckets.
    pub buckets: Vec<Bucket>,
    /// The sum of every sample, in ms.
    pub sum_ms: f64,
}

impl Distribution {
    pub(crate) fn of(h: &Histogram<u64>, sum_us: u64) -> Self {
        let buckets = BUCKETS_MS
            .iter()
            .map(|&le| Bucket {
                le_ms: le,
                count: h.count_between(1, (le * 1000.0) as u64),
            })
            .chain(std::iter::once(Bucket {
                le_ms: f64::INFINITY,
                count: h.len(),
            }))
            .collect();
        Self {
            percentiles: Percentiles::of(h),
            buckets,
            sum_ms: sum_us as f64 / 1000.0,
        }
    }
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Percentiles {
    /// Median.
    pub p50: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest recorded.
    pub max: f64,
    /// Number of samples.
    pub count: u64,
}

impl Percentiles {
    fn of(h: &Histogram<u64>) -> Self {
        let ms = |us: u64| us as f64 / 1000.0;
        if h.is_empty() {
            return Self::default();
        }
        Self {
            p50: ms(h.value_at_quantile(0.50)),
            p95: ms(h.value_at_quantile(0.95)),
            p99: ms(h.value_at_quantile(0.99)),
            max: ms(h.max()),
            count: h.len(),
        }
    }
}

/// One cumulative histogram bucket: samples at or below `le_ms`.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Bucket {
    /// Upper bound in milliseconds (`inf` for the last).
    #[serde(serialize_with = "le_as_json")]
    pub le_ms: f64,
    /// Samples at or below the bound.
    pub count: u64,
}

fn le_as_json<S: serde::Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
    if v.is_finite() {
        s.serialize_f64(*v)
    } else {
        s.serialize_str("+Inf")
    }
}
