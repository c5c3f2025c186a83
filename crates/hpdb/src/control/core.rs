//! [`Core`]: everything a manager holds that does not depend on the
//! database type: configuration, the admission gate, the cache and its
//! invalidation log, the single flights, the breaker, the leak detector,
//! the metrics, background refreshes, self-tuning, the shared level, the
//! background tasks, and the pool behind [`PoolOps`]. `Manager<DB>` and
//! [`Control`](crate::Control) both hold it; each operation is written
//! once, on one of them.
//!
//! Invariants:
//! - An entry goes into the cache only if no invalidation of its key or
//!   tags has passed since its fetch began (`insert_checked`, checked
//!   before and after the insert).
//! - An invalidation reaches the log before the cache (no fetch running
//!   meanwhile can store its older result).
//! - The background tasks end when the core does: they hold it weakly,
//!   and are aborted when it drops.

use std::{
    any::Any,
    sync::{
        atomic::{AtomicU32, Ordering},
        Arc,
    },
    time::Duration,
};

use futures::future::BoxFuture;
use parking_lot::Mutex;
use tokio::{task::JoinHandle, time::Instant};

use super::health::HealthReport;
use crate::{
    admission::Gate,
    breaker::CircuitBreaker,
    cache::{memory::MemoryCache, CacheEntry, CacheLayer},
    changes::state::ChangeState,
    config::{ConfigError, ManagerConfig},
    consistency::Monitor,
    invalidation::{InvalidationLog, Seq},
    leak::LeakDetector,
    metrics::{inc, Metrics},
    options::QueryOptions,
    refresh::Refreshes,
    shared::{self, api::LocalCache, api::SharedLevel, names::Kind},
    single_flight::SingleFlight,
    tuning::state::Tuning,
};

/// What the core needs of the database's pool (its size, a health
/// check, closing), object-safe, so that [`Control`](crate::Control)
/// resizes, reports, checks and closes without naming the database type.
/// `Manager<DB>`'s pool implements it (in `manager::health`).
pub(crate) trait PoolOps: Send + Sync {
    /// Connections open (in use and idle).
    fn size(&self) -> u32;
    /// Connections open and idle.
    fn num_idle(&self) -> usize;
    /// True once closed.
    fn is_closed(&self) -> bool;
    /// Waits for connections to come back, then closes them.
    fn close(&self) -> BoxFuture<'_, ()>;
    /// One health check (see [`Control::health_check`](crate::Control::health_check)).
    fn health_check<'a>(&'a self, core: &'a Core) -> BoxFuture<'a, HealthReport>;
    /// What is known of the replicas reads may use, if any.
    fn replicas(&self) -> Option<Arc<crate::replica::Board>>;
}

/// The backend-free state of one manager, shared by its clones and its
/// [`Control`](crate::Control)s.
pub(crate) struct Core {
    pub(crate) config: ManagerConfig,
    pub(crate) gate: Arc<Gate>,
    pub(crate) min_connections: AtomicU32,
    /// Connections the database can give this pool (`u32::MAX`: unknown).
    pub(crate) connection_budget: AtomicU32,
    pub(crate) cache: Arc<dyn CacheLayer>,
    pub(crate) log: InvalidationLog,
    pub(crate) flights: SingleFlight,
    pub(crate) breaker: CircuitBreaker,
    pub(crate) leaks: Arc<LeakDetector>,
    pub(crate) metrics: Metrics,
    pub(crate) started: Instant,
    pub(crate) tasks: Mutex<Vec<JoinHandle<()>>>,
    /// The shared level and bus (nothing without `REDIS_URL`).
    pub(crate) shared: Arc<dyn SharedLevel>,
    /// What self-tuning measures and changes.
    pub(crate) tuning: Arc<Tuning>,
    /// Background refreshes: the policy, the keys being refreshed, counters.
    pub(crate) refreshes: Arc<Refreshes>,
    /// The database's pool.
    pub(crate) pool: Arc<dyn PoolOps>,
    /// The change-stream invalidator's figures (mode `off` until one runs).
    pub(crate) changes: Arc<ChangeState>,
    /// The consistency monitor: verifiers, waiting checks, figures.
    pub(crate) consistency: Arc<Monitor>,
    /// The replicas and the floors (`replica`), with `DB_REPLICA_URLS`.
    pub(crate) replicas: Option<Arc<crate::replica::Board>>,
}

impl Drop for Core {
    fn drop(&mut self) {
        for t in self.tasks.get_mut().drain(..) {
            t.abort();
        }
    }
}

impl Core {
    /// The core for `config` (already validated) in front of `pool`.
    pub(crate) fn new(config: ManagerConfig, pool: Arc<dyn PoolOps>) -> Result<Self, ConfigError> {
        let tuning = Tuning::new(&config);
        Ok(Core {
            gate: Gate::new(tuning.initial_limit(&config), config.admission.aging_step),
            tuning: Arc::new(tuning),
            min_connections: AtomicU32::new(config.pool.min_connections),
            connection_budget: AtomicU32::new(u32::MAX),
            cache: Arc::new(MemoryCache::new(&config.cache)),
            log: InvalidationLog::new(config.query_timeout),
            flights: SingleFlight::default(),
            breaker: CircuitBreaker::new(config.health.failure_threshold, config.health.cooldown),
            leaks: LeakDetector::new(config.leak.threshold),
            metrics: Metrics::new(),
            refreshes: Arc::new(Refreshes::new(&config.cache)),
            started: Instant::now(),
            tasks: Mutex::new(Vec::new()),
            shared: shared::build(&config.shared)?,
            changes: Arc::default(),
            consistency: Arc::new(Monitor::new(&config.consistency)),
            replicas: pool.replicas(),
            pool,
            config,
        })
    }

    /// Inserts `entry` unless `key` or one of its tags was invalidated since
    /// the entry's fetch began (`entry.seq`): such a result may predate the
    /// write. True if it stayed in.
    pub(crate) async fn insert_checked(&self, key: &Arc<str>, entry: CacheEntry) -> bool {
        let (tags, since) = (entry.tags.clone(), entry.seq);
        if !self.log.is_current(key, &tags, since) {
            return false;
        }
        self.cache.insert(key.clone(), entry).await;
        // An invalidation between the check above and the insert would
        // otherwise leave a condemned entry in the cache after its stamp
        // expires: look again, and drop what was stored if so.
        if !self.log.is_current(key, &tags, since) {
            self.cache.invalidate(key).await;
            return false;
        }
        true
    }

    /// Stores a value fetched (or computed) as of `since`, at `fetched_at`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn store(
        &self,
        key: &Arc<str>,
        tags: &Arc<[Arc<str>]>,
        fill: &Fill,
        value: Arc<dyn Any + Send + Sync>,
        size: u32,
        decode: Option<crate::cache::Decode>,
        refreshed: Option<Arc<std::sync::atomic::AtomicBool>>,
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
            refreshed,
        };
        self.insert_checked(key, entry).await;
    }

    /// Drops a key's or a tag's entries (or all) from this instance: the
    /// invalidation log first (so no running fetch stores its result),
    /// then the cache. Counts the write for adaptive TTLs (a write that
    /// updates entries in place goes through `replace_tag_local` instead).
    /// Returns the entries a tag invalidation dropped. The keys dropped
    /// are the consistency monitor's events (sampled there).
    pub(crate) async fn drop_local(&self, kind: Kind, name: &str) -> Vec<(Arc<str>, CacheEntry)> {
        let dropped = match kind {
            Kind::Key => {
                self.log.invalidate_key(name);
                self.cache.invalidate(name).await;
                self.consistency.touched(name);
                Vec::new()
            }
            Kind::Tag => {
                self.log.invalidate_tag(name);
                let dropped = self.cache.invalidate_tag(name).await;
                for (key, _) in &dropped {
                    self.consistency.touched(key);
                }
                dropped
            }
            Kind::Clear => {
                self.log.invalidate_all();
                self.cache.clear().await;
                Vec::new()
            }
        };
        self.tuning.wrote((kind, name), &dropped, &[]);
        dropped
    }

    /// A write's update in place of `tag`'s entries, as readers see it in
    /// one step: the updated entries go in first (as of a stamp reserved
    /// for the invalidation), then the tag is invalidated at that stamp
    /// and its other entries dropped. A reader finds the value from
    /// before the write (until the write's own store, so before its caller
    /// is answered) or the updated one, never a gap in between that would
    /// send it to the database for a value the writer already holds (a
    /// hot key read a thousand times a second met that gap on a good share
    /// of its writes). A fetch that started before the write still loses:
    /// its `seq` is below the stamp.
    pub(crate) async fn replace_tag_local(&self, tag: &str, updated: Vec<(Arc<str>, CacheEntry)>) {
        let stamp = self.log.reserve();
        let mut kept = Vec::with_capacity(updated.len());
        let mut checks = Vec::with_capacity(updated.len());
        for (key, mut entry) in updated {
            entry.seq = stamp;
            kept.push((key.clone(), entry.identity()));
            checks.push((key.clone(), entry.tags.clone()));
            self.cache.insert(key, entry).await;
        }
        self.log.invalidate_tag_at(tag, stamp);
        let dropped = self.cache.invalidate_tag_except(tag, &kept).await;
        // Another invalidation of a key (or of its other tags) after the
        // stamp: as `insert_checked`, no condemned entry stays behind.
        for (key, tags) in checks {
            if !self.log.is_current(&key, &tags, stamp) {
                self.cache.invalidate(&key).await;
            }
        }
        for key in dropped
            .iter()
            .map(|(k, _)| k)
            .chain(kept.iter().map(|(k, _)| k))
        {
            self.consistency.touched(key);
        }
        let restored: Vec<Arc<str>> = kept.into_iter().map(|(k, _)| k).collect();
        self.tuning.wrote((Kind::Tag, tag), &dropped, &restored);
    }

    /// True unless the shared level says otherwise (its bus has not caught
    /// up for longer than its lease, and the entry is older than that).
    pub(crate) fn may_serve(&self, entry: &CacheEntry) -> bool {
        self.shared.may_serve(entry.stored_at)
    }

    /// The in-process entry under `key` if it may be served: fresh, current
    /// and, with a shared level, within the bus lease.
    pub(crate) async fn peek_entry(&self, key: &str) -> Option<CacheEntry> {
        let entry = self.cache.get(key).await?;
        let servable = entry.is_fresh()
            && self.log.is_current(key, &entry.tags, entry.seq)
            && self.may_serve(&entry);
        servable.then_some(entry)
    }

    /// The entry a write may update in place: current and servable, fresh
    /// or past its TTL by less than the revalidation grace (a reader would
    /// be served it while it is refreshed, so the write keeps it right
    /// rather than dropping it for the next reader to fetch).
    pub(crate) async fn peek_entry_to_update(&self, key: &str) -> Option<CacheEntry> {
        let entry = self.cache.get(key).await?;
        let grace = self.refreshes.policy.grace;
        let within = entry.stored_at.elapsed() < entry.ttl + grace;
        let servable =
            within && self.log.is_current(key, &entry.tags, entry.seq) && self.may_serve(&entry);
        servable.then_some(entry)
    }

    /// The TTL to store `key`'s result with: the one `options` ask for,
    /// else its class's (adaptive TTLs) or the default; capped by the
    /// configured maximum. `None`: do not cache it (not asked to, or its
    /// class is written about as often as read).
    pub(crate) fn ttl_for(&self, key: &str, options: &QueryOptions) -> Option<Duration> {
        let cache = &self.config.cache;
        if !options.use_cache {
            return None;
        }
        match options.ttl {
            Some(ttl) => Some(ttl.min(cache.max_ttl)),
            None => self
                .tuning
                .ttl_for(key, &options.tags, cache.ttl, cache.max_ttl),
        }
    }

    /// Tells the breaker a connection failed; counts the circuit opening.
    pub(crate) fn connection_failed(&self) {
        if self.breaker.on_failure() {
            inc(&self.metrics.c.circuit_opens);
        }
    }

    /// The configured minimum of open connections, now.
    pub(crate) fn min_connections(&self) -> u32 {
        self.min_connections.load(Ordering::Relaxed)
    }
}

/// What storing a result needs to know about the fetch that produced it.
pub(crate) struct Fill {
    /// The invalidation sequence when the fetch started.
    pub(crate) since: Seq,
    /// When the fetch started (the entry is no fresher than that).
    pub(crate) fetched_at: std::time::Instant,
    /// How long it may be served.
    pub(crate) ttl: Duration,
    /// The shared level's stamp read before the fetch, if any.
    pub(crate) stamp: Option<Arc<crate::stamp::Stamp>>,
}

/// The in-process cache as the shared level works on it.
impl LocalCache for Core {
    fn drop_named<'a>(
        &'a self,
        kind: Kind,
        name: &'a str,
    ) -> BoxFuture<'a, Vec<(Arc<str>, CacheEntry)>> {
        Box::pin(self.drop_local(kind, name))
    }

    fn replace_tag<'a>(
        &'a self,
        tag: &'a str,
        updated: Vec<(Arc<str>, CacheEntry)>,
    ) -> BoxFuture<'a, ()> {
        Box::pin(self.replace_tag_local(tag, updated))
    }

    fn flush(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            self.drop_local(Kind::Clear, "").await;
        })
    }

    fn store(&self, key: Arc<str>, entry: CacheEntry) -> BoxFuture<'_, bool> {
        Box::pin(async move { self.insert_checked(&key, entry).await })
    }

    fn remove<'a>(&'a self, key: &'a str) -> BoxFuture<'a, ()> {
        self.cache.invalidate(key)
    }

    fn position(&self) -> Seq {
        self.log.snapshot()
    }

    fn cleared_after(&self, seq: Seq) -> bool {
        self.log.cleared_after(seq)
    }

    fn caches(&self, key: &str) -> bool {
        self.ttl_for(key, &QueryOptions::default()).is_some()
    }

    fn raise_floor(&self, kind: Kind, name: &str, floor: u64) {
        if let Some(board) = &self.replicas {
            board.floors.raise(kind, name, floor);
        }
    }
}
