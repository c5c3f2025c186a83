//! `DataAggregationService`: one call returns a whole profile.
//!
//! - Reads run through hpdb: cached per (user, include set), coalesced, at the
//!   caller's priority (a page's own read high, preloading low). The cached
//!   value carries its JSON body and ETag, rendered once off the connection,
//!   so a cache hit serialises nothing (`reads`).
//! - Writes go through the service, which updates every cached aggregate
//!   they touch in place (see `incremental`), under a per-user lock so two
//!   writes never race on one aggregate. The order is what makes this safe:
//!   read the cached aggregates, write to the database, invalidate the keys
//!   (which also stops any fetch that started before the write from storing
//!   or sharing its result), then store the updated aggregates (`writes`).
//! - Preloading: after a profile is served, the profiles its viewer is
//!   likely to open next (its user's latest followees; with the learned
//!   rule, what viewers opened next after it lately) are warmed at low
//!   priority, a few at a time, only while nobody is queued for a
//!   connection; at start-up the most-followed users are warmed the same
//!   way (`preload`).
//! - The consistency monitor's verifier of cached aggregates (`verify`):
//!   re-reads one from the database and says whether the cached one still
//!   holds.

mod preload;
mod reads;
mod stripes;
mod timing;
mod verify;
mod writes;

use stripes::Stripes;

use std::{sync::Arc, time::Duration};

use hpdb::{Priority, Source};
use tokio::sync::Semaphore;

use crate::{model::Include, rendered::RenderedAggregate, Db};

use preload::Preloader;
pub use preload::{Preload, PreloadStats};
use timing::WriteTimings;
pub use timing::{PhaseTiming, WritePhase};

/// Options of [`DataAggregationService::get_user_aggregated_data`], as in the seed.
#[derive(Debug, Clone, Copy)]
pub struct AggregateOptions {
    /// Which optional parts to include.
    pub include: Include,
    /// Serve from and store into the cache.
    pub use_cache: bool,
    /// Cache TTL; `None` uses the manager's default (5 min).
    pub cache_ttl: Option<Duration>,
    /// Admission priority.
    pub priority: Priority,
    /// Fetch and store without looking in the cache first (warming).
    pub refresh: bool,
    /// The profile the viewer came from, if known: what the learned
    /// preloading rule learns from.
    pub viewed_from: Option<i64>,
}

impl Default for AggregateOptions {
    fn default() -> Self {
        Self {
            include: Include::ALL,
            use_cache: true,
            cache_ttl: None,
            priority: Priority::HIGH,
            refresh: false,
            viewed_from: None,
        }
    }
}

impl AggregateOptions {
    /// Warming: low priority, straight to the database, result cached.
    pub fn warming() -> Self {
        Self {
            priority: Priority::LOW,
            refresh: true,
            ..Self::default()
        }
    }
}

/// An aggregate as served, and where it came from.
#[derive(Debug, Clone)]
pub struct Served {
    /// The aggregate with its body and ETag.
    pub aggregate: Arc<RenderedAggregate>,
    /// Cache, database, a joined identical query, or a stale entry.
    pub source: Source,
}

/// Stripes of the per-user write locks and queues: many, so that two users
/// rarely share one (a cold user's write hashed onto a hot user's stripe
/// waits behind that user's writes); 4,096 × 2 small mutexes are ~0.5 MB.
const LOCK_STRIPES: usize = 4096;

/// The aggregation service. Cheap to clone.
#[derive(Clone)]
pub struct DataAggregationService {
    db: Db,
    /// Per-user write locks: held from a write's snapshot to its cache step.
    locks: Stripes,
    /// Per-user write queues: held from before a write's admission until it
    /// holds its lock, so at most one write per user waits for the lock
    /// while holding a connection.
    queues: Stripes,
    preloads: Arc<Semaphore>,
    /// Users preloaded lately: each is preloaded at most once a minute, so a
    /// hot page does not spawn work on every view.
    recently_preloaded: moka::sync::Cache<i64, ()>,
    preloader: Arc<Preloader>,
    write_timings: Arc<WriteTimings>,
}

/// The prefix of every cached aggregate's key.
const KEY_PREFIX: &str = "agg:";

fn key(user_id: i64, include: Include) -> String {
    format!("{KEY_PREFIX}{user_id}:{}", include.mask())
}

/// The user and include set a [`key`] names.
fn parse_key(key: &str) -> Option<(i64, Include)> {
    let (user, mask) = key.strip_prefix(KEY_PREFIX)?.split_once(':')?;
    let mask: u8 = mask.parse().ok()?;
    let include = Include::all_combinations().find(|i| i.mask() == mask)?;
    Some((user.parse().ok()?, include))
}

fn tag(user_id: i64) -> String {
    format!("user:{user_id}")
}

impl DataAggregationService {
    /// A service over `db`, preloading by the followee rule.
    pub fn new(db: Db) -> Self {
        let ttl = db.control().config().cache.ttl;
        verify::register(&db);
        Self {
            locks: Stripes::new(LOCK_STRIPES),
            queues: Stripes::new(LOCK_STRIPES),
            preloads: Arc::new(Semaphore::new(2)),
            recently_preloaded: moka::sync::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(Duration::from_secs(60))
                .build(),
            preloader: Arc::new(Preloader::new(Preload::Followees, ttl)),
            write_timings: Arc::default(),
            db,
        }
    }

    /// Sets which profiles are preloaded after a profile is served (tests
    /// that count queries turn it off).
    pub fn with_preload(mut self, rule: Preload) -> Self {
        let ttl = self.db.control().config().cache.ttl;
        self.preloader = Arc::new(Preloader::new(rule, ttl));
        self
    }

    /// The database.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Where writes' time went, phase by phase, since start (or the last
    /// [`reset_write_timings`](Self::reset_write_timings)).
    pub fn write_timings(&self) -> Vec<PhaseTiming> {
        self.write_timings.read()
    }

    /// Forgets the write timings (the monitor's "reset metrics").
    pub fn reset_write_timings(&self) {
        self.write_timings.reset();
    }
}
