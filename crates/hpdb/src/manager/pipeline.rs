//! The path of one query through [`Manager::execute_query`]: cache lookup
//! (with refresh-ahead and stale-while-revalidate, whose background
//! refreshes are in `refresh`), circuit breaker (with stale-if-error),
//! single-flight, then the shared level, admission and execution (in
//! `store` and `acquire`), then storing and sharing the outcome (`store`).
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

use std::{any::Any, sync::Arc, time::Duration};

use sqlx::Database;
use tokio::{
    sync::watch,
    time::{timeout_at, Instant},
};
use tracing::Instrument;

use super::{
    call::{Background, Call},
    store::Step,
    timeout_error, Manager,
};
use crate::{
    cache::{decoder, weigh, CacheEntry, CacheValue},
    control::core::Fill,
    error::{Error, TimeoutPhase},
    invalidation::Seq,
    metrics::inc,
    options::{QueryOptions, Source},
    query::{QueryFn, QueryResult},
    refresh::{self, Freshness, Trigger},
    single_flight::{self, LeaderGuard, Outcome, Role},
};

/// Looks at a key's entry before a lookup counts as a miss: each look
/// after the first follows an entry condemned by a write whose successor
/// was stored before the condemnation (see `lookup`).
const LOOKS: usize = 4;

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
        let core = self.core();
        let started = Instant::now();
        let key: Arc<str> = key.into();
        inc(&core.metrics.c.requests);
        let budget = options.timeout.unwrap_or(core.config.query_timeout);
        if budget > core.config.query_timeout {
            core.log.note_deadline(budget);
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
        core.metrics.record_latency(started.elapsed());
        match &result {
            Ok(r) => {
                span.record("source", tracing::field::debug(r.source));
            }
            Err(e) => {
                inc(&core.metrics.c.errors);
                if e.is_timeout() {
                    inc(&core.metrics.c.timeouts);
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
        let stale = match self.lookup::<T>(&key, &options).await? {
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
        if let Err(open) = self.core().breaker.admit() {
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
        // Boxed: the miss path's state (admission, the connection's task,
        // the store) is tens of kilobytes; inline, every call's future,
        // hits included, would be that size, and moving it cost a hit
        // about a microsecond (criterion `overhead`, PostgreSQL).
        Box::pin(self.miss(call, fetch, stale)).await
    }

    /// Steps 3 to 7 for a call the cache did not answer (and the breaker
    /// admitted).
    async fn miss<R, T, F, G>(
        &self,
        call: Call,
        fetch: (F, G),
        mut stale: Option<CacheEntry>,
    ) -> Result<QueryResult<T>, Error>
    where
        R: Send + 'static,
        T: CacheValue,
        F: QueryFn<DB, R> + 'static,
        G: FnOnce(R) -> Result<T, sqlx::Error> + Send + 'static,
    {
        loop {
            let since = self.core().log.snapshot();
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
        let core = self.core();
        if !options.use_cache || options.refresh {
            return Ok(Lookup::Miss(None));
        }
        let mut stale = None;
        let current = |e: &CacheEntry| core.log.is_current(key, &e.tags, e.seq);
        // Each entry is checked once. A write's update in place stores its
        // value before the stamp that condemns the old one
        // (`Core::replace_tag_local`), so an entry condemned between the
        // get and the check has a successor already: look again (a few
        // times, for a reader descheduled across more than one write).
        let mut found = None;
        for _ in 0..LOOKS {
            match core.cache.get(key).await {
                Some(e) if current(&e) => {
                    found = Some(e);
                    break;
                }
                Some(_) => continue,
                None => break,
            }
        }
        if let Some(entry) = found {
            let age = entry.stored_at.elapsed();
            if core.may_serve(&entry) {
                let (source, refresh) = match self.freshness(&entry, age, options) {
                    Freshness::Fresh => (Source::Cache, None),
                    Freshness::RefreshAhead => (Source::Cache, Some(Trigger::Ahead)),
                    Freshness::Revalidate => {
                        core.refreshes.served_while_refreshing();
                        (Source::Revalidating, Some(Trigger::Revalidate))
                    }
                    Freshness::Expired => (Source::Stale, None),
                };
                if source != Source::Stale {
                    inc(&core.metrics.c.cache_hits);
                    core.tuning.read(key, true);
                    entry.mark_read();
                    let identity = CacheEntry::identity(&entry);
                    return Ok(Lookup::Hit {
                        value: downcast::<T>(key, entry.value)?,
                        source,
                        refresh: refresh.map(|t| (t, identity)),
                    });
                }
            }
            if options.stale_if_error && age < entry.ttl + core.config.cache.stale_grace {
                stale = Some(entry);
            }
        }
        inc(&core.metrics.c.cache_misses);
        core.tuning.read(key, false);
        Ok(Lookup::Miss(stale))
    }

    /// What a read at `age` may do with a current entry, as the refresh
    /// policy and the caller's options say.
    fn freshness(&self, entry: &CacheEntry, age: Duration, options: &QueryOptions) -> Freshness {
        let policy = &self.core().refreshes.policy;
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
                inc(&self.core().metrics.c.stale_served);
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
        let log = &self.core().log;
        Some(self.core().flights.join_or_lead(&call.key, since, |f| {
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
        inc(&self.core().metrics.c.joins);
        let result = match timeout_at(call.deadline, single_flight::wait(rx)).await {
            Err(_) => Err(timeout_error(&call.key, TimeoutPhase::Joined, call.started)),
            Ok(None) => return None,
            // The leader's read failed on a replica: that says nothing of
            // the primary, and this call may not be routed at all (a
            // replica-routed read's retry on the primary, or a plain
            // `execute_query` of the same key). Try again, as for a
            // cancelled leader: `Error::Replica` never reaches a caller.
            Ok(Some(Err(Error::Replica { .. }))) => return None,
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
        let ticket = match self.shared_step::<T>(call, since, fetched_at).await {
            Step::Served(value) => {
                if let Some(guard) = leader {
                    guard.finish(Ok(value.clone() as Arc<dyn Any + Send + Sync>));
                }
                return Ok(QueryResult {
                    value,
                    source: Source::Shared,
                });
            }
            Step::Fill(ticket) => ticket,
        };
        let floor = self.replica_floor(call, &ticket).await;
        let outcome = self
            .admit_and_run(
                &call.key,
                call.options.priority,
                call.options.writes,
                floor,
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
                if let Some(ttl) = self.core().ttl_for(&call.key, &call.options) {
                    let fill = Fill {
                        since,
                        fetched_at,
                        ttl,
                        stamp: ticket.stamp.clone(),
                    };
                    let mark = call.background.as_ref().map(|b| b.mark.clone());
                    if let Some(size) = weigh(&call.key, &*value) {
                        let erased = value.clone() as Arc<dyn Any + Send + Sync>;
                        let decode = Some(decoder::<T> as crate::cache::Decode);
                        self.core()
                            .store(&call.key, &call.tags, &fill, erased, size, decode, mark)
                            .await;
                    }
                    self.share(call, &fill, &ticket, &*value);
                } else {
                    self.release_lease(call, &ticket);
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
                self.release_lease(call, &ticket);
                if let Some(guard) = leader {
                    guard.finish(Err(e.clone()));
                }
                self.serve_stale(&call.key, e, stale)
            }
        }
    }
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
