//! The confirmations an instance receives for its invalidations, and the
//! other instances its last heartbeat saw: the bookkeeping behind
//! `delivery`'s wait (a leaf: no Redis here).

use std::{collections::HashMap, sync::atomic::AtomicBool, time::Duration};

use parking_lot::Mutex;
use tokio::{sync::Notify, time::Instant};

use super::message::StreamId;

/// Confirmations kept at once (of invalidations still awaited or recent).
const ACKS_MAX: usize = 10_000;

/// The other live instances and the confirmations received.
#[derive(Default)]
pub(super) struct Acks {
    /// This instance left the registry (closed): the heartbeat does not
    /// put it back.
    pub(super) left: AtomicBool,
    pub(super) peers: Mutex<Vec<u64>>,
    pub(super) acks: Mutex<HashMap<(usize, StreamId), Acked>>,
    pub(super) arrived: Notify,
}

pub(super) struct Acked {
    first: Instant,
    by: Vec<u64>,
}

impl Acks {
    /// Records that `by` applied the message `id` of `shard`.
    pub(super) fn record(&self, shard: usize, id: StreamId, by: u64) {
        {
            let mut acks = self.acks.lock();
            if acks.len() >= ACKS_MAX && !acks.contains_key(&(shard, id)) {
                return;
            }
            acks.entry((shard, id))
                .or_insert_with(|| Acked {
                    first: Instant::now(),
                    by: Vec::new(),
                })
                .by
                .push(by);
        }
        self.arrived.notify_waiters();
    }

    /// Forgets confirmations nobody waits for any more.
    pub(super) fn prune(&self, older_than: Duration) {
        self.acks
            .lock()
            .retain(|_, a| a.first.elapsed() <= older_than);
    }

    pub(super) fn confirmed_by_all(&self, at: (usize, StreamId), peers: &[u64]) -> bool {
        let acks = self.acks.lock();
        let by = acks.get(&at).map_or(&[][..], |a| &a.by[..]);
        peers.iter().all(|p| by.contains(p))
    }

    /// The other instances seen live at the last heartbeat (for the status
    /// and the tag locks; a writer's wait reads the registry itself).
    pub(super) fn peers(&self) -> Vec<u64> {
        self.peers.lock().clone()
    }

    /// True if another instance was live at the last heartbeat.
    pub(super) fn has_peers(&self) -> bool {
        !self.peers.lock().is_empty()
    }
}

/// A confirmation on the origin's channel: `<shard>|<stream id>|<instance>`.
pub(super) fn parse_ack(payload: &str) -> Option<(usize, StreamId, u64)> {
    let mut it = payload.splitn(3, '|');
    let shard = it.next()?.parse().ok()?;
    let id = it.next()?.parse().ok()?;
    let by = it.next()?.parse().ok()?;
    Some((shard, id, by))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_confirmation_reads_back() {
        assert_eq!(parse_ack("3|17-2|99"), Some((3, StreamId(17, 2), 99)));
        assert_eq!(parse_ack("3|17-2"), None);
        assert_eq!(parse_ack("x|17-2|99"), None);
    }

    #[test]
    fn confirmations_are_bounded_and_counted_per_message() {
        let d = Acks::default();
        let at = (1, StreamId(5, 0));
        d.record(at.0, at.1, 7);
        assert!(!d.confirmed_by_all(at, &[7, 8]));
        d.record(at.0, at.1, 8);
        assert!(d.confirmed_by_all(at, &[7, 8]));
        assert!(!d.confirmed_by_all((1, StreamId(6, 0)), &[7]));
        for i in 0..(ACKS_MAX as u64 + 10) {
            d.record(0, StreamId(i, 0), 1);
        }
        assert_eq!(d.acks.lock().len(), ACKS_MAX);
        d.prune(Duration::ZERO);
        assert!(d.acks.lock().is_empty());
    }
}
