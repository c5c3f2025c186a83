//! Refresh ahead and stale-while-revalidate: a TTL never puts a database
//! query in a reader's path.
//!
//! The problem: an entry that expires makes the next reader wait for the
//! query (a heavy aggregate: 40-80 ms), and entries filled together
//! (warming, a burst of misses) expire together, a wave of misses every
//! TTL. The TTL is a safety net here (invalidation keeps results fresh),
//! so the reader need not pay for it. Two rules, as in Caffeine's
//! `refreshAfterWrite`, Varnish's grace and nginx's background update:
//!
//! - **Refresh ahead.** A hit in the last `DB_CACHE_REFRESH_AHEAD` percent
//!   of an entry's TTL may start a refresh in the background, with the
//!   probability of XFetch (Vattani, Chierichetti, Lowenstein, "Optimal
//!   Probabilistic Cache Stampede Prevention", VLDB 2015): a read with
//!   `left` before expiry refreshes if `scale · −ln(u) ≥ left`, `u` uniform
//!   in (0, 1], i.e. with probability `exp(−left / scale)`. XFetch's scale
//!   is the recomputation time Δ (times β = 1): an expensive entry starts
//!   earlier. Here the scale is at least an eighth of the window, so that
//!   cheap entries too spread their refreshes over the window instead of
//!   all in its last milliseconds: keys filled at the same moment and read
//!   alike are refreshed at times about `scale` apart, and from then on
//!   expire apart. A key read `r` times a second is refreshed about
//!   `scale · ln(r · scale)` before expiry; one read too rarely to be
//!   refreshed ahead reaches its expiry, where the second rule takes over.
//! - **Stale while revalidate.** A read of an entry expired less than
//!   `DB_CACHE_REVALIDATE_GRACE` ago is answered with it
//!   ([`Source::Revalidating`](crate::Source)) while one refresh runs.
//!
//! Invariants:
//! - Nothing invalidated is served: both rules apply only to entries the
//!   invalidation log finds current (an invalidation also drops them), and
//!   a refresh stores its result under the same check as any fetch (an
//!   invalidation after its start discards it).
//! - At most one refresh per key runs at once, at most
//!   `DB_CACHE_REFRESHES` in all; none starts while a query waits at the
//!   gate (the pool is saturated: real traffic first). A refresh that
//!   cannot start is counted (`skipped`) and tried again by a later read.
//! - A refresh runs at low priority, under the manager's query timeout, and
//!   is never a reader's wait: the reader has its answer before it starts.

use std::{
    collections::HashSet,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use parking_lot::Mutex;
use serde::Serialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::CacheConfig;

/// Smallest XFetch scale, as a fraction of the refresh window: refreshes of
/// cheap entries still spread over the window (see the module doc).
const MIN_SCALE_OF_WINDOW: f64 = 1.0 / 8.0;

/// What a read may do with an entry it found current (not invalidated).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Freshness {
    /// Within its TTL; serve it.
    Fresh,
    /// Within its TTL; serve it and refresh it in the background.
    RefreshAhead,
    /// Past its TTL by less than the grace; serve it while one refresh runs.
    Revalidate,
    /// Past its TTL and the grace: a miss (kept only for stale-if-error).
    Expired,
}

/// The two rules' settings, from [`CacheConfig`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Policy {
    /// Fraction of a TTL at its end in which a hit may refresh (0: never).
    pub(crate) ahead: f64,
    /// How long past its TTL an entry is served while it is refreshed.
    pub(crate) grace: Duration,
}

impl Policy {
    pub(crate) fn new(config: &CacheConfig) -> Self {
        let on = config.max_refreshes > 0;
        Self {
            ahead: if on {
                f64::from(config.refresh_ahead_percent.min(100)) / 100.0
            } else {
                0.0
            },
            grace: if on {
                config.revalidate_grace
            } else {
                Duration::ZERO
            },
        }
    }

    /// What a read at `age` may do with an entry of `ttl` whose fetch took
    /// `cost`, given `u`, uniform in (0, 1]. Pure: the caller draws `u`
    /// (only when the answer can depend on it).
    pub(crate) fn classify(
        &self,
        age: Duration,
        ttl: Duration,
        cost: Duration,
        u: f64,
    ) -> Freshness {
        if age >= ttl {
            return if age - ttl < self.grace {
                Freshness::Revalidate
            } else {
                Freshness::Expired
            };
        }
        if self.in_window(age, ttl) && xfetch(ttl - age, self.scale(ttl, cost), u) {
            Freshness::RefreshAhead
        } else {
            Freshness::Fresh
        }
    }

    /// True if a read at `age` is in the refresh window of a `ttl` entry
    /// (where [`classify`](Self::classify) needs a random draw).
    pub(crate) fn in_window(&self, age: Duration, ttl: Duration) -> bool {
        self.ahead > 0.0 && age < ttl && (ttl - age).as_secs_f64() <= ttl.as_secs_f64() * self.ahead
    }

    /// XFetch's scale for an entry of `ttl` that took `cost` to fetch.
    fn scale(&self, ttl: Duration, cost: Duration) -> f64 {
        let window = ttl.as_secs_f64() * self.ahead;
        cost.as_secs_f64().max(window * MIN_SCALE_OF_WINDOW)
    }
}

/// XFetch's test: refresh when `scale · −ln(u) ≥ left` (seconds).
fn xfetch(left: Duration, scale: f64, u: f64) -> bool {
    let u = u.clamp(f64::MIN_POSITIVE, 1.0);
    scale * -u.ln() >= left.as_secs_f64()
}

/// A uniform draw in (0, 1] for [`Policy::classify`].
pub(crate) fn draw() -> f64 {
    1.0 - rand::random::<f64>()
}

/// Why a refresh was started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Trigger {
    /// A hit in the refresh window.
    Ahead,
    /// A read of an entry past its TTL, within the grace.
    Revalidate,
}

/// Counters of background refreshes, in [`Status`](crate::Status).
#[derive(Debug, Clone, Copy, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RefreshStatus {
    /// Refreshes started by a hit in the last part of an entry's TTL.
    pub ahead: u64,
    /// Refreshes started by a read of an entry past its TTL (within the grace).
    pub revalidations: u64,
    /// Reads answered with an entry past its TTL, within the grace, while
    /// its refresh ran (or was tried: see `skipped`). Counted as cache hits too.
    pub served_while_refreshing: u64,
    /// Refreshes not started: `DB_CACHE_REFRESHES` already running, or a
    /// query waiting at the gate (the pool saturated).
    pub skipped: u64,
    /// Refreshes that brought nothing: failed, discarded (an invalidation
    /// passed while they ran), or stored and dropped before any read.
    pub wasted: u64,
    /// Refreshes running now.
    pub running: u64,
}

/// The refreshes of one manager: which keys are being refreshed, the bound
/// on how many at once, and the counters.
pub(crate) struct Refreshes {
    pub(crate) policy: Policy,
    permits: Arc<Semaphore>,
    running: Mutex<HashSet<Arc<str>>>,
    ahead: AtomicU64,
    revalidations: AtomicU64,
    served: AtomicU64,
    skipped: AtomicU64,
    wasted: AtomicU64,
}

/// A started refresh: its key stays marked as being refreshed, and its
/// permit held, until this is dropped (the refresh ended, or its task was
/// aborted).
pub(crate) struct Ticket {
    refreshes: Arc<Refreshes>,
    key: Arc<str>,
    _permit: OwnedSemaphorePermit,
    /// Marks the entry the refresh stores: set once it is read.
    pub(crate) mark: Arc<AtomicBool>,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.refreshes.running.lock().remove(&self.key);
    }
}

impl Refreshes {
    pub(crate) fn new(config: &CacheConfig) -> Self {
        Self {
            policy: Policy::new(config),
            permits: Arc::new(Semaphore::new(config.max_refreshes)),
            running: Mutex::new(HashSet::new()),
            ahead: AtomicU64::new(0),
            revalidations: AtomicU64::new(0),
            served: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
            wasted: AtomicU64::new(0),
        }
    }

    /// Starts a refresh of `key` unless one is running (`None`, not
    /// counted), none may start now (`None`, counted as skipped: at the
    /// bound, or `saturated` says a query waits at the gate).
    pub(crate) fn try_start(
        self: &Arc<Self>,
        key: &Arc<str>,
        trigger: Trigger,
        saturated: impl FnOnce() -> bool,
    ) -> Option<Ticket> {
        let mut running = self.running.lock();
        if running.contains(key) {
            return None;
        }
        let permit = match self.permits.clone().try_acquire_owned() {
            Ok(p) if !saturated() => p,
            _ => {
                self.skipped.fetch_add(1, Ordering::Relaxed);
                return None;
            }
        };
        running.insert(key.clone());
        drop(running);
        let counter = match trigger {
            Trigger::Ahead => &self.ahead,
            Trigger::Revalidate => &self.revalidations,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        Some(Ticket {
            refreshes: self.clone(),
            key: key.clone(),
            _permit: permit,
            mark: Arc::new(AtomicBool::new(false)),
        })
    }

    /// A read answered with an entry past its TTL, within the grace.
    pub(crate) fn served_while_refreshing(&self) {
        self.served.fetch_add(1, Ordering::Relaxed);
    }

    /// A refresh that brought nothing.
    pub(crate) fn wasted(&self) {
        self.wasted.fetch_add(1, Ordering::Relaxed);
    }

    /// The counters; `unread` is the cache's count of refreshed entries
    /// dropped before any read.
    pub(crate) fn status(&self, unread: u64) -> RefreshStatus {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        RefreshStatus {
            ahead: get(&self.ahead),
            revalidations: get(&self.revalidations),
            served_while_refreshing: get(&self.served),
            skipped: get(&self.skipped),
            wasted: get(&self.wasted) + unread,
            running: self.running.lock().len() as u64,
        }
    }

    pub(crate) fn reset(&self) {
        for a in [
            &self.ahead,
            &self.revalidations,
            &self.served,
            &self.skipped,
            &self.wasted,
        ] {
            a.store(0, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(ahead_percent: u32, grace: Duration) -> Policy {
        Policy::new(&CacheConfig {
            refresh_ahead_percent: ahead_percent,
            revalidate_grace: grace,
            ..CacheConfig::default()
        })
    }

    const TTL: Duration = Duration::from_secs(100);
    const CHEAP: Duration = Duration::from_millis(1);

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    #[test]
    fn nothing_refreshes_before_the_window_and_everything_at_its_end() {
        let p = policy(20, Duration::from_secs(30));
        // Before the window: no draw, however lucky, refreshes.
        for age in [0.0, 50.0, 79.9] {
            assert_eq!(p.classify(secs(age), TTL, CHEAP, 1e-300), Freshness::Fresh);
        }
        // Near the end of the TTL, an ordinary draw refreshes.
        assert_eq!(
            p.classify(secs(99.999), TTL, CHEAP, 0.5),
            Freshness::RefreshAhead
        );
        // Past the TTL: within the grace, then expired.
        assert_eq!(
            p.classify(secs(100.0), TTL, CHEAP, 0.5),
            Freshness::Revalidate
        );
        assert_eq!(
            p.classify(secs(129.9), TTL, CHEAP, 0.5),
            Freshness::Revalidate
        );
        assert_eq!(p.classify(secs(130.0), TTL, CHEAP, 0.5), Freshness::Expired);
    }

    #[test]
    fn the_chance_of_a_refresh_rises_towards_expiry() {
        let p = policy(20, Duration::ZERO);
        let chance = |age: f64| {
            let n = 10_000;
            let hits = (1..=n)
                .filter(|i| {
                    let u = *i as f64 / n as f64;
                    p.classify(secs(age), TTL, CHEAP, u) == Freshness::RefreshAhead
                })
                .count();
            hits as f64 / n as f64
        };
        let ages = [80.5, 84.0, 88.0, 92.0, 96.0, 99.0, 99.9];
        let chances: Vec<f64> = ages.iter().map(|a| chance(*a)).collect();
        assert!(chances.windows(2).all(|w| w[0] < w[1]), "{chances:?}");
        assert!(chances[0] < 0.01 && chances[6] > 0.9, "{chances:?}");
    }

    #[test]
    fn an_expensive_entry_starts_earlier() {
        let p = policy(20, Duration::ZERO);
        let at = |cost: Duration| {
            (1..=1000)
                .filter(|i| {
                    p.classify(secs(85.0), TTL, cost, *i as f64 / 1000.0) == Freshness::RefreshAhead
                })
                .count()
        };
        assert!(at(Duration::from_secs(10)) > at(CHEAP), "XFetch's Δ");
    }

    /// 1,000 keys stored at the same moment, each read every 100 ms with
    /// its own draws: their refreshes spread over the window instead of
    /// coming as one wave, and none comes before it.
    #[test]
    fn keys_stored_together_refresh_apart() {
        use rand::{RngExt, SeedableRng};
        let p = policy(20, Duration::from_secs(30));
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut at: Vec<f64> = (0..1000)
            .map(|_| {
                let mut age = 0.0;
                loop {
                    age += 0.1;
                    let u = 1.0 - rng.random::<f64>();
                    if p.classify(secs(age), TTL, CHEAP, u) != Freshness::Fresh {
                        return age;
                    }
                }
            })
            .collect();
        at.sort_by(f64::total_cmp);
        assert!(at[0] >= 80.0, "none before the window: {}", at[0]);
        assert!(
            at[999] < 100.0,
            "every hot key refreshed before expiry: {}",
            at[999]
        );
        // Refreshes per second of the window: one wave would put them all
        // in the same second; here no second holds a fifth of them, and the
        // middle half spreads over seconds (the scale is 2.5 s).
        let mut per_second = [0usize; 20];
        for t in &at {
            per_second[((t - 80.0) as usize).min(19)] += 1;
        }
        let busiest = *per_second.iter().max().unwrap();
        let spread = per_second.iter().filter(|n| **n > 0).count();
        assert!(busiest < 200 && spread >= 10, "{per_second:?}");
        let middle_half = at[749] - at[250];
        assert!(middle_half > 2.0, "{middle_half} s");
    }

    #[test]
    fn no_refreshes_means_neither_rule() {
        let p = Policy::new(&CacheConfig {
            max_refreshes: 0,
            ..CacheConfig::default()
        });
        let ttl = Duration::from_secs(300);
        assert_eq!(
            p.classify(secs(299.9), ttl, CHEAP, 1e-300),
            Freshness::Fresh
        );
        assert_eq!(p.classify(secs(300.0), ttl, CHEAP, 0.5), Freshness::Expired);
    }

    #[test]
    fn one_refresh_per_key_and_at_most_the_bound() {
        let r = Arc::new(Refreshes::new(&CacheConfig {
            max_refreshes: 2,
            ..CacheConfig::default()
        }));
        let (a, b, c): (Arc<str>, Arc<str>, Arc<str>) = ("a".into(), "b".into(), "c".into());
        let ta = r.try_start(&a, Trigger::Ahead, || false).unwrap();
        assert!(
            r.try_start(&a, Trigger::Ahead, || false).is_none(),
            "one per key"
        );
        assert!(
            r.try_start(&b, Trigger::Revalidate, || true).is_none(),
            "saturated"
        );
        let _tb = r.try_start(&b, Trigger::Revalidate, || false).unwrap();
        assert!(
            r.try_start(&c, Trigger::Ahead, || false).is_none(),
            "at the bound"
        );
        let s = r.status(0);
        assert_eq!(
            (s.ahead, s.revalidations, s.skipped, s.running),
            (1, 1, 2, 2)
        );
        drop(ta);
        assert!(
            r.try_start(&a, Trigger::Ahead, || false).is_some(),
            "ended: again"
        );
    }
}
