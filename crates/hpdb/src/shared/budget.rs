//! How long a Redis call may take: a budget that follows the latency this
//! process observes, between a floor (`REDIS_TIMEOUT`) and a ceiling
//! ([`CEILING_FACTOR`] times it).
//!
//! A fixed budget declares Redis away whenever this machine is busy: with
//! both cores saturated a round trip to a healthy local Redis takes 10 to
//! 60 ms (the process waits for a core, not for Redis), and a 50 ms budget
//! then fails calls by the dozen a minute, each one a shared-level miss, a
//! heartbeat that cannot confirm the bus, or a lost confirmation. The budget
//! here is TCP's retransmission timeout (RFC 6298): a smoothed latency plus
//! four times its mean deviation, so it widens when calls slow down and
//! narrows again after. A timed-out call counts as a sample of the budget
//! it had (it took at least that), so timeouts raise the next budget.
//!
//! Readers wait at most the current budget. Writers (who wait for their
//! delivery anyway) and background steps (confirmations, fill stores:
//! nobody waits on them) are given the ceiling; the heartbeat, whose round
//! only has to finish within the bus lease, half the lease if that is more.

use std::time::Duration;

use parking_lot::Mutex;

/// The ceiling, as a multiple of the floor.
pub(crate) const CEILING_FACTOR: u32 = 4;

/// Who waits for a call, and so how long it may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Patience {
    /// A request is waiting on it: the current budget.
    Reader,
    /// A writer, or nobody: the ceiling.
    Patient,
    /// The heartbeat: half the bus lease, at least the ceiling.
    Heartbeat,
}

/// The adaptive budget.
pub(crate) struct Budget {
    floor: Duration,
    ceiling: Duration,
    heartbeat: Duration,
    /// Smoothed latency and mean deviation, in µs (`None` before the first sample).
    estimate: Mutex<Option<(f64, f64)>>,
}

impl Budget {
    pub(crate) fn new(floor: Duration, bus_lease: Duration) -> Self {
        let ceiling = floor * CEILING_FACTOR;
        Self {
            floor,
            ceiling,
            heartbeat: ceiling.max(bus_lease / 2),
            estimate: Mutex::new(None),
        }
    }

    /// The longest any call may take (the connection's own response
    /// timeout).
    pub(crate) fn longest(&self) -> Duration {
        self.heartbeat
    }

    /// How long a call of `patience` may take now.
    pub(crate) fn for_call(&self, patience: Patience) -> Duration {
        match patience {
            Patience::Heartbeat => self.heartbeat,
            Patience::Patient => self.ceiling,
            Patience::Reader => self.current(),
        }
    }

    /// The readers' budget now: smoothed latency + 4 deviations, within
    /// the floor and the ceiling.
    pub(crate) fn current(&self) -> Duration {
        let rto = match *self.estimate.lock() {
            None => return self.floor,
            Some((srtt, rttvar)) => srtt + 4.0 * rttvar,
        };
        Duration::from_micros(rto as u64).clamp(self.floor, self.ceiling)
    }

    /// Takes one call's latency into the estimate (a timed-out call: the
    /// budget it had).
    pub(crate) fn observe(&self, took: Duration) {
        let r = took.as_micros() as f64;
        let mut e = self.estimate.lock();
        *e = Some(match *e {
            None => (r, r / 2.0),
            // RFC 6298: alpha = 1/8, beta = 1/4.
            Some((srtt, rttvar)) => {
                let rttvar = 0.75 * rttvar + 0.25 * (srtt - r).abs();
                (0.875 * srtt + 0.125 * r, rttvar)
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn the_budget_starts_at_the_floor_and_stays_within_its_bounds() {
        let b = Budget::new(50 * MS, 1000 * MS);
        assert_eq!(b.current(), 50 * MS);
        assert_eq!(b.for_call(Patience::Patient), 200 * MS);
        assert_eq!(b.for_call(Patience::Heartbeat), 500 * MS);
        for _ in 0..100 {
            b.observe(MS);
        }
        assert_eq!(b.current(), 50 * MS, "never below the floor");
        for _ in 0..100 {
            b.observe(10 * 1000 * MS);
        }
        assert_eq!(b.current(), 200 * MS, "never above the ceiling");
    }

    #[test]
    fn a_busy_machine_widens_the_budget_and_a_quiet_one_narrows_it_again() {
        let b = Budget::new(50 * MS, 1000 * MS);
        for _ in 0..50 {
            b.observe(MS);
        }
        // Calls that take 20-60 ms (a saturated machine).
        for i in 0..50 {
            b.observe((20 + (i % 5) * 10) * MS);
        }
        let busy = b.current();
        assert!(busy > 60 * MS, "widened to {busy:?}");
        for _ in 0..200 {
            b.observe(MS);
        }
        assert_eq!(b.current(), 50 * MS, "back to the floor");
    }

    #[test]
    fn timeouts_raise_the_next_budget() {
        let b = Budget::new(50 * MS, 1000 * MS);
        for _ in 0..20 {
            b.observe(5 * MS);
        }
        let before = b.current();
        for _ in 0..3 {
            b.observe(b.current());
        }
        assert!(b.current() >= before);
        b.observe(b.current() * 2);
        assert!(b.current() > before, "{:?} > {before:?}", b.current());
    }
}
