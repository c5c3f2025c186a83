//! Automatic pool sizing: how many queries run at once, chosen from what
//! the database's answers say, within `[DB_POOL_MIN, DB_POOL_MAX]`.
//!
//! The gate's limit is the pool's size in all but name: a connection is held
//! only with a slot, so the limit bounds the connections open (sqlx closes
//! the idle ones above the minimum after `DB_POOL_TIMEOUT`).
//!
//! ## The algorithm: TCP Vegas on the database's service time
//! Little's law says a database doing `X` queries a second with `N` in
//! service takes `R = N / X` each. Until the database saturates (its cores,
//! its disk), more concurrency raises `X` and leaves `R` flat; past that
//! point `X` stays put and every extra query in service only waits inside
//! the database, so `R` grows with `N`. Vegas (Brakmo and Peterson, 1995;
//! Netflix's `concurrency-limits` `VegasLimit`) reads that directly: with
//! `R0` the service time without queueing and `R` the current one,
//!
//! ```text
//! queued in the database ≈ limit × (1 − R0 / R)
//! ```
//!
//! Each window (about [`WINDOW`], or [`MIN_SAMPLES`] queries) the controller
//! grows the limit by one while that estimate is below `alpha` *and*
//! callers are waiting at the gate (more concurrency can only help someone
//! waiting for it), shrinks it by one when the estimate exceeds `beta`, and
//! cuts it by a quarter when queries fail for lack of time or connections.
//! When the load falls (no one queued, fewer than half the slots used) it
//! decays toward twice the peak in use, so idle connections are let go.
//!
//! Why it is stable: the estimate is monotonic in the limit once the
//! database saturates (each extra slot adds about one queued query), so the
//! limit has a band `[alpha, beta]` of queued queries where it does not
//! move; steps of one per window cannot jump over a band two wide.
//!
//! `R0` is the smallest window mean seen, together with `L0`, the highest
//! limit at which windows still ran within 5 % of it. A baseline that only
//! ever fell would pin the limit to the minimum once the database became
//! slower for good (a bigger data set, a noisy neighbour); one that simply
//! followed recent windows would creep: at a steady saturated limit the
//! recent minimum *is* the saturated time, the estimate reads no queueing,
//! and the limit grows without end. So `R0` rises only on evidence that is
//! not our own queueing: when at least half of the last
//! [`BASELINE_WINDOWS`] windows ran at a limit no higher than `L0` and all
//! of them were slower than `R0`, the database itself is slower at a
//! concurrency it used to serve unloaded, and their minimum becomes `R0`.
//! A brief slowdown is seen as queueing and shrinks the limit, which is the
//! point.
//!
//! We considered Gradient2 (the ratio of a short to a long latency average):
//! its long average follows a slow rise in latency, so a limit that grows by
//! `sqrt(limit)` a window settles where latency is already well above the
//! unloaded service time; Vegas's windowed minimum does not drift that way.
//!
//! Invariants:
//! - The limit never leaves `[min, max]`.
//! - The limit never grows while nobody waits at the gate.
//! - No window without samples moves the limit up.

use std::{collections::VecDeque, time::Duration};

/// Length of a measuring window.
pub const WINDOW: Duration = Duration::from_millis(250);
/// Queries a window needs before its latency says anything; a window with
/// fewer is extended (up to [`MAX_WINDOW`]).
pub const MIN_SAMPLES: u64 = 16;
/// Longest window: past it, a window with too few samples is judged on load alone.
pub const MAX_WINDOW: Duration = Duration::from_secs(2);
/// Windows over which a slower database may raise the unloaded service
/// time `R0` (about 15 s).
pub const BASELINE_WINDOWS: usize = 60;
/// A window within this factor of `R0` ran unloaded.
const UNLOADED: f64 = 1.05;

/// What one window measured.
#[derive(Debug, Clone, Copy, Default)]
pub struct Window {
    /// Queries that finished on a connection in the window.
    pub samples: u64,
    /// Their mean time on the connection (not counting the wait for a slot).
    pub mean_service: Duration,
    /// Most slots in use at once.
    pub peak_in_use: usize,
    /// Most callers waiting at the gate at once.
    pub peak_queued: usize,
    /// Queries that found no connection in time, and connections the
    /// database refused for being full.
    pub overloads: u64,
}

/// Why the limit moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Callers waited and the database showed no queueing: more concurrency pays.
    Demand,
    /// Service time rose above the unloaded one: queries queue in the database.
    Latency,
    /// Queries timed out or found no connection.
    Overload,
    /// Load fell: fewer than half the slots were used and nobody waited.
    Idle,
}

impl Reason {
    /// For people: why the limit moved.
    pub fn describe(self) -> &'static str {
        match self {
            Reason::Demand => "callers waited and latency stayed at its baseline",
            Reason::Latency => "latency rose above its baseline (queries queue in the database)",
            Reason::Overload => "queries found no connection in time, or the database refused one",
            Reason::Idle => "load fell: under half the slots used, nobody waiting",
        }
    }
}

/// A move of the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Change {
    /// The limit before.
    pub from: usize,
    /// The limit after.
    pub to: usize,
    /// Why.
    pub reason: Reason,
}

/// The controller's state: a limit and the recent window means.
#[derive(Debug)]
pub struct LimitController {
    limit: usize,
    min: usize,
    max: usize,
    /// The unloaded service time `R0` and the highest limit `L0` at which
    /// windows still ran within [`UNLOADED`] of it.
    baseline: Option<(Duration, usize)>,
    /// The last windows' limits and mean service times.
    recent: VecDeque<(usize, Duration)>,
    last_service: Option<Duration>,
}

impl LimitController {
    /// A controller starting at `start`, kept within `[min, max]`.
    pub fn new(start: usize, min: usize, max: usize) -> Self {
        let min = min.max(1);
        let max = max.max(min);
        Self {
            limit: start.clamp(min, max),
            min,
            max,
            baseline: None,
            recent: VecDeque::with_capacity(BASELINE_WINDOWS),
            last_service: None,
        }
    }

    /// The current limit.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// The unloaded service time `R0` now, if any window has been measured.
    pub fn baseline(&self) -> Option<Duration> {
        self.baseline.map(|(r0, _)| r0)
    }

    /// The last window's mean service time.
    pub fn last_service(&self) -> Option<Duration> {
        self.last_service
    }

    /// Queries the estimate says wait inside the database at `limit`.
    fn queued_in_database(&self, limit: usize, service: Duration) -> f64 {
        let Some(r0) = self.baseline() else {
            return 0.0;
        };
        if service.is_zero() {
            return 0.0;
        }
        limit as f64 * (1.0 - r0.as_secs_f64() / service.as_secs_f64()).max(0.0)
    }

    /// Takes one window's figures; returns the move it caused, if any.
    pub fn on_window(&mut self, w: &Window) -> Option<Change> {
        let from = self.limit;
        let measured = w.samples >= MIN_SAMPLES;
        let to = if w.overloads > 0 {
            (from * 3 / 4, Reason::Overload)
        } else if w.peak_queued == 0 && w.peak_in_use * 2 < from {
            // Load fell: decay toward twice the peak in use.
            let target = (w.peak_in_use * 2).max(self.min);
            (target.max(from - from.div_ceil(10)), Reason::Idle)
        } else if measured {
            self.by_latency(from, w)
        } else {
            (from, Reason::Demand)
        };
        if measured {
            self.remember(from, w.mean_service);
        }
        let (to, reason) = (to.0.clamp(self.min, self.max), to.1);
        self.limit = to;
        (to != from).then_some(Change { from, to, reason })
    }

    /// Vegas's step: grow when the database shows little queueing and
    /// callers wait, shrink when it shows much.
    fn by_latency(&self, from: usize, w: &Window) -> (usize, Reason) {
        let queued = self.queued_in_database(from, w.mean_service);
        let (alpha, beta) = band(from);
        if queued > beta {
            (from - 1, Reason::Latency)
        } else if queued < alpha && w.peak_queued > 0 {
            (from + 1, Reason::Demand)
        } else {
            (from, Reason::Demand)
        }
    }

    /// Keeps a measured window, and moves the baseline as the module
    /// documentation says.
    fn remember(&mut self, limit: usize, service: Duration) {
        if self.recent.len() == BASELINE_WINDOWS {
            self.recent.pop_front();
        }
        self.recent.push_back((limit, service));
        self.last_service = Some(service);
        self.baseline = Some(match self.baseline {
            None => (service, limit),
            Some((r0, _)) if service.mul_f64(UNLOADED) < r0 => (service, limit),
            Some((r0, l0)) if service <= r0.mul_f64(UNLOADED) => (r0.min(service), l0.max(limit)),
            Some((r0, l0)) => {
                let at_l0 = self.recent.iter().filter(|(l, _)| *l <= l0);
                let (count, fastest) =
                    at_l0.fold((0, Duration::MAX), |(n, m), (_, r)| (n + 1, m.min(*r)));
                if count * 2 >= BASELINE_WINDOWS && fastest > r0.mul_f64(UNLOADED) {
                    (fastest, l0)
                } else {
                    (r0, l0)
                }
            }
        });
    }
}

/// Vegas's band of queries queued in the database where the limit rests:
/// `alpha = 3·log10(limit)`, `beta = 6·log10(limit)` (Netflix's defaults),
/// at least 1 and 2 so small limits have a band too.
fn band(limit: usize) -> (f64, f64) {
    let log = (limit.max(1) as f64).log10();
    ((3.0 * log).max(1.0), (6.0 * log).max(2.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A database with `cores` servers and `service` each: at concurrency
    /// `n` each query takes `service × max(1, n / cores)`.
    fn saturating(service: Duration, cores: usize, n: usize) -> Duration {
        service.mul_f64((n as f64 / cores as f64).max(1.0))
    }

    fn busy_window(limit: usize, service: Duration) -> Window {
        Window {
            samples: 200,
            mean_service: service,
            peak_in_use: limit,
            peak_queued: 100,
            overloads: 0,
        }
    }

    /// Runs `windows` windows of a saturated load on a database of `cores`
    /// servers; returns the limits seen.
    fn drive(c: &mut LimitController, cores: usize, base: Duration, windows: usize) -> Vec<usize> {
        (0..windows)
            .map(|_| {
                let n = c.limit();
                c.on_window(&busy_window(n, saturating(base, cores, n)));
                c.limit()
            })
            .collect()
    }

    #[test]
    fn it_converges_to_a_stable_limit_on_a_steady_load() {
        let mut c = LimitController::new(2, 2, 50);
        let limits = drive(&mut c, 8, Duration::from_millis(4), 200);
        let tail = &limits[150..];
        let (lo, hi) = (tail.iter().min().unwrap(), tail.iter().max().unwrap());
        assert!(hi - lo <= 1, "still moving: {lo}..{hi}");
        // It found the database's eight servers and stopped a few past them.
        assert!((8..=16).contains(lo), "settled at {lo}");
    }

    #[test]
    fn it_backs_off_when_latency_is_injected_and_recovers() {
        let mut c = LimitController::new(2, 2, 50);
        drive(&mut c, 8, Duration::from_millis(4), 100);
        let settled = c.limit();
        // The database gets three times slower per query at any concurrency
        // (and saturates the same way): the limit comes down.
        let mut lowest = settled;
        for _ in 0..40 {
            let n = c.limit();
            let slow = saturating(Duration::from_millis(12), 8, n);
            c.on_window(&busy_window(n, slow));
            lowest = lowest.min(c.limit());
        }
        assert!(lowest < settled, "never backed off from {settled}");
        // Slowness that lasts becomes the baseline: the limit comes back.
        drive(&mut c, 8, Duration::from_millis(12), BASELINE_WINDOWS * 3);
        assert!(c.limit() >= settled - 1, "{} vs {settled}", c.limit());
    }

    #[test]
    fn it_never_grows_without_callers_waiting() {
        let mut c = LimitController::new(4, 2, 50);
        for _ in 0..100 {
            let w = Window {
                peak_queued: 0,
                peak_in_use: c.limit(),
                ..busy_window(c.limit(), Duration::from_millis(1))
            };
            c.on_window(&w);
        }
        assert_eq!(c.limit(), 4);
    }

    #[test]
    fn it_shrinks_when_load_falls_and_on_overload() {
        let mut c = LimitController::new(40, 2, 50);
        let idle = Window {
            samples: 3,
            peak_in_use: 1,
            ..Window::default()
        };
        let changes: Vec<_> = (0..60).filter_map(|_| c.on_window(&idle)).collect();
        assert_eq!(c.limit(), 2);
        assert!(changes.iter().all(|ch| ch.reason == Reason::Idle));
        let mut c = LimitController::new(40, 2, 50);
        let hurt = Window {
            overloads: 3,
            ..busy_window(40, Duration::from_millis(5))
        };
        assert_eq!(
            c.on_window(&hurt),
            Some(Change {
                from: 40,
                to: 30,
                reason: Reason::Overload
            })
        );
    }

    proptest::proptest! {
        /// Whatever the windows say, the limit stays within `[min, max]`.
        #[test]
        fn the_limit_never_leaves_its_bounds(
            min in 1usize..10, span in 0usize..60, start in 0usize..100,
            windows in proptest::collection::vec(
                (0u64..100, 0u64..50_000, 0usize..80, 0usize..80, 0u64..3), 1..200)
        ) {
            let max = min + span;
            let mut c = LimitController::new(start, min, max);
            for (samples, micros, in_use, queued, overloads) in windows {
                c.on_window(&Window {
                    samples,
                    mean_service: Duration::from_micros(micros),
                    peak_in_use: in_use,
                    peak_queued: queued,
                    overloads,
                });
                proptest::prop_assert!((min..=max).contains(&c.limit()));
            }
        }
    }
}
