//! What the tuning loops changed and when: a short ring of events for the
//! status, `/metrics` and the monitor.
//!
//! Invariants: the ring never holds more than [`KEPT`] events; recording
//! never waits on anything but one short lock.

use std::{
    collections::VecDeque,
    sync::atomic::{AtomicU64, Ordering},
    time::{SystemTime, UNIX_EPOCH},
};

use parking_lot::Mutex;
use serde::Serialize;

/// Events kept; older ones are dropped.
pub const KEPT: usize = 64;

/// One change a tuning loop made.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TuningEvent {
    /// When, in milliseconds since the Unix epoch.
    pub at_unix_ms: u64,
    /// The knob, named as the configuration names it (`DB_POOL_MAX`, `CACHE_TTL:agg`).
    pub knob: String,
    /// Its value before.
    pub from: String,
    /// Its value after.
    pub to: String,
    /// Why, for people.
    pub reason: String,
}

/// The ring of recent changes, and how many there were in all.
#[derive(Debug, Default)]
pub struct TuningLog {
    events: Mutex<VecDeque<TuningEvent>>,
    total: AtomicU64,
}

impl TuningLog {
    /// Records a change of `knob` from `from` to `to`.
    pub fn record(&self, knob: &str, from: String, to: String, reason: &str) {
        let at_unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        tracing::info!(knob, from = %from, to = %to, reason, "tuned");
        let event = TuningEvent {
            at_unix_ms,
            knob: knob.to_string(),
            from,
            to,
            reason: reason.to_string(),
        };
        let mut events = self.events.lock();
        if events.len() == KEPT {
            events.pop_front();
        }
        events.push_back(event);
        self.total.fetch_add(1, Ordering::Relaxed);
    }

    /// The kept events, newest last.
    pub fn recent(&self) -> Vec<TuningEvent> {
        self.events.lock().iter().cloned().collect()
    }

    /// Changes recorded since start.
    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ring_keeps_the_newest_and_counts_all() {
        let log = TuningLog::default();
        for i in 0..(KEPT + 10) {
            log.record("DB_POOL_MAX", i.to_string(), (i + 1).to_string(), "test");
        }
        let recent = log.recent();
        assert_eq!(recent.len(), KEPT);
        assert_eq!(recent.last().unwrap().from, (KEPT + 9).to_string());
        assert_eq!(recent[0].from, "10");
        assert_eq!(log.total(), (KEPT + 10) as u64);
    }
}
