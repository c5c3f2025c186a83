//! The circuit breaker: fail fast while the database is unreachable.
//!
//! Closed: calls go through; consecutive connection failures are counted and
//! any success resets the count. At `threshold` failures the circuit opens.
//! Open: calls fail at once with [`Error::CircuitOpen`](crate::Error) (or are
//! served stale from the cache) until `cooldown` has passed; then exactly one
//! call (or the health monitor's probe) goes through as a probe (half-open).
//! The probe's success closes the circuit; its failure opens it again.

use std::time::Duration;

use parking_lot::Mutex;
use serde::Serialize;
use tokio::time::Instant;

use crate::error::Error;

/// The breaker's state, as reported in the status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum CircuitState {
    /// Calls go through.
    Closed,
    /// Calls fail fast.
    Open,
    /// One probe is in flight.
    HalfOpen,
}

#[derive(Debug)]
enum State {
    Closed { failures: u32 },
    Open { until: Instant, failures: u32 },
    HalfOpen { failures: u32 },
}

pub(crate) struct CircuitBreaker {
    state: Mutex<State>,
    threshold: u32,
    cooldown: Duration,
}

impl CircuitBreaker {
    pub(crate) fn new(threshold: u32, cooldown: Duration) -> Self {
        Self {
            state: Mutex::new(State::Closed { failures: 0 }),
            threshold,
            cooldown,
        }
    }

    /// Lets a call through, or says why not.
    pub(crate) fn admit(&self) -> Result<(), Error> {
        let mut st = self.state.lock();
        match *st {
            State::Closed { .. } => Ok(()),
            State::Open { until, failures } => {
                let now = Instant::now();
                if now >= until {
                    *st = State::HalfOpen { failures };
                    Ok(())
                } else {
                    Err(Error::CircuitOpen {
                        failures,
                        retry_after: until - now,
                    })
                }
            }
            State::HalfOpen { failures } => Err(Error::CircuitOpen {
                failures,
                retry_after: self.cooldown.min(Duration::from_secs(1)),
            }),
        }
    }

    /// Records a call that reached the database.
    pub(crate) fn on_success(&self) {
        let mut st = self.state.lock();
        if !matches!(*st, State::Closed { failures: 0 }) {
            if !matches!(*st, State::Closed { .. }) {
                tracing::info!("database reachable again: circuit closed");
            }
            *st = State::Closed { failures: 0 };
        }
    }

    /// Records a connection failure. Returns true if this opened the circuit.
    pub(crate) fn on_failure(&self) -> bool {
        let mut st = self.state.lock();
        let failures = match *st {
            State::Closed { failures }
            | State::Open { failures, .. }
            | State::HalfOpen { failures } => failures.saturating_add(1),
        };
        let was_open = matches!(*st, State::Open { .. });
        if failures >= self.threshold || matches!(*st, State::HalfOpen { .. }) {
            *st = State::Open {
                until: Instant::now() + self.cooldown,
                failures,
            };
            if !was_open {
                tracing::error!(
                    failures,
                    cooldown_ms = self.cooldown.as_millis() as u64,
                    "database unreachable: circuit opened, callers now fail fast"
                );
            }
            !was_open
        } else {
            *st = State::Closed { failures };
            false
        }
    }

    pub(crate) fn state(&self) -> CircuitState {
        match *self.state.lock() {
            State::Closed { .. } => CircuitState::Closed,
            State::Open { .. } => CircuitState::Open,
            State::HalfOpen { .. } => CircuitState::HalfOpen,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn opens_after_the_threshold_and_closes_after_a_successful_probe() {
        let b = CircuitBreaker::new(3, Duration::from_secs(5));
        assert!(!b.on_failure());
        assert!(!b.on_failure());
        assert!(b.admit().is_ok());
        assert!(b.on_failure(), "third failure opens");
        assert_eq!(b.state(), CircuitState::Open);
        assert!(matches!(
            b.admit(),
            Err(Error::CircuitOpen { failures: 3, .. })
        ));
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(b.admit().is_ok(), "one probe after the cooldown");
        assert_eq!(b.state(), CircuitState::HalfOpen);
        assert!(b.admit().is_err(), "only one probe");
        b.on_success();
        assert_eq!(b.state(), CircuitState::Closed);
        assert!(b.admit().is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_probe_reopens() {
        let b = CircuitBreaker::new(1, Duration::from_secs(5));
        b.on_failure();
        tokio::time::advance(Duration::from_secs(5)).await;
        b.admit().unwrap();
        b.on_failure();
        assert_eq!(b.state(), CircuitState::Open);
    }

    #[test]
    fn a_success_resets_the_count() {
        let b = CircuitBreaker::new(2, Duration::from_secs(5));
        b.on_failure();
        b.on_success();
        assert!(!b.on_failure());
        assert_eq!(b.state(), CircuitState::Closed);
    }
}
