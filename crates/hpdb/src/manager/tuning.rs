//! The manager's side of self-tuning: what the loops measure on the query
//! path, the loop that moves the gate's limit, and what the status shows.
//!
//! Invariants:
//! - The pool loop runs only with `pool.auto_size`, and changes nothing
//!   but the gate's limit, within `[min_connections, max_connections]`;
//!   nothing else changes that limit meanwhile (`resize` is refused).
//! - The TTL tuner runs only with `cache.adaptive_ttl`, and changes only
//!   the TTL of entries stored without one of their own.
//! - Measuring costs the query path a few relaxed atomic adds; no lock is
//!   taken there for the pool loop.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Weak,
    },
    time::Duration,
};

use parking_lot::Mutex;
use serde::Serialize;
use sqlx::Database;
use tokio::{task::JoinHandle, time::Instant};

use super::{Inner, Manager};
use crate::{
    cache::CacheEntry,
    config::ManagerConfig,
    env,
    shared::Kind,
    tuning::{
        concurrency::{LimitController, Reason, Window, MAX_WINDOW, MIN_SAMPLES, WINDOW},
        log::{TuningEvent, TuningLog},
        ttl::{TtlClassStatus, TtlDecision, TtlPolicy, TtlTuner},
    },
};

/// Most tags remembered for bypassed classes.
const BYPASSED_TAGS: u64 = 10_000;

/// What the query path tells the pool loop.
#[derive(Default)]
struct Samples {
    /// Queries finished on a connection, and their summed service time.
    count: AtomicU64,
    service_us: AtomicU64,
    /// Queries that ran out of time past the gate or found no connection.
    overloads: AtomicU64,
}

/// The pool loop's state, read by the status.
struct PoolLoop {
    controller: LimitController,
    last_reason: Option<Reason>,
}

/// Self-tuning state of one manager.
pub(super) struct Tuning {
    samples: Samples,
    pool: Option<Mutex<PoolLoop>>,
    ttl: Option<TtlTuner>,
    /// Tags of results whose class is bypassed, and that class (the last
    /// seen under the tag), at most [`BYPASSED_TAGS`].
    bypassed_tags: moka::sync::Cache<Arc<str>, Arc<str>>,
    /// Each class's TTL when last logged (ms; `None`: not cached).
    ttl_logged: Mutex<HashMap<String, Option<u64>>>,
    log: TuningLog,
}

impl Tuning {
    pub(super) fn new(config: &ManagerConfig) -> Self {
        let p = &config.pool;
        let pool = p.auto_size.then(|| {
            Mutex::new(PoolLoop {
                controller: LimitController::new(
                    p.min_connections as usize,
                    p.min_connections as usize,
                    p.max_connections as usize,
                ),
                last_reason: None,
            })
        });
        let c = &config.cache;
        let ttl = c.adaptive_ttl.then(|| {
            let floor = TtlPolicy::default().min;
            TtlTuner::new(TtlPolicy {
                base: c.ttl,
                // A configured TTL below the usual floor lowers the floor.
                min: floor.min(c.ttl),
                max: c.max_ttl,
                ..TtlPolicy::default()
            })
        });
        Self {
            samples: Samples::default(),
            pool,
            ttl,
            bypassed_tags: moka::sync::Cache::new(BYPASSED_TAGS),
            ttl_logged: Mutex::new(HashMap::new()),
            log: TuningLog::default(),
        }
    }

    /// The limit the gate starts at: the controller's, or the configured maximum.
    pub(super) fn initial_limit(&self, config: &ManagerConfig) -> usize {
        match &self.pool {
            Some(p) => p.lock().controller.limit(),
            None => config.pool.max_connections as usize,
        }
    }

    /// A query finished on a connection after `service`.
    pub(super) fn served(&self, service: Duration) {
        let s = &self.samples;
        s.count.fetch_add(1, Ordering::Relaxed);
        s.service_us
            .fetch_add(service.as_micros() as u64, Ordering::Relaxed);
    }

    /// A query ran out of time past the gate, or found no connection.
    pub(super) fn overloaded(&self) {
        self.samples.overloads.fetch_add(1, Ordering::Relaxed);
    }

    /// A cache lookup of `key`: a hit or a miss, for its class's TTL.
    pub(super) fn read(&self, key: &str, hit: bool) {
        if let Some(t) = &self.ttl {
            t.on_read(TtlTuner::class_of(key), hit);
        }
    }

    /// A write of `key`, or of `tag` that dropped `dropped` (whose keys in
    /// `restored` the write puts back updated in place: for those the write
    /// cost the cache nothing). A tag also counts for the classes it
    /// bypasses, of which nothing is cached to drop.
    fn wrote(
        &self,
        key_or_tag: (Kind, &str),
        dropped: &[(Arc<str>, CacheEntry)],
        restored: &[Arc<str>],
    ) {
        let Some(t) = &self.ttl else { return };
        match key_or_tag {
            (Kind::Key, key) => t.on_write(TtlTuner::class_of(key)),
            (Kind::Tag, tag) => {
                for (key, _) in dropped.iter().filter(|(k, _)| !restored.contains(k)) {
                    t.on_write(TtlTuner::class_of(key));
                }
                if let Some(class) = self.bypassed_tags.get(tag) {
                    t.on_write(&class);
                }
            }
            (Kind::Clear, _) => {}
        }
    }

    /// The TTL for a new entry of `key` (tagged `tags`) without one of its
    /// own: its class's, else `default`; never above `cap`. `None`: do not
    /// cache it (its class is written about as often as read).
    pub(super) fn ttl_for(
        &self,
        key: &str,
        tags: &[Arc<str>],
        default: Duration,
        cap: Duration,
    ) -> Option<Duration> {
        let Some(tuner) = &self.ttl else {
            return Some(default.min(cap));
        };
        let class = TtlTuner::class_of(key);
        match tuner.decide(class, cap) {
            TtlDecision::Cache(ttl) => Some(ttl),
            TtlDecision::Bypass => {
                // Remember which class the tags would have dropped, so
                // their writes still count (else the class would stop
                // seeing writes, and flap back to cached).
                for tag in tags {
                    if self.bypassed_tags.get(&**tag).as_deref() != Some(class) {
                        self.bypassed_tags.insert(tag.clone(), class.into());
                    }
                }
                None
            }
        }
    }
}

impl<DB: Database> Inner<DB> {
    /// Drops a key's or a tag's entries from this instance: the
    /// invalidation log first (so no running fetch stores its result),
    /// then the cache. Counts the write for adaptive TTLs, except for the
    /// keys in `restored`, which the caller puts back updated in place.
    /// Returns the entries a tag invalidation dropped.
    pub(super) async fn drop_local(
        &self,
        kind: Kind,
        name: &str,
        restored: &[Arc<str>],
    ) -> Vec<(Arc<str>, CacheEntry)> {
        let dropped = match kind {
            Kind::Key => {
                self.log.invalidate_key(name);
                self.cache.invalidate(name).await;
                Vec::new()
            }
            Kind::Tag => {
                self.log.invalidate_tag(name);
                self.cache.invalidate_tag(name).await
            }
            Kind::Clear => {
                self.log.invalidate_all();
                self.cache.clear().await;
                Vec::new()
            }
        };
        self.tuning.wrote((kind, name), &dropped, restored);
        dropped
    }
}

/// What self-tuning is doing, for the status.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TuningStatus {
    /// The pool's automatic sizing, if on.
    pub pool: Option<PoolTuningStatus>,
    /// Each key class's adaptive TTL, if on (busiest first).
    pub ttl_classes: Option<Vec<TtlClassStatus>>,
    /// The latest changes any loop made, newest last.
    pub events: Vec<TuningEvent>,
    /// Changes made since start.
    pub changes: u64,
}

/// The pool loop's state.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PoolTuningStatus {
    /// The limit now (queries running at once).
    pub limit: usize,
    /// Its bounds (`DB_POOL_MIN`, `DB_POOL_MAX`).
    pub min: u32,
    /// Upper bound.
    pub max: u32,
    /// The unloaded service time the controller compares with (ms).
    pub baseline_ms: Option<f64>,
    /// The last window's mean service time (ms).
    pub service_ms: Option<f64>,
    /// Why the limit last moved.
    pub last_reason: Option<String>,
}

impl<DB: Database> Manager<DB> {
    /// Self-tuning's state: the pool's limit and why it moved, the TTL
    /// classes, the latest changes.
    pub(super) fn tuning_status(&self) -> TuningStatus {
        let t = &self.inner.tuning;
        let p = &self.inner.config.pool;
        let pool = t.pool.as_ref().map(|l| {
            let l = l.lock();
            let ms = |d: Duration| d.as_secs_f64() * 1000.0;
            PoolTuningStatus {
                limit: l.controller.limit(),
                min: p.min_connections,
                max: p.max_connections,
                baseline_ms: l.controller.baseline().map(ms),
                service_ms: l.controller.last_service().map(ms),
                last_reason: l.last_reason.map(|r| r.describe().to_string()),
            }
        });
        TuningStatus {
            pool,
            ttl_classes: t.ttl.as_ref().map(TtlTuner::status),
            events: t.log.recent(),
            changes: t.log.total(),
        }
    }

    /// Starts the loops that are on: the pool's, and the one that logs
    /// the TTL classes' moves.
    pub(super) fn spawn_tuning_loops(&self) -> Vec<JoinHandle<()>> {
        let t = &self.inner.tuning;
        let weak = Arc::downgrade(&self.inner);
        let mut loops = Vec::new();
        if t.pool.is_some() {
            loops.push(tokio::spawn(pool_loop(weak.clone())));
        }
        if t.ttl.is_some() {
            loops.push(tokio::spawn(async move {
                let mut every = tokio::time::interval(TTL_LOG_EVERY);
                loop {
                    every.tick().await;
                    let Some(inner) = weak.upgrade() else { return };
                    inner.tuning.log_ttl_moves();
                }
            }));
        }
        loops
    }
}

/// How often the TTL classes are compared with what was last logged.
const TTL_LOG_EVERY: Duration = Duration::from_secs(1);

impl Tuning {
    /// Logs each class whose TTL moved by a quarter or more, or switched
    /// between cached and not, since it was last logged.
    fn log_ttl_moves(&self) {
        let Some(tuner) = &self.ttl else { return };
        let mut logged = self.ttl_logged.lock();
        for class in tuner.status() {
            let before = logged.get(&class.class).copied();
            let moved = match (before, class.ttl_ms) {
                // A new class at the default TTL has not moved.
                (None, Some(ms)) => ms != tuner.policy().base.as_millis() as u64,
                (None, None) => true,
                (Some(Some(a)), Some(b)) => {
                    b.saturating_mul(4) >= a.saturating_mul(5)
                        || b.saturating_mul(5) <= a.saturating_mul(4)
                }
                (Some(a), b) => a.is_some() != b.is_some(),
            };
            if !moved {
                continue;
            }
            let show =
                |ttl: Option<u64>| ttl.map_or("not cached".to_string(), |ms| format!("{ms} ms"));
            let reason = format!(
                "{:.0} reads and {:.0} writes lately, hit rate {:.0}%",
                class.reads,
                class.writes,
                class.hit_rate * 100.0
            );
            self.log.record(
                &format!("{}:{}", env::CACHE_TTL.name, class.class),
                before.map_or("default".to_string(), show),
                show(class.ttl_ms),
                &reason,
            );
            logged.insert(class.class, class.ttl_ms);
        }
    }
}

/// Every [`WINDOW`], closes a window once it has [`MIN_SAMPLES`] queries
/// (or has lasted [`MAX_WINDOW`], or nobody waits), hands it to the
/// controller and applies its move to the gate. Ends with the manager.
async fn pool_loop<DB: Database>(weak: Weak<Inner<DB>>) {
    let mut opened = Instant::now();
    let (mut peak_in_use, mut peak_queued) = (0, 0);
    let mut ticker = tokio::time::interval(WINDOW);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let Some(inner) = weak.upgrade() else { return };
        let (in_use, queued) = inner.gate.take_peaks();
        peak_in_use = peak_in_use.max(in_use);
        peak_queued = peak_queued.max(queued);
        let s = &inner.tuning.samples;
        let count = s.count.load(Ordering::Relaxed);
        if count < MIN_SAMPLES && peak_queued > 0 && opened.elapsed() < MAX_WINDOW {
            continue;
        }
        let count = s.count.swap(0, Ordering::Relaxed);
        let service_us = s.service_us.swap(0, Ordering::Relaxed);
        let window = Window {
            samples: count,
            mean_service: Duration::from_micros(service_us.checked_div(count).unwrap_or(0)),
            peak_in_use,
            peak_queued,
            overloads: s.overloads.swap(0, Ordering::Relaxed),
        };
        (opened, peak_in_use, peak_queued) = (Instant::now(), 0, 0);
        let Some(pool) = &inner.tuning.pool else {
            return;
        };
        // The loop alone sets the gate's limit (`resize` is refused while
        // the pool sizes itself).
        let mut l = pool.lock();
        if let Some(change) = l.controller.on_window(&window) {
            l.last_reason = Some(change.reason);
            inner.gate.set_limit(change.to);
            inner.tuning.log.record(
                env::POOL_MAX.name,
                change.from.to_string(),
                change.to.to_string(),
                change.reason.describe(),
            );
        }
    }
}
