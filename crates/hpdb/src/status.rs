//! [`Status`]: the snapshot a manager reports, the seed's six figures first
//! (assembled in `control::status` from every part).

use serde::Serialize;

use crate::{
    breaker::CircuitState,
    cache::CacheStats,
    changes::ChangeStatus,
    consistency::ConsistencyStatus,
    leak::SuspectedLeak,
    metrics::{Bucket, Percentiles},
    refresh::RefreshStatus,
    shared::status::SharedStatus,
    tuning::TuningStatus,
};

/// A snapshot of the manager: six headline figures first (connections
/// active and idle, queries queued and run, cache hit rate, mean response
/// time), then everything an operator needs to act on them. Serialized with
/// camelCase names.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    /// Connections open and handed out.
    pub active_connections: u32,
    /// Connections open and idle.
    pub idle_connections: u32,
    /// Queries queued for a connection slot.
    pub pending_requests: u64,
    /// `execute_query` calls (cache hits included).
    pub total_queries: u64,
    /// Cache hits / cache lookups, in percent.
    pub cache_hit_rate: f64,
    /// Mean time of an `execute_query` call, in milliseconds.
    pub average_response_time: f64,

    /// Current pool size limit.
    pub max_connections: u32,
    /// Connections kept open at all times.
    pub min_connections: u32,
    /// Queries that reached the database (closures run, batches included).
    pub database_queries: u64,
    /// Cache hits.
    pub cache_hits: u64,
    /// Cache lookups that found nothing fresh.
    pub cache_misses: u64,
    /// Expired entries served because the database was unavailable.
    pub stale_served: u64,
    /// Calls that ended in an error (timeouts included).
    pub errors: u64,
    /// Calls that ended in a timeout.
    pub timeouts: u64,
    /// Calls that joined an identical in-flight query instead of running it.
    pub single_flight_joins: u64,
    /// Queries in flight that others can join.
    pub in_flight: u64,
    /// Keyed batches run.
    pub batches: u64,
    /// Keys loaded by those batches.
    pub batched_keys: u64,
    /// Times the circuit opened.
    pub circuit_opens: u64,
    /// The circuit breaker's state.
    pub circuit: CircuitState,
    /// Connections reported as held past the leak threshold.
    pub leaks_detected: u64,
    /// Connections currently held past the leak threshold.
    pub suspected_leaks: Vec<SuspectedLeak>,
    /// End-to-end latency of `execute_query` calls.
    pub latency_ms: Percentiles,
    /// Time executions waited for admission and a connection.
    pub acquire_wait_ms: Percentiles,
    /// The same wait as a cumulative histogram.
    pub acquire_wait_histogram: Vec<Bucket>,
    /// Sum of all the waits, in ms (with the histogram's count, the mean).
    pub acquire_wait_sum_ms: f64,
    /// The latency as a cumulative histogram.
    pub latency_histogram: Vec<Bucket>,
    /// Sum of all the latencies, in ms.
    pub latency_sum_ms: f64,
    /// The cache's counters.
    pub cache: CacheStats,
    /// Background refreshes: ahead of expiry, revalidations, reads served
    /// while refreshing, skipped, wasted.
    pub refresh: RefreshStatus,
    /// Seconds since the manager started.
    pub uptime_seconds: f64,
    /// Connections the database can give this pool, when the application
    /// has told the manager (see
    /// [`Control::set_connection_budget`](crate::Control::set_connection_budget)).
    pub connection_budget: Option<u32>,
    /// Connection attempts the database refused because it was at its own
    /// connection limit (PostgreSQL's "too many clients", SQLSTATE 53300).
    pub connection_limit_refusals: u64,
    /// Seconds since the last such refusal, if any.
    pub seconds_since_limit_refusal: Option<f64>,
    /// The shared level (Redis) and the bus, if configured.
    pub shared: Option<SharedStatus>,
    /// Self-tuning: the pool's automatic limit, adaptive TTLs, the latest changes.
    pub tuning: TuningStatus,
    /// The change-stream invalidator (mode `off` unless one was started).
    pub changes: ChangeStatus,
    /// The consistency monitor: per delay, entries checked against the
    /// database some time after an invalidation or write, found stale, and
    /// the nines.
    pub consistency: ConsistencyStatus,
    /// Reads on replicas (`DB_REPLICA_URLS`; `None` without): each
    /// replica's replay position and lag, reads routed, waits, fallbacks
    /// to the primary.
    pub replicas: Option<crate::ReplicasStatus>,
}
