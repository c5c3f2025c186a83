//! The read side: the [`Status`] snapshot assembled from the counters
//! (`metrics`), the gate, the pool, the breaker, the leak detector and the
//! cache; the advice drawn from it; and the two cheap gauges a server polls.
//!
//! A snapshot reads each figure without a global lock, so figures taken a
//! moment apart may not add up exactly (see the crate's consistency notes).

use std::sync::atomic::{AtomicU64, Ordering};

use super::Control;
use crate::{
    advisor::{self, Advice},
    status::Status,
};

impl Control {
    /// A snapshot: the six headline figures (connections active and idle,
    /// queries queued and run, cache hit rate, mean response time) and
    /// everything behind them.
    pub fn status(&self) -> Status {
        let core = &*self.core;
        let c = &core.metrics.c;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let size = core.pool.size();
        let idle = core.pool.num_idle() as u32;
        let (hits, misses) = (get(&c.cache_hits), get(&c.cache_misses));
        let requests = get(&c.requests);
        let latency = core.metrics.latency();
        let wait = core.metrics.wait();
        let cache = core.cache.stats();
        Status {
            active_connections: size.saturating_sub(idle),
            idle_connections: idle,
            pending_requests: core.gate.queued() as u64,
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
            max_connections: core.gate.limit() as u32,
            min_connections: core.min_connections(),
            database_queries: get(&c.db_queries),
            cache_hits: hits,
            cache_misses: misses,
            stale_served: get(&c.stale_served),
            errors: get(&c.errors),
            timeouts: get(&c.timeouts),
            single_flight_joins: get(&c.joins),
            in_flight: core.flights.in_flight() as u64,
            batches: get(&c.batches),
            batched_keys: get(&c.batched_keys),
            circuit_opens: get(&c.circuit_opens),
            circuit: core.breaker.state(),
            leaks_detected: core.leaks.detected(),
            suspected_leaks: core.leaks.suspects(),
            latency_ms: latency.percentiles,
            acquire_wait_ms: wait.percentiles,
            acquire_wait_histogram: wait.buckets,
            acquire_wait_sum_ms: wait.sum_ms,
            latency_histogram: latency.buckets,
            latency_sum_ms: latency.sum_ms,
            cache,
            refresh: core.refreshes.status(cache.unread_refreshes),
            uptime_seconds: core.started.elapsed().as_secs_f64(),
            connection_budget: Some(core.connection_budget.load(Ordering::Relaxed))
                .filter(|b| *b != u32::MAX),
            connection_limit_refusals: get(&c.limit_refusals),
            seconds_since_limit_refusal: core.metrics.since_limit_refusal(),
            shared: core.shared.status(),
            tuning: core.tuning.status(&core.config.pool),
            changes: core.changes.status(),
            consistency: core.consistency.status(),
            replicas: core.replicas.as_ref().map(|b| b.status()),
        }
    }

    /// Recommendations and alerts for the current status.
    pub fn advice(&self) -> Vec<Advice> {
        advisor::advise(&self.status(), &self.core.config.advisor)
    }

    /// Queries queued for a connection slot now (cheap, unlike [`status`](Self::status)).
    pub fn pending_requests(&self) -> usize {
        self.core.gate.queued()
    }

    /// Connections currently admitted (holding a slot).
    pub fn admitted(&self) -> usize {
        self.core.gate.in_use()
    }
}

/// Rounds to two decimals, for figures read by people.
fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}
