//! [`Tuning`]: self-tuning as the manager uses it: what the loops measure
//! on the query path, the TTL each class gets, the loop that moves the
//! gate's limit and the one that logs the TTLs' moves. With a loop off its
//! part does nothing, so the manager calls it unconditionally.
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
use tokio::{task::JoinHandle, time::Instant};

use super::{
    concurrency::{LimitController, Reason, Window, MAX_WINDOW, MIN_SAMPLES, WINDOW},
    log::TuningLog,
    ttl::{TtlDecision, TtlPolicy, TtlTuner},
};
use crate::{admission::Gate, cache::CacheEntry, config::ManagerConfig, env, shared::names::Kind};

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
pub(super) struct PoolLoop {
    pub(super) controller: LimitController,
    pub(super) last_reason: Option<Reason>,
}

/// Self-tuning state of one manager.
pub(crate) struct Tuning {
    samples: Samples,
    pub(super) pool: Option<Mutex<PoolLoop>>,
    pub(super) ttl: Option<TtlTuner>,
    /// Tags of results whose class is bypassed, and that class (the last
    /// seen under the tag), at most [`BYPASSED_TAGS`].
    bypassed_tags: moka::sync::Cache<Arc<str>, Arc<str>>,
    /// Each class's TTL when last logged (ms; `None`: not cached).
    ttl_logged: Mutex<HashMap<String, Option<u64>>>,
    pub(super) log: TuningLog,
}

impl Tuning {
    pub(crate) fn new(config: &ManagerConfig) -> Self {
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
    pub(crate) fn initial_limit(&self, config: &ManagerConfig) -> usize {
        match &self.pool {
            Some(p) => p.lock().controller.limit(),
            None => config.pool.max_connections as usize,
        }
    }

    /// A query finished on a connection after `service`.
    pub(crate) fn served(&self, service: Duration) {
        let s = &self.samples;
        s.count.fetch_add(1, Ordering::Relaxed);
        s.service_us
            .fetch_add(service.as_micros() as u64, Ordering::Relaxed);
    }

    /// A query ran out of time past the gate, or found no connection.
    pub(crate) fn overloaded(&self) {
        self.samples.overloads.fetch_add(1, Ordering::Relaxed);
    }

    /// A cache lookup of `key`: a hit or a miss, for its class's TTL.
    pub(crate) fn read(&self, key: &str, hit: bool) {
        if let Some(t) = &self.ttl {
            t.on_read(TtlTuner::class_of(key), hit);
        }
    }

    /// A write of `key`, or of `tag` that dropped `dropped` (whose keys in
    /// `restored` the write puts back updated in place: for those the write
    /// cost the cache nothing). A tag also counts for the classes it
    /// bypasses, of which nothing is cached to drop.
    pub(crate) fn wrote(
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
    pub(crate) fn ttl_for(
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

/// How often the TTL classes are compared with what was last logged.
const TTL_LOG_EVERY: Duration = Duration::from_secs(1);

impl Tuning {
    /// Starts the loops that are on: the pool's, and the one that logs
    /// the TTL classes' moves.
    /// (The loops hold the tuning and the gate weakly: they end with the
    /// manager.)
    pub(crate) fn start(self: &Arc<Self>, gate: &Arc<Gate>) -> Vec<JoinHandle<()>> {
        let weak = Arc::downgrade(self);
        let mut loops = Vec::new();
        if self.pool.is_some() {
            loops.push(tokio::spawn(pool_loop(weak.clone(), Arc::downgrade(gate))));
        }
        if self.ttl.is_some() {
            loops.push(tokio::spawn(async move {
                let mut every = tokio::time::interval(TTL_LOG_EVERY);
                loop {
                    every.tick().await;
                    let Some(tuning) = weak.upgrade() else { return };
                    tuning.log_ttl_moves();
                }
            }));
        }
        loops
    }

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
async fn pool_loop(weak: Weak<Tuning>, gate: Weak<Gate>) {
    let mut opened = Instant::now();
    let (mut peak_in_use, mut peak_queued) = (0, 0);
    let mut ticker = tokio::time::interval(WINDOW);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let (Some(tuning), Some(gate)) = (weak.upgrade(), gate.upgrade()) else {
            return;
        };
        let (in_use, queued) = gate.take_peaks();
        peak_in_use = peak_in_use.max(in_use);
        peak_queued = peak_queued.max(queued);
        let s = &tuning.samples;
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
        let Some(pool) = &tuning.pool else {
            return;
        };
        // The loop alone sets the gate's limit (`resize` is refused while
        // the pool sizes itself).
        let mut l = pool.lock();
        if let Some(change) = l.controller.on_window(&window) {
            l.last_reason = Some(change.reason);
            gate.set_limit(change.to);
            tuning.log.record(
                env::POOL_MAX.name,
                change.from.to_string(),
                change.to.to_string(),
                change.reason.describe(),
            );
        }
    }
}
