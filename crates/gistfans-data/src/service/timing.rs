//! Where a write's time goes: each write is timed phase by phase (its
//! preparation, its queue behind the same users' writes, its admission
//! and connection, its locks, the snapshot of the cached
//! aggregates, the SQL statement, the cache step with the other instances'
//! confirmations, the refill of refused updates) and in total, so that a
//! slow write under load says which step it waited on.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use hpdb::{Distribution, LatencyRecorder};
use serde::Serialize;

/// A step of a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WritePhase {
    /// Before the write's turn: the post's author looked up (a star).
    Prepare,
    /// Waiting behind the users' other writes for the right to ask for a
    /// connection (at most one per user waits for its lock with one).
    Queue,
    /// The statement admitted and given a connection.
    Admission,
    /// The users' locks: this instance's stripes, then the tag locks across instances.
    Lock,
    /// The cached aggregates read before the write.
    Snapshot,
    /// The SQL statement on its connection, and its commit.
    Statement,
    /// The cache step: generations bumped, updated values stored, the bus,
    /// and the wait for every other instance's confirmation.
    Cache,
    /// Aggregates whose update was refused, fetched again.
    Refill,
    /// The whole write, as its caller waited for it.
    Total,
}

impl WritePhase {
    /// Every phase, in order.
    pub const ALL: [WritePhase; 9] = [
        WritePhase::Prepare,
        WritePhase::Queue,
        WritePhase::Admission,
        WritePhase::Lock,
        WritePhase::Snapshot,
        WritePhase::Statement,
        WritePhase::Cache,
        WritePhase::Refill,
        WritePhase::Total,
    ];

    /// Its name in the monitor and in `/metrics`.
    pub fn name(self) -> &'static str {
        match self {
            WritePhase::Prepare => "prepare",
            WritePhase::Queue => "queue",
            WritePhase::Admission => "admission",
            WritePhase::Lock => "lock",
            WritePhase::Snapshot => "snapshot",
            WritePhase::Statement => "statement",
            WritePhase::Cache => "cache",
            WritePhase::Refill => "refill",
            WritePhase::Total => "total",
        }
    }
}

/// The recorders, one per phase.
#[derive(Debug, Default)]
pub(crate) struct WriteTimings {
    phases: [LatencyRecorder; WritePhase::ALL.len()],
}

/// One phase's times since start (or the last reset).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PhaseTiming {
    /// The phase.
    pub phase: &'static str,
    /// Its times, in ms.
    #[serde(flatten)]
    pub times: Distribution,
}

impl WriteTimings {
    pub(crate) fn record(&self, phase: WritePhase, took: Duration) {
        self.phases[phase as usize].record(took);
    }

    pub(crate) fn read(&self) -> Vec<PhaseTiming> {
        WritePhase::ALL
            .iter()
            .map(|&p| PhaseTiming {
                phase: p.name(),
                times: self.phases[p as usize].read(),
            })
            .collect()
    }

    pub(crate) fn reset(&self) {
        for r in &self.phases {
            r.reset();
        }
    }
}

/// Times the phases of one write: each [`next`](Self::next) ends the
/// phase in progress; the total is recorded when the clock is dropped, so
/// a write that fails half-way still counts the phases it went through.
/// It owns its recorders' handle, so it can travel with the write into
/// the store's turn (see `writes::Turn`).
pub(crate) struct PhaseClock {
    timings: Arc<WriteTimings>,
    began: Instant,
    phase: Option<(WritePhase, Instant)>,
}

impl PhaseClock {
    pub(crate) fn start(timings: Arc<WriteTimings>, first: WritePhase) -> Self {
        let now = Instant::now();
        Self {
            timings,
            began: now,
            phase: Some((first, now)),
        }
    }

    /// Ends the phase in progress and starts `phase`.
    pub(crate) fn next(&mut self, phase: WritePhase) {
        let now = Instant::now();
        if let Some((p, since)) = self.phase.replace((phase, now)) {
            self.timings.record(p, now - since);
        }
    }
}

impl Drop for PhaseClock {
    fn drop(&mut self) {
        let now = Instant::now();
        if let Some((p, since)) = self.phase.take() {
            self.timings.record(p, now - since);
        }
        self.timings.record(WritePhase::Total, now - self.began);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_phase_and_the_total_are_recorded_once() {
        let t = Arc::new(WriteTimings::default());
        {
            let mut clock = PhaseClock::start(t.clone(), WritePhase::Lock);
            clock.next(WritePhase::Statement);
            clock.next(WritePhase::Cache);
        }
        let read = t.read();
        let count = |name: &str| {
            read.iter()
                .find(|p| p.phase == name)
                .and_then(|p| p.times.buckets.last())
                .map_or(0, |b| b.count)
        };
        assert_eq!(count("lock"), 1);
        assert_eq!(count("statement"), 1);
        assert_eq!(count("cache"), 1);
        assert_eq!(count("snapshot"), 0);
        assert_eq!(count("admission"), 0);
        assert_eq!(count("total"), 1);
        t.reset();
        let read = t.read();
        assert!(read
            .iter()
            .all(|p| p.times.buckets.last().unwrap().count == 0));
    }
}
