//! Every knob of the manager, with its default.
//!
//! [`ManagerConfig`] is a plain struct: `ManagerConfig::default()` is the
//! documented defaults below (and valid); change what you need, or fill it
//! from the environment with [`ManagerConfig::from_env`].
//! [`ManagerConfig::validate`] rejects bad combinations at start-up with a
//! message that names the offending knob by its variable and field.
//!
//! Environment variables: [`env::ENV_VARS`] names each one with the field
//! it sets, what it does and its unit (durations in milliseconds); this
//! module is the only place they are read. `cargo run -p hpdb --example
//! env_table` prints them as a Markdown table with their defaults.

use std::{str::FromStr, time::Duration};

use serde::Serialize;

pub mod env;
mod validate;

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
    /// Let the concurrency controller (`tuning::concurrency`) choose how many
    /// queries run at once, within `[min_connections, max_connections]`,
    /// from the database's service time and the queue at the gate (default
    /// off). Set `max_connections` to what the database can give this
    /// process; the controller finds how much of it pays.
    pub auto_size: bool,
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
    /// Prepared statements each connection keeps (default 100, sqlx's own
    /// default). Applied to PostgreSQL connections made through
    /// `postgres::PgTarget` (feature `postgres`). 0 turns the cache
    /// off and puts the manager in pooler-safe mode, as `?pgbouncer=true`
    /// does: set it behind a transaction-mode pooler (PgBouncer), where a
    /// statement prepared on one server connection is missing or taken on
    /// the next; each query then costs two more round trips (see
    /// `hpdb::postgres`).
    pub statement_cache_capacity: usize,
    /// Run the work that touches connections (taking, opening, the query's
    /// round trips) on hpdb's own I/O threads, so that answers are read as
    /// they arrive even when the application's runtime is saturated
    /// (default on; `DB_IO_THREADS`). See `io_runtime`.
    pub io_threads: bool,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            min_connections: 2,
            max_connections: 10,
            auto_size: false,
            max_connections_ceiling: None,
            idle_timeout: Duration::from_secs(30),
            acquire_timeout: Duration::from_secs(10),
            max_concurrent_opens: 2,
            max_lifetime: Some(Duration::from_secs(30 * 60)),
            statement_cache_capacity: 100,
            io_threads: true,
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
    /// Least recently used.
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
    /// Most entries held (default 65,536). Each entry is charged at least
    /// `max_bytes / max_entries` bytes (1 KiB by default), so with the
    /// defaults the byte bound is what binds for anything of 1 KiB or more
    /// (a profile aggregate is about 3 KB: some 20,000 of them fit), and
    /// the entry bound only for small values.
    pub max_entries: u64,
    /// Most bytes held, measured as the JSON size of each result
    /// (default 64 MiB).
    pub max_bytes: u64,
    /// Time to live of an entry unless the query gives its own (default 5 min).
    pub ttl: Duration,
    /// Longest TTL a query may ask for (default 1 h); longer ones are clamped.
    pub max_ttl: Duration,
    /// Let the TTL of entries stored without one of their own follow each
    /// key class's reads and writes (`tuning::ttl`): `ttl` while a class is
    /// new, longer for read-mostly classes (up to `max_ttl`), shorter or
    /// not cached at all for classes written about as often as read
    /// (default off). Invalidation stays what keeps results fresh; the TTL
    /// only caps how long a missed invalidation could last.
    pub adaptive_ttl: bool,
    /// After its TTL an entry is kept this much longer, served only when the
    /// database is unavailable (stale-if-error). Default 60 s; zero disables.
    pub stale_grace: Duration,
    /// A hit in this last part (percent) of an entry's TTL may refresh it
    /// in the background, with XFetch's probability, which rises towards
    /// the expiry (default 20; 0 turns refresh-ahead off). Hot keys are
    /// then refreshed before they expire, and keys filled together do not
    /// expire together (see the `refresh` module).
    pub refresh_ahead_percent: u32,
    /// An entry expired less than this long ago is served
    /// (`Source::Revalidating`) while one refresh of it runs in the
    /// background, so a TTL never puts a query in a reader's path; never an
    /// entry an invalidation has passed (default 5 min, the default TTL
    /// again; zero turns it off). It is served past its TTL only to the
    /// reads that arrive while its refresh runs (or, when no refresh can
    /// start, until one can): a key read rarely gets its stale value once,
    /// then the fresh one. Short graces turn the rare keys of a short TTL
    /// into misses: with a 20 s TTL and a 30 s grace, a 60 s run at 256
    /// users hit 90.8% instead of 97.1% (issue 22).
    pub revalidate_grace: Duration,
    /// Most background refreshes running at once (default 2), each at low
    /// priority and none while a query waits for a connection; 0 turns off
    /// both refresh-ahead and stale-while-revalidate.
    pub max_refreshes: usize,
    /// How often expired entries are swept out (default 60 s).
    pub sweep_interval: Duration,
    /// Eviction policy (default TinyLFU: it keeps frequently used entries
    /// over merely recent ones, which wins on skewed, Zipf-like workloads;
    /// LRU is the choice for workloads that scan).
    pub policy: CachePolicy,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            max_entries: 65_536,
            max_bytes: 64 * 1024 * 1024,
            ttl: Duration::from_secs(300),
            max_ttl: Duration::from_secs(3600),
            adaptive_ttl: false,
            stale_grace: Duration::from_secs(60),
            refresh_ahead_percent: 20,
            revalidate_grace: Duration::from_secs(300),
            max_refreshes: 2,
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
#[derive(Debug, Clone, Serialize)]
pub struct ManagerConfig {
    /// Pool sizing and timeouts.
    pub pool: PoolConfig,
    /// Default deadline of a whole `execute_query` call, queueing included
    /// (default 15 s: below a typical HTTP request timeout, so a caller
    /// hears the database's verdict before its own client gives up).
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
    /// The shared cache level in Redis and the cross-instance bus.
    pub shared: SharedConfig,
    /// SQLite only: how often the writer connection reads `PRAGMA
    /// data_version` while no write uses it, so that another process's
    /// commit drops the cache within about this long (default 250 ms; each
    /// write checks too). `0` turns the watch off: writes go through the
    /// pool, and other processes' writes stay cached until their TTL. The
    /// watch exists only on managers built with
    /// `ManagerBuilder::connect_sqlite` (`gistfans` does); `connect` and
    /// `connect_with` leave it off. See `sqlite`.
    pub data_version_poll: Duration,
    /// The consistency monitor (`consistency`): sampled re-reads of cached
    /// entries after invalidations and writes.
    pub consistency: ConsistencyConfig,
    /// PostgreSQL streaming replicas that reads may use (`replica`).
    pub replica: ReplicaConfig,
}

/// Streaming replicas of a PostgreSQL primary: reads run there once the
/// replica has replayed every write they must see (see the `replica`
/// module). Off while `urls` is empty.
#[derive(Debug, Clone, Serialize)]
pub struct ReplicaConfig {
    /// One URL per replica (`DB_REPLICA_URLS`, comma-separated); empty: every
    /// query goes to the primary.
    #[serde(serialize_with = "redacted_all")]
    pub urls: Vec<String>,
    /// Longest a read waits for a replica to replay what it must see before
    /// it goes to the primary (default 10 ms).
    pub wait: Duration,
    /// A replica further behind than this leaves the rotation, and comes
    /// back once under half of it (default 5 s). Reads with a floor are
    /// exact whatever the lag; this bounds how old the data of a read
    /// without one (nobody wrote what it reads lately) may be.
    pub max_lag: Duration,
    /// How often each replica's replay position is read (default 10 ms; a
    /// waiting read also asks for one at once).
    pub poll: Duration,
}

impl Default for ReplicaConfig {
    fn default() -> Self {
        Self {
            urls: Vec::new(),
            wait: Duration::from_millis(10),
            max_lag: Duration::from_secs(5),
            poll: Duration::from_millis(10),
        }
    }
}

fn redacted_all<S: serde::Serializer>(urls: &[String], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(urls.iter().map(|u| crate::redact::redacted_url(u)))
}

/// The consistency monitor: after an invalidation or an update in place,
/// a sample of the keys it touched is checked against the database at
/// two delays (see the `consistency` module). Checks run only for keys
/// whose family has a verifier (`Control::verify_prefix`).
#[derive(Debug, Clone, Serialize)]
pub struct ConsistencyConfig {
    /// Percent of the keys touched by invalidations and writes that are
    /// checked (default 1; 0 turns the monitor off). Each check costs one
    /// re-read of the entry's data at low priority, per delay.
    pub sample_percent: f64,
    /// The first check's delay after the event (default 1 s): what "nines
    /// within 1 s" counts.
    pub first_delay: Duration,
    /// The second check's delay (default 10 s; 0: no second check); longer
    /// than the first.
    pub second_delay: Option<Duration>,
    /// Most checks waiting for their time (default 1,024); a key sampled
    /// while it is full is dropped and counted.
    pub queue: usize,
    /// Most checks running at once (default 1). Checks also wait for none
    /// of the gate's callers to be queued: one due meanwhile is skipped
    /// and counted, never in the way of real traffic.
    pub max_checks: usize,
}

impl Default for ConsistencyConfig {
    fn default() -> Self {
        Self {
            sample_percent: 1.0,
            first_delay: Duration::from_secs(1),
            second_delay: Some(Duration::from_secs(10)),
            queue: 1024,
            max_checks: 1,
        }
    }
}

/// The shared cache level (Redis) and the invalidation bus between
/// instances; off unless a URL is set.
#[derive(Debug, Clone, Serialize)]
pub struct SharedConfig {
    /// `redis://host:6379` (one node), `redis+cluster://h1:7000,h2:7001` or
    /// several `redis://` URLs separated by commas (a Cluster); `None`: no
    /// shared level, this instance caches in process only.
    #[serde(serialize_with = "redacted")]
    pub url: Option<String>,
    /// Prefix of every Redis name, so that several applications (or
    /// several test runs) can share one Redis (default `hpdb`).
    pub namespace: String,
    /// A reader's budget for one Redis call (default 50 ms): a Redis slower
    /// than the budget is skipped, never waited on. The budget follows the
    /// calls' latency up to four times this (a busy machine is not a Redis
    /// away); writers and background steps get the four times. A reader's
    /// call past its budget is not cancelled: it finishes in the background
    /// and counts as slow; only one with no answer within the four times
    /// counts as a miss (and towards Redis's breaker).
    pub call_timeout: Duration,
    /// How long an instance keeps serving in-process entries while it cannot
    /// confirm that it has every invalidation (default 1 s): the bound on
    /// staleness when the bus is down.
    pub bus_lease: Duration,
    /// How long the first instance to miss a key may fill it before the
    /// others stop waiting and query too (default 2 s).
    pub fill_lease: Duration,
    /// How long an invalidation (and a write's cache step) waits for every
    /// other live instance to confirm it has applied it (default 1 s, the
    /// bus lease; 0: do not wait). With the wait at least the bus lease,
    /// once a write is acknowledged no instance serves data from before
    /// it: each has applied it, or stops serving its older entries.
    pub delivery_wait: Duration,
}

fn redacted<S: serde::Serializer>(url: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    match url {
        Some(u) => s.serialize_some(&crate::redact::redacted_url(u)),
        None => s.serialize_none(),
    }
}

impl Default for SharedConfig {
    fn default() -> Self {
        Self {
            url: None,
            namespace: "hpdb".into(),
            call_timeout: Duration::from_millis(50),
            bus_lease: Duration::from_secs(1),
            fill_lease: Duration::from_secs(2),
            delivery_wait: Duration::from_secs(1),
        }
    }
}

/// A configuration value that cannot be used; the message names the knob.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(pub String);

impl Default for ManagerConfig {
    fn default() -> Self {
        Self {
            pool: PoolConfig::default(),
            query_timeout: Duration::from_secs(15),
            admission: AdmissionConfig::default(),
            batch: BatchConfig::default(),
            cache: CacheConfig::default(),
            health: HealthConfig::default(),
            leak: LeakConfig::default(),
            advisor: AdvisorConfig::default(),
            shared: SharedConfig::default(),
            data_version_poll: Duration::from_millis(250),
            consistency: ConsistencyConfig::default(),
            replica: ReplicaConfig::default(),
        }
    }
}

impl ManagerConfig {
    /// The defaults; the same as `ManagerConfig::default()`.
    pub fn new() -> Self {
        Self::default()
    }
}
