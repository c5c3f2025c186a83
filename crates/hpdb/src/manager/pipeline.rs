//! The path of one query through [`Manager::execute_query`]: cache lookup
//! (with refresh-ahead and stale-while-revalidate, whose background
//! refreshes are in `refresh`), circuit breaker (with stale-if-error),
//! single-flight, then admission and execution (in `acquire`), then
//! storing and sharing the outcome.
//!
//! Invariants:
//! - A cached or shared result is served only if no invalidation of its key
//!   or tags has passed since it was fetched; a result fetched before an
//!   invalidation is neither stored nor shared after it.
//! - Errors are shared with the flight's followers, never cached.
//! - A stale entry is served only when the error says the database is
//!   unavailable, and only if the caller asked for stale-if-error; an
//!   entry past its TTL otherwise only within the revalidation grace, while
//!   its refresh runs.

use std::{
    any::Any,
    sync::{atomic::AtomicBool, Arc},
    time::Duration,
};

use sqlx::Database;
use tokio::{
    sync::watch,
    time::{timeout_at, Instant},
};
use tracing::Instrument;

use super::{
    shared::{decoder, Decode, SharedStep},
    timeout_error, Manager, QueryFn, QueryResult,
};
use crate::{
    cache::{weigh, CacheEntry, CacheValue},
    error::{Error, TimeoutPhase},
    invalidation::Seq,
    metrics::inc,
    options::{QueryOptions, Source},
    refresh::{self, Freshness, Trigger},
    shared::Stamp,
    single_flight::{self, LeaderGuard, Outcome, Role},
};

/// One call of `execute_query`, as the steps after the breaker need it.
pub(super) struct Call {
    pub(super) key: Arc<str>,
    pub(super) options: QueryOptions,
    pub(super) tags: Arc<[Arc<str>]>,
    pub(super) started: Instant,
    pub(super) deadline: Instant,
    /// Set for a background refresh: what it needs on the way.
    pub(super) background: Option<Background>,
}

/// What a background refresh carries through the steps of a call.
pub(super) struct Background {
    /// Marks the entry it stores (see `CacheEntry::refreshed`).
    pub(super) mark: Arc<AtomicBool>,
    /// A shared entry with no more than this left is due for a refresh
    /// too: the refresh goes to the database instead of copying it.
    pub(super) min_ttl_left: Duration,
}

/// What the cache had for a call.
enum Lookup<T> {
    /// A current entry to serve (fresh, or within the revalidation grace),
    /// and the refresh to start behind it, if any.
    Hit {
        value: Arc<T>,
        source: Source,
        refresh: Option<(Trigger, usize)>,
    },
    /// Nothing to serve; an expired entry kept aside for stale-if-error.
    Miss(Option<CacheEntry>),
}

impl<DB: Database> Manager<DB> {
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
        T: CacheValue,
        F: QueryFn<DB, T> + 'static,
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
        T: CacheValue,
        F: QueryFn<DB, T> + 'static,
    {
        self.execute_query_then(key, options, query, Ok).await
    }

    /// Like [`execute_query_traced`](Self::execute_query_traced), in two
    /// steps: `query` fetches on the connection, then `finish` turns its
    /// rows into the value to cache and share, after the connection has gone
    /// back to the pool and the admission slot has been handed on. Work
    /// that needs no database (parsing, rendering, hashing) belongs in
    /// `finish`, so that it never holds a connection. An error of `finish`
    /// is the call's error, shared with its followers and never cached.
    ///
    /// Both closures are `'static`: when the answer comes from the cache
    /// and the entry is due for a refresh (refresh-ahead,
    /// stale-while-revalidate), they run later in a task of their own.
    pub async fn execute_query_then<R, T, F, G>(
        &self,
        key: impl Into<Arc<str>>,
        options: QueryOptions,
        query: F,
        finish: G,
    ) -> Result<QueryResult<T>, Error>
    where
        R: Send + 'static,
        T: CacheValue,
        F: QueryFn<DB, R> + 'static,
        G: FnOnce(R) -> Result<T, sqlx::Error> + Send + 'static,
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
            .run(key, options, (query, finish), started, deadline, None)
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

    /// The steps of one call, in order. `fetch` is the query and the step
    /// that finishes its result off the connection; `background` is set
    /// when a background refresh runs them.
    pub(super) async fn run<R, T, F, G>(
        &self,
        key: Arc<str>,
        options: QueryOptions,
        fetch: (F, G),
        started: Instant,
        deadline: Instant,
        background: Option<Background>,
    ) -> Result<QueryResult<T>, Error>
    where
        R: Send + 'static,
        T: CacheValue,
        F: QueryFn<DB, R> + 'static,
        G: FnOnce(R) -> Result<T, sqlx::Error> + Send + 'static,
    {
        let mut stale = match self.lookup::<T>(&key, &options).await? {
            Lookup::Hit {
                value,
                source,
                refresh,
            } => {
                if let Some((trigger, entry)) = refresh {
                    self.refresh_in_background(key, options, fetch, trigger, entry);
                }
                return Ok(QueryResult { value, source });
            }
            Lookup::Miss(stale) => stale,
        };
        if let Err(open) = self.inner.breaker.admit() {
            return self.serve_stale(&key, open, stale);
        }
        let call = Call {
            tags: options.tags.clone().into(),
            key,
            options,
            started,
            deadline,
            background,
        };
        loop {
            let since = self.inner.log.snapshot();
            let leader = match self.role(&call, since) {
                Some(Role::Follower(rx)) => match self.follow(&call, rx, &mut stale).await {
                    // The leader was cancelled: try again, perhaps as leader.
                    None => continue,
                    Some(result) => return result,
                },
                Some(Role::Leader(guard)) => Some(guard),
                None => None,
            };
            return self.lead(&call, since, leader, fetch, stale).await;
        }
    }

    /// Step 1: a current cache entry to serve (fresh, or within the
    /// revalidation grace) and the refresh to start behind it, or an
    /// expired one kept aside for stale-if-error. Counts the hit or miss.
    async fn lookup<T: Send + Sync + 'static>(
        &self,
        key: &Arc<str>,
        options: &QueryOptions,
    ) -> Result<Lookup<T>, Error> {
        let inner = &self.inner;
        if !options.use_cache || options.refresh {
            return Ok(Lookup::Miss(None));
        }
        let mut stale = None;
        if let Some(entry) = inner.cache.get(key).await {
            if inner.log.is_current(key, &entry.tags, entry.seq) {
                let age = entry.stored_at.elapsed();
                if self.may_serve(&entry) {
                    let (source, refresh) = match self.freshness(&entry, age, options) {
                        Freshness::Fresh => (Source::Cache, None),
                        Freshness::RefreshAhead => (Source::Cache, Some(Trigger::Ahead)),
                        Freshness::Revalidate => {
                            inner.refreshes.served_while_refreshing();
                            (Source::Revalidating, Some(Trigger::Revalidate))
                        }
                        Freshness::Expired => (Source::Stale, None),
                    };
                    if source != Source::Stale {
                        inc(&inner.metrics.c.cache_hits);
                        inner.tuning.read(key, true);
                        entry.mark_read();
                        let identity = CacheEntry::identity(&entry);
                        return Ok(Lookup::Hit {
                            value: downcast::<T>(key, entry.value)?,
                            source,
                            refresh: refresh.map(|t| (t, identity)),
                        });
                    }
                }
                if options.stale_if_error && age < entry.ttl + inner.config.cache.stale_grace {
                    stale = Some(entry);
                }
            }
        }
        inc(&inner.metrics.c.cache_misses);
        inner.tuning.read(key, false);
        Ok(Lookup::Miss(stale))
    }

    /// What a read at `age` may do with a current entry, as the refresh
    /// policy and the caller's options say.
    fn freshness(&self, entry: &CacheEntry, age: Duration, options: &QueryOptions) -> Freshness {
        let policy = &self.inner.refreshes.policy;
        let u = if options.refresh_ahead && policy.in_window(age, entry.ttl) {
            refresh::draw()
        } else {
            1.0
        };
        match policy.classify(age, entry.ttl, entry.cost, u) {
            Freshness::RefreshAhead if !options.refresh_ahead => Freshness::Fresh,
            Freshness::Revalidate if !options.stale_while_revalidate => Freshness::Expired,
            other => other,
        }
    }

    /// Step 2 (and the end of any failed call): the stale entry if the
    /// database is unavailable and there is one, else the error.
    fn serve_stale<T: Send + Sync + 'static>(
        &self,
        key: &Arc<str>,
        err: Error,
        stale: Option<CacheEntry>,
    ) -> Result<QueryResult<T>, Error> {
        match stale {
            Some(entry) if err.is_unavailable() => {
                inc(&self.inner.metrics.c.stale_served);
                tracing::warn!(key = %key, error = %err, "database unavailable: serving a stale cache entry");
                Ok(QueryResult {
                    value: downcast::<T>(key, entry.value)?,
                    source: Source::Stale,
                })
            }
            _ => Err(err),
        }
    }

    /// Step 3: this call's part in the single flight of its key (`None`
    /// when the caller asked not to coalesce). A flight that an
    /// invalidation has passed since it started cannot be joined.
    fn role(&self, call: &Call, since: Seq) -> Option<Role<'_>> {
        if !call.options.coalesce {
            return None;
        }
        let log = &self.inner.log;
        Some(self.inner.flights.join_or_lead(&call.key, since, |f| {
            log.is_current(&call.key, &call.tags, f.started)
        }))
    }

    /// Step 3, as a follower: the leader's outcome, or `None` if the leader
    /// was cancelled (the caller tries again).
    async fn follow<T: Send + Sync + 'static>(
        &self,
        call: &Call,
        rx: watch::Receiver<Option<Outcome>>,
        stale: &mut Option<CacheEntry>,
    ) -> Option<Result<QueryResult<T>, Error>> {
        inc(&self.inner.metrics.c.joins);
        let result = match timeout_at(call.deadline, single_flight::wait(rx)).await {
            Err(_) => Err(timeout_error(&call.key, TimeoutPhase::Joined, call.started)),
            Ok(None) => return None,
            Ok(Some(Ok(value))) => downcast::<T>(&call.key, value).map(|value| QueryResult {
                value,
                source: Source::Joined,
            }),
            Ok(Some(Err(e))) => self.serve_stale(&call.key, e, stale.take()),
        };
        Some(result)
    }

    /// Steps 4 to 7, as the leader (or alone): admission, a connection, the
    /// query; then the result stored (unless invalidated meanwhile) and the
    /// outcome handed to the followers.
    async fn lead<R, T, F, G>(
        &self,
        call: &Call,
        since: Seq,
        leader: Option<LeaderGuard<'_>>,
        (query, finish): (F, G),
        stale: Option<CacheEntry>,
    ) -> Result<QueryResult<T>, Error>
    where
        R: Send + 'static,
        T: CacheValue,
        F: QueryFn<DB, R> + 'static,
        G: FnOnce(R) -> Result<T, sqlx::Error> + Send + 'static,
    {
        let fetched_at = std::time::Instant::now();
        let shared = match self.shared_step::<T>(call, since, fetched_at).await {
            SharedStep::Served(value) => {
                if let Some(guard) = leader {
                    guard.finish(Ok(value.clone() as Arc<dyn Any + Send + Sync>));
                }
                return Ok(QueryResult {
                    value,
                    source: Source::Shared,
                });
            }
            SharedStep::Fill(fill) => fill,
        };
        let outcome = self
            .admit_and_run(
                &call.key,
                call.options.priority,
                call.started,
                call.deadline,
                query,
            )
            .await
            // The connection and the slot are back: finish off them.
            .and_then(|rows| {
                finish(rows).map_err(|e| Error::Query {
                    key: call.key.clone(),
                    source: Arc::new(e),
                })
            });
        match outcome {
            Ok(value) => {
                let value = Arc::new(value);
                if let Some(ttl) = self.ttl_for(&call.key, &call.options) {
                    let fill = Fill {
                        since,
                        fetched_at,
                        ttl,
                        stamp: shared.stamp.clone(),
                    };
                    let mark = call.background.as_ref().map(|b| b.mark.clone());
                    if let Some(size) = weigh(&call.key, &*value) {
                        let value = value.clone() as Arc<dyn Any + Send + Sync>;
                        let decode = Some(decoder::<T> as Decode);
                        self.store_marked(&call.key, &call.tags, &fill, value, size, decode, mark)
                            .await;
                    }
                    self.share(call, &fill, &shared, &*value);
                } else {
                    self.release_lease(call, &shared);
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
                self.release_lease(call, &shared);
                if let Some(guard) = leader {
                    guard.finish(Err(e.clone()));
                }
                self.serve_stale(&call.key, e, stale)
            }
        }
    }

    /// Stores `value` under `key`, unless an invalidation has passed
    /// `fill.since` (the result may predate a write) or it cannot be weighed.
    pub(super) async fn store<T: CacheValue>(
        &self,
        key: &Arc<str>,
        tags: &Arc<[Arc<str>]>,
        fill: &Fill,
        value: Arc<T>,
    ) {
        let Some(size) = weigh(key, &*value) else {
            return;
        };
        self.store_sized(key, tags, fill, value, size, Some(decoder::<T>))
            .await;
    }

    /// [`store`](Self::store) for a value whose size is known.
    pub(super) async fn store_sized(
        &self,
        key: &Arc<str>,
        tags: &Arc<[Arc<str>]>,
        fill: &Fill,
        value: Arc<dyn Any + Send + Sync>,
        size: u32,
        decode: Option<Decode>,
    ) {
        self.store_marked(key, tags, fill, value, size, decode, None)
            .await;
    }

    /// [`store_sized`](Self::store_sized), the entry marked as stored by a
    /// background refresh if `mark` is set.
    #[allow(clippy::too_many_arguments)]
    async fn store_marked(
        &self,
        key: &Arc<str>,
        tags: &Arc<[Arc<str>]>,
        fill: &Fill,
        value: Arc<dyn Any + Send + Sync>,
        size: u32,
        decode: Option<Decode>,
        mark: Option<Arc<AtomicBool>>,
    ) {
        let entry = CacheEntry {
            value,
            size,
            tags: tags.clone(),
            seq: fill.since,
            stored_at: fill.fetched_at,
            ttl: fill.ttl,
            stamp: fill.stamp.clone(),
            decode,
            cost: fill.fetched_at.elapsed(),
            refreshed: mark,
        };
        self.inner.insert_checked(key, entry).await;
    }

    /// The TTL to store `key`'s result with: the one `options` ask for,
    /// else its class's (adaptive TTLs) or the default; capped by the
    /// configured maximum. `None`: do not cache it (not asked to, or its
    /// class is written about as often as read).
    pub(super) fn ttl_for(&self, key: &str, options: &QueryOptions) -> Option<Duration> {
        let cache = &self.inner.config.cache;
        if !options.use_cache {
            return None;
        }
        match options.ttl {
            Some(ttl) => Some(ttl.min(cache.max_ttl)),
            None => self
                .inner
                .tuning
                .ttl_for(key, &options.tags, cache.ttl, cache.max_ttl),
        }
    }
}

/// What storing a result needs to know about the fetch that produced it.
pub(super) struct Fill {
    /// The invalidation sequence when the fetch started.
    pub(super) since: Seq,
    /// When the fetch started (the entry is no fresher than that).
    pub(super) fetched_at: std::time::Instant,
    /// How long it may be served.
    pub(super) ttl: Duration,
    /// The shared level's stamp read before the fetch, if any.
    pub(super) stamp: Option<Arc<Stamp>>,
}

/// The part of a key before its first `:`, for low-cardinality span fields.
fn key_class(key: &str) -> &str {
    key.split(':').next().unwrap_or(key)
}

fn downcast<T: Send + Sync + 'static>(
    key: &Arc<str>,
    value: Arc<dyn Any + Send + Sync>,
) -> Result<Arc<T>, Error> {
    value
        .downcast::<T>()
        .map_err(|_| Error::KeyTypeMismatch { key: key.clone() })
}
