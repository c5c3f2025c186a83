//! The manager: one handle in front of a sqlx pool.
//!
//! One call, [`Manager::execute_query`], runs a caller's sqlx code on a pooled
//! connection, passing through each mechanism in turn:
//!
//! ```text
//! cache lookup ─hit─▶ return
//!     │miss (a stale entry is kept aside for stale-if-error)
//! circuit breaker ─open─▶ stale entry, or CircuitOpen
//!     │
//! single-flight ─follower─▶ wait for the leader's outcome
//!     │leader
//! shared level (Redis, if configured) ─current─▶ return (and keep in process)
//!     │miss (fill lease taken, or another instance's fill waited for)
//! priority gate (queued) ─▶ sqlx pool (acquire) ─▶ closure (execute)
//!     │
//! store in cache (unless invalidated meanwhile), and in the shared level
//!     ─▶ hand outcome to followers
//! ```
//!
//! The pool is sqlx's, wrapped rather than replaced: the gate admits at most
//! `max_connections` holders, so sqlx's own queue never forms and every
//! ordering decision is ours (see the admission module). sqlx keeps doing
//! what it does well: opening, recycling, idle reaping and min maintenance.
//!
//! This file holds the handle, its shared state and the small facade
//! (configuration, cache invalidation and in-place updates, resizing). Each
//! other concern has a file of its own:
//!
//! | file | one job |
//! | --- | --- |
//! | `builder` | [`ManagerBuilder`]: configuration to a running manager |
//! | `pipeline` | `execute_query`: the path above, step by step |
//! | `acquire` | admission, a connection, running the closure on it |
//! | `health` | health checks, probes and the background tasks |
//! | `status` | the [`Status`](crate::Status) snapshot and the advice drawn from it |
//! | `shared` | the shared level (Redis) on the path, the bus's hold on the local cache, updates in place across instances, warming |
//! | `refresh` | background refreshes (refresh-ahead, stale-while-revalidate) started behind a read |

mod acquire;
mod builder;
mod health;
mod pipeline;
mod refresh;
mod shared;
mod status;
mod tuning;
mod update;

use std::{
    any::Any,
    sync::{
        atomic::{AtomicU32, Ordering},
        Arc,
    },
    time::Duration,
};

use futures::future::BoxFuture;
use sqlx::{Database, Pool};
use tokio::{task::JoinHandle, time::Instant};

pub use builder::{BuildError, ManagerBuilder};
pub use health::HealthReport;
pub(crate) use shared::{decoder, Decode};
pub use shared::{Delivery, Invalidation};
pub use tuning::{PoolTuningStatus, TuningStatus};
pub(crate) use update::Update;
pub use update::Versioned;

use crate::{
    admission::Gate,
    breaker::CircuitBreaker,
    cache::{weigh, CacheEntry, CacheLayer, CacheValue},
    config::{ConfigError, ManagerConfig},
    deadline::StatementDeadline,
    error::{Error, TimeoutPhase},
    invalidation::InvalidationLog,
    leak::LeakDetector,
    metrics::Metrics,
    options::{QueryOptions, Source},
    shared::Kind,
    single_flight::SingleFlight,
};

use pipeline::Fill;

/// A query closure: gets a connection, runs the caller's sqlx code on it.
///
/// Written as a boxed future because the future borrows the connection and
/// must be `Send`; the call site looks like
/// `|conn| Box::pin(async move { sqlx::query_as(..).fetch_all(conn).await })`.
pub trait QueryFn<DB: Database, T>:
    for<'c> FnOnce(&'c mut DB::Connection) -> BoxFuture<'c, Result<T, sqlx::Error>> + Send
{
}

impl<DB: Database, T, F> QueryFn<DB, T> for F where
    F: for<'c> FnOnce(&'c mut DB::Connection) -> BoxFuture<'c, Result<T, sqlx::Error>> + Send
{
}

/// A result and where it came from.
#[derive(Debug)]
pub struct QueryResult<T> {
    /// The result, shared with other callers of the same key.
    pub value: Arc<T>,
    /// Database, cache, a joined execution, or a stale cache entry.
    pub source: Source,
}

/// What every clone of a manager shares. Fields are private to the
/// `manager` module; the rest of the crate goes through `Manager`'s methods.
struct Inner<DB: Database> {
    pool: Pool<DB>,
    config: ManagerConfig,
    gate: Arc<Gate>,
    /// Bounds connections being opened at once (see `acquire_connection`).
    opens: Arc<tokio::sync::Semaphore>,
    min_connections: AtomicU32,
    /// Connections the database can give this pool (`u32::MAX`: unknown).
    connection_budget: AtomicU32,
    cache: Arc<dyn CacheLayer>,
    log: InvalidationLog,
    flights: SingleFlight,
    breaker: CircuitBreaker,
    leaks: Arc<LeakDetector>,
    metrics: Metrics,
    started: Instant,
    tasks: parking_lot::Mutex<Vec<JoinHandle<()>>>,
    /// How each query's deadline reaches the database, if it does.
    deadline: Option<Arc<dyn StatementDeadline>>,
    /// The shared level and bus, if configured.
    shared: Option<Arc<crate::shared::Shared>>,
    /// What self-tuning measures and changes.
    tuning: tuning::Tuning,
    /// Background refreshes: the policy, the keys being refreshed, counters.
    refreshes: Arc<crate::refresh::Refreshes>,
    /// Its pushes, until the bus starts with the background tasks.
    pushes: parking_lot::Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<redis::PushInfo>>>,
}

impl<DB: Database> Drop for Inner<DB> {
    fn drop(&mut self) {
        for t in self.tasks.get_mut().drain(..) {
            t.abort();
        }
    }
}

/// The connection manager. Cheap to clone; clones share everything.
pub struct Manager<DB: Database> {
    inner: Arc<Inner<DB>>,
}

impl<DB: Database> Clone for Manager<DB> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<DB: Database> Manager<DB> {
    /// The underlying sqlx pool, for code that must bypass the manager
    /// (migrations, the benchmark's baseline). Connections taken from it are
    /// not admitted by priority and not counted.
    pub fn pool(&self) -> &Pool<DB> {
        &self.inner.pool
    }

    /// The configuration the manager runs with.
    pub fn config(&self) -> &ManagerConfig {
        &self.inner.config
    }

    /// Drops the cached result under `key`, and makes sure a query for it
    /// that is already running cannot store or share its older result.
    /// With a shared level, other instances drop theirs too (see
    /// [`Invalidation`]). Runs to completion in a task of its own.
    pub async fn invalidate(&self, key: &str) -> Invalidation {
        self.invalidate_in_task(Kind::Key, key).await
    }

    /// Drops every cached result tagged `tag`, with the same guarantee.
    pub async fn invalidate_tag(&self, tag: &str) -> Invalidation {
        self.invalidate_in_task(Kind::Tag, tag).await
    }

    /// Drops every cached result, on every instance.
    pub async fn clear_cache(&self) -> Invalidation {
        self.invalidate_in_task(Kind::Clear, "").await
    }

    /// The shared generation bumped first (no instance serves a shared
    /// entry from before it from then on), this instance's cache next, the
    /// bus last; in a task of its own, so that a caller that goes away
    /// leaves no step undone.
    async fn invalidate_in_task(&self, kind: Kind, name: &str) -> Invalidation {
        let (this, owned) = (self.clone(), name.to_string());
        let task = tokio::spawn(async move { this.invalidate_now(kind, &owned).await });
        match task.await {
            Ok(done) => done,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            // Only a runtime shutting down cancels the task.
            Err(_) => Invalidation::unpublished(kind, name, self.inner.shared.is_some()),
        }
    }

    async fn invalidate_now(&self, kind: Kind, name: &str) -> Invalidation {
        let generation = match self.inner.shared.as_ref() {
            Some(s) => s.bump(kind, name).await,
            None => None,
        };
        self.inner.drop_local(kind, name, &[]).await;
        let mut done = Invalidation::new(kind, name, generation, self.inner.shared.is_some());
        done.announce(self.inner.shared.as_ref()).await;
        done
    }

    /// Reads the cached value under `key`, if fresh and current, without
    /// touching the database or the hit counters.
    pub async fn peek_cached<T: Send + Sync + 'static>(&self, key: &str) -> Option<Arc<T>> {
        self.peek_cached_with_ttl(key).await.map(|(value, _)| value)
    }

    /// Like [`peek_cached`](Self::peek_cached), with the time the entry has
    /// left before it expires. An update in place stores its result with
    /// that remaining time, never a fresh TTL, so that the TTL stays a bound
    /// on how long any cached value can drift from the database.
    pub async fn peek_cached_with_ttl<T: Send + Sync + 'static>(
        &self,
        key: &str,
    ) -> Option<(Arc<T>, Duration)> {
        let (value, left) = self.peek_erased(key).await?;
        Some((value.downcast::<T>().ok()?, left))
    }

    /// The cached value under `key` as stored, with its time left.
    pub(crate) async fn peek_erased(
        &self,
        key: &str,
    ) -> Option<(Arc<dyn Any + Send + Sync>, Duration)> {
        let entry = self.peek_entry(key).await?;
        let left = entry.ttl.checked_sub(entry.stored_at.elapsed())?;
        Some((entry.value, left))
    }

    /// The in-process entry under `key` if it may be served: fresh, current
    /// and, with a shared level, within the bus lease.
    /// The entry a write may update in place: current and servable, fresh
    /// or past its TTL by less than the revalidation grace (a reader would
    /// be served it while it is refreshed, so the write keeps it right
    /// rather than dropping it for the next reader to fetch).
    pub(crate) async fn peek_entry_to_update(&self, key: &str) -> Option<CacheEntry> {
        let entry = self.inner.cache.get(key).await?;
        let grace = self.inner.refreshes.policy.grace;
        let within = entry.stored_at.elapsed() < entry.ttl + grace;
        let servable = within
            && self.inner.log.is_current(key, &entry.tags, entry.seq)
            && self.may_serve(&entry);
        servable.then_some(entry)
    }

    pub(crate) async fn peek_entry(&self, key: &str) -> Option<CacheEntry> {
        let entry = self.inner.cache.get(key).await?;
        let servable = entry.is_fresh()
            && self.inner.log.is_current(key, &entry.tags, entry.seq)
            && self.may_serve(&entry);
        servable.then_some(entry)
    }

    /// Replaces the cached value under `key` (for updates in place), with
    /// the tags and TTL of `options` (the default TTL if it names none).
    pub async fn put_cached<T: CacheValue>(
        &self,
        key: impl Into<Arc<str>>,
        options: &QueryOptions,
        value: Arc<T>,
    ) {
        let key = key.into();
        let Some(size) = weigh(&key, &*value) else {
            return;
        };
        self.put_erased(key, options, value, size).await;
    }

    /// [`put_cached`](Self::put_cached) for a value already erased, whose
    /// size (as JSON, in bytes) the caller knows.
    pub(crate) async fn put_erased(
        &self,
        key: Arc<str>,
        options: &QueryOptions,
        value: Arc<dyn Any + Send + Sync>,
        size: u32,
    ) {
        let Some(ttl) = self.ttl_for(&key, options) else {
            return;
        };
        let tags: Arc<[Arc<str>]> = options.tags.clone().into();
        let since = self.inner.log.snapshot();
        let fill = Fill {
            since,
            fetched_at: std::time::Instant::now(),
            ttl,
            stamp: None,
        };
        self.store_sized(&key, &tags, &fill, value, size, None)
            .await;
    }

    /// Tells the manager how many connections the database can give this
    /// pool (its connection limit less what other clients need). The
    /// advisor alerts while the pool's maximum exceeds it. The manager
    /// cannot know this by itself: it depends on the database and on every
    /// other client of it.
    pub fn set_connection_budget(&self, budget: u32) {
        self.inner
            .connection_budget
            .store(budget, Ordering::Relaxed);
    }

    /// Changes the number of connections the gate admits at once. Must stay
    /// within `[min_connections, ceiling]`; refused while the pool sizes
    /// itself (`pool.auto_size`), whose loop owns the limit.
    pub fn resize(&self, max_connections: u32) -> Result<(), ConfigError> {
        if self.inner.config.pool.auto_size {
            return Err(ConfigError(format!(
                "the pool sizes itself ({}=true) within [{}, {}]: change those bounds instead",
                crate::env::POOL_AUTO.name,
                crate::env::POOL_MIN.name,
                crate::env::POOL_MAX.name
            )));
        }
        let ceiling = self.inner.config.pool.ceiling();
        let min = self.inner.min_connections.load(Ordering::Relaxed);
        if max_connections == 0 || max_connections > ceiling || max_connections < min {
            return Err(ConfigError(format!(
                "pool size {max_connections} is outside [{min}, {ceiling}] (min_connections, \
                 max_connections_ceiling); raise the ceiling to allow more"
            )));
        }
        self.inner.gate.set_limit(max_connections as usize);
        tracing::info!(max_connections, "pool resized");
        Ok(())
    }

    /// Clears the counters and histograms (not the cache).
    pub fn reset_metrics(&self) {
        self.inner.metrics.reset();
        self.inner.refreshes.reset();
        self.inner.leaks.reset();
    }

    /// Closes the pool: waits for connections to come back, then closes them.
    /// With a shared level, leaves the registry of live instances first
    /// (other instances' writes stop waiting for this one).
    pub async fn close(&self) {
        if let Some(s) = &self.inner.shared {
            s.leave().await;
        }
        self.inner.pool.close().await;
    }
}

/// The timeout error for `key` in `phase`, with the time since `started`.
fn timeout_error(key: &Arc<str>, phase: TimeoutPhase, started: Instant) -> Error {
    Error::Timeout {
        key: key.clone(),
        phase,
        elapsed: started.elapsed(),
    }
}
