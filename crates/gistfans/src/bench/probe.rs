//! A look inside a run while it measures: the virtual users also count into
//! a shared [`Tally`], and the run hands what it holds, as an [`Interval`],
//! to a callback at a fixed period (the soak's per-10-s figures).

use std::{
    sync::{Mutex, MutexGuard, PoisonError},
    time::{Duration, Instant},
};

use hdrhistogram::Histogram;

/// The figures of one stretch of a run.
pub struct Interval {
    /// Page-load latency, microseconds; its length is the page loads.
    pub latency: Histogram<u64>,
    /// Failures (page loads and writes).
    pub errors: u64,
    /// Writes the following read did not see.
    pub stale: u64,
    /// How long the stretch lasted.
    pub span: Duration,
}

impl Interval {
    /// An empty stretch.
    pub fn empty() -> Interval {
        Interval {
            latency: Histogram::new(3).expect("3 significant figures"),
            errors: 0,
            stale: 0,
            span: Duration::ZERO,
        }
    }

    /// Adds `other`, the stretch that followed this one.
    pub fn absorb(&mut self, other: &Interval) {
        self.latency.add(&other.latency).expect("same bounds");
        self.errors += other.errors;
        self.stale += other.stale;
        self.span += other.span;
    }
}

/// The open stretch, shared by the virtual users (a short lock per page load).
pub struct Tally {
    open: Mutex<(Interval, Instant)>,
}

impl Default for Tally {
    /// An empty tally whose stretch starts now.
    fn default() -> Tally {
        Tally {
            open: Mutex::new((Interval::empty(), Instant::now())),
        }
    }
}

impl Tally {
    fn lock(&self) -> MutexGuard<'_, (Interval, Instant)> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A page load that took `us` microseconds.
    pub fn load(&self, us: u64) {
        // `record` grows the histogram; `saturating_record` would clamp.
        let _ = self.lock().0.latency.record(us.max(1));
    }

    /// A failure.
    pub fn error(&self) {
        self.lock().0.errors += 1;
    }

    /// A stale read.
    pub fn stale(&self) {
        self.lock().0.stale += 1;
    }

    /// Drops what was counted and starts a new stretch now.
    pub fn restart(&self) {
        *self.lock() = (Interval::empty(), Instant::now());
    }

    /// Closes the open stretch and starts the next one.
    pub fn take(&self) -> Interval {
        let now = Instant::now();
        let (mut closed, since) = std::mem::replace(&mut *self.lock(), (Interval::empty(), now));
        closed.span = now - since;
        closed
    }
}

/// What `workload::run_mode` needs to be probed.
pub struct Probe<'a> {
    /// The callback's period while measuring.
    pub every: Duration,
    /// Where the virtual users count.
    pub tally: &'a Tally,
    /// Gets each closed stretch: one per period, and the remainder once the
    /// last virtual user has stopped.
    pub on_tick: &'a mut dyn FnMut(Interval),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn take_closes_the_stretch_and_starts_an_empty_one() {
        let t = Tally::default();
        t.load(1_000);
        t.load(0); // recorded as 1 µs
        t.error();
        t.stale();
        let first = t.take();
        assert_eq!(first.latency.len(), 2);
        assert_eq!(first.latency.min(), 1);
        assert_eq!((first.errors, first.stale), (1, 1));
        let second = t.take();
        assert_eq!(second.latency.len(), 0);
        assert_eq!((second.errors, second.stale), (0, 0));
    }

    #[test]
    fn restart_drops_what_was_counted() {
        let t = Tally::default();
        t.load(5);
        t.error();
        t.restart();
        let i = t.take();
        assert_eq!((i.latency.len(), i.errors), (0, 0));
    }

    #[test]
    fn absorb_adds_everything() {
        let mut a = Interval::empty();
        a.latency.record(10).unwrap();
        a.errors = 1;
        a.span = Duration::from_secs(10);
        let mut b = Interval::empty();
        b.latency.record(20).unwrap();
        b.stale = 2;
        b.span = Duration::from_secs(10);
        a.absorb(&b);
        assert_eq!(a.latency.len(), 2);
        assert_eq!((a.errors, a.stale), (1, 2));
        assert_eq!(a.span, Duration::from_secs(20));
    }
}
