// The README's and the examples' code runs as doc tests on SQLite in
// memory: built without the `sqlite` feature, they are left out.
#![cfg_attr(feature = "sqlite", doc = include_str!("../README.md"))]
#![cfg_attr(
    not(feature = "sqlite"),
    doc = "# hpdb\n\nA front for a sqlx pool (see the README; its examples and the \
           ones below run on SQLite, a feature this build leaves out)."
)]
//!
//! ## Where things are
//!
//! [`Manager`] (built by [`ManagerBuilder`] from a [`ManagerConfig`]) runs
//! queries: [`Manager::execute_query`] with [`QueryOptions`] and a
//! [`Priority`], [`Manager::execute_query_traced`] (the [`Source`] too),
//! [`Manager::execute_query_then`] (work after the connection is given
//! back). Everything else, which names no database type, is [`Control`]'s,
//! and a `Manager` dereferences to its `Control`: invalidation
//! ([`Control::invalidate`], [`Control::invalidate_tag`],
//! [`Control::clear_cache`], each returning an [`Invalidation`] with its
//! [`Delivery`]) and reports ([`Control::status`]: [`Status`];
//! [`Control::advice`]: [`Advice`]). [`BatchLoader`] batches keyed loads.
//! The consistency monitor checks cached entries against the database
//! after invalidations and writes, through the application's verifiers
//! ([`Control::verify_prefix`], a [`Verdict`]; figures in
//! [`ConsistencyStatus`]).
//! Errors are one [`Error`] enum ([`TimeoutPhase`] says which phase ran
//! out); [`BuildError`] and [`ConfigError`] are start-up's. `postgres`
//! holds what only PostgreSQL needs, `mysql` what only MySQL and MariaDB
//! need, `sqlite` SQLite's watch for other processes' commits (each behind its feature, see the README's "Features"), [`tuning`] the self-tuning
//! algorithms, [`env`](mod@env) the table of environment variables.
//!
#![cfg_attr(feature = "sqlite", doc = include_str!("examples.md"))]
#![forbid(unsafe_code)]

mod admission;
mod advisor;
mod batch;
mod breaker;
mod cache;
pub mod changes;
mod config;
mod consistency;
mod control;
mod deadline;
mod error;
mod invalidation;
mod io_runtime;
mod leak;
mod manager;
mod metrics;
#[cfg(feature = "mysql")]
pub mod mysql;
mod options;
#[cfg(feature = "postgres")]
pub mod postgres;
mod query;
mod redact;
mod refresh;
mod replica;
mod shared;
mod single_flight;
#[cfg(feature = "sqlite")]
pub mod sqlite;
mod stamp;
mod status;
pub mod tuning;

pub use advisor::{advise, Advice, AdviceKind, Setting, Severity, CHANGE_LAG_ALERT_BYTES};
pub use batch::{BatchFn, BatchLoader};
pub use breaker::CircuitState;
pub use cache::memory::MemoryCache;
pub use cache::{CacheEntry, CacheLayer, CacheStats, CacheValue};
pub use config::env;
pub use config::{
    AdmissionConfig, AdvisorConfig, BatchConfig, CacheConfig, CachePolicy, ConfigError,
    ConsistencyConfig, HealthConfig, LeakConfig, ManagerConfig, PoolConfig, ReplicaConfig,
    SharedConfig,
};
pub use consistency::{nines, ConsistencyStatus, Verdict, VerifyError, VerifyFuture, WithinStatus};
pub use control::{health::HealthReport, Control, ReadMark};
pub use deadline::StatementDeadline;
pub use error::{Error, TimeoutPhase};
pub use leak::SuspectedLeak;
pub use manager::builder::{BuildError, ManagerBuilder};
pub use manager::{Manager, WeakManager};
pub use metrics::{Bucket, Distribution, LatencyRecorder, Percentiles, BUCKETS_MS};
pub use options::{Priority, QueryOptions, Source};
pub use query::{QueryFn, QueryResult};
pub use redact::redacted_url;
pub use refresh::RefreshStatus;
pub use replica::{ReplicaStatus, ReplicasStatus, FLOOR_NAMES};
pub use shared::api::{Delivery, Invalidation, Versioned};
pub use shared::lock::TagLocks;
pub use shared::status::SharedStatus;
pub use stamp::Stamp;
pub use status::Status;
pub use tuning::{PoolTuningStatus, TuningStatus};
