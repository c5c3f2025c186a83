//! Adaptive TTLs per key class.
//!
//! Why: the advisor used to say "lengthen the cache TTL" and nothing acted.
//! This tuner acts: per key class (the key's prefix before the first `:`, see
//! [`TtlTuner::class_of`], or a name the caller chooses) it counts reads and
//! writes and picks the TTL of new entries from that mix. Invalidation by key
//! and tag stays the guarantee of freshness; the TTL is only the safety cap on
//! how long an entry whose invalidation was missed is served. So a read-mostly
//! hot class may live long (it saves queries, risks little), and a class
//! written about as often as read is cached briefly or not at all (its entries
//! are invalidated before they pay for themselves).
//!
//! ## The rule
//! With the decayed counters `R` (reads) and `W` (writes) of a class:
//! `R < min_reads` → `base` (too little seen); else `ratio = R / max(W, tiny)`;
//! `ratio < bypass_below` → [`TtlDecision::Bypass`]; else
//! `TTL = clamp(base × ratio / balance, min, max)`, then `min(cap)` (a zero
//! result is `Bypass`). Enough reads and no writes at all give `max`. Linear
//! in the ratio because the reads an entry serves before a write invalidates
//! it grow with reads per write. Defaults: `base` 5 min, `min` 5 s, `max` 1 h,
//! `balance` 10, `bypass_below` 2, `min_reads` 20, `half_life` 5 min,
//! `classes` 64. Decay is exponential with `half_life`, applied lazily: a
//! class's counters carry the instant they are valid at and are brought
//! forward when that class is updated or read; no timer scans the table.
//!
//! ## Invariants
//! - No class beyond `classes` gets its own counters: further names share the
//!   overflow class `"other"` (the table holds at most `classes + 1` entries).
//! - No class name longer than 32 bytes (cut on a char boundary).
//! - No TTL above the caller's `cap` nor `max`; none below `min` unless `cap` is.
//! - No longer TTL for more writes at the same reads.
//! - No allocation and one short lock on the hot path of a tracked class.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// The longest class name kept, in bytes.
const MAX_CLASS_LEN: usize = 32;
/// The class shared by every class name beyond the tracked ones.
const OVERFLOW: &str = "other";
/// Stands in for zero writes in the read/write ratio (so no writes give `max`).
const TINY: f64 = f64::MIN_POSITIVE;

/// Settings of a [`TtlTuner`].
#[derive(Debug, Clone)]
pub struct TtlPolicy {
    /// TTL while a class has too few observations to judge, and at the balance point (default 5 min).
    pub base: Duration,
    /// Shortest TTL given to a class that is still cached (default 5 s).
    pub min: Duration,
    /// Longest TTL (default 1 h); callers cap it further with their own maximum.
    pub max: Duration,
    /// Reads per write at which `base` applies (default 10.0): TTL scales with reads/writes around it.
    pub balance: f64,
    /// Below this many reads per write the class is not cached at all (default 2.0).
    pub bypass_below: f64,
    /// Reads (decayed) a class needs before its TTL moves from `base` (default 20.0).
    pub min_reads: f64,
    /// Counters halve every `half_life` (default 5 min), so the TTL follows a changing mix.
    pub half_life: Duration,
    /// Most classes tracked (default 64); further class names share one overflow class.
    pub classes: usize,
}

impl Default for TtlPolicy {
    fn default() -> Self {
        Self {
            base: Duration::from_secs(300),
            min: Duration::from_secs(5),
            max: Duration::from_secs(3600),
            balance: 10.0,
            bypass_below: 2.0,
            min_reads: 20.0,
            half_life: Duration::from_secs(300),
            classes: 64,
        }
    }
}

impl TtlPolicy {
    /// The rule of the module doc, on decayed reads `r` and writes `w`.
    fn rule(&self, r: f64, w: f64, cap: Duration) -> TtlDecision {
        let ttl = if r < self.min_reads {
            self.base
        } else {
            let ratio = r / w.max(TINY);
            if ratio < self.bypass_below {
                return TtlDecision::Bypass;
            }
            // f64::min/max ignore NaN and absorb infinity; a huge `max` cannot panic.
            let secs = (self.base.as_secs_f64() * ratio / self.balance)
                .min(self.max.as_secs_f64())
                .max(self.min.as_secs_f64());
            Duration::try_from_secs_f64(secs).map_or(self.max, |d| d.clamp(self.min, self.max))
        };
        match ttl.min(cap) {
            d if d.is_zero() => TtlDecision::Bypass,
            d => TtlDecision::Cache(d),
        }
    }
}

/// What the tuner decided for a class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum TtlDecision {
    /// Cache new entries of the class for this long.
    Cache(Duration),
    /// Do not cache the class: it is written about as often as it is read.
    Bypass,
}

/// One class's figures, for status and the monitor.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TtlClassStatus {
    /// The class name (`"other"` for the overflow class).
    pub class: String,
    /// Decayed reads (cache lookups, hit or miss).
    pub reads: f64,
    /// Decayed writes (entries invalidated or updated).
    pub writes: f64,
    /// Decayed hits over decayed reads, 0 when there were no reads.
    pub hit_rate: f64,
    /// The TTL a new entry would get, capped only by `max`; `None` = bypass.
    pub ttl_ms: Option<u64>,
}

/// Decayed counters of one class, valid at `as_of` (`None`: never used).
#[derive(Debug, Clone, Copy, Default)]
struct Counters {
    reads: f64,
    hits: f64,
    writes: f64,
    as_of: Option<Instant>,
}

impl Counters {
    /// Brings the counters forward to `now` (never backwards): each halves
    /// per `half_life` elapsed; a zero half-life forgets everything.
    fn decay(&mut self, now: Instant, half_life: Duration) {
        let as_of = *self.as_of.get_or_insert(now);
        if now > as_of {
            let f = (-(now - as_of).as_secs_f64() / half_life.as_secs_f64()).exp2();
            (self.reads, self.hits, self.writes) = (self.reads * f, self.hits * f, self.writes * f);
            self.as_of = Some(now);
        }
    }
}

/// Adaptive TTLs per key class; see the [module doc](self) for the rule.
/// `Send + Sync`; every method takes `&self`.
#[derive(Debug)]
pub struct TtlTuner {
    policy: TtlPolicy,
    /// The tracked classes, the overflow class always among them.
    table: Mutex<HashMap<Box<str>, Counters>>,
}

impl TtlTuner {
    /// A tuner with these settings (`max` raised to `min`, `base` clamped into
    /// `[min, max]`, a non-positive or non-finite `balance` replaced by 10).
    pub fn new(mut policy: TtlPolicy) -> Self {
        policy.max = policy.max.max(policy.min);
        policy.base = policy.base.clamp(policy.min, policy.max);
        if !(policy.balance.is_finite() && policy.balance > 0.0) {
            policy.balance = 10.0;
        }
        let table = Mutex::new(HashMap::from([(OVERFLOW.into(), Counters::default())]));
        Self { policy, table }
    }

    /// The policy in force (as `new` repaired it: `base` within `[min, max]`).
    pub fn policy(&self) -> &TtlPolicy {
        &self.policy
    }

    /// The class of a key: its prefix before the first ':' (the whole key if none), at most 32 bytes (cut on a char boundary).
    pub fn class_of(key: &str) -> &str {
        cut(key.split_once(':').map_or(key, |(prefix, _)| prefix))
    }

    /// A read of the class: a cache lookup, hit or miss.
    pub fn on_read(&self, class: &str, hit: bool) {
        self.on_read_at(class, hit, Instant::now());
    }

    /// [`on_read`](Self::on_read) at a given instant.
    pub fn on_read_at(&self, class: &str, hit: bool, now: Instant) {
        let hit = f64::from(u8::from(hit));
        self.update(class, now, |c| {
            (c.reads, c.hits) = (c.reads + 1.0, c.hits + hit)
        });
    }

    /// A write that touched the class: an entry of it invalidated or updated.
    pub fn on_write(&self, class: &str) {
        self.on_write_at(class, Instant::now());
    }

    /// [`on_write`](Self::on_write) at a given instant.
    pub fn on_write_at(&self, class: &str, now: Instant) {
        self.update(class, now, |c| c.writes += 1.0);
    }

    /// The TTL for a new entry of the class, capped by `cap` (the caller's maximum).
    pub fn decide(&self, class: &str, cap: Duration) -> TtlDecision {
        self.decide_at(class, cap, Instant::now())
    }

    /// [`decide`](Self::decide) at a given instant. An untracked class gets
    /// the overflow's figures when the table is full, else `base`.
    pub fn decide_at(&self, class: &str, cap: Duration, now: Instant) -> TtlDecision {
        let mut c = {
            let table = self.table.lock();
            let full = table.len() > self.policy.classes;
            let overflow = || table.get(OVERFLOW).filter(|_| full);
            table.get(cut(class)).or_else(overflow).copied()
        };
        let c = c.get_or_insert_default();
        c.decay(now, self.policy.half_life);
        self.policy.rule(c.reads, c.writes, cap)
    }

    /// Every tracked class, busiest first.
    pub fn status(&self) -> Vec<TtlClassStatus> {
        self.status_at(Instant::now())
    }

    fn status_at(&self, now: Instant) -> Vec<TtlClassStatus> {
        let snapshot: Vec<(Box<str>, Counters)> = {
            let table = self.table.lock();
            table.iter().map(|(k, c)| (k.clone(), *c)).collect()
        };
        let mut out: Vec<TtlClassStatus> = snapshot
            .into_iter()
            .map(|(class, mut c)| {
                c.decay(now, self.policy.half_life);
                let ttl = rank(self.policy.rule(c.reads, c.writes, self.policy.max));
                TtlClassStatus {
                    class: class.into(),
                    reads: c.reads,
                    writes: c.writes,
                    hit_rate: if c.reads > 0.0 { c.hits / c.reads } else { 0.0 },
                    ttl_ms: ttl.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
                }
            })
            .collect();
        out.sort_by(|a, b| (b.reads + b.writes).total_cmp(&(a.reads + a.writes)));
        out
    }

    /// Decays the class's counters to `now` and applies `f`, under one lock.
    fn update(&self, class: &str, now: Instant, f: impl FnOnce(&mut Counters)) {
        let mut table = self.table.lock();
        let key = self.slot_for(&mut table, cut(class));
        if let Some(c) = table.get_mut(key) {
            c.decay(now, self.policy.half_life);
            f(c);
        }
    }

    /// Where the class counts: its own entry, a new one if there is room (the
    /// only allocation), else the overflow (which never takes a slot).
    fn slot_for<'a>(&self, table: &mut HashMap<Box<str>, Counters>, class: &'a str) -> &'a str {
        if table.contains_key(class) {
            class
        } else if table.len() > self.policy.classes {
            OVERFLOW
        } else {
            table.insert(class.into(), Counters::default());
            class
        }
    }
}

/// A decision as an ordered value: `None` (bypass) below every cached TTL.
fn rank(d: TtlDecision) -> Option<Duration> {
    match d {
        TtlDecision::Cache(d) => Some(d),
        TtlDecision::Bypass => None,
    }
}

/// `s` cut to at most [`MAX_CLASS_LEN`] bytes on a char boundary.
fn cut(s: &str) -> &str {
    let mut end = s.len().min(MAX_CLASS_LEN);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const HOUR: Duration = Duration::from_secs(3600);
    const BASE: Duration = Duration::from_secs(300);
    const MAX: Duration = Duration::MAX;

    fn tuner() -> (TtlTuner, Instant) {
        (TtlTuner::new(TtlPolicy::default()), Instant::now())
    }

    /// `reads` (every other one a hit) and `writes` of `class` at `now`.
    fn feed(t: &TtlTuner, class: &str, reads: u32, writes: u32, now: Instant) {
        (0..reads).for_each(|i| t.on_read_at(class, i % 2 == 0, now));
        (0..writes).for_each(|_| t.on_write_at(class, now));
    }

    fn ttl(t: &TtlTuner, class: &str, cap: Duration, now: Instant) -> Option<Duration> {
        rank(t.decide_at(class, cap, now))
    }

    #[test]
    fn a_read_mostly_hot_class_moves_up_to_max_and_never_past_the_cap() {
        let (t, now) = tuner();
        feed(&t, "user", 1000, 2, now);
        feed(&t, "static", 50, 0, now);
        assert_eq!(ttl(&t, "user", MAX, now), Some(HOUR));
        assert_eq!(ttl(&t, "user", BASE * 2, now), Some(BASE * 2));
        assert_eq!(ttl(&t, "static", MAX, now), Some(HOUR));
    }

    #[test]
    fn a_class_written_about_as_often_as_read_is_bypassed_or_cached_briefly() {
        fn send_sync<T: Send + Sync>(_: &T) {}
        let (t, now) = tuner();
        send_sync(&t);
        feed(&t, "cart", 100, 80, now);
        feed(&t, "order", 100, 30, now);
        assert_eq!(t.decide_at("cart", HOUR, now), TtlDecision::Bypass);
        let order = ttl(&t, "order", HOUR, now);
        assert_eq!(order, Some(Duration::from_secs(100))); // 300 s × (100 / 30) / 10 < base
        let status = t.status_at(now); // busiest first
        assert_eq!((status[0].class.as_str(), status[0].ttl_ms), ("cart", None));
        assert_eq!((status[1].hit_rate, status[1].ttl_ms), (0.5, Some(100_000)));
    }

    #[test]
    fn too_few_reads_keep_the_base_ttl_and_a_zero_cap_bypasses() {
        let (t, now) = tuner();
        feed(&t, "new", 10, 0, now);
        feed(&t, "busy_writes", 5, 50, now);
        for class in ["unseen", "new", "busy_writes"] {
            assert_eq!(ttl(&t, class, HOUR, now), Some(BASE), "{class}");
        }
        assert_eq!(ttl(&t, "new", Duration::ZERO, now), None);
    }

    #[test]
    fn the_ttl_follows_a_change_of_mix_within_four_half_lives() {
        let (t, t0) = tuner();
        feed(&t, "feed", 1000, 1, t0);
        assert_eq!(ttl(&t, "feed", MAX, t0), Some(HOUR));
        let (mut now, end) = (t0, t0 + TtlPolicy::default().half_life * 4);
        while now < end {
            now += Duration::from_secs(1);
            feed(&t, "feed", 1, 2, now);
        }
        let after = ttl(&t, "feed", MAX, now);
        assert!(after.is_none_or(|d| d < BASE), "{after:?}");
    }

    #[test]
    fn classes_are_bounded_and_class_names_are_cut() {
        let (t, now) = tuner();
        (0..1000).for_each(|i| t.on_read_at(&format!("class{i}"), false, now));
        t.on_write_at(&"b".repeat(100), now);
        let status = t.status_at(now);
        assert!(status.len() <= 64 + 1 && status.iter().all(|s| s.class.len() <= 32));
        assert!(status
            .iter()
            .any(|s| s.class == OVERFLOW && s.reads > 900.0));
        let other = ttl(&t, OVERFLOW, HOUR, now);
        assert_eq!(ttl(&t, "class999", HOUR, now), other);
        assert_eq!(TtlTuner::class_of("user:42:profile"), "user");
        assert_eq!(TtlTuner::class_of("nocolon"), "nocolon");
        assert_eq!(TtlTuner::class_of(":x"), "");
        let long = "a".repeat(100) + ":1";
        assert_eq!(TtlTuner::class_of(&long), &long[..32]);
        let multi = format!("a{}:1", "é".repeat(20)); // char boundaries at odd bytes
        assert_eq!(TtlTuner::class_of(&multi), &multi[..31]);
    }

    proptest! {
        #[test]
        fn more_writes_never_lengthen_the_ttl(
            (reads, w1, extra) in (0.0f64..1e4, 0.0f64..1e4, 0.0f64..1e4),
            cap in (0u64..10_000).prop_map(Duration::from_secs),
        ) {
            let p = TtlPolicy::default();
            let few = rank(p.rule(reads, w1, cap));
            let more = rank(p.rule(reads, w1 + extra, cap));
            prop_assert!(more <= few, "{few:?} then {more:?}");
            prop_assert!(few.is_none_or(|d| d <= cap && d <= p.max));
        }
    }
}
