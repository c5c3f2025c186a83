//! The advisor: rules that turn a [`Status`] into recommendations and alerts.
//!
//! Plain rules over the status figures, each with its threshold in
//! [`AdvisorConfig`]. Each piece of advice
//! carries the figure that triggered it and the threshold it crossed, so an
//! operator can see how far off things are. Recommendations say what to
//! change; alerts say something is wrong now.

use serde::Serialize;

use crate::{breaker::CircuitState, config::AdvisorConfig, status::Status};

/// The knob most advice is about, named as the environment names it.
const POOL_MAX: &str = crate::env::POOL_MAX.name;
/// The knob that lets TTLs follow each class's reads and writes.
const ADAPTIVE_TTL: &str = crate::env::CACHE_ADAPTIVE_TTL.name;

/// What a piece of advice is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub enum AdviceKind {
    /// Hit rate below target: cache entries live longer.
    IncreaseCacheTtl,
    /// Average response above target: look at the slow queries.
    OptimizeQueries,
    /// Many queries queued: the pool is too small for the load.
    IncreasePoolSize,
    /// Every connection busy with callers waiting.
    PoolExhausted,
    /// p99 latency above the alert threshold.
    SlowResponses,
    /// Hit rate far below target.
    LowCacheEfficiency,
    /// The database is unreachable and the circuit is open.
    CircuitOpen,
    /// Connections held past the leak threshold.
    ConnectionLeak,
    /// The pool may open more connections than the database can give it.
    PoolExceedsDatabaseLimit,
    /// The database refused connections lately: it is at its connection limit.
    DatabaseConnectionLimit,
    /// `max_slot_wal_keep_size` is unlimited: the change stream's slot can
    /// fill the database's disk if nobody consumes it.
    UnboundedSlotWal,
    /// The change stream's slot retains more WAL than
    /// [`CHANGE_LAG_ALERT_BYTES`]: its consumer is behind or stalled.
    ChangeStreamLag,
    /// The consistency monitor found cached entries that differ from the
    /// database (until the metrics are reset).
    StaleEntries,
}

/// Retained WAL above which the change stream's lag alert fires (64 MiB).
pub const CHANGE_LAG_ALERT_BYTES: u64 = 64 << 20;

/// How urgent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Severity {
    /// A change worth making.
    Recommendation,
    /// Something is degraded.
    Warning,
    /// Something is failing.
    Critical,
}

/// One recommendation or alert.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Advice {
    /// What it is about.
    pub kind: AdviceKind,
    /// How urgent.
    pub severity: Severity,
    /// What to do, for a person.
    pub message: String,
    /// The figure that triggered it.
    pub observed: f64,
    /// The threshold it crossed.
    pub threshold: f64,
    /// The setting to change and the value to give it, when the advice is
    /// that concrete (`None` for alerts about the database or the code).
    pub setting: Option<Setting>,
}

/// A knob and the value advice suggests for it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Setting {
    /// The environment variable, e.g. `DB_POOL_MAX`.
    pub knob: &'static str,
    /// The value to set it to.
    pub value: String,
}

impl Advice {
    fn set(mut self, knob: &'static str, value: impl ToString) -> Self {
        self.setting = Some(Setting {
            knob,
            value: value.to_string(),
        });
        self
    }
}

impl Advice {
    /// True for alerts (warning or critical), false for recommendations.
    pub fn is_alert(&self) -> bool {
        self.severity > Severity::Recommendation
    }

    /// Writes the advice to the log at a level matching its severity.
    pub fn log(&self) {
        match self.severity {
            Severity::Recommendation => {
                tracing::info!(kind = ?self.kind, observed = self.observed, threshold = self.threshold, "{}", self.message)
            }
            Severity::Warning => {
                tracing::warn!(kind = ?self.kind, observed = self.observed, threshold = self.threshold, "{}", self.message)
            }
            Severity::Critical => {
                tracing::error!(kind = ?self.kind, observed = self.observed, threshold = self.threshold, "{}", self.message)
            }
        }
    }
}

/// How long after the database last refused a connection for being full
/// the alert stays up.
const LIMIT_REFUSAL_ALERT_SECS: f64 = 60.0;

/// Applies every rule to `s`.
pub fn advise(s: &Status, t: &AdvisorConfig) -> Vec<Advice> {
    let mut out = Vec::new();
    cache_rules(s, t, &mut out);
    latency_rules(s, t, &mut out);
    queue_rules(s, t, &mut out);
    database_rules(s, &mut out);
    leak_rule(s, &mut out);
    change_rules(s, &mut out);
    consistency_rule(s, &mut out);
    out
}

/// Stale entries found by the consistency monitor: something writes the
/// database without the caches hearing of it.
fn consistency_rule(s: &Status, out: &mut Vec<Advice>) {
    let c = &s.consistency;
    let Some(w) = c.within.iter().find(|w| w.stale > 0) else {
        return;
    };
    out.push(advice(
        AdviceKind::StaleEntries,
        Severity::Warning,
        w.stale as f64,
        0.0,
        format!(
            "the consistency monitor found {} of {} cached entries checked {} after an \
             invalidation or write still differing from the database (latest: {}): a writer \
             around this server whose changes no invalidation carries (the change stream off \
             or behind?)",
            w.stale,
            w.checked,
            w.within,
            c.last_stale.as_deref().unwrap_or("?")
        ),
    ));
}

/// The change stream's slot: unbounded WAL retention, lag.
fn change_rules(s: &Status, out: &mut Vec<Advice>) {
    let c = &s.changes;
    if c.wal_keep_unbounded {
        out.push(advice(
            AdviceKind::UnboundedSlotWal,
            Severity::Warning,
            -1.0,
            0.0,
            "max_slot_wal_keep_size is -1 (unlimited): a replication slot nobody consumes \
             keeps WAL until the disk is full; set it, e.g. ALTER SYSTEM SET \
             max_slot_wal_keep_size = '1GB'"
                .into(),
        ));
    }
    if let Some(lag) = c.lag_bytes.filter(|l| *l > CHANGE_LAG_ALERT_BYTES) {
        out.push(advice(
            AdviceKind::ChangeStreamLag,
            Severity::Warning,
            lag as f64,
            CHANGE_LAG_ALERT_BYTES as f64,
            format!(
                "the change stream's slot retains {} MiB of WAL: its consumer is behind, \
                 so writes made around this server reach the caches late",
                lag >> 20
            ),
        ));
    }
}

/// One piece of advice, its figures before its message as the rules name them.
fn advice(
    kind: AdviceKind,
    severity: Severity,
    observed: f64,
    threshold: f64,
    message: String,
) -> Advice {
    Advice {
        kind,
        severity,
        message,
        observed,
        threshold,
        setting: None,
    }
}

/// Hit rate below target (a recommendation, unless adaptive TTLs already
/// act on it) or far below it (an alert).
fn cache_rules(s: &Status, t: &AdvisorConfig, out: &mut Vec<Advice>) {
    let lookups = s.cache_hits + s.cache_misses;
    let tuned = s.tuning.ttl_classes.is_some();
    if lookups >= t.min_lookups && s.cache_hit_rate < t.min_hit_rate && !tuned {
        out.push(
            advice(
                AdviceKind::IncreaseCacheTtl,
                Severity::Recommendation,
                s.cache_hit_rate,
                t.min_hit_rate,
                format!(
                    "cache hit rate is {:.1}% (target {:.0}%): let TTLs follow each key class ({ADAPTIVE_TTL}=true), or lengthen the cache TTL or size",
                    s.cache_hit_rate, t.min_hit_rate
                ),
            )
            .set(ADAPTIVE_TTL, true),
        );
    }
    if lookups >= t.min_lookups && s.cache_hit_rate < t.alert_hit_rate {
        out.push(advice(
            AdviceKind::LowCacheEfficiency,
            Severity::Warning,
            s.cache_hit_rate,
            t.alert_hit_rate,
            format!(
                "cache efficiency is low: {:.1}% hits (alert below {:.0}%); check that keys are stable and TTLs are not too short",
                s.cache_hit_rate, t.alert_hit_rate
            ),
        ));
    }
}

/// Mean response above target; p99 above the alert threshold.
fn latency_rules(s: &Status, t: &AdvisorConfig, out: &mut Vec<Advice>) {
    if s.latency_ms.count > 0 && s.average_response_time > t.max_average_response_ms {
        out.push(advice(
            AdviceKind::OptimizeQueries,
            Severity::Recommendation,
            s.average_response_time,
            t.max_average_response_ms,
            format!(
                "average response time is {:.1} ms (target {:.0} ms): optimise the slowest queries (indexes, fewer round trips)",
                s.average_response_time, t.max_average_response_ms
            ),
        ));
    }
    if s.latency_ms.count > 0 && s.latency_ms.p99 > t.slow_p99_ms {
        out.push(advice(
            AdviceKind::SlowResponses,
            Severity::Warning,
            s.latency_ms.p99,
            t.slow_p99_ms,
            format!(
                "slow responses: p99 is {:.1} ms (alert above {:.0} ms)",
                s.latency_ms.p99, t.slow_p99_ms
            ),
        ));
    }
}

/// Queries waiting for a connection (a recommendation, unless automatic
/// sizing can still grow the pool itself); every connection busy.
fn queue_rules(s: &Status, t: &AdvisorConfig, out: &mut Vec<Advice>) {
    let auto_has_room = s
        .tuning
        .pool
        .as_ref()
        .is_some_and(|p| p.limit < p.max as usize);
    let suggested = suggested_pool(s);
    let current = s.tuning.pool.as_ref().map_or(s.max_connections, |p| p.max);
    if s.pending_requests > t.max_pending && !auto_has_room && suggested > current {
        out.push(
            advice(
                AdviceKind::IncreasePoolSize,
                Severity::Recommendation,
                s.pending_requests as f64,
                t.max_pending as f64,
                format!(
                    "{} queries are waiting for a connection (target at most {}): raise {POOL_MAX} to {suggested} if the database has headroom",
                    s.pending_requests, t.max_pending
                ),
            )
            .set(POOL_MAX, suggested),
        );
    }
    // Below its maximum, the automatic limit holds callers at the gate on
    // purpose (the database would only queue them itself).
    if s.pending_requests > 0 && s.active_connections >= s.max_connections && !auto_has_room {
        out.push(advice(
            AdviceKind::PoolExhausted,
            Severity::Critical,
            s.active_connections as f64,
            s.max_connections as f64,
            format!(
                "connection pool exhausted: all {} connections busy and {} queries waiting; raise {POOL_MAX} if the database has headroom, or look for slow queries and suspected leaks holding connections",
                s.max_connections, s.pending_requests
            ),
        ));
    }
}

/// The pool size to suggest: half again as many, and at least enough for
/// the queue, within the database's budget when it is known (no more than
/// the current size when the budget allows nothing more).
fn suggested_pool(s: &Status) -> u32 {
    let current = s.tuning.pool.as_ref().map_or(s.max_connections, |p| p.max);
    let more = (current / 2)
        .max(1)
        .max(s.pending_requests.min(u64::from(current)) as u32);
    let want = current + more;
    s.connection_budget
        .map_or(want, |b| want.min(b.max(current)))
}

/// The circuit open; the pool larger than the database allows; recent
/// refusals for being full.
fn database_rules(s: &Status, out: &mut Vec<Advice>) {
    if s.circuit != CircuitState::Closed {
        out.push(advice(
            AdviceKind::CircuitOpen,
            Severity::Critical,
            s.circuit_opens as f64,
            0.0,
            "database unreachable: the circuit breaker is open; callers fail fast or get stale cache entries".into(),
        ));
    }
    if let Some(budget) = s.connection_budget.filter(|b| s.max_connections > *b) {
        out.push(advice(
            AdviceKind::PoolExceedsDatabaseLimit,
            Severity::Warning,
            s.max_connections as f64,
            budget as f64,
            format!(
                "the pool may open {} connections but the database can give it only {budget}: lower {POOL_MAX} or raise the database's max_connections",
                s.max_connections
            ),
        ));
    }
    if let Some(ago) = s
        .seconds_since_limit_refusal
        .filter(|ago| *ago <= LIMIT_REFUSAL_ALERT_SECS)
    {
        out.push(advice(
            AdviceKind::DatabaseConnectionLimit,
            Severity::Critical,
            s.connection_limit_refusals as f64,
            0.0,
            format!(
                "the database refused a connection {ago:.0} s ago because it is at its connection limit ({} refusals in all): other clients of the database may be locked out too; lower {POOL_MAX} here or in other services",
                s.connection_limit_refusals
            ),
        ));
    }
}

/// Connections held past the leak threshold.
fn leak_rule(s: &Status, out: &mut Vec<Advice>) {
    if !s.suspected_leaks.is_empty() {
        out.push(advice(
            AdviceKind::ConnectionLeak,
            Severity::Warning,
            s.suspected_leaks.len() as f64,
            0.0,
            format!(
                "{} connection(s) held past the leak threshold, by: {}",
                s.suspected_leaks.len(),
                s.suspected_leaks
                    .iter()
                    .map(|l| l.key.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    }
}

#[cfg(test)]
mod tests;
