//! The consistency monitor (issue 21; the idea of Meta's Polaris, "Cache
//! made consistent", 2022): a sampled background check that a cached
//! entry still says what the database says, some time after each event
//! that should have made it so, reported as "consistency nines within T".
//!
//! The design decision: **the monitor measures, it does not repair.**
//! Invalidation (in process, the shared level, the bus, the change stream)
//! is what keeps entries right; the monitor tells how well that works. A
//! stale finding is counted, its key logged once (keys are ours, bounded),
//! and the entry is left alone: dropping it would hide from the next check
//! the very fault it found, and a repair path that runs only when the
//! sample happens to hit cannot be what correctness rests on. The TTL
//! still bounds how long a stale entry lives.
//!
//! How it works:
//! - **Events.** Every local drop of a key or a tag (`Core::drop_local`:
//!   an invalidation, a write's update in place, a delivery from the bus or
//!   the change stream on any instance) hands the keys it dropped to
//!   `Monitor::touched`. A tag's keys are those the in-process cache
//!   held under it, which is what can be served stale here. A clear of
//!   everything schedules nothing (nothing is left to check).
//! - **Sampling.** A key is considered only if its family (a key prefix)
//!   has a verifier ([`Control::verify_prefix`](crate::Control::verify_prefix));
//!   then with probability `DB_CONSISTENCY_SAMPLE` percent it is queued for
//!   a check at each delay (`DB_CONSISTENCY_FIRST`, 1 s, and
//!   `DB_CONSISTENCY_SECOND`, 10 s, after the event).
//! - **Bounded work.** At most `DB_CONSISTENCY_QUEUE` checks wait (a key
//!   sampled while full is dropped, counted); at most
//!   `DB_CONSISTENCY_CHECKS` run at once; a check due while a query waits at
//!   the gate, or while the circuit is open, is skipped (counted): real
//!   traffic first. Verifiers should run their re-read at low priority
//!   (the profiles' does; the cards' goes through the cards' batch loader,
//!   at its normal priority).
//! - **A check** (`control::consistency`) takes the entry the cache would
//!   serve now (fresh or within the revalidation grace, current); nothing
//!   there is `absent`, not a check. The verifier re-reads the truth and
//!   compares. A stale verdict is looked at again a moment later
//!   (`CONFIRM_AFTER`): if the entry was replaced or dropped meanwhile, a
//!   write committed just before the re-read was still on its way to the
//!   cache (`raced`, inconclusive); if the same entry is still there and
//!   still differs, it is stale. So a write's own short window between
//!   its commit and its invalidation is not reported, and a cache that
//!   keeps a wrong value is.
//! - **Figures** ([`ConsistencyStatus`] in [`Status`](crate::Status)), per
//!   delay: checked (fresh + stale), stale, absent, skipped, raced,
//!   errors, and nines = `-log10(stale / checked)` (none stale:
//!   `log10(checked)`, a lower bound).
//!
//! Absences: no check repairs anything; none runs for a key without a
//! verifier, and none while real traffic waits for a connection; the
//! queue and the running checks never grow past their bounds; a key
//! written around the cache with no event after it (no invalidation, no
//! write through the service, the change stream off) is not checked: the
//! monitor samples after events, it does not scan.
//!
//! | file | one job |
//! | --- | --- |
//! | `verdict` | [`Verdict`], the application's verifiers by key prefix |
//! | `queue` | the waiting checks, one FIFO per delay, bounded |
//! | `figures` | the counters per delay, nines, [`ConsistencyStatus`] |

mod figures;
mod queue;
mod verdict;

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use parking_lot::Mutex;
use tokio::{sync::Notify, time::Instant};

use self::{figures::Tally, queue::Queue};
use crate::config::ConsistencyConfig;

pub(crate) use figures::Outcome;
pub use figures::{nines, ConsistencyStatus, WithinStatus};
pub use verdict::{Verdict, VerifyError, VerifyFuture};
pub(crate) use verdict::{Verifiers, Verify};

/// How long after a stale verdict the entry is looked at again.
pub(crate) const CONFIRM_AFTER: Duration = Duration::from_millis(250);

/// One manager's monitor: its verifiers, the waiting checks, the counters.
pub(crate) struct Monitor {
    sample_percent: f64,
    /// The delays, shortest first.
    pub(crate) delays: Vec<Duration>,
    pub(crate) verifiers: Verifiers,
    queue: Mutex<Queue>,
    /// Raised when a check is queued (the task may be waiting for nothing).
    pub(crate) wake: Notify,
    /// Bounds the checks running at once.
    pub(crate) permits: Arc<tokio::sync::Semaphore>,
    sampled: AtomicU64,
    dropped: AtomicU64,
    tallies: Vec<Tally>,
    last_stale: Mutex<Option<Arc<str>>>,
}

impl Monitor {
    pub(crate) fn new(config: &ConsistencyConfig) -> Self {
        let delays: Vec<Duration> = std::iter::once(config.first_delay)
            .chain(config.second_delay)
            .collect();
        Self {
            sample_percent: config.sample_percent,
            queue: Mutex::new(Queue::new(delays.clone(), config.queue)),
            tallies: delays.iter().map(|_| Tally::default()).collect(),
            delays,
            verifiers: Verifiers::default(),
            wake: Notify::new(),
            permits: Arc::new(tokio::sync::Semaphore::new(config.max_checks)),
            sampled: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            last_stale: Mutex::new(None),
        }
    }

    fn enabled(&self) -> bool {
        self.sample_percent > 0.0
    }

    /// An event touched `key` (dropped it, or replaced it in place):
    /// sampled, queued for a check at each delay.
    pub(crate) fn touched(&self, key: &str) {
        if !self.enabled() || !self.verifiers.covers(key) {
            return;
        }
        if rand::random::<f64>() * 100.0 >= self.sample_percent {
            return;
        }
        if self.queue.lock().push(key.into(), Instant::now()) {
            self.sampled.fetch_add(1, Ordering::Relaxed);
            self.wake.notify_one();
        } else {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// When the next check falls due.
    pub(crate) fn next_due(&self) -> Option<Instant> {
        self.queue.lock().next_due()
    }

    /// The earliest check due now: its delay's index and its key.
    pub(crate) fn pop_due(&self) -> Option<(usize, Arc<str>)> {
        self.queue.lock().pop_due(Instant::now())
    }

    /// Counts how a check at delay `index` ended.
    pub(crate) fn record(&self, index: usize, outcome: Outcome) {
        self.tallies[index].record(outcome);
    }

    /// The delay at `index` as a label (`1s`).
    pub(crate) fn within(&self, index: usize) -> String {
        figures::label(self.delays[index])
    }

    /// Notes the key of a stale finding.
    pub(crate) fn found_stale(&self, key: Arc<str>) {
        *self.last_stale.lock() = Some(key);
    }

    /// Forgets the counters (not the waiting checks).
    pub(crate) fn reset(&self) {
        self.sampled.store(0, Ordering::Relaxed);
        self.dropped.store(0, Ordering::Relaxed);
        self.tallies.iter().for_each(Tally::reset);
        *self.last_stale.lock() = None;
    }

    pub(crate) fn status(&self) -> ConsistencyStatus {
        ConsistencyStatus {
            enabled: self.enabled(),
            sample_percent: self.sample_percent,
            families: self.verifiers.families(),
            sampled: self.sampled.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            pending: self.queue.lock().len() as u64,
            within: self
                .tallies
                .iter()
                .zip(&self.delays)
                .map(|(t, d)| t.status(*d))
                .collect(),
            last_stale: self.last_stale.lock().as_deref().map(str::to_string),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn monitor(sample_percent: f64, queue: usize) -> Monitor {
        let m = Monitor::new(&ConsistencyConfig {
            sample_percent,
            queue,
            ..ConsistencyConfig::default()
        });
        m.verifiers.add("agg:", |_, _: Arc<i64>| {
            Box::pin(async { Ok(Verdict::Fresh) })
        });
        m
    }

    #[tokio::test(start_paused = true)]
    async fn only_keys_with_a_verifier_are_sampled_and_each_at_both_delays() {
        let m = monitor(100.0, 100);
        m.touched("cards:1");
        m.touched("agg:1:7");
        let s = m.status();
        assert_eq!((s.sampled, s.pending, s.dropped), (1, 2, 0));
        assert_eq!(s.families, ["agg:"]);
        assert_eq!(s.within.len(), 2);
        assert_eq!(
            (s.within[0].within.as_str(), s.within[1].within.as_str()),
            ("1s", "10s")
        );
        assert_eq!(m.pop_due(), None, "not due before its delay");
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(m.pop_due(), Some((0, "agg:1:7".into())));
        assert_eq!(m.pop_due(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_queue_drops_and_counts_and_zero_percent_samples_nothing() {
        let m = monitor(100.0, 4);
        for i in 0..5 {
            m.touched(&format!("agg:{i}:7"));
        }
        let s = m.status();
        assert_eq!((s.sampled, s.dropped, s.pending), (2, 3, 4));
        let off = monitor(0.0, 4);
        off.touched("agg:1:7");
        let s = off.status();
        assert!(!s.enabled);
        assert_eq!((s.sampled, s.dropped, s.pending), (0, 0, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn sampling_takes_about_its_share() {
        let m = monitor(10.0, 1_000_000);
        for i in 0..10_000 {
            m.touched(&format!("agg:{i}:7"));
        }
        // 1,000 expected; the binomial's standard deviation is 30.
        let sampled = m.status().sampled;
        assert!((800..=1200).contains(&sampled), "{sampled}");
    }
}
