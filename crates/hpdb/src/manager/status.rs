//! The read side: the [`Status`] snapshot assembled from the counters
//! (`metrics`), the gate, the pool, the breaker, the leak detector and the
//! cache; the advice drawn from it; and the two cheap gauges a server polls.
//!
//! A snapshot reads each figure without a global lock, so figures taken a
//! moment apart may not add up exactly (see the crate's consistency notes).

use std::sync::atomic::{AtomicU64, Ordering};

use sqlx::Database;

use super::Manager;
use crate::{
    advisor::{self, Advice},
    metrics::Status,
};

impl<DB: Database> Manager<DB> {
    /// A snapshot: the six headline figures (connections active and idle,
    /// queries queued and run, cache hit rate, mean response time) and
    /// everything behind them.
    pub fn status(&self) -> Status {
        let inner = &self.inner;
        let c = &inner.metrics.c;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let size = inner.pool.size();
        let idle = inner.pool.num_idle() as u32;
        let (hits, misses) = (get(&c.cache_hits), get(&c.cache_misses));
        let requests = get(&c.requests);
        let latency = inner.metrics.latency();
        let wait = inner.metrics.wait();
        let cache = inner.cache.stats();
        Status {
            active_connections: size.saturating_sub(idle),
            idle_connections: idle,
            pending_requests: inner.gate.queued() as u64,
            total_queries: requests,
            cache_hit_rate: if hits + misses == 0 {
                0.0
            } else {
                round2(100.0 * hits as f64 / (hits + misses) as f64)
            },
            average_response_time: if latency.percentiles.count == 0 {
                0.0
            } else {
                round2(latency.sum_ms / latency.percentiles.count as f64)
            },
            max_connections: inner.gate.limit() as u32,
            min_connections: inner.min_connections.load(Ordering::Relaxed),
            database_queries: get(&c.db_queries),
            cache_hits: hits,
            cache_misses: misses,
            stale_served: get(&c.stale_served),
            errors: get(&c.errors),
            timeouts: get(&c.timeouts),
            single_flight_joins: get(&c.joins),
            in_flight: inner.flights.in_flight() as u64,
            batches: get(&c.batches),
            batched_keys: get(&c.batched_keys),
            circuit_opens: get(&c.circuit_opens),
            circuit: inner.breaker.state(),
            leaks_detected: inner.leaks.detected(),
            suspected_leaks: inner.leaks.suspects(),
            latency_ms: latency.percentiles,
            acquire_wait_ms: wait.percentiles,
            acquire_wait_histogram: wait.buckets,
            acquire_wait_sum_ms: wait.sum_ms,
            latency_histogram: latency.buckets,
            latency_sum_ms: latency.sum_ms,
            cache,
            refresh: inner.refreshes.status(cache.unread_refreshes),
            uptime_seconds: inner.started.elapsed().as_secs_f64(),
            connection_budget: Some(inner.connection_budget.load(Ordering::Relaxed))
                .filter(|b| *b != u32::MAX),
            connection_limit_refusals: get(&c.limit_refusals),
            seconds_since_limit_refusal: inner.metrics.since_limit_refusal(),
            shared: inner.shared.as_ref().map(|s| s.status()),
            tuning: self.tuning_status(),
        }
    }

    /// Recommendations and alerts for the current status.
    pub fn advice(&self) -> Vec<Advice> {
        advisor::advise(&self.status(), &self.inner.config.advisor)
    }

    /// Queries queued for a connection slot now (cheap, unlike [`status`](Self::status)).
    pub fn pending_requests(&self) -> usize {
        self.inner.gate.queued()
    }

    /// Connections currently admitted (holding a slot).
    pub fn admitted(&self) -> usize {
        self.inner.gate.in_use()
    }
}

/// Rounds to two decimals, for figures read by people.
fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}
