//! The manager: the seed's `HighPerformanceConnectionManager`.
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
//! priority gate (queued) ─▶ sqlx pool (acquire) ─▶ closure (execute)
//!     │
//! store in cache (unless invalidated meanwhile) ─▶ hand outcome to followers
//! ```
//!
//! The pool is sqlx's, wrapped rather than replaced: the gate admits at most
//! `max_connections` holders, so sqlx's own queue never forms and every
//! ordering decision is ours (see the admission module). sqlx keeps doing
//! what it does well: opening, recycling, idle reaping and min maintenance.

use std::{
    any::Any,
    sync::{
        atomic::{AtomicU32, Ordering},
        Arc, Weak,
    },
    time::Duration,
};

use futures::future::BoxFuture;
use serde::Serialize;
use sqlx::{
    pool::{PoolConnection, PoolOptions},
    ConnectOptions, Connection, Database, Pool,
};
use tokio::{
    task::JoinHandle,
    time::{sleep, timeout, timeout_at, Instant},
};
use tracing::Instrument;

use crate::{
    admission::{Gate, Permit},
    advisor::{self, Advice},
    breaker::{CircuitBreaker, CircuitState},
    cache::{json_size, CacheEntry, CacheLayer, MemoryCache},
    config::{ConfigError, ManagerConfig},
    error::{is_connection_error, is_connection_limit_error, Error, TimeoutPhase},
    invalidation::InvalidationLog,
    leak::LeakDetector,
    metrics::{inc, Metrics, Status},
    options::{Priority, QueryOptions, Source},
    single_flight::{self, Role, SingleFlight},
};

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

/// Failure to start a manager.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// The configuration was rejected.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The minimum connections could not be opened.
    #[error("could not open the minimum {min} connections: {source}")]
    Connect {
        /// The configured minimum.
        min: u32,
        /// The underlying sqlx error.
        #[source]
        source: sqlx::Error,
    },
}

/// What one health check found and did.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthReport {
    /// Whether the database answered.
    pub database_reachable: bool,
    /// Idle connections pinged.
    pub checked: u32,
    /// Connections that failed their ping and were closed.
    pub broken_closed: u32,
    /// Connections opened to bring the pool back to its minimum.
    pub opened: u32,
    /// Pool size after the check.
    pub pool_size: u32,
    /// The circuit breaker's state after the check.
    pub circuit: CircuitState,
    /// How long the check took, in milliseconds.
    pub took_ms: f64,
}

/// A caller's adjustment of the sqlx pool options.
type CustomizePool<DB> = Box<dyn FnOnce(PoolOptions<DB>) -> PoolOptions<DB> + Send>;

/// Builds a [`Manager`]; see [`Manager::builder`].
#[must_use]
pub struct ManagerBuilder<DB: Database> {
    config: ManagerConfig,
    cache: Option<Arc<dyn CacheLayer>>,
    customize: Option<CustomizePool<DB>>,
    background: bool,
}

impl<DB: Database> ManagerBuilder<DB> {
    /// Replaces the in-memory cache with another layer (or a stack of them).
    pub fn cache_layer(mut self, layer: Arc<dyn CacheLayer>) -> Self {
        self.cache = Some(layer);
        self
    }

    /// Adjusts the sqlx pool options after the manager has applied its
    /// configuration (for `after_connect` hooks and the like).
    pub fn pool_options(
        mut self,
        f: impl FnOnce(PoolOptions<DB>) -> PoolOptions<DB> + Send + 'static,
    ) -> Self {
        self.customize = Some(Box::new(f));
        self
    }

    /// Whether to start the health, leak and sweep tasks (default true).
    /// Tests that drive them by hand turn this off.
    pub fn background_tasks(mut self, on: bool) -> Self {
        self.background = on;
        self
    }

    /// Connects to `url` and opens the minimum connections.
    pub async fn connect(self, url: &str) -> Result<Manager<DB>, BuildError> {
        let opts = url
            .parse::<<DB::Connection as Connection>::Options>()
            .map_err(|source| BuildError::Connect {
                min: self.config.pool.min_connections,
                source,
            })?;
        self.connect_with(opts).await
    }

    /// Connects with explicit connect options and opens the minimum connections.
    pub async fn connect_with(
        self,
        opts: <DB::Connection as Connection>::Options,
    ) -> Result<Manager<DB>, BuildError> {
        let min = self.config.pool.min_connections;
        let manager = self.build_lazy(opts)?;
        manager
            .warm_up()
            .await
            .map_err(|source| BuildError::Connect { min, source })?;
        Ok(manager)
    }

    /// Builds without connecting: connections open on first use. Useful when
    /// the database may be down at start-up (the circuit breaker takes over).
    pub fn build_lazy(
        self,
        opts: <DB::Connection as Connection>::Options,
    ) -> Result<Manager<DB>, BuildError> {
        let config = self.config;
        config.validate()?;
        let p = &config.pool;
        let mut pool_options = PoolOptions::<DB>::new()
            .min_connections(p.min_connections)
            .max_connections(p.ceiling())
            .idle_timeout(Some(p.idle_timeout))
            .acquire_timeout(p.acquire_timeout)
            .max_lifetime(p.max_lifetime)
            // The health monitor pings idle connections; sqlx pings every
            // connection on release already, so a ping per acquire would only
            // add a round trip to every query.
            .test_before_acquire(false);
        if let Some(f) = self.customize {
            pool_options = f(pool_options);
        }
        let pool = pool_options.connect_lazy_with(opts);
        let cache = self
            .cache
            .unwrap_or_else(|| Arc::new(MemoryCache::new(&config.cache)));
        let inner = Arc::new(Inner {
            gate: Gate::new(p.max_connections as usize, config.admission.aging_step),
            opens: Arc::new(tokio::sync::Semaphore::new(
                p.max_concurrent_opens.max(1) as usize
            )),
            min_connections: AtomicU32::new(p.min_connections),
            connection_budget: AtomicU32::new(u32::MAX),
            log: InvalidationLog::new(config.query_timeout),
            flights: SingleFlight::default(),
            breaker: CircuitBreaker::new(config.health.failure_threshold, config.health.cooldown),
            leaks: LeakDetector::new(config.leak.threshold),
            metrics: Metrics::new(),
            started: Instant::now(),
            tasks: parking_lot::Mutex::new(Vec::new()),
            pool,
            cache,
            config,
        });
        let manager = Manager { inner };
        if self.background {
            manager.spawn_background_tasks();
        }
        Ok(manager)
    }
}

pub(crate) struct Inner<DB: Database> {
    pub(crate) pool: Pool<DB>,
    pub(crate) config: ManagerConfig,
    pub(crate) gate: Arc<Gate>,
    /// Bounds connections being opened at once (see `acquire_connection`).
    opens: Arc<tokio::sync::Semaphore>,
    min_connections: AtomicU32,
    /// Connections the database can give this pool (`u32::MAX`: unknown).
    connection_budget: AtomicU32,
    cache: Arc<dyn CacheLayer>,
    log: InvalidationLog,
    flights: SingleFlight,
    pub(crate) breaker: CircuitBreaker,
    leaks: Arc<LeakDetector>,
    pub(crate) metrics: Metrics,
    started: Instant,
    tasks: parking_lot::Mutex<Vec<JoinHandle<()>>>,
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
    pub(crate) inner: Arc<Inner<DB>>,
}

impl<DB: Database> Clone for Manager<DB> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

/// The part of a key before its first `:`, for low-cardinality span fields.
fn key_class(key: &str) -> &str {
    key.split(':').next().unwrap_or(key)
}

impl<DB: Database> Manager<DB> {
    /// Starts building a manager with `config`.
    pub fn builder(config: ManagerConfig) -> ManagerBuilder<DB> {
        ManagerBuilder {
            config,
            cache: None,
            customize: None,
            background: true,
        }
    }

    /// Connects to `url` with `config`.
    pub async fn connect(url: &str, config: ManagerConfig) -> Result<Self, BuildError> {
        Self::builder(config).connect(url).await
    }

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

    /// Runs `query` under `key`, with caching, coalescing, priority admission
    /// and a deadline as `options` say. Returns the result shared as `Arc<T>`.
    ///
    /// Cancel-safe: dropping the future leaves the queue, returns any
    /// connection, and lets followers of this call take over.
    pub async fn execute_query<T, F>(
        &self,
        key: impl Into<Arc<str>>,
        options: QueryOptions,
        query: F,
    ) -> Result<Arc<T>, Error>
    where
        T: Serialize + Send + Sync + 'static,
        F: QueryFn<DB, T>,
    {
        Ok(self.execute_query_traced(key, options, query).await?.value)
    }

    /// Like [`execute_query`](Self::execute_query), and says where the result
    /// came from (database, cache, a joined execution, or stale cache).
    pub async fn execute_query_traced<T, F>(
        &self,
        key: impl Into<Arc<str>>,
        options: QueryOptions,
        query: F,
    ) -> Result<QueryResult<T>, Error>
    where
        T: Serialize + Send + Sync + 'static,
        F: QueryFn<DB, T>,
    {
        let inner = &self.inner;
        let started = Instant::now();
        let key: Arc<str> = key.into();
        inc(&inner.metrics.c.requests);
        let budget = options.timeout.unwrap_or(inner.config.query_timeout);
        if budget > inner.config.query_timeout {
            inner.log.note_deadline(budget);
        }
        let deadline = started + budget;
        let span = tracing::debug_span!(
            "hpdb.query",
            key_class = key_class(&key),
            priority = options.priority.0,
            source = tracing::field::Empty,
        );
        let result = self
            .run(key, options, query, started, deadline)
            .instrument(span.clone())
            .await;
        inner.metrics.record_latency(started.elapsed());
        match &result {
            Ok(r) => {
                span.record("source", tracing::field::debug(r.source));
            }
            Err(e) => {
                inc(&inner.metrics.c.errors);
                if e.is_timeout() {
                    inc(&inner.metrics.c.timeouts);
                }
            }
        }
        result
    }

    async fn run<T, F>(
        &self,
        key: Arc<str>,
        options: QueryOptions,
        query: F,
        started: Instant,
        deadline: Instant,
    ) -> Result<QueryResult<T>, Error>
    where
        T: Serialize + Send + Sync + 'static,
        F: QueryFn<DB, T>,
    {
        let inner = &self.inner;
        let mut stale: Option<CacheEntry> = None;
        if options.use_cache && !options.refresh {
            if let Some(entry) = inner.cache.get(&key).await {
                if inner.log.is_current(&key, &entry.tags, entry.seq) {
                    if entry.is_fresh() {
                        inc(&inner.metrics.c.cache_hits);
                        let value = downcast::<T>(&key, entry.value)?;
                        return Ok(QueryResult {
                            value,
                            source: Source::Cache,
                        });
                    }
                    if options.stale_if_error {
                        stale = Some(entry);
                    }
                }
            }
            inc(&inner.metrics.c.cache_misses);
        }
        let serve_stale = |err: Error,
                           stale: Option<CacheEntry>|
         -> Result<QueryResult<T>, Error> {
            match stale {
                Some(entry) if err.is_unavailable() => {
                    inc(&inner.metrics.c.stale_served);
                    tracing::warn!(key = %key, error = %err, "database unavailable: serving a stale cache entry");
                    Ok(QueryResult {
                        value: downcast::<T>(&key, entry.value)?,
                        source: Source::Stale,
                    })
                }
                _ => Err(err),
            }
        };
        if let Err(open) = inner.breaker.admit() {
            return serve_stale(open, stale);
        }

        let tags: Arc<[Arc<str>]> = options.tags.clone().into();
        let mut query = Some(query);
        loop {
            let since = inner.log.snapshot();
            let role = if options.coalesce {
                Some(inner.flights.join_or_lead(&key, since, |f| {
                    inner.log.is_current(&key, &tags, f.started)
                }))
            } else {
                None
            };
            let leader = match role {
                Some(Role::Follower(rx)) => {
                    inc(&inner.metrics.c.joins);
                    match timeout_at(deadline, single_flight::wait(rx)).await {
                        Err(_) => {
                            return Err(timeout_error(&key, TimeoutPhase::Joined, started));
                        }
                        // The leader was cancelled: try again, perhaps as leader.
                        Ok(None) => continue,
                        Ok(Some(Ok(value))) => {
                            return Ok(QueryResult {
                                value: downcast::<T>(&key, value)?,
                                source: Source::Joined,
                            });
                        }
                        Ok(Some(Err(e))) => return serve_stale(e, stale),
                    }
                }
                Some(Role::Leader(guard)) => Some(guard),
                None => None,
            };
            let query = query.take().expect("only a leader runs the query, once");
            let outcome = self
                .admit_and_run(&key, options.priority, started, deadline, query)
                .await;
            return match outcome {
                Ok(value) => {
                    let value = Arc::new(value);
                    if options.use_cache {
                        self.store(&key, &options, &tags, since, value.clone())
                            .await;
                    }
                    if let Some(guard) = leader {
                        guard.finish(Ok(value.clone() as Arc<dyn Any + Send + Sync>));
                    }
                    Ok(QueryResult {
                        value,
                        source: Source::Database,
                    })
                }
                Err(e) => {
                    if let Some(guard) = leader {
                        guard.finish(Err(e.clone()));
                    }
                    serve_stale(e, stale)
                }
            };
        }
    }

    async fn store<T: Serialize + Send + Sync + 'static>(
        &self,
        key: &Arc<str>,
        options: &QueryOptions,
        tags: &Arc<[Arc<str>]>,
        since: u64,
        value: Arc<T>,
    ) {
        let inner = &self.inner;
        // Invalidated while we were fetching: this result may predate the write.
        if !inner.log.is_current(key, tags, since) {
            return;
        }
        let size = match json_size(&*value) {
            Ok(n) => u32::try_from(n).unwrap_or(u32::MAX),
            Err(e) => {
                tracing::warn!(key = %key, error = %e, "result not cached: it does not serialize");
                return;
            }
        };
        let ttl = options
            .ttl
            .unwrap_or(inner.config.cache.ttl)
            .min(inner.config.cache.max_ttl);
        let entry = CacheEntry {
            value,
            size,
            tags: tags.clone(),
            seq: since,
            stored_at: std::time::Instant::now(),
            ttl,
        };
        inner.cache.insert(key.clone(), entry).await;
        // An invalidation between the check above and the insert would
        // otherwise leave a condemned entry in the cache after its stamp
        // expires: look again, and drop what was stored if so.
        if !inner.log.is_current(key, tags, since) {
            inner.cache.invalidate(key).await;
        }
    }

    /// Waits for admission, then runs `query` on a connection.
    pub(crate) async fn admit_and_run<T, F: QueryFn<DB, T>>(
        &self,
        key: &Arc<str>,
        priority: Priority,
        started: Instant,
        deadline: Instant,
        query: F,
    ) -> Result<T, Error> {
        let queued_at = Instant::now();
        let permit = timeout_at(deadline, self.inner.gate.acquire(priority))
            .await
            .map_err(|_| timeout_error(key, TimeoutPhase::Queued, started))?;
        self.run_admitted(permit, key, queued_at, started, deadline, query)
            .await
    }

    /// Runs `query` with an admission permit already held.
    pub(crate) async fn run_admitted<T, F: QueryFn<DB, T>>(
        &self,
        permit: Permit,
        key: &Arc<str>,
        queued_at: Instant,
        started: Instant,
        deadline: Instant,
        query: F,
    ) -> Result<T, Error> {
        let inner = &self.inner;
        let mut conn = self.acquire_connection(key, started, deadline).await?;
        inner.metrics.record_wait(queued_at.elapsed());
        let _held = inner.leaks.hold(key);
        inc(&inner.metrics.c.db_queries);
        let result = match timeout_at(deadline, query(&mut *conn)).await {
            // On drop, sqlx pings the connection before reusing it, which
            // drains the interrupted query; the connection's slot in sqlx's
            // pool stays taken until then, so the database never sees more
            // than the pool's bound.
            Err(_) => Err(timeout_error(key, TimeoutPhase::Execute, started)),
            Ok(Err(e)) => {
                if is_connection_error(&e) {
                    self.connection_failed();
                    conn.close_on_drop();
                } else {
                    inner.breaker.on_success();
                }
                Err(Error::Query {
                    key: key.clone(),
                    source: Arc::new(e),
                })
            }
            Ok(Ok(v)) => {
                inner.breaker.on_success();
                Ok(v)
            }
        };
        // The connection goes back before the slot is handed on.
        drop(conn);
        drop(permit);
        result
    }

    /// Gets a connection from sqlx for an admitted caller.
    ///
    /// HikariCP's lesson: when opening a connection costs far more than a
    /// query, a caller is better served by the next connection another caller
    /// returns than by waiting for its own new one. So at most
    /// `max_concurrent_opens` connections are being opened at a time, and an
    /// admitted caller takes whichever comes first: an idle connection (polled
    /// every millisecond while none is free) or the one it started opening.
    /// An open that loses the race still completes in its own task and its
    /// connection lands idle in the pool, never thrown away half-open
    /// (sqlx #3132).
    async fn acquire_connection(
        &self,
        key: &Arc<str>,
        started: Instant,
        deadline: Instant,
    ) -> Result<PoolConnection<DB>, Error> {
        let inner = &self.inner;
        let mut opening: Option<JoinHandle<Result<PoolConnection<DB>, sqlx::Error>>> = None;
        loop {
            if let Some(conn) = inner.pool.try_acquire() {
                return Ok(conn);
            }
            if opening.is_none() {
                if let Ok(open_permit) = inner.opens.clone().try_acquire_owned() {
                    let pool = inner.pool.clone();
                    opening = Some(tokio::spawn(async move {
                        let _open_permit = open_permit;
                        open_connection(&pool).await
                    }));
                }
            }
            let poll = sleep(Duration::from_millis(1));
            let opened = match opening.as_mut() {
                Some(handle) => tokio::select! {
                    r = handle => Some(r),
                    _ = poll => None,
                    _ = tokio::time::sleep_until(deadline) => {
                        return Err(timeout_error(key, TimeoutPhase::Acquire, started));
                    }
                },
                None => tokio::select! {
                    _ = poll => None,
                    _ = tokio::time::sleep_until(deadline) => {
                        return Err(timeout_error(key, TimeoutPhase::Acquire, started));
                    }
                },
            };
            match opened {
                None => continue,
                Some(Ok(Ok(conn))) => return Ok(conn),
                Some(Err(join)) => {
                    return Err(Error::Connect {
                        key: key.clone(),
                        source: Arc::new(sqlx::Error::Io(std::io::Error::other(join.to_string()))),
                    })
                }
                Some(Ok(Err(e))) => {
                    if is_connection_limit_error(&e) {
                        inner.metrics.limit_refused();
                        tracing::error!(error = %e, "the database refused a connection: it is at its connection limit");
                    }
                    if !matches!(e, sqlx::Error::PoolClosed) {
                        self.connection_failed();
                    }
                    return Err(match e {
                        sqlx::Error::PoolTimedOut => {
                            timeout_error(key, TimeoutPhase::Acquire, started)
                        }
                        sqlx::Error::PoolClosed => Error::Closed,
                        e => Error::Connect {
                            key: key.clone(),
                            source: Arc::new(e),
                        },
                    });
                }
            }
        }
    }

    fn connection_failed(&self) {
        if self.inner.breaker.on_failure() {
            inc(&self.inner.metrics.c.circuit_opens);
        }
    }

    /// Drops the cached result under `key`, and makes sure a query for it
    /// that is already running cannot store or share its older result.
    pub async fn invalidate(&self, key: &str) {
        self.inner.log.invalidate_key(key);
        self.inner.cache.invalidate(key).await;
    }

    /// Drops every cached result tagged `tag`, with the same guarantee.
    pub async fn invalidate_tag(&self, tag: &str) {
        self.inner.log.invalidate_tag(tag);
        self.inner.cache.invalidate_tag(tag).await;
    }

    /// Drops every cached result.
    pub async fn clear_cache(&self) {
        self.inner.log.invalidate_all();
        self.inner.cache.clear().await;
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
        let entry = self.inner.cache.get(key).await?;
        let left = entry.ttl.checked_sub(entry.stored_at.elapsed())?;
        if left.is_zero() || !self.inner.log.is_current(key, &entry.tags, entry.seq) {
            return None;
        }
        Some((entry.value.downcast::<T>().ok()?, left))
    }

    /// Replaces the cached value under `key` (for updates in place), with
    /// the tags and TTL of `options` (the default TTL if it names none).
    pub async fn put_cached<T: Serialize + Send + Sync + 'static>(
        &self,
        key: impl Into<Arc<str>>,
        options: &QueryOptions,
        value: Arc<T>,
    ) {
        let key = key.into();
        let tags: Arc<[Arc<str>]> = options.tags.clone().into();
        let since = self.inner.log.snapshot();
        self.store(&key, options, &tags, since, value).await;
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
    /// within `[min_connections, ceiling]`.
    pub fn resize(&self, max_connections: u32) -> Result<(), ConfigError> {
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
        self.inner.leaks.reset();
    }

    /// The seed's status fields and everything behind them.
    pub fn status(&self) -> Status {
        let inner = &self.inner;
        let c = &inner.metrics.c;
        let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        let size = inner.pool.size();
        let idle = inner.pool.num_idle() as u32;
        let (hits, misses) = (get(&c.cache_hits), get(&c.cache_misses));
        let requests = get(&c.requests);
        let latency = inner.metrics.latency();
        let wait = inner.metrics.wait();
        Status {
            active_connections: size.saturating_sub(idle),
            idle_connections: idle,
            pending_requests: inner.gate.queued() as u64,
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
            max_connections: inner.gate.limit() as u32,
            min_connections: inner.min_connections.load(Ordering::Relaxed),
            database_queries: get(&c.db_queries),
            cache_hits: hits,
            cache_misses: misses,
            stale_served: get(&c.stale_served),
            errors: get(&c.errors),
            timeouts: get(&c.timeouts),
            single_flight_joins: get(&c.joins),
            in_flight: inner.flights.in_flight() as u64,
            batches: get(&c.batches),
            batched_keys: get(&c.batched_keys),
            circuit_opens: get(&c.circuit_opens),
            circuit: inner.breaker.state(),
            leaks_detected: inner.leaks.detected(),
            suspected_leaks: inner.leaks.suspects(),
            latency_ms: latency.percentiles,
            acquire_wait_ms: wait.percentiles,
            acquire_wait_histogram: wait.buckets,
            acquire_wait_sum_ms: wait.sum_ms,
            latency_histogram: latency.buckets,
            latency_sum_ms: latency.sum_ms,
            cache: inner.cache.stats(),
            uptime_seconds: inner.started.elapsed().as_secs_f64(),
            connection_budget: Some(inner.connection_budget.load(Ordering::Relaxed))
                .filter(|b| *b != u32::MAX),
            connection_limit_refusals: get(&c.limit_refusals),
            seconds_since_limit_refusal: inner.metrics.since_limit_refusal(),
        }
    }

    /// Recommendations and alerts for the current status.
    pub fn advice(&self) -> Vec<Advice> {
        advisor::advise(&self.status(), &self.inner.config.advisor)
    }

    /// Queries queued for a connection slot now (cheap, unlike [`status`](Self::status)).
    pub fn pending_requests(&self) -> usize {
        self.inner.gate.queued()
    }

    /// Connections currently admitted (holding a slot).
    pub fn admitted(&self) -> usize {
        self.inner.gate.in_use()
    }

    /// Opens connections up to the minimum.
    async fn warm_up(&self) -> Result<(), sqlx::Error> {
        let min = self.inner.min_connections.load(Ordering::Relaxed) as usize;
        if min == 0 {
            return Ok(());
        }
        // The first connection opens alone: it may initialise the database
        // (SQLite switches a new file to WAL under an exclusive lock, which
        // connections opening at the same moment fail on with "database is
        // locked"). The rest open together.
        let first = self.inner.pool.acquire().await?;
        let rest =
            futures::future::try_join_all((1..min).map(|_| self.inner.pool.acquire())).await?;
        drop((first, rest));
        Ok(())
    }

    /// Pings idle connections, closes broken ones, refills the pool to its
    /// minimum, and probes the database when the circuit is not closed.
    /// Runs every `health.interval`; callable on demand.
    pub async fn health_check(&self) -> HealthReport {
        let inner = &self.inner;
        let started = Instant::now();
        let ping_timeout = inner.config.health.ping_timeout;
        let (mut checked, mut broken, mut healthy) = (0u32, 0u32, 0u32);
        // Holding every checked connection (with its slot) until the end
        // makes the next try_acquire return a different idle one.
        let mut held: Vec<(PoolConnection<DB>, Permit)> = Vec::new();
        for _ in 0..inner.pool.num_idle() {
            let Some(permit) = inner.gate.try_acquire() else {
                break;
            };
            let Some(mut conn) = inner.pool.try_acquire() else {
                break;
            };
            checked += 1;
            match timeout(ping_timeout, conn.ping()).await {
                Ok(Ok(())) => {
                    healthy += 1;
                    held.push((conn, permit));
                }
                _ => {
                    broken += 1;
                    tracing::warn!("health check: closing a connection that failed its ping");
                    conn.close_on_drop();
                }
            }
        }
        let min = inner.min_connections.load(Ordering::Relaxed);
        let size_before = inner.pool.size();
        let mut refill_failed = false;
        while inner.pool.size() < min {
            let Some(permit) = inner.gate.try_acquire() else {
                break;
            };
            match timeout(
                inner.config.pool.acquire_timeout,
                open_connection(&inner.pool),
            )
            .await
            {
                Ok(Ok(conn)) => held.push((conn, permit)),
                _ => {
                    refill_failed = true;
                    break;
                }
            }
        }
        let opened = inner.pool.size().saturating_sub(size_before);
        drop(held);

        let reachable = if healthy > 0 || opened > 0 {
            true
        } else if refill_failed {
            false
        } else {
            self.probe().await
        };
        if reachable {
            inner.breaker.on_success();
        } else {
            self.connection_failed();
        }
        HealthReport {
            database_reachable: reachable,
            checked,
            broken_closed: broken,
            opened,
            pool_size: inner.pool.size(),
            circuit: inner.breaker.state(),
            took_ms: started.elapsed().as_secs_f64() * 1000.0,
        }
    }

    /// One connection and a ping. With every slot busy the database is
    /// evidently answering, so that counts as reachable.
    async fn probe(&self) -> bool {
        let inner = &self.inner;
        let Some(_permit) = inner.gate.try_acquire() else {
            return inner.breaker.state() == CircuitState::Closed;
        };
        let t = inner
            .config
            .pool
            .acquire_timeout
            .min(inner.config.health.ping_timeout * 2);
        matches!(
            timeout(t, async {
                let mut c = open_connection(&inner.pool).await?;
                c.ping().await
            })
            .await,
            Ok(Ok(()))
        )
    }

    fn spawn_background_tasks(&self) {
        let weak = Arc::downgrade(&self.inner);
        let cfg = &self.inner.config;
        let health = tokio::spawn(health_loop(
            weak.clone(),
            cfg.health.interval,
            cfg.health.cooldown,
        ));
        let leak_every =
            (cfg.leak.threshold / 4).clamp(Duration::from_millis(10), Duration::from_secs(5));
        let leaks = spawn_periodic(weak.clone(), leak_every, |m| async move {
            m.inner.leaks.scan();
        });
        let sweep = spawn_periodic(weak, cfg.cache.sweep_interval, |m| async move {
            m.inner.cache.sweep().await;
        });
        self.inner.tasks.lock().extend([health, leaks, sweep]);
    }

    /// Reports connections held past the leak threshold now; returns how
    /// many were newly reported. The background task does this periodically.
    pub fn scan_for_leaks(&self) -> usize {
        self.inner.leaks.scan()
    }

    /// Closes the pool: waits for connections to come back, then closes them.
    pub async fn close(&self) {
        self.inner.pool.close().await;
    }
}

/// How long a connection may take to open before a direct attempt checks
/// whether the database refuses connections. A connect on a local network
/// takes a few milliseconds; this is long enough that a healthy database is
/// rarely probed, short enough that an outage is known within a second.
const REFUSAL_PROBE_AFTER: Duration = Duration::from_millis(100);

/// Opens a connection through sqlx's pool, failing fast when the database
/// refuses connections.
///
/// sqlx retries a refused connect with backoff until its acquire timeout (it
/// assumes the server is starting up), so the caller would wait the whole
/// timeout to learn that the database is down, and the circuit breaker
/// would hear nothing until then. If the pool's open has not finished after
/// [`REFUSAL_PROBE_AFTER`], one direct connection attempt outside the pool
/// tells refused from slow: its error ends the open at once; its success
/// means the database is up but slow, and the pool's open goes on.
async fn open_connection<DB: Database>(pool: &Pool<DB>) -> Result<PoolConnection<DB>, sqlx::Error> {
    let open = pool.acquire();
    tokio::pin!(open);
    tokio::select! {
        r = &mut open => return r,
        _ = sleep(REFUSAL_PROBE_AFTER) => {}
    }
    let options = pool.connect_options();
    let probe = options.connect();
    tokio::select! {
        r = &mut open => r,
        probed = probe => match probed {
            Ok(conn) => {
                // Closed politely, off the caller's path.
                tokio::spawn(async move {
                    let _ = conn.close().await;
                });
                open.await
            }
            Err(e) => {
                tracing::debug!(error = %e, "a direct connection attempt failed: ending the open");
                Err(e)
            }
        },
    }
}

/// Health checks every `interval`, and every `cooldown` while the circuit
/// is not closed, so that a database that comes back is noticed within a
/// cooldown even when no query arrives to probe it. Advice is logged at the
/// regular interval only. Ends with the manager.
async fn health_loop<DB: Database>(weak: Weak<Inner<DB>>, interval: Duration, cooldown: Duration) {
    let mut wait = interval;
    let mut last_advice = Instant::now();
    loop {
        sleep(wait).await;
        let Some(inner) = weak.upgrade() else { return };
        let m = Manager { inner };
        if m.inner.pool.is_closed() {
            return;
        }
        let report = m.health_check().await;
        if last_advice.elapsed() >= interval {
            last_advice = Instant::now();
            for a in m.advice() {
                a.log();
            }
        }
        wait = if report.circuit == CircuitState::Closed {
            interval
        } else {
            cooldown
        };
    }
}

/// Runs `tick` every `every` for as long as the manager lives.
fn spawn_periodic<DB, F, Fut>(weak: Weak<Inner<DB>>, every: Duration, tick: F) -> JoinHandle<()>
where
    DB: Database,
    F: Fn(Manager<DB>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    tokio::spawn(async move {
        loop {
            sleep(every).await;
            let Some(inner) = weak.upgrade() else { return };
            tick(Manager { inner }).await;
        }
    })
}

fn downcast<T: Send + Sync + 'static>(
    key: &Arc<str>,
    value: Arc<dyn Any + Send + Sync>,
) -> Result<Arc<T>, Error> {
    value
        .downcast::<T>()
        .map_err(|_| Error::KeyTypeMismatch { key: key.clone() })
}

fn timeout_error(key: &Arc<str>, phase: TimeoutPhase, started: Instant) -> Error {
    Error::Timeout {
        key: key.clone(),
        phase,
        elapsed: started.elapsed(),
    }
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}
