//! # hpdb — a high-performance front for a sqlx pool
//!
//! The one design decision that shapes this crate: **we wrap sqlx's pool
//! instead of replacing it, and put a priority gate in front of it** that
//! admits at most `max_connections` callers at once. sqlx never has to queue
//! anyone, so every ordering decision (priority, aging, FIFO, cancellation) is
//! ours, while sqlx keeps doing what it does well: opening, pinging,
//! recycling and reaping connections.
//!
//! Around that gate sit the other parts, each in its own module:
//!
//! | part | module | what it guarantees |
//! | --- | --- | --- |
//! | priority admission | `admission` | highest priority first, FIFO within a priority, bounded overtaking (aging), cancel-safe |
//! | keyed batching | [`BatchLoader`] | many `load(key)` calls, one `IN (…)` query |
//! | result cache | [`CacheLayer`], [`MemoryCache`] | bounded by entries and bytes, per-entry TTL, LRU or TinyLFU |
//! | refresh | `refresh` ([`RefreshStatus`]) | a TTL never puts a query in a reader's path: hot entries refreshed ahead of expiry (XFetch, spread), expired ones served within a grace while one refresh runs; never past an invalidation |
//! | invalidation | `invalidation` | no stale read after `invalidate`/`invalidate_tag` returns, even for queries already running |
//! | single-flight | `single_flight` | N concurrent callers of one key, one execution; errors shared, never cached |
//! | health | [`Control::health_check`], `breaker` | broken connections replaced, pool refilled, fail fast while the database is down, stale-if-error |
//! | leak detection | `leak` | connections held past a threshold reported with their query key |
//! | status | [`Status`] | six headline figures (connections, queue, queries, hit rate, mean response time) plus percentiles, wait histogram, counters |
//! | server-side deadlines | [`StatementDeadline`], [`postgres`] | a query past its deadline stops on the server too; PostgreSQL behind a transaction-mode pooler (PgBouncer) without prepared-statement errors |
//! | shared level and bus | `shared` (`REDIS_URL`; [`SharedConfig`], [`SharedStatus`]) | a Redis level under every instance's in-process cache (one node or a Cluster); invalidations reach every instance (streams + sharded pub/sub, replayed after a gap), confirmed to the writer before its call returns, the writer's updated values put back in each instance's cache; writes to one tag across instances take turns ([`TagLocks`]); a fill that raced a write is never served (generations); N instances missing a key make one query (fill leases); Redis down or slow never fails or hangs a call |
//! | self-tuning | [`tuning`] (`DB_POOL_AUTO`, `DB_CACHE_ADAPTIVE_TTL`; [`TuningStatus`]) | the pool's size follows the database's service time (Vegas) within `[DB_POOL_MIN, DB_POOL_MAX]`; each key class's TTL follows its reads and writes; a co-visitation model predicts what to preload; every change logged with its reason |
//! | advice | [`advise`] | recommendations (cache TTL, slow queries, pool size) and alerts (low hit rate, slow responses, exhausted pool, open circuit, leaks, connection limits), each with its figure and threshold |
//!
//! ## Consistency
//! - Strong: once `invalidate(key)` or `invalidate_tag(tag)` has returned, no
//!   call that starts afterwards on the same instance is served a result
//!   fetched before it (cached, shared or in flight); on other instances
//!   neither, once it has returned with [`Invalidation::delivered`] (it
//!   waits up to `REDIS_DELIVERY_WAIT` for every live instance to confirm),
//!   and in any case none older than the bus lease while an instance's bus
//!   has not caught up.
//! - Eventual: entry and byte bounds are enforced by moka's maintenance, so
//!   the cache can briefly hold a few entries over its bound; counters in
//!   [`Status`] are read without a global lock.
//!
//! ## Glossary
//! - **Fill lease**: the short claim (`REDIS_FILL_LEASE`) an instance takes
//!   on a missed key in the shared level, so that the others wait for its
//!   fill instead of querying too.
//! - **Bus lease**: `REDIS_BUS_LEASE`, how long an instance whose bus has
//!   not caught up may still serve its in-process entries (only those
//!   younger than it).
//! - **Caught up**: a heartbeat round found every invalidation on the bus
//!   applied here.
//! - **Confirmation**: another instance's acknowledgement that it applied a
//!   bus message; an invalidation is delivered ([`Delivery::Confirmed`])
//!   once every live instance has sent one.
//! - **Tag lock**: a write lock on a tag across instances ([`TagLocks`]).
//! - **Generation**: a key's or tag's counter in Redis, bumped by each
//!   invalidation; a shared entry's [`Stamp`] holds the ones it was read
//!   under.

//! ## Example
//! ```no_run
//! use hpdb::{Manager, ManagerConfig, Priority, QueryOptions};
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let db = Manager::<sqlx::Sqlite>::connect("sqlite::memory:", ManagerConfig::from_env()?).await?;
//! let n: std::sync::Arc<i64> = db
//!     .execute_query(
//!         "user_count",
//!         QueryOptions::default().priority(Priority::HIGH).tag("users"),
//!         |conn| Box::pin(async move { sqlx::query_scalar("SELECT 42").fetch_one(conn).await }),
//!     )
//!     .await?;
//! assert_eq!(*n, 42);
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

mod admission;
mod advisor;
mod batch;
mod breaker;
mod cache;
mod config;
mod control;
mod deadline;
mod error;
mod invalidation;
mod leak;
mod manager;
mod metrics;
mod options;
pub mod postgres;
mod query;
mod redact;
mod refresh;
mod shared;
mod single_flight;
mod stamp;
mod status;
pub mod tuning;

pub use advisor::{advise, Advice, AdviceKind, Setting, Severity};
pub use batch::{BatchFn, BatchLoader};
pub use breaker::CircuitState;
pub use cache::memory::MemoryCache;
pub use cache::{CacheEntry, CacheLayer, CacheStats, CacheValue};
pub use config::env;
pub use config::{
    AdmissionConfig, AdvisorConfig, BatchConfig, CacheConfig, CachePolicy, ConfigError,
    HealthConfig, LeakConfig, ManagerConfig, PoolConfig, SharedConfig,
};
pub use control::{health::HealthReport, Control};
pub use deadline::StatementDeadline;
pub use error::{Error, TimeoutPhase};
pub use leak::SuspectedLeak;
pub use manager::builder::{BuildError, ManagerBuilder};
pub use manager::Manager;
pub use metrics::{Bucket, Distribution, LatencyRecorder, Percentiles, BUCKETS_MS};
pub use options::{Priority, QueryOptions, Source};
pub use query::{QueryFn, QueryResult};
pub use redact::redacted_url;
pub use refresh::RefreshStatus;
pub use shared::api::{Delivery, Invalidation, Versioned};
pub use shared::lock::TagLocks;
pub use shared::status::SharedStatus;
pub use stamp::Stamp;
pub use status::Status;
pub use tuning::{PoolTuningStatus, TuningStatus};
