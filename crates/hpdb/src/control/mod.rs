//! [`Control`]: the manager's backend-free operations, and the handle that
//! offers them without naming the database type.
//!
//! Everything done to a manager that runs no query of the caller's (status,
//! advice, configuration, invalidation, reading and replacing cached values,
//! updates in place, resizing, metrics, health checks, closing) is the same
//! for every database: it is written once, here, on the [`Core`](core)
//! that `Manager<DB>` and `Control` share. A `Manager<DB>` dereferences to
//! its `Control`, so these are the manager's methods too. Code that only
//! does these (an admin API, a cache maintainer, a metrics exporter) holds
//! a `Control` and stays free of sqlx's type parameters.
//!
//! | file | one job |
//! | --- | --- |
//! | `core` | the shared state ([`Core`](core)), what it needs of the pool (`PoolOps`), the cache's guarded insert and drop, TTLs |
//! | `health` | what a health check reports ([`HealthReport`](health::HealthReport)) |
//! | `status` | the [`Status`](crate::Status) snapshot and the advice drawn from it |
//! | `tasks` | the background tasks (health, leaks, sweep, tuning, the bus, the consistency monitor) |
//! | `consistency` | registering verifiers; the monitor's task and one check |

mod consistency;
pub(crate) mod core;
pub(crate) mod health;
mod status;
pub(crate) mod tasks;

use std::{any::Any, sync::Arc, time::Duration};

use self::{
    core::{Core, Fill},
    health::HealthReport,
};
use crate::{
    cache::{decoder, weigh, CacheValue},
    config::{ConfigError, ManagerConfig},
    invalidation::Seq,
    options::QueryOptions,
    shared::{
        api::{Invalidation, Update, Versioned},
        lock::TagLocks,
        names::Kind,
    },
};

/// A handle on a manager that does not name the database type. Cheap to
/// clone; clones (and the manager) share everything.
#[derive(Clone)]
pub struct Control {
    pub(crate) core: Arc<Core>,
}

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Control").finish_non_exhaustive()
    }
}

/// A position in the invalidation log, taken before a read (see
/// [`Control::read_mark`]).
#[derive(Debug, Clone, Copy)]
pub struct ReadMark(Seq);

impl Control {
    /// The configuration the manager runs with.
    pub fn config(&self) -> &ManagerConfig {
        &self.core.config
    }

    /// Drops the cached result under `key`, and makes sure a query for it
    /// that is already running cannot store or share its older result.
    /// With a shared level, other instances drop theirs too (see
    /// [`Invalidation`]). Runs to completion in a task of its own.
    pub async fn invalidate(&self, key: &str) -> Invalidation {
        self.invalidate_in_task(Kind::Key, key, None).await
    }

    /// Drops every cached result tagged `tag`, with the same guarantee.
    pub async fn invalidate_tag(&self, tag: &str) -> Invalidation {
        self.invalidate_in_task(Kind::Tag, tag, None).await
    }

    /// Drops every cached result, on every instance.
    pub async fn clear_cache(&self) -> Invalidation {
        self.invalidate_in_task(Kind::Clear, "", None).await
    }

    /// [`invalidate_tag`](Self::invalidate_tag) for a write whose commit
    /// ended at WAL position `lsn` (the change stream's): the tag's replica
    /// floor is that position, not the primary's position now.
    #[cfg(feature = "changes")]
    pub(crate) async fn invalidate_tag_at(&self, tag: &str, lsn: u64) -> Invalidation {
        self.invalidate_in_task(Kind::Tag, tag, Some(lsn)).await
    }

    /// [`clear_cache`](Self::clear_cache) for a write that ended at `lsn`.
    #[cfg(feature = "changes")]
    pub(crate) async fn clear_cache_at(&self, lsn: u64) -> Invalidation {
        self.invalidate_in_task(Kind::Clear, "", Some(lsn)).await
    }

    /// The shared generation bumped first (no instance serves a shared
    /// entry from before it from then on), this instance's cache next, the
    /// bus last; in a task of its own, so that a caller that goes away
    /// leaves no step undone.
    /// The name's replica floor is recorded first (`replica`: before any
    /// entry is dropped, so no reader misses one without its floor).
    async fn invalidate_in_task(&self, kind: Kind, name: &str, at: Option<u64>) -> Invalidation {
        let (core, owned) = (self.core.clone(), name.to_string());
        let task = tokio::spawn(async move {
            let floor = match &core.replicas {
                Some(board) => board.record(kind, &owned, at).await,
                None => None,
            };
            let mut done = core.shared.invalidate(&*core, kind, &owned, floor).await;
            done.floor = floor;
            done
        });
        match task.await {
            Ok(done) => done,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            // Only a runtime shutting down cancels the task.
            Err(_) => self.core.shared.interrupted(kind, name),
        }
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
        let entry = self.core.peek_entry(key).await?;
        let left = entry.ttl.checked_sub(entry.stored_at.elapsed())?;
        Some((entry.value.downcast::<T>().ok()?, left))
    }

    /// Replaces the cached value under `key` (for updates in place), with
    /// the tags and TTL of `options` (the default TTL if it names none).
    pub async fn put_cached<T: CacheValue>(
        &self,
        key: impl Into<Arc<str>>,
        options: &QueryOptions,
        value: Arc<T>,
    ) {
        let at = self.read_mark();
        self.put_cached_read_at(at, key, options, value).await;
    }

    /// Where the invalidation log stands: take it *before* reading a value
    /// the application caches itself, then store with
    /// [`put_cached_read_at`](Self::put_cached_read_at).
    pub fn read_mark(&self) -> ReadMark {
        ReadMark(self.core.log.snapshot())
    }

    /// Caches `value`, read after `at`, under `key` like
    /// [`put_cached`](Self::put_cached), unless its key or one of its tags
    /// was invalidated since `at` (then the value may predate that write,
    /// and nothing is stored).
    pub async fn put_cached_read_at<T: CacheValue>(
        &self,
        at: ReadMark,
        key: impl Into<Arc<str>>,
        options: &QueryOptions,
        value: Arc<T>,
    ) {
        let key = key.into();
        let Some(size) = weigh(&key, &*value) else {
            return;
        };
        let Some(ttl) = self.core.ttl_for(&key, options) else {
            return;
        };
        let tags: Arc<[Arc<str>]> = options.tags.clone().into();
        let fill = Fill {
            since: at.0,
            fetched_at: std::time::Instant::now(),
            ttl,
            stamp: None,
        };
        self.core
            .store(&key, &tags, &fill, value, size, None, None)
            .await;
    }

    /// Takes the write locks of `tags` across instances (see [`TagLocks`]):
    /// hold them from before [`peek_versioned`](Self::peek_versioned) to
    /// after [`update_tag`](Self::update_tag), so that writes to a tag
    /// through several instances take turns and their updates in place
    /// follow each other. A fast path, never what makes it correct; without
    /// a shared level (one instance: the caller's own lock orders writes)
    /// it holds nothing.
    pub async fn lock_tags(&self, tags: &[&str]) -> TagLocks {
        self.core.shared.lock_tags(tags).await
    }

    /// The cached value under `key` (fresh, current), with what
    /// [`update_tag`](Self::update_tag) needs; read it before the write.
    /// In process first; else, with a shared level, its current shared
    /// entry (so that a write updates in place what any instance cached,
    /// not only what this one did).
    pub async fn peek_versioned<T: CacheValue>(&self, key: &str) -> Option<Versioned<T>> {
        let since = self.core.log.snapshot();
        if let Some(entry) = self.core.peek_entry_to_update(key).await {
            let age = entry.stored_at.elapsed();
            let found: Versioned<dyn Any + Send + Sync> = Versioned {
                value: entry.value,
                ttl_left: entry.ttl.saturating_sub(age),
                overdue: age.saturating_sub(entry.ttl),
                stamp: entry.stamp,
                since,
            };
            return found.downcast();
        }
        let (bytes, stamp, ttl_left) = self.core.shared.read_any(key).await?;
        let (value, _) = decoder::<T>(bytes)?;
        let found: Versioned<dyn Any + Send + Sync> = Versioned {
            value,
            ttl_left,
            overdue: Duration::ZERO,
            stamp: Some(Arc::new(stamp)),
            since,
        };
        found.downcast()
    }

    /// A write's whole cache step for `tag`: invalidates it everywhere
    /// and replaces the given keys with their values updated in place
    /// (`before` read with [`peek_versioned`](Self::peek_versioned) before
    /// the write; each keeps the time `before` had left, never more).
    ///
    /// With a shared level, an updated value is stored only if no other
    /// instance wrote the tag between its snapshot and this write (see
    /// [`Invalidation::refused`]); on one instance the caller's own lock
    /// orders its writes and every update is stored. Runs to completion in
    /// a task of its own: a caller that goes away does not leave an
    /// instance uninformed.
    pub async fn update_tag<T: CacheValue>(
        &self,
        tag: &str,
        options: &QueryOptions,
        updates: Vec<(Arc<str>, Versioned<T>, Arc<T>)>,
    ) -> Invalidation {
        let updates = Update::erase(updates);
        let tags: Arc<[Arc<str>]> = options.tags.clone().into();
        let (core, owned) = (self.core.clone(), tag.to_string());
        let task = tokio::spawn(async move {
            let floor = match &core.replicas {
                Some(board) => board.record(Kind::Tag, &owned, None).await,
                None => None,
            };
            let mut done = core
                .shared
                .update_tag(&*core, &owned, tags, updates, floor)
                .await;
            done.floor = floor;
            done
        });
        match task.await {
            Ok(done) => done,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            // Only a runtime shutting down cancels the task.
            Err(_) => self.core.shared.interrupted(Kind::Tag, tag),
        }
    }

    /// Copies up to `limit` entries whose keys start with `prefix` from the
    /// shared hot set (the most recently filled keys) into this instance's
    /// cache, checked like any shared read; for a new instance, instead of
    /// warming from the database. Returns how many it copied (0 without a
    /// shared level).
    pub async fn warm_from_shared<T: CacheValue>(&self, prefix: &str, limit: usize) -> usize {
        self.core
            .shared
            .warm(&*self.core, prefix, limit, decoder::<T>)
            .await
    }

    /// Tells the manager how many connections the database can give this
    /// pool (its connection limit less what other clients need). The
    /// advisor alerts while the pool's maximum exceeds it. The manager
    /// cannot know this by itself: it depends on the database and on every
    /// other client of it.
    pub fn set_connection_budget(&self, budget: u32) {
        self.core
            .connection_budget
            .store(budget, std::sync::atomic::Ordering::Relaxed);
    }

    /// Changes the number of connections the gate admits at once. Must stay
    /// within `[min_connections, ceiling]`; refused while the pool sizes
    /// itself (`pool.auto_size`), whose loop owns the limit.
    pub fn resize(&self, max_connections: u32) -> Result<(), ConfigError> {
        let config = &self.core.config;
        if config.pool.auto_size {
            return Err(ConfigError(format!(
                "the pool sizes itself ({}=true) within [{}, {}]: change those bounds instead",
                crate::env::POOL_AUTO.name,
                crate::env::POOL_MIN.name,
                crate::env::POOL_MAX.name
            )));
        }
        let ceiling = config.pool.ceiling();
        let min = self.core.min_connections();
        if max_connections == 0 || max_connections > ceiling || max_connections < min {
            return Err(ConfigError(format!(
                "pool size {max_connections} is outside [{min}, {ceiling}] (min_connections, \
                 max_connections_ceiling); raise the ceiling to allow more"
            )));
        }
        self.core.gate.set_limit(max_connections as usize);
        tracing::info!(max_connections, "pool resized");
        Ok(())
    }

    /// Clears the counters and histograms (not the cache).
    pub fn reset_metrics(&self) {
        self.core.metrics.reset();
        self.core.refreshes.reset();
        self.core.leaks.reset();
        self.core.consistency.reset();
        self.core.changes.reset_timings();
        if let Some(board) = &self.core.replicas {
            board.routing.reset();
        }
    }

    /// Pings idle connections, closes broken ones, refills the pool to its
    /// minimum, and probes the database when the circuit is not closed.
    /// Runs every `health.interval`; callable on demand.
    pub async fn health_check(&self) -> HealthReport {
        self.core.pool.health_check(&self.core).await
    }

    /// Closes the pool: waits for connections to come back, then closes them.
    /// With a shared level, leaves the registry of live instances first
    /// (other instances' writes stop waiting for this one).
    pub async fn close(&self) {
        self.core.shared.leave().await;
        self.core.pool.close().await;
    }
}

#[cfg(feature = "sqlite")]
#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use sqlx::{sqlite::SqliteConnectOptions, Sqlite};

    use super::*;
    use crate::Manager;

    #[tokio::test]
    async fn a_control_acts_on_the_same_manager() {
        let m = Manager::<Sqlite>::builder(ManagerConfig::default())
            .background_tasks(false)
            .build_lazy(SqliteConnectOptions::from_str("sqlite::memory:").unwrap())
            .unwrap();
        let c = m.control();
        let v = m
            .execute_query("k", QueryOptions::default().tag("t"), |conn| {
                Box::pin(sqlx::query_scalar::<_, i64>("SELECT 7").fetch_one(conn))
            })
            .await
            .unwrap();
        assert_eq!(*v, 7);
        assert_eq!(c.peek_cached::<i64>("k").await.as_deref(), Some(&7));
        assert!(c.peek_cached::<String>("k").await.is_none(), "wrong type");
        c.invalidate_tag("t").await;
        assert!(m.peek_cached::<i64>("k").await.is_none());
        c.put_cached("k", &QueryOptions::default(), Arc::new(8i64))
            .await;
        assert_eq!(m.peek_cached::<i64>("k").await.as_deref(), Some(&8));
        assert_eq!(c.status().total_queries, m.status().total_queries);
        c.resize(5).unwrap();
        assert_eq!(m.status().max_connections, 5);
        c.clear_cache().await;
        assert!(m.peek_cached::<i64>("k").await.is_none());
    }
}
