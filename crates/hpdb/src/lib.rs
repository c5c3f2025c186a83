#![doc = include_str!("../README.md")]
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
//! Errors are one [`Error`] enum ([`TimeoutPhase`] says which phase ran
//! out); [`BuildError`] and [`ConfigError`] are start-up's. [`postgres`]
//! holds what only PostgreSQL needs, [`tuning`] the self-tuning
//! algorithms, [`env`](mod@env) the table of environment variables.
//!
//! ## More examples
//!
//! Each runs as a doc test on SQLite in memory: `sqlite::memory:` gives a
//! manager a database of its own, shared by its pool's connections (sqlx
//! opens it as a named, shared-cache memory database) and kept while one of
//! them is open (the pool keeps `min_connections` open, 2 by default).
//!
//! ### Where a result came from
//!
//! ```
//! use hpdb::{Delivery, Manager, ManagerConfig, QueryOptions, Source};
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let db = Manager::<sqlx::Sqlite>::connect("sqlite::memory:", ManagerConfig::default()).await?;
//! sqlx::raw_sql(
//!     "CREATE TABLE posts (id INTEGER PRIMARY KEY, author INTEGER NOT NULL, title TEXT);
//!      INSERT INTO posts (author, title) VALUES (7, 'hello');",
//! )
//! .execute(db.pool())
//! .await?;
//! let count = || {
//!     db.execute_query_traced("posts_of:7", QueryOptions::default().tag("author:7"), |conn| {
//!         Box::pin(async move {
//!             sqlx::query_scalar::<_, i64>("SELECT count(*) FROM posts WHERE author = 7")
//!                 .fetch_one(conn)
//!                 .await
//!         })
//!     })
//! };
//! let first = count().await?;
//! assert_eq!((*first.value, first.source), (1, Source::Database));
//! let second = count().await?;
//! assert_eq!((*second.value, second.source), (1, Source::Cache));
//!
//! // A write, then the invalidation of its tag: the next read goes to the database.
//! sqlx::query("INSERT INTO posts (author, title) VALUES (7, 'again')")
//!     .execute(db.pool())
//!     .await?;
//! let invalidation = db.invalidate_tag("author:7").await;
//! assert_eq!(invalidation.delivery(), Delivery::Local); // no shared level: this instance only
//! let third = count().await?;
//! assert_eq!((*third.value, third.source), (2, Source::Database));
//! # Ok(()) }
//! ```
//!
//! ### Many keys, one query: the batch loader
//!
//! ```
//! use std::collections::HashMap;
//!
//! use hpdb::{BatchLoader, Manager, ManagerConfig};
//! use sqlx::AssertSqlSafe;
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let db = Manager::<sqlx::Sqlite>::connect("sqlite::memory:", ManagerConfig::default()).await?;
//! # sqlx::raw_sql(
//! #     "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT NOT NULL);
//! #      INSERT INTO users VALUES (1, 'Ada'), (2, 'Grace'), (3, 'Linus');",
//! # )
//! # .execute(db.pool())
//! # .await?;
//! let names = BatchLoader::new(&db, "user_name", |conn, ids: Vec<i64>| {
//!     // Integers only: no client text reaches the SQL.
//!     let list = ids.iter().map(i64::to_string).collect::<Vec<_>>().join(",");
//!     let sql = format!("SELECT id, name FROM users WHERE id IN ({list})");
//!     Box::pin(async move {
//!         let rows: Vec<(i64, String)> = sqlx::query_as(AssertSqlSafe(sql)).fetch_all(conn).await?;
//!         Ok(rows.into_iter().collect::<HashMap<_, _>>())
//!     })
//! });
//! let found = names.load_many(&[1, 2, 3, 4]).await?;
//! let found: Vec<Option<&str>> = found.iter().map(|n| n.as_deref().map(String::as_str)).collect();
//! assert_eq!(found, [Some("Ada"), Some("Grace"), Some("Linus"), None]);
//! let status = db.status();
//! assert_eq!((status.batches, status.batched_keys), (1, 4)); // one query for four keys
//! # Ok(()) }
//! ```
//!
//! Concurrent `load(key)` calls from many tasks join the open batch the
//! same way, until it gets its connection (see [`BatchLoader`]).
//!
//! ### Admin code without the database type: `Control`
//!
//! ```
//! use hpdb::{Control, Delivery, Manager, ManagerConfig, QueryOptions, Source};
//!
//! /// What an admin endpoint or a cache maintainer holds: no sqlx type in sight.
//! async fn user_changed(control: &Control, id: i64) -> Delivery {
//!     control.invalidate_tag(&format!("user:{id}")).await.delivery()
//! }
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let db = Manager::<sqlx::Sqlite>::connect("sqlite::memory:", ManagerConfig::default()).await?;
//! let read = || {
//!     db.execute_query_traced("user:1", QueryOptions::default().tag("user:1"), |conn| {
//!         Box::pin(async move { sqlx::query_scalar::<_, i64>("SELECT 1").fetch_one(conn).await })
//!     })
//! };
//! read().await?;
//! let control: Control = db.control();
//! assert_eq!(control.peek_cached::<i64>("user:1").await.as_deref(), Some(&1));
//!
//! assert_eq!(user_changed(&control, 1).await, Delivery::Local);
//! assert!(control.peek_cached::<i64>("user:1").await.is_none());
//! assert_eq!(read().await?.source, Source::Database);
//! assert_eq!(control.status().total_queries, 2);
//! assert_eq!(control.config().pool.max_connections, 10);
//! # Ok(()) }
//! ```
//!
//! ### Explicit configuration and the builder
//!
//! [`ManagerConfig::from_env`] reads the `DB_*` and `REDIS_*` variables;
//! the same fields can be set in code, and the builder adds what the
//! environment cannot say.
//!
//! ```
//! use std::time::Duration;
//!
//! use hpdb::{BuildError, CachePolicy, Manager, ManagerConfig};
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut config = ManagerConfig::default();
//! config.pool.min_connections = 1;
//! config.pool.max_connections = 4;
//! config.query_timeout = Duration::from_secs(2);
//! config.cache.ttl = Duration::from_secs(30);
//! config.cache.policy = CachePolicy::Lru;
//! let db = Manager::<sqlx::Sqlite>::builder(config.clone())
//!     .pool_options(|o| {
//!         o.after_connect(|conn, _meta| {
//!             Box::pin(async move {
//!                 sqlx::query("PRAGMA recursive_triggers = ON").execute(conn).await?;
//!                 Ok(())
//!             })
//!         })
//!     })
//!     .connect("sqlite::memory:")
//!     .await?;
//! assert_eq!(db.status().max_connections, 4);
//! let on: i64 = sqlx::query_scalar("PRAGMA recursive_triggers").fetch_one(db.pool()).await?;
//! assert_eq!(on, 1);
//!
//! // A configuration the manager cannot run with is refused, naming its variable.
//! config.pool.min_connections = 8;
//! match Manager::<sqlx::Sqlite>::builder(config).connect("sqlite::memory:").await {
//!     Err(BuildError::Config(e)) => assert!(e.to_string().contains("DB_POOL_MIN")),
//!     Err(e) => panic!("expected a configuration error, got {e}"),
//!     Ok(_) => panic!("min_connections above max_connections was accepted"),
//! }
//! # Ok(()) }
//! ```
//!
//! ### Status and advice
//!
//! ```
//! use hpdb::{AdviceKind, Manager, ManagerConfig, QueryOptions};
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut config = ManagerConfig::default();
//! config.advisor.min_lookups = 20; // judge the hit rate after 20 lookups (default 100)
//! let db = Manager::<sqlx::Sqlite>::connect("sqlite::memory:", config).await?;
//! for i in 0..20_i64 {
//!     // Twenty different keys: every lookup a miss.
//!     db.execute_query(format!("square:{i}"), QueryOptions::default(), move |conn| {
//!         Box::pin(async move {
//!             sqlx::query_scalar::<_, i64>("SELECT ? * ?").bind(i).bind(i).fetch_one(conn).await
//!         })
//!     })
//!     .await?;
//! }
//! let status = db.status();
//! assert_eq!((status.total_queries, status.cache_misses), (20, 20));
//! assert_eq!(status.cache_hit_rate, 0.0);
//! let json = serde_json::to_value(&status)?; // what a monitoring endpoint serves
//! assert_eq!(json["totalQueries"], 20);
//!
//! let advice = db.advice();
//! for a in &advice {
//!     println!("{:?} {:?}: {}", a.severity, a.kind, a.message);
//! }
//! assert!(advice.iter().any(|a| a.kind == AdviceKind::LowCacheEfficiency && a.is_alert()));
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

mod admission;
mod advisor;
mod batch;
mod breaker;
mod cache;
pub mod changes;
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

pub use advisor::{advise, Advice, AdviceKind, Setting, Severity, CHANGE_LAG_ALERT_BYTES};
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
