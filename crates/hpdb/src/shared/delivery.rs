//! Delivery confirmations: which other instances are live (a sorted set in
//! Redis, scored by Redis's own clock at each heartbeat), the confirmation
//! an instance sends the origin of an invalidation once it has applied it,
//! and the origin's wait for them. A write acknowledged after that wait is
//! seen by the next read on every instance, not only after the bus has
//! caught up.
//!
//! Why a wait at all: the bus alone delivers "soon" (milliseconds), so a
//! user whose next request lands on another instance behind a load
//! balancer may not see their own write. Waiting is bounded by
//! `delivery_wait`; an instance that does not confirm in time is either
//! gone (it leaves the registry a bus lease after its last heartbeat) or
//! cannot confirm the bus current, and then stops serving in-process
//! entries older than the bus lease.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, LazyLock,
    },
    time::Duration,
};

use parking_lot::Mutex;
use redis::Script;
use tokio::{sync::Notify, time::Instant};

use super::{client::RedisCallError, inc, message::StreamId, unix_us, Shared};

/// Confirmations kept at once (of invalidations still awaited or recent).
const ACKS_MAX: usize = 10_000;
/// A registry entry older than this is removed (the instance is long gone).
const FORGET_AFTER: Duration = Duration::from_secs(60);
/// Messages older than this are not confirmed when applied (a long replay
/// after an outage: nobody waits for them any more).
const CONFIRM_WITHIN: Duration = Duration::from_secs(10);

/// The other live instances and the confirmations received.
#[derive(Default)]
pub(super) struct Delivery {
    /// This instance left the registry (closed): the heartbeat does not
    /// put it back.
    left: AtomicBool,
    peers: Mutex<Vec<u64>>,
    acks: Mutex<HashMap<(usize, StreamId), Acked>>,
    arrived: Notify,
}

struct Acked {
    first: Instant,
    by: Vec<u64>,
}

impl Delivery {
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

    fn confirmed_by_all(&self, at: (usize, StreamId), peers: &[u64]) -> bool {
        let acks = self.acks.lock();
        let by = acks.get(&at).map_or(&[][..], |a| &a.by[..]);
        peers.iter().all(|p| by.contains(p))
    }

    /// The other instances seen live at the last heartbeat.
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

impl Shared {
    /// Heartbeat step: marks this instance live (Redis's clock, so that
    /// instances on several machines agree) and reads the others that were
    /// live within the bus lease.
    pub(super) async fn register(&self) -> Result<(), RedisCallError> {
        if self.delivery.left.load(Ordering::SeqCst) {
            return Ok(());
        }
        static SCRIPT: LazyLock<Script> = LazyLock::new(|| {
            Script::new(
                r"local t = redis.call('TIME')
          local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
          redis.call('ZADD', KEYS[1], now, ARGV[1])
          redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[3]))
          return redis.call('ZRANGEBYSCORE', KEYS[1], now - tonumber(ARGV[2]), '+inf')",
            )
        });
        let mut invocation = SCRIPT.key(self.names.instances());
        invocation
            .arg(self.instance)
            .arg(self.config.bus_lease.as_millis() as u64)
            .arg(FORGET_AFTER.as_millis() as u64);
        let live: Vec<u64> = self.redis.run_script(&invocation).await?;
        if self.delivery.left.load(Ordering::SeqCst) {
            // Left while this round was in flight: take back its entry.
            self.leave().await;
            return Ok(());
        }
        *self.delivery.peers.lock() = live.into_iter().filter(|i| *i != self.instance).collect();
        self.delivery
            .prune(self.config.delivery_wait + CONFIRM_WITHIN);
        Ok(())
    }

    /// Leaves the registry (at close): writes stop waiting for this instance.
    pub(crate) async fn leave(&self) {
        self.delivery.left.store(true, Ordering::SeqCst);
        let mut c = redis::cmd("ZREM");
        c.arg(self.names.instances()).arg(self.instance);
        let _ = self.redis.query::<i64>(&c).await;
    }

    /// Tells `origin` that this instance applied its message `id` of
    /// `shard` (in a task of its own: the bus does not wait for it). A
    /// pushed message is always confirmed; a replayed one only if recent
    /// by the origin's clock (so clocks apart never silence the live path).
    pub(super) fn confirm_applied(
        self: &Arc<Self>,
        origin: u64,
        (shard, id): (usize, StreamId),
        published_us: u64,
        replayed: bool,
    ) {
        let age = Duration::from_micros(unix_us().saturating_sub(published_us));
        if replayed && age > CONFIRM_WITHIN {
            return;
        }
        let this = self.clone();
        tokio::spawn(async move {
            let payload = format!("{shard}|{id}|{}", this.instance);
            let cmd = this.redis.publish_cmd(&this.names.acks(origin), &payload);
            let _ = this.redis.query::<i64>(&cmd).await;
        });
    }

    /// Waits (at most `delivery_wait`) until every other live instance has
    /// confirmed the message `id` of `shard`; true if all did.
    pub(crate) async fn await_delivery(&self, at: (usize, StreamId)) -> bool {
        let within = self.config.delivery_wait;
        let peers = self.delivery.peers();
        if peers.is_empty() {
            return true;
        }
        if within.is_zero() {
            return false;
        }
        inc(&self.c.delivery_waits);
        let until = Instant::now() + within;
        let delivered = loop {
            let arrived = self.delivery.arrived.notified();
            tokio::pin!(arrived);
            arrived.as_mut().enable();
            if self.delivery.confirmed_by_all(at, &peers) {
                break true;
            }
            if tokio::time::timeout_at(until, arrived).await.is_err() {
                break false;
            }
        };
        self.delivery.acks.lock().remove(&at);
        if !delivered {
            inc(&self.c.delivery_timeouts);
        }
        delivered
    }
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
        let d = Delivery::default();
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
