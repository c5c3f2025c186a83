//! Per-query options: cache use, priority and deadline, plus the finer
//! controls (TTL, invalidation tags, coalescing, stale-if-error, refresh,
//! refresh-ahead and stale-while-revalidate).
//! The defaults suit a cached read at normal priority.

use std::{sync::Arc, time::Duration};

use serde::Serialize;

/// Urgency of a query. Higher is served first when the pool is saturated.
///
/// The named levels are conventions; any `u8` works. Waiting one
/// `aging_step` is worth one level (see the admission module).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Priority(pub u8);

impl Priority {
    /// Background work: preloading, cache warming.
    pub const LOW: Priority = Priority(0);
    /// The default.
    pub const NORMAL: Priority = Priority(1);
    /// A page's own reads.
    pub const HIGH: Priority = Priority(2);
    /// Health probes and writes a user waits on.
    pub const CRITICAL: Priority = Priority(3);
}

impl Default for Priority {
    fn default() -> Self {
        Priority::NORMAL
    }
}

/// Options of one [`Manager::execute_query`](crate::Manager::execute_query) call.
#[derive(Debug, Clone)]
#[must_use]
pub struct QueryOptions {
    /// Serve from and store into the result cache (default true).
    pub use_cache: bool,
    /// Time to live of this result; `None` uses the cache's default TTL.
    pub ttl: Option<Duration>,
    /// Admission priority (default [`Priority::NORMAL`]).
    pub priority: Priority,
    /// Deadline of the whole call; `None` uses the manager's query timeout.
    pub timeout: Option<Duration>,
    /// Tags for invalidation: `invalidate_tag(t)` drops every entry tagged `t`.
    pub tags: Vec<Arc<str>>,
    /// Share one execution among concurrent callers of the same key (default true).
    pub coalesce: bool,
    /// When the database is unavailable, serve an expired entry still within
    /// the stale grace period (default true).
    pub stale_if_error: bool,
    /// Skip the cache lookup but store the result (default false): for
    /// warming and preloading, which would otherwise count as misses and
    /// skew the hit rate the advisor reads.
    pub refresh: bool,
    /// A hit in the last part of the entry's TTL may refresh it in the
    /// background (`DB_CACHE_REFRESH_AHEAD`; default true). The closure
    /// then runs again later, in a task of its own.
    pub refresh_ahead: bool,
    /// An entry past its TTL by less than `DB_CACHE_REVALIDATE_GRACE`, and
    /// not invalidated, is served ([`Source::Revalidating`]) while one
    /// refresh runs in the background (default true). Turn it off for a
    /// read that must not see a value older than its TTL.
    pub stale_while_revalidate: bool,
    /// The query writes (default false). On a manager with a writer
    /// connection (SQLite with `DB_DATA_VERSION_POLL`), it runs on that one
    /// connection, after the check for other processes' commits: with
    /// every write of ours there, a commit that check sees is someone
    /// else's (see `sqlite`). Elsewhere it changes nothing.
    pub writes: bool,
    /// The read may run on a replica that has replayed every write it must
    /// see (default false; see the `replica` module). Set by
    /// [`Manager::execute_read_then`](crate::Manager::execute_read_then),
    /// which also runs it again on the primary if its replica fails
    /// mid-query; set by hand, such a failure is the caller's
    /// ([`Error::Replica`](crate::Error::Replica)). Ignored for a query
    /// marked [`writes`](Self::writes) and without `DB_REPLICA_URLS`.
    pub replica: bool,
    /// A WAL position the read must see even if none of its tags says so
    /// (a session's own last write: [`Invalidation::floor`](crate::Invalidation::floor));
    /// a replica is used only once it has replayed it (default none).
    pub read_after: Option<u64>,
}

impl Default for QueryOptions {
    fn default() -> Self {
        Self {
            use_cache: true,
            ttl: None,
            priority: Priority::NORMAL,
            timeout: None,
            tags: Vec::new(),
            coalesce: true,
            stale_if_error: true,
            refresh: false,
            refresh_ahead: true,
            stale_while_revalidate: true,
            writes: false,
            replica: false,
            read_after: None,
        }
    }
}

impl QueryOptions {
    /// Options that bypass the cache (but still coalesce identical queries).
    pub fn uncached() -> Self {
        Self {
            use_cache: false,
            ..Self::default()
        }
    }

    /// Sets the priority.
    pub fn priority(mut self, priority: Priority) -> Self {
        self.priority = priority;
        self
    }

    /// Sets this entry's TTL.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// Sets the deadline of the call.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Adds an invalidation tag.
    pub fn tag(mut self, tag: impl Into<Arc<str>>) -> Self {
        self.tags.push(tag.into());
        self
    }

    /// Reads at or after WAL position `lsn` when on a replica (see
    /// [`read_after`](Self::read_after)): a session's floor, e.g. the
    /// [`floor`](crate::Invalidation::floor) of its last write.
    pub fn read_after(mut self, lsn: u64) -> Self {
        self.read_after = Some(self.read_after.map_or(lsn, |l| l.max(lsn)));
        self
    }

    /// Marks the query as a write (see [`writes`](Self::writes)).
    pub fn writes(mut self) -> Self {
        self.writes = true;
        self
    }

    /// Turns the cache on or off.
    pub fn use_cache(mut self, on: bool) -> Self {
        self.use_cache = on;
        self
    }

    /// Skips the cache lookup and stores the result (cache warming).
    pub fn refresh(mut self) -> Self {
        self.use_cache = true;
        self.refresh = true;
        self
    }

    /// Turns refresh-ahead on or off for this read.
    pub fn refresh_ahead(mut self, on: bool) -> Self {
        self.refresh_ahead = on;
        self
    }

    /// Turns stale-while-revalidate on or off for this read.
    pub fn stale_while_revalidate(mut self, on: bool) -> Self {
        self.stale_while_revalidate = on;
        self
    }

    /// Turns single-flight coalescing on or off.
    pub fn coalesce(mut self, on: bool) -> Self {
        self.coalesce = on;
        self
    }
}

/// Where a result came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Source {
    /// This call ran the query.
    Database,
    /// A fresh cache entry.
    Cache,
    /// A current entry of the shared level (Redis), filled by any instance.
    Shared,
    /// Another caller's identical, concurrent execution.
    Joined,
    /// An expired cache entry, served because the database is unavailable.
    Stale,
    /// A cache entry past its TTL by less than the revalidation grace, not
    /// invalidated, served while one refresh of it runs in the background.
    Revalidating,
}
