//! The shared level's figures: [`SharedStatus`], in the manager's status.

#[cfg(feature = "redis")]
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

#[cfg(feature = "redis")]
use super::state::Shared;
#[cfg(feature = "redis")]
use crate::metrics::Distribution;
use crate::{
    breaker::CircuitState,
    metrics::{Bucket, Percentiles},
};

#[cfg(feature = "redis")]
impl Shared {
    /// A snapshot of the shared level's figures.
    pub(crate) fn status(&self) -> SharedStatus {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let c = &self.c;
        let lag = Distribution::of(&self.lag.lock(), get(&c.lag_sum_us));
        let pending = {
            let p = self.pending.lock();
            p.names.len() as u64 + u64::from(p.clear)
        };
        SharedStatus {
            target: self.redis.target().redacted(),
            cluster: self.redis.target().is_cluster(),
            circuit: self.redis.circuit(),
            bus_current: self
                .since_caught_up()
                .is_some_and(|d| d <= self.config.bus_lease),
            seconds_since_caught_up: self.since_caught_up().map(|d| d.as_secs_f64()),
            hits: get(&c.hits),
            misses: get(&c.misses),
            stores: get(&c.stores),
            refused_stale: get(&c.refused),
            leases_won: get(&c.leases_won),
            lease_waits: get(&c.lease_waits),
            published: get(&c.published),
            received: get(&c.received),
            replayed: get(&c.replayed),
            flushes: get(&c.flushes),
            reconnects: get(&c.reconnects),
            pending,
            warmed: get(&c.warmed),
            lease_refusals: get(&c.lease_refusals),
            updates_refused: get(&c.updates_refused),
            fills_dropped: get(&c.fills_dropped),
            peers: self.delivery.peers().len() as u64,
            delivery_waits: get(&c.delivery_waits),
            delivery_timeouts: get(&c.delivery_timeouts),
            lock_waits: get(&c.lock_waits),
            replaced: get(&c.replaced),
            redis_commands: get(&self.redis.health.commands),
            redis_failures: get(&self.redis.health.failures),
            redis_timeouts: get(&self.redis.health.timeouts),
            redis_slow: get(&self.redis.health.slow),
            redis_budget_ms: self.redis.health.budget.current().as_secs_f64() * 1000.0,
            seconds_since_registered: self.since_registered().map(|d| d.as_secs_f64()),
            excluded: self.excluded(),
            redis_call_ms: Distribution::of(&self.redis.health.latency.lock(), 0).percentiles,
            delivery_lag_ms: lag.percentiles,
            delivery_lag_histogram: lag.buckets,
            delivery_lag_sum_ms: lag.sum_ms,
        }
    }
}

/// The shared level's figures, in [`Status`](crate::Status).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SharedStatus {
    /// Where Redis is (passwords replaced).
    pub target: String,
    /// A Redis Cluster.
    pub cluster: bool,
    /// The breaker in front of Redis.
    pub circuit: CircuitState,
    /// The bus was caught up (nothing unapplied) within the lease.
    pub bus_current: bool,
    /// Since the last heartbeat round that caught up.
    pub seconds_since_caught_up: Option<f64>,
    /// Lookups served by the shared level.
    pub hits: u64,
    /// Lookups it could not serve.
    pub misses: u64,
    /// Fills and updates stored in it.
    pub stores: u64,
    /// Entries found but refused: a newer write or clear had passed them.
    pub refused_stale: u64,
    /// Fill leases this instance took.
    pub leases_won: u64,
    /// Misses that waited for another instance's fill.
    pub lease_waits: u64,
    /// Invalidations published.
    pub published: u64,
    /// Invalidations from other instances applied (pushed or replayed).
    pub received: u64,
    /// Of those, applied from a stream replay.
    pub replayed: u64,
    /// Times the in-process cache was emptied (clear, lost epoch, trimmed stream).
    pub flushes: u64,
    /// Times the bus found Redis again after losing it.
    pub reconnects: u64,
    /// Invalidations waiting to be published (a pending clear counts one).
    pub pending: u64,
    /// Entries copied into the in-process cache at start-up.
    pub warmed: u64,
    /// In-process entries not served because the bus was not caught up for
    /// longer than the lease and they were older than it.
    pub lease_refusals: u64,
    /// Updates in place not stored: another write (or a missing version)
    /// came between the snapshot and the write.
    pub updates_refused: u64,
    /// Fills not stored in the shared level: a write bumped a generation
    /// while they were fetched.
    pub fills_dropped: u64,
    /// Other instances seen live at the last heartbeat.
    pub peers: u64,
    /// Invalidations that waited for the other instances to confirm them.
    pub delivery_waits: u64,
    /// Of those, the ones not confirmed by all within the delivery wait.
    pub delivery_timeouts: u64,
    /// Times a writer found a tag's write lock taken and waited.
    pub lock_waits: u64,
    /// In-process entries another instance's write dropped and the bus put
    /// back from the shared level (the writer's updated values).
    pub replaced: u64,
    /// Commands sent to Redis.
    pub redis_commands: u64,
    /// Commands that failed or timed out.
    pub redis_failures: u64,
    /// Of those, the ones with no answer within their whole budget (the
    /// ceiling, four times `REDIS_TIMEOUT`; the heartbeat's: half the bus
    /// lease): the misses that count towards Redis's breaker.
    pub redis_timeouts: u64,
    /// Readers' calls answered after the reader's adaptive budget, when
    /// the reader had gone on to the database: slow, not failed (a load
    /// signal; the breaker does not count them).
    pub redis_slow: u64,
    /// A reader's budget for one Redis call now (adaptive: `REDIS_TIMEOUT`
    /// up to four times it, following the calls' latency).
    pub redis_budget_ms: f64,
    /// Seconds since this instance last registered as live (`None`:
    /// never); past three quarters of five bus leases it serves nothing
    /// from its in-process cache (see `excluded`).
    pub seconds_since_registered: Option<f64>,
    /// True while this instance serves nothing from its in-process cache
    /// because writers may have taken it for gone.
    pub excluded: bool,
    /// How long Redis calls took, as this process saw them (queueing in
    /// this process included).
    pub redis_call_ms: Percentiles,
    /// Publish to apply, other instances' invalidations.
    pub delivery_lag_ms: Percentiles,
    /// The same, as cumulative buckets.
    pub delivery_lag_histogram: Vec<Bucket>,
    /// Sum of the lags, ms.
    pub delivery_lag_sum_ms: f64,
}
