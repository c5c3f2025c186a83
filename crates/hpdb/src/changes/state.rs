//! What the change-stream invalidator reports ([`ChangeStatus`]), and the
//! cell its consumer writes it to. A leaf: the core holds one for every
//! manager (its mode stays `off` until a consumer is started), so `status`
//! and the advisor read it without knowing whether the `changes` feature
//! is built.

use parking_lot::Mutex;
use serde::Serialize;

use crate::metrics::{LatencyRecorder, Percentiles};

/// Where the change stream stands on this instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub enum ChangeMode {
    /// No consumer was started (the application did not ask, or a SQLite
    /// manager built without `connect_sqlite`): writes made around this
    /// server stay cached until their TTL.
    #[default]
    Off,
    /// Connecting, or waiting to retry after a failure.
    Starting,
    /// Another instance holds the leader lock and consumes the stream;
    /// this one takes over if it goes away.
    Standby,
    /// This instance consumes the stream for every instance.
    Leader,
    /// SQLite: other processes' commits are detected by `PRAGMA
    /// data_version` on the writer connection (at each write, and every
    /// `DB_DATA_VERSION_POLL` while idle); each detection drops every
    /// cached entry (coarse, but no commit is missed). See `sqlite`.
    DataVersion,
    /// The database cannot stream its changes (`wal_level` is not
    /// `logical`, or the user may not replicate): writes made around this
    /// server stay cached until their TTL.
    Unavailable,
}

/// The change stream's figures, in [`Status`](crate::Status) and `/metrics`.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ChangeStatus {
    /// Where the stream stands.
    pub mode: ChangeMode,
    /// Why it is unavailable, or the last failure.
    pub detail: Option<String>,
    /// The replication slot's name.
    pub slot: Option<String>,
    /// WAL the slot retains: the server's current position less the slot's
    /// `confirmed_flush_lsn`, in bytes (leader only).
    pub lag_bytes: Option<u64>,
    /// The walsender's replay lag for this consumer, in seconds (0 when
    /// caught up; leader only).
    pub lag_seconds: Option<f64>,
    /// True when `max_slot_wal_keep_size` is -1: a slot no consumer
    /// advances can fill the database's disk.
    pub wal_keep_unbounded: bool,
    /// Transactions consumed.
    pub transactions: u64,
    /// Of those, our own writes (marked), skipped: their writer already
    /// updated the caches.
    pub own_skipped: u64,
    /// Tag invalidations sent.
    pub tags_invalidated: u64,
    /// Times every cached entry was dropped (a slot created or recreated, a
    /// table truncated, a row whose tags could not be found; on SQLite,
    /// another connection's commit, or a new writer connection).
    pub epochs: u64,
    /// Rows whose tags could not be found (see `MappingError`).
    pub mapping_failures: u64,
    /// Slots found invalidated by PostgreSQL (or gone) and recreated.
    pub slots_recreated: u64,
    /// Sessions this instance started as the leader.
    pub sessions: u64,
    /// From a transaction's commit (the database's clock) to its arrival
    /// in the consumer, in ms (leader only; both clocks must agree).
    pub commit_to_received_ms: Option<Percentiles>,
    /// From a transaction's commit to its tags invalidated here, in the
    /// shared level and on the bus, every live instance's confirmation
    /// included (up to `REDIS_DELIVERY_WAIT`), in ms (leader only).
    pub commit_to_invalidated_ms: Option<Percentiles>,
    /// `DataVersion` only: checks of `PRAGMA data_version` made.
    pub polls: u64,
    /// `DataVersion` only: checks that found another connection's commit
    /// (several commits between two checks count once); each counts an
    /// epoch. A new writer connection knows no earlier version: its first
    /// check drops the cache too (an epoch, not counted here).
    pub foreign_commits: u64,
}

/// The cell the consumer writes and `status` reads.
#[derive(Debug, Default)]
pub(crate) struct ChangeState {
    status: Mutex<ChangeStatus>,
    /// Commit → received by the consumer.
    pub(crate) received: LatencyRecorder,
    /// Commit → invalidated everywhere.
    pub(crate) invalidated: LatencyRecorder,
}

impl ChangeState {
    /// A copy of the figures.
    pub(crate) fn status(&self) -> ChangeStatus {
        let mut s = self.status.lock().clone();
        let some = |r: &LatencyRecorder| Some(r.read().percentiles).filter(|p| p.count > 0);
        s.commit_to_received_ms = some(&self.received);
        s.commit_to_invalidated_ms = some(&self.invalidated);
        s
    }

    /// Forgets the commit-time latencies (with the other histograms).
    pub(crate) fn reset_timings(&self) {
        self.received.reset();
        self.invalidated.reset();
    }

    /// Changes the figures.
    pub(crate) fn update(&self, f: impl FnOnce(&mut ChangeStatus)) {
        f(&mut self.status.lock());
    }

    /// Sets the mode (and its detail); the lag figures are the leader's.
    #[cfg(any(feature = "changes", feature = "sqlite"))]
    pub(crate) fn set_mode(&self, mode: ChangeMode, detail: Option<String>) {
        self.update(|s| {
            s.mode = mode;
            s.detail = detail;
            if mode != ChangeMode::Leader {
                s.lag_bytes = None;
                s.lag_seconds = None;
            }
        });
    }
}
