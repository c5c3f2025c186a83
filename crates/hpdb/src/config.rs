//! Every knob of the manager, with the seed's defaults.
//!
//! [`ManagerConfig`] is a plain struct: construct it with `Default` and change
//! what you need, or fill it from the environment with
//! [`ManagerConfig::from_env`]. [`ManagerConfig::validate`] rejects bad
//! combinations at start-up with a message that names the offending knob.
//!
//! Environment variables (all durations in milliseconds, as in the seed):
//!
//! | variable | field | default |
//! | --- | --- | --- |
//! | `DB_POOL_MIN` | `pool.min_connections` | 2 |
//! | `DB_POOL_MAX` | `pool.max_connections` | 10 |
//! | `DB_POOL_TIMEOUT` | `pool.idle_timeout` | 30000 |
//! | `DB_ACQUIRE_TIMEOUT` | `pool.acquire_timeout` | 10000 |
//! | `DB_QUERY_TIMEOUT` | `query_timeout` | 30000 |
//! | `DB_AGING_STEP` | `admission.aging_step` | 1000 |
//! | `DB_BATCH_SIZE` | `batch.max_batch_size` | 50 |
//! | `DB_BATCH_WINDOW` | `batch.window` | 100 |
//! | `DB_CACHE_SIZE` | `cache.max_entries` | 1000 |
//! | `DB_CACHE_MAX_BYTES` | `cache.max_bytes` | 67108864 |
//! | `DB_CACHE_TTL` | `cache.ttl` | 300000 |
//! | `DB_CACHE_POLICY` | `cache.policy` (`lru` or `tinylfu`) | `tinylfu` |
//! | `DB_CACHE_STALE_GRACE` | `cache.stale_grace` | 60000 |
//! | `DB_HEALTH_INTERVAL` | `health.interval` | 30000 |
//! | `DB_CIRCUIT_THRESHOLD` | `health.failure_threshold` | 5 |
//! | `DB_CIRCUIT_COOLDOWN` | `health.cooldown` | 500 |
//! | `DB_LEAK_THRESHOLD` | `leak.threshold` | 10000 |

use std::{str::FromStr, time::Duration};

use serde::Serialize;

/// Pool sizing and timeouts.
#[derive(Debug, Clone, Serialize)]
pub struct PoolConfig {
    /// Connections opened at start-up and kept open (default 2). The health
    /// monitor refills the pool to this number.
    pub min_connections: u32,
    /// Upper bound on open connections (default 10). The priority gate never
    /// admits more concurrent holders than this, so the database never sees
    /// more connections from this process.
    pub max_connections: u32,
    /// Highest size `resize` may set at run time (default: `max_connections`).
    /// The underlying sqlx pool is built with this bound.
    pub max_connections_ceiling: Option<u32>,
    /// Idle connections above the minimum are closed after this long
    /// (default 30 s; `DB_POOL_TIMEOUT`).
    pub idle_timeout: Duration,
    /// How long sqlx may take to hand over or open a connection once a caller
    /// has been admitted (default 10 s).
    pub acquire_timeout: Duration,
    /// Most connections being opened at the same time (default 2). When
    /// opening a connection is slow, admitted callers take connections that
    /// others return instead of each waiting for a new one (HikariCP's spike
    /// lesson); the pool still grows under sustained load.
    pub max_concurrent_opens: u32,
    /// Connections are recycled after this age (default 30 min), which bounds
    /// the damage of server-side memory growth and load-balancer timeouts.
    pub max_lifetime: Option<Duration>,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            min_connections: 2,
            max_connections: 10,
            max_connections_ceiling: None,
            idle_timeout: Duration::from_secs(30),
            acquire_timeout: Duration::from_secs(10),
            max_concurrent_opens: 2,
            max_lifetime: Some(Duration::from_secs(30 * 60)),
        }
    }
}

impl PoolConfig {
    /// The bound the sqlx pool is built with.
    pub fn ceiling(&self) -> u32 {
        self.max_connections_ceiling
            .unwrap_or(self.max_connections)
            .max(self.max_connections)
    }
}

/// Priority admission.
#[derive(Debug, Clone, Serialize)]
pub struct AdmissionConfig {
    /// How much waiting is worth one priority level (default 1 s). A waiter of
    /// priority `p` is never overtaken by a waiter of priority `q > p` that
    /// arrived more than `(q - p) * aging_step` after it, so low priority work
    /// never starves.
    pub aging_step: Duration,
}

impl Default for AdmissionConfig {
    fn default() -> Self {
        Self {
            aging_step: Duration::from_secs(1),
        }
    }
}

/// The keyed batch loader.
#[derive(Debug, Clone, Serialize)]
pub struct BatchConfig {
    /// Most keys in one `IN (…)` query (default 50).
    pub max_batch_size: usize,
    /// Longest time a batch stays open for more keys while it waits for a
    /// connection (default 100 ms). A batch that gets a connection earlier runs
    /// at once: nothing waits on this timer while a connection is free.
    pub window: Duration,
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self {
            max_batch_size: 50,
            window: Duration::from_millis(100),
        }
    }
}

/// Which entries the result cache evicts first when it is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CachePolicy {
    /// Least recently used, as the seed describes.
    Lru,
    /// Window TinyLFU: admits a new entry only if it is likely to be used
    /// more often than the one it would evict; better on skewed workloads.
    TinyLfu,
}

impl FromStr for CachePolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "lru" => Ok(CachePolicy::Lru),
            "tinylfu" | "tiny_lfu" | "tiny-lfu" => Ok(CachePolicy::TinyLfu),
            other => Err(format!(
                "unknown cache policy `{other}` (expected `lru` or `tinylfu`)"
            )),
        }
    }
}

/// The result cache.
#[derive(Debug, Clone, Serialize)]
pub struct CacheConfig {
    /// Most entries held (default 1000).
    pub max_entries: u64,
    /// Most bytes held, measured as the JSON size of each result
    /// (default 64 MiB).
    pub max_bytes: u64,
    /// Time to live of an entry unless the query gives its own (default 5 min).
    pub ttl: Duration,
    /// Longest TTL a query may ask for (default 1 h); longer ones are clamped.
    pub max_ttl: Duration,
    /// After its TTL an entry is kept this much longer, served only when the
    /// database is unavailable (stale-if-error). Default 60 s; zero disables.
    pub stale_grace: Duration,
    /// How often expired entries are swept out (default 60 s).
    pub sweep_interval: Duration,
    /// Eviction policy (default TinyLFU: on GistFans' Zipf workload it beat
    /// the seed's LRU by 1.3 to 3 points of hit rate; see BENCHMARKS.md).
    pub policy: CachePolicy,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            max_entries: 1000,
            max_bytes: 64 * 1024 * 1024,
            ttl: Duration::from_secs(300),
            max_ttl: Duration::from_secs(3600),
            stale_grace: Duration::from_secs(60),
            sweep_interval: Duration::from_secs(60),
            policy: CachePolicy::TinyLfu,
        }
    }
}

/// Health monitoring and the circuit breaker.
#[derive(Debug, Clone, Serialize)]
pub struct HealthConfig {
    /// How often idle connections are pinged and the pool refilled (default 30 s).
    pub interval: Duration,
    /// Longest a ping may take before the connection counts as broken (default 5 s).
    pub ping_timeout: Duration,
    /// Consecutive connection failures that open the circuit (default 5).
    pub failure_threshold: u32,
    /// How long the circuit stays open before a probe is let through, and
    /// how often the health monitor probes while it is open (default 500 ms:
    /// a returning database is noticed within a second).
    pub cooldown: Duration,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(30),
            ping_timeout: Duration::from_secs(5),
            failure_threshold: 5,
            cooldown: Duration::from_millis(500),
        }
    }
}

/// Leak detection.
#[derive(Debug, Clone, Serialize)]
pub struct LeakConfig {
    /// A connection held longer than this is reported with its query key
    /// (default 10 s). Set it above your slowest legitimate query.
    pub threshold: Duration,
}

impl Default for LeakConfig {
    fn default() -> Self {
        Self {
            threshold: Duration::from_secs(10),
        }
    }
}

/// Thresholds of the advisor's rules.
#[derive(Debug, Clone, Serialize)]
pub struct AdvisorConfig {
    /// Below this cache hit rate (percent) a longer TTL is recommended (default 70).
    pub min_hit_rate: f64,
    /// Below this hit rate (percent) the low-efficiency alert fires (default 40).
    pub alert_hit_rate: f64,
    /// Cache advice needs at least this many lookups to mean anything (default 100).
    pub min_lookups: u64,
    /// Above this average response time (ms) query optimisation is recommended (default 500).
    pub max_average_response_ms: f64,
    /// Above this p99 (ms) the slow-response alert fires (default 1000).
    pub slow_p99_ms: f64,
    /// More queued requests than this recommend a larger pool (default 10).
    pub max_pending: u64,
}

impl Default for AdvisorConfig {
    fn default() -> Self {
        Self {
            min_hit_rate: 70.0,
            alert_hit_rate: 40.0,
            min_lookups: 100,
            max_average_response_ms: 500.0,
            slow_p99_ms: 1000.0,
            max_pending: 10,
        }
    }
}

/// The whole configuration of a [`Manager`](crate::Manager).
#[derive(Debug, Clone, Default, Serialize)]
pub struct ManagerConfig {
    /// Pool sizing and timeouts.
    pub pool: PoolConfig,
    /// Default deadline of a whole `execute_query` call (default 30 s).
    pub query_timeout: Duration,
    /// Priority admission.
    pub admission: AdmissionConfig,
    /// The keyed batch loader.
    pub batch: BatchConfig,
    /// The result cache.
    pub cache: CacheConfig,
    /// Health monitoring and the circuit breaker.
    pub health: HealthConfig,
    /// Leak detection.
    pub leak: LeakConfig,
    /// Advisor thresholds.
    pub advisor: AdvisorConfig,
}

/// A configuration value that cannot be used; the message names the knob.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(pub String);

impl ManagerConfig {
    /// The seed's defaults, with the default query timeout.
    pub fn new() -> Self {
        Self {
            query_timeout: Duration::from_secs(30),
            ..Default::default()
        }
    }

    /// Reads the `DB_*` environment variables over the defaults, then validates.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Like [`from_env`](Self::from_env), reading variables through `lookup`.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let mut c = Self::new();
        let num = |name: &str| -> Result<Option<u64>, ConfigError> {
            match lookup(name) {
                None => Ok(None),
                Some(raw) => raw.trim().parse::<u64>().map(Some).map_err(|_| {
                    ConfigError(format!("{name}=`{raw}` is not a non-negative whole number"))
                }),
            }
        };
        let ms = |name: &str| num(name).map(|v| v.map(Duration::from_millis));
        let u32_of = |name: &str| -> Result<Option<u32>, ConfigError> {
            num(name)?
                .map(|v| {
                    u32::try_from(v).map_err(|_| ConfigError(format!("{name}={v} is too large")))
                })
                .transpose()
        };

        if let Some(v) = u32_of("DB_POOL_MIN")? {
            c.pool.min_connections = v;
        }
        if let Some(v) = u32_of("DB_POOL_MAX")? {
            c.pool.max_connections = v;
        }
        if let Some(v) = ms("DB_POOL_TIMEOUT")? {
            c.pool.idle_timeout = v;
        }
        if let Some(v) = ms("DB_ACQUIRE_TIMEOUT")? {
            c.pool.acquire_timeout = v;
        }
        if let Some(v) = ms("DB_QUERY_TIMEOUT")? {
            c.query_timeout = v;
        }
        if let Some(v) = ms("DB_AGING_STEP")? {
            c.admission.aging_step = v;
        }
        if let Some(v) = num("DB_BATCH_SIZE")? {
            c.batch.max_batch_size = v as usize;
        }
        if let Some(v) = ms("DB_BATCH_WINDOW")? {
            c.batch.window = v;
        }
        if let Some(v) = num("DB_CACHE_SIZE")? {
            c.cache.max_entries = v;
        }
        if let Some(v) = num("DB_CACHE_MAX_BYTES")? {
            c.cache.max_bytes = v;
        }
        if let Some(v) = ms("DB_CACHE_TTL")? {
            c.cache.ttl = v;
        }
        if let Some(v) = ms("DB_CACHE_STALE_GRACE")? {
            c.cache.stale_grace = v;
        }
        if let Some(raw) = lookup("DB_CACHE_POLICY") {
            c.cache.policy = raw
                .parse()
                .map_err(|e: String| ConfigError(format!("DB_CACHE_POLICY: {e}")))?;
        }
        if let Some(v) = ms("DB_HEALTH_INTERVAL")? {
            c.health.interval = v;
        }
        if let Some(v) = u32_of("DB_CIRCUIT_THRESHOLD")? {
            c.health.failure_threshold = v;
        }
        if let Some(v) = ms("DB_CIRCUIT_COOLDOWN")? {
            c.health.cooldown = v;
        }
        if let Some(v) = ms("DB_LEAK_THRESHOLD")? {
            c.leak.threshold = v;
        }
        c.validate()?;
        Ok(c)
    }

    /// Rejects combinations the manager cannot run with.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |msg: String| Err(ConfigError(msg));
        let p = &self.pool;
        if p.max_connections == 0 {
            return bad("DB_POOL_MAX (pool.max_connections) must be at least 1".into());
        }
        if p.min_connections > p.max_connections {
            return bad(format!(
                "DB_POOL_MIN ({}) must not exceed DB_POOL_MAX ({})",
                p.min_connections, p.max_connections
            ));
        }
        if p.acquire_timeout.is_zero() {
            return bad("DB_ACQUIRE_TIMEOUT (pool.acquire_timeout) must be above zero".into());
        }
        if self.query_timeout.is_zero() {
            return bad("DB_QUERY_TIMEOUT (query_timeout) must be above zero".into());
        }
        if self.batch.max_batch_size == 0 {
            return bad("DB_BATCH_SIZE (batch.max_batch_size) must be at least 1".into());
        }
        if self.cache.max_entries == 0 {
            return bad("DB_CACHE_SIZE (cache.max_entries) must be at least 1".into());
        }
        if self.cache.max_bytes < self.cache.max_entries {
            return bad(format!(
                "DB_CACHE_MAX_BYTES ({}) must be at least DB_CACHE_SIZE ({})",
                self.cache.max_bytes, self.cache.max_entries
            ));
        }
        if self.cache.ttl > self.cache.max_ttl {
            return bad("DB_CACHE_TTL (cache.ttl) must not exceed cache.max_ttl".into());
        }
        if self.health.interval.is_zero() || self.cache.sweep_interval.is_zero() {
            return bad("DB_HEALTH_INTERVAL and cache.sweep_interval must be above zero".into());
        }
        if self.health.failure_threshold == 0 {
            return bad(
                "DB_CIRCUIT_THRESHOLD (health.failure_threshold) must be at least 1".into(),
            );
        }
        if self.leak.threshold.is_zero() {
            return bad("DB_LEAK_THRESHOLD (leak.threshold) must be above zero".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn from(vars: &[(&str, &str)]) -> Result<ManagerConfig, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        ManagerConfig::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn defaults_are_the_seeds_numbers() {
        let c = from(&[]).unwrap();
        assert_eq!(c.pool.min_connections, 2);
        assert_eq!(c.pool.max_connections, 10);
        assert_eq!(c.pool.idle_timeout, Duration::from_secs(30));
        assert_eq!(c.pool.acquire_timeout, Duration::from_secs(10));
        assert_eq!(c.batch.max_batch_size, 50);
        assert_eq!(c.batch.window, Duration::from_millis(100));
        assert_eq!(c.cache.max_entries, 1000);
        assert_eq!(c.cache.ttl, Duration::from_secs(300));
        assert_eq!(c.health.interval, Duration::from_secs(30));
        assert_eq!(
            c.cache.policy,
            CachePolicy::TinyLfu,
            "chosen by measurement"
        );
    }

    #[test]
    fn environment_overrides_defaults() {
        let c = from(&[
            ("DB_POOL_MIN", "1"),
            ("DB_POOL_MAX", "20"),
            ("DB_POOL_TIMEOUT", "5000"),
            ("DB_CACHE_POLICY", "LRU"),
        ])
        .unwrap();
        assert_eq!(c.pool.min_connections, 1);
        assert_eq!(c.pool.max_connections, 20);
        assert_eq!(c.pool.idle_timeout, Duration::from_secs(5));
        assert_eq!(c.cache.policy, CachePolicy::Lru);
    }

    #[test]
    fn min_above_max_is_rejected_naming_both_variables() {
        let err = from(&[("DB_POOL_MIN", "11")]).unwrap_err();
        assert!(
            err.0.contains("DB_POOL_MIN") && err.0.contains("DB_POOL_MAX"),
            "{err}"
        );
    }

    #[test]
    fn zero_max_is_rejected() {
        let err = from(&[("DB_POOL_MIN", "0"), ("DB_POOL_MAX", "0")]).unwrap_err();
        assert!(err.0.contains("DB_POOL_MAX"), "{err}");
    }

    #[test]
    fn unparsable_numbers_name_the_variable() {
        let err = from(&[("DB_POOL_TIMEOUT", "30s")]).unwrap_err();
        assert!(
            err.0.contains("DB_POOL_TIMEOUT") && err.0.contains("30s"),
            "{err}"
        );
        let err = from(&[("DB_POOL_MAX", "-1")]).unwrap_err();
        assert!(err.0.contains("DB_POOL_MAX"), "{err}");
        let err = from(&[("DB_CACHE_POLICY", "fifo")]).unwrap_err();
        assert!(err.0.contains("DB_CACHE_POLICY"), "{err}");
    }
}
