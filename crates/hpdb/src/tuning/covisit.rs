//! Co-visitation: which item is opened after which ("viewers who open A open
//! B next").
//!
//! ## Why
//! The GistFans seed asks for "智能预测" (smart prediction): guess what a
//! viewer opens next and preload it at low priority, so the second click is
//! served from the cache. [`CoVisits`] learns the transitions `from → to` that
//! callers report and answers "the few likeliest successors of `from`"; it
//! changes nothing by itself, the caller decides what to preload.
//!
//! ## Invariants (as absences)
//! - No more than `sources` rows exist once moka's pending maintenance has run
//!   (the least recently used source is forgotten first).
//! - No row grows past `per_source` successors.
//! - No timer scans the model: decay is applied lazily, to one row, when that
//!   row is updated or read.
//! - No self-transition (`from == to`) is ever recorded.
//! - No prediction has a decayed weight below `min_weight`.
//!
//! ## Algorithm
//! Each source has one row: up to `per_source` `(successor, weight)` pairs
//! and the `Instant` (`as_of`) at which those weights are exact. A weight
//! halves every `half_life`, so reading at `now` multiplies it by
//! `0.5^((now - as_of) / half_life)`; an update first rescales the row to
//! `now`, then adds 1 to the successor. When the row is full, a new successor
//! replaces the entry with the lowest decayed weight and inherits that
//! weight plus one: the Space-Saving algorithm (Metwally, Agrawal, El Abbadi,
//! "Efficient Computation of Frequent and Top-k Elements in Data Streams",
//! ICDT 2005), which overestimates a counter by at most the minimum it
//! inherited and so never loses a heavy hitter. Rows live in a moka cache bounded by entry
//! count with an LRU policy; each row is behind its own mutex, so observers
//! of different sources never contend.

use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::{policy::EvictionPolicy, sync::Cache};
use parking_lot::Mutex;

/// Settings of a [`CoVisits`] model.
#[derive(Debug, Clone)]
pub struct CoVisitConfig {
    /// Most source items tracked (default 50_000); the least recently used
    /// (observed or predicted) source is forgotten first.
    pub sources: usize,
    /// Most successors kept per source (default 8).
    pub per_source: usize,
    /// A transition's weight halves every `half_life` (default 10 min).
    pub half_life: Duration,
    /// Smallest decayed weight a prediction may have (default 1.5: seen
    /// more than once recently; two observations a moment apart weigh a
    /// hair under 2, so 2 would ask for three).
    pub min_weight: f64,
}

impl Default for CoVisitConfig {
    fn default() -> Self {
        Self {
            sources: 50_000,
            per_source: 8,
            half_life: Duration::from_secs(10 * 60),
            min_weight: 1.5,
        }
    }
}

/// The successors of one source, with weights exact at `as_of`.
#[derive(Debug)]
struct Row<K> {
    as_of: Instant,
    entries: Vec<(K, f64)>,
}

/// A bounded, decaying co-visitation model: learns which item is opened
/// right after which, and predicts the likeliest next ones.
///
/// Thread-safe (share it behind an `Arc` or a `&`); see the
/// module documentation for the algorithm and its bounds.
pub struct CoVisits<K> {
    rows: Cache<K, Arc<Mutex<Row<K>>>>,
    per_source: usize,
    half_life: Duration,
    min_weight: f64,
    observed: AtomicU64,
}

impl<K> std::fmt::Debug for CoVisits<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CoVisits")
            .field("per_source", &self.per_source)
            .field("half_life", &self.half_life)
            .field("min_weight", &self.min_weight)
            .field("observed", &self.observed.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl<K> CoVisits<K>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
{
    /// A model with the given settings. `sources` and `per_source` are
    /// raised to at least 1, `half_life` to at least 1 ns.
    pub fn new(config: CoVisitConfig) -> Self {
        let rows = Cache::builder()
            .max_capacity(config.sources.max(1) as u64)
            .eviction_policy(EvictionPolicy::lru())
            .build();
        Self {
            rows,
            per_source: config.per_source.max(1),
            half_life: config.half_life.max(Duration::from_nanos(1)),
            min_weight: config.min_weight,
            observed: AtomicU64::new(0),
        }
    }

    /// Records that `to` was opened right after `from` (ignored when
    /// `from == to`), now.
    pub fn observe(&self, from: &K, to: &K) {
        self.observe_at(from, to, Instant::now());
    }

    /// Records that `to` was opened right after `from` (ignored when
    /// `from == to`), at `now`. An `Instant` older than the row's last update
    /// counts as that update's time (no decay is undone).
    pub fn observe_at(&self, from: &K, to: &K, now: Instant) {
        if from == to {
            return;
        }
        let row = match self.rows.get(from) {
            Some(row) => row,
            None => self.rows.get_with(from.clone(), || {
                Arc::new(Mutex::new(Row {
                    as_of: now,
                    entries: Vec::with_capacity(self.per_source.min(16)),
                }))
            }),
        };
        self.observed.fetch_add(1, Ordering::Relaxed);
        let mut row = row.lock();
        if now > row.as_of {
            let factor = self.decay(now - row.as_of);
            row.entries.iter_mut().for_each(|(_, w)| *w *= factor);
            row.as_of = now;
        }
        if let Some((_, w)) = row.entries.iter_mut().find(|(k, _)| k == to) {
            *w += 1.0;
        } else if row.entries.len() < self.per_source {
            row.entries.push((to.clone(), 1.0));
        } else if let Some(min) = row
            .entries
            .iter_mut()
            .min_by(|(_, a), (_, b)| a.total_cmp(b))
        {
            // Space-Saving: the newcomer takes the lightest slot and inherits
            // its weight + 1, an upper bound of its true (decayed) count.
            *min = (to.clone(), min.1 + 1.0);
        }
    }

    /// The at most `n` likeliest successors of `from`, heaviest first, each
    /// with its decayed weight >= `min_weight`, as of now.
    pub fn predict(&self, from: &K, n: usize) -> Vec<(K, f64)> {
        self.predict_at(from, n, Instant::now())
    }

    /// The at most `n` likeliest successors of `from`, heaviest first, each
    /// with its decayed weight (as of `now`) >= `min_weight`.
    pub fn predict_at(&self, from: &K, n: usize, now: Instant) -> Vec<(K, f64)> {
        if n == 0 {
            return Vec::new();
        }
        let Some(row) = self.rows.get(from) else {
            return Vec::new();
        };
        let mut out: Vec<(K, f64)> = {
            let row = row.lock();
            let factor = self.decay(now.saturating_duration_since(row.as_of));
            row.entries
                .iter()
                .map(|(k, w)| (k, w * factor))
                .filter(|(_, w)| *w >= self.min_weight)
                .map(|(k, w)| (k.clone(), w))
                .collect()
        };
        out.sort_by(|(_, a), (_, b)| b.total_cmp(a));
        out.truncate(n);
        out
    }

    /// Sources tracked now. Runs moka's pending maintenance first (its cost
    /// is the work queued since the last run, not the model's size), so the
    /// figure respects the `sources` bound.
    pub fn sources(&self) -> usize {
        self.rows.run_pending_tasks();
        usize::try_from(self.rows.entry_count()).unwrap_or(usize::MAX)
    }

    /// Transitions observed since creation (a counter; self-transitions are
    /// not counted).
    pub fn observed(&self) -> u64 {
        self.observed.load(Ordering::Relaxed)
    }

    /// The factor a weight is multiplied by after `elapsed`.
    fn decay(&self, elapsed: Duration) -> f64 {
        0.5f64.powf(elapsed.as_secs_f64() / self.half_life.as_secs_f64())
    }

    /// Successors held by `from`'s row (0 if untracked).
    #[cfg(test)]
    fn row_len(&self, from: &K) -> usize {
        self.rows
            .get(from)
            .map_or(0, |row| row.lock().entries.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Duration = Duration::from_secs(1);

    fn model(config: CoVisitConfig) -> CoVisits<&'static str> {
        CoVisits::new(config)
    }

    /// A→B ×10, A→C ×3, A→D ×1 and noise from other sources, one per second
    /// from `t0`; returns the instant after the last observation.
    fn plant(m: &CoVisits<&'static str>, t0: Instant) -> Instant {
        let mut t = t0;
        let mut step = |from: &'static str, to: &'static str, times: usize| {
            for _ in 0..times {
                m.observe_at(&from, &to, t);
                t += SEC;
            }
        };
        step("A", "B", 4);
        step("X", "B", 5);
        step("A", "C", 3);
        step("A", "B", 6);
        step("Y", "C", 7);
        step("A", "D", 1);
        step("Z", "A", 3);
        t
    }

    fn keys(p: &[(&'static str, f64)]) -> Vec<&'static str> {
        p.iter().map(|(k, _)| *k).collect()
    }

    #[test]
    fn planted_pattern_is_predicted_heaviest_first_without_light_ones() {
        let m = model(CoVisitConfig::default());
        let t = plant(&m, Instant::now());
        let p = m.predict_at(&"A", 2, t);
        assert_eq!(keys(&p), ["B", "C"]);
        assert!(p[0].1 > p[1].1 && p[1].1 >= 2.0, "{p:?}");
        // D (weight ~1) is below min_weight even when more are asked for.
        assert_eq!(keys(&m.predict_at(&"A", 10, t)), ["B", "C"]);
        assert_eq!(m.observed(), 29);
    }

    #[test]
    fn forgets_after_decay_and_newer_pattern_wins() {
        let config = CoVisitConfig::default();
        let half_life = config.half_life;
        let m = model(config);
        let later = plant(&m, Instant::now()) + half_life * 5;
        assert!(m.predict_at(&"A", 3, later).is_empty());
        for i in 0..3 {
            m.observe_at(&"A", &"E", later + SEC * i);
        }
        let p = m.predict_at(&"A", 3, later + SEC * 3);
        assert_eq!(keys(&p), ["E"]);
        assert!((p[0].1 - 3.0).abs() < 0.01, "{p:?}");
    }

    #[test]
    fn memory_stays_bounded_and_heavy_hitters_survive() {
        let t0 = Instant::now();
        let m: CoVisits<u32> = CoVisits::new(CoVisitConfig {
            sources: 100,
            ..CoVisitConfig::default()
        });
        for s in 0..10_000u32 {
            m.observe_at(&s, &(s + 1), t0);
        }
        assert!(m.sources() <= 100, "{} sources", m.sources());

        let m: CoVisits<u32> = CoVisits::new(CoVisitConfig {
            per_source: 4,
            ..CoVisitConfig::default()
        });
        let (from, heavy) = (0u32, 1u32);
        for i in 0..50u32 {
            let t = t0 + SEC * i;
            m.observe_at(&from, &heavy, t);
            m.observe_at(&from, &(100 + i), t);
            assert!(m.row_len(&from) <= 4, "row holds {}", m.row_len(&from));
        }
        let p = m.predict_at(&from, 4, t0 + SEC * 50);
        assert_eq!(p[0].0, heavy, "{p:?}");
        assert!(p[0].1 > 45.0, "{p:?}");
    }

    #[test]
    fn self_transitions_unknown_sources_and_zero_n_give_nothing() {
        let t = Instant::now();
        let m = model(CoVisitConfig::default());
        for _ in 0..5 {
            m.observe_at(&"A", &"A", t);
        }
        assert_eq!(m.observed(), 0);
        assert_eq!(m.sources(), 0);
        assert!(m.predict_at(&"A", 3, t).is_empty());
        assert!(m.predict_at(&"unknown", 3, t).is_empty());
        for _ in 0..5 {
            m.observe_at(&"A", &"B", t);
        }
        assert_eq!(keys(&m.predict_at(&"A", 3, t)), ["B"]);
        assert!(m.predict_at(&"A", 0, t).is_empty());
    }

    #[test]
    fn concurrent_observers_lose_no_count() {
        let t = Instant::now();
        let m = model(CoVisitConfig::default());
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..1000 {
                        m.observe_at(&"A", &"B", t);
                    }
                });
            }
        });
        let p = m.predict_at(&"A", 1, t);
        assert_eq!(keys(&p), ["B"]);
        assert!((p[0].1 - 4000.0).abs() < 1e-6, "{p:?}");
        assert_eq!(m.observed(), 4000);
    }
}
