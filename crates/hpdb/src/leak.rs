//! Leak detection: connections held longer than a threshold.
//!
//! Every connection handed to a caller is registered with the key of the query
//! that holds it and unregistered when it comes back (by drop, so a cancelled
//! caller unregisters too). A periodic scan reports each holder that passes the
//! threshold once, as a tracing warning with the key, and counts it.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use parking_lot::Mutex;
use serde::Serialize;
use tokio::time::Instant;

struct Held {
    key: Arc<str>,
    since: Instant,
    reported: bool,
}

/// A connection held past the leak threshold.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SuspectedLeak {
    /// The query key holding the connection.
    pub key: String,
    /// How long it has been held, in milliseconds.
    pub held_ms: u64,
}

pub(crate) struct LeakDetector {
    threshold: Duration,
    next_id: AtomicU64,
    held: Mutex<HashMap<u64, Held>>,
    detected: AtomicU64,
}

/// Unregisters a held connection on drop.
pub(crate) struct HoldGuard {
    detector: Arc<LeakDetector>,
    id: u64,
}

impl Drop for HoldGuard {
    fn drop(&mut self) {
        self.detector.held.lock().remove(&self.id);
    }
}

impl LeakDetector {
    pub(crate) fn new(threshold: Duration) -> Arc<Self> {
        Arc::new(Self {
            threshold,
            next_id: AtomicU64::new(0),
            held: Mutex::new(HashMap::new()),
            detected: AtomicU64::new(0),
        })
    }

    /// Registers a connection held for `key`.
    pub(crate) fn hold(self: &Arc<Self>, key: &Arc<str>) -> HoldGuard {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.held.lock().insert(
            id,
            Held {
                key: key.clone(),
                since: Instant::now(),
                reported: false,
            },
        );
        HoldGuard {
            detector: self.clone(),
            id,
        }
    }

    /// Reports holders newly past the threshold; returns how many.
    pub(crate) fn scan(&self) -> usize {
        let mut newly = 0;
        for h in self.held.lock().values_mut() {
            let held_for = h.since.elapsed();
            if !h.reported && held_for >= self.threshold {
                h.reported = true;
                newly += 1;
                tracing::warn!(
                    key = %h.key,
                    held_ms = held_for.as_millis() as u64,
                    threshold_ms = self.threshold.as_millis() as u64,
                    "possible connection leak: a connection has been held past the threshold"
                );
            }
        }
        self.detected.fetch_add(newly as u64, Ordering::Relaxed);
        newly
    }

    /// Leaks reported since start (or the last reset).
    pub(crate) fn detected(&self) -> u64 {
        self.detected.load(Ordering::Relaxed)
    }

    pub(crate) fn reset(&self) {
        self.detected.store(0, Ordering::Relaxed);
    }

    /// Connections currently held past the threshold.
    pub(crate) fn suspects(&self) -> Vec<SuspectedLeak> {
        self.held
            .lock()
            .values()
            .filter(|h| h.since.elapsed() >= self.threshold)
            .map(|h| SuspectedLeak {
                key: h.key.to_string(),
                held_ms: h.since.elapsed().as_millis() as u64,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_holder_past_the_threshold_is_reported_once_with_its_key() {
        let d = LeakDetector::new(Duration::from_secs(5));
        let key: Arc<str> = "slow_report".into();
        let guard = d.hold(&key);
        tokio::time::advance(Duration::from_secs(4)).await;
        assert_eq!(d.scan(), 0);
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(d.scan(), 1);
        assert_eq!(d.scan(), 0, "reported once");
        assert_eq!(d.suspects()[0].key, "slow_report");
        assert_eq!(d.detected(), 1);
        drop(guard);
        assert!(d.suspects().is_empty());
    }
}
