//! Delivery confirmations: which other instances are registered (a sorted
//! set in Redis, scored by Redis's own clock at each heartbeat), the
//! confirmation an instance sends the origin of an invalidation once it
//! has applied it, and the origin's wait for them. A write whose every
//! invalidation was confirmed ([`Delivery::Confirmed`](crate::Delivery))
//! is seen by the next read on every instance, not only after the bus has
//! caught up.
//!
//! Why a wait at all: the bus alone delivers "soon" (milliseconds), so a
//! user whose next request lands on another instance behind a load
//! balancer may not see their own write. The rules that make "confirmed"
//! true whatever the timing:
//! - The origin reads the registry *after* publishing (not the list its
//!   heartbeat last saw): an instance registered before the message was
//!   published is subscribed, so it receives the message and is waited
//!   for; one that registers later fetches only after its registration,
//!   so after the write committed.
//! - Registered within the bus lease: *live*, waited for (at most
//!   `delivery_wait`). Registered within [`grace`] but not the lease:
//!   *lapsed*, not waited for, and the write is not confirmed. Older:
//!   *gone*, ignored.
//! - An instance serves no in-process entry unless its own registration
//!   (the start of its last successful register call, which Redis scored
//!   later) is younger than three quarters of the grace: so no instance a
//!   writer counts as gone can serve a cached value. When it registers
//!   again after that, and at its first registration, it empties its
//!   in-process cache before serving from it: what it fetched meanwhile may
//!   predate writes it was not waited for.
//! - A receiver confirms every message it has applied, pushed or replayed
//!   or seen before (a replay can apply one before its push arrives);
//!   confirmations are retried within the delivery wait.

use std::{
    sync::{atomic::Ordering, Arc, LazyLock},
    time::Duration,
};

use redis::Script;
use tokio::time::Instant;

use super::{
    api::LocalCache,
    budget::Patience,
    client::RedisCallError,
    message::StreamId,
    state::{inc, unix_us, Shared},
};

/// A registry entry older than this is removed (the instance is long gone).
const FORGET_AFTER: Duration = Duration::from_secs(60);
/// Messages older than this are not confirmed when applied (a long replay
/// after an outage: nobody waits for them any more).
const CONFIRM_WITHIN: Duration = Duration::from_secs(10);
/// Tries of one confirmation (each within the patient budget).
const CONFIRM_TRIES: u32 = 3;

/// How long after its last registration a silent instance still counts as
/// *lapsed* rather than gone: writes are not confirmed while one is
/// lapsed, and an instance stops serving from its in-process cache well
/// before writers take it for gone.
pub(crate) fn grace(bus_lease: Duration) -> Duration {
    bus_lease * 5
}

/// The registry as a writer reads it after publishing: the other
/// instances to wait for, and whether any is lapsed (cannot be waited for).
#[derive(Debug, Default)]
pub(super) struct Registered {
    live: Vec<u64>,
    lapsed: bool,
}

impl Shared {
    /// Heartbeat step: marks this instance live (Redis's clock, so that
    /// instances on several machines agree) and reads the others that were
    /// live within the bus lease. On the first registration, and on one
    /// after this instance may have been taken for gone, empties the
    /// in-process cache before it serves from it again (see the module
    /// doc).
    pub(super) async fn register(&self, local: &dyn LocalCache) -> Result<(), RedisCallError> {
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
        let asked = self.clock.elapsed();
        let live: Vec<u64> = self.redis.probe_script(&invocation).await?;
        if self.delivery.left.load(Ordering::SeqCst) {
            // Left while this round was in flight: take back its entry.
            self.leave().await;
            return Ok(());
        }
        if self.excluded() {
            if self.registered.load(Ordering::SeqCst) != 0 {
                tracing::warn!(
                    "shared cache: registered again after writers may have taken this instance \
                     for gone: emptying the in-process cache"
                );
                inc(&self.c.flushes);
            }
            local.flush().await;
        }
        self.registered
            .fetch_max(asked.as_millis() as u64 + 1, Ordering::SeqCst);
        *self.delivery.peers.lock() = live.into_iter().filter(|i| *i != self.instance).collect();
        self.delivery
            .prune(self.config.delivery_wait + CONFIRM_WITHIN);
        Ok(())
    }

    /// Time since the start of this instance's last successful
    /// registration (`None`: never registered).
    pub(super) fn since_registered(&self) -> Option<Duration> {
        let at = self.registered.load(Ordering::SeqCst).checked_sub(1)?;
        Some(
            self.clock
                .elapsed()
                .saturating_sub(Duration::from_millis(at)),
        )
    }

    /// True if a writer may take this instance for gone (or it never
    /// registered): it must not serve from its in-process cache.
    pub(crate) fn excluded(&self) -> bool {
        let limit = grace(self.config.bus_lease) * 3 / 4;
        self.since_registered().is_none_or(|d| d > limit)
    }

    /// The registry now (Redis's clock): the other live instances, and
    /// whether another is lapsed.
    async fn registered_now(&self) -> Result<Registered, RedisCallError> {
        static SCRIPT: LazyLock<Script> = LazyLock::new(|| {
            Script::new(
                r"local t = redis.call('TIME')
          local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
          local live = redis.call('ZRANGEBYSCORE', KEYS[1], now - tonumber(ARGV[1]), '+inf')
          local lapsed = redis.call('ZRANGEBYSCORE', KEYS[1], now - tonumber(ARGV[2]), '(' .. (now - tonumber(ARGV[1])))
          return {live, lapsed}",
            )
        });
        let mut invocation = SCRIPT.key(self.names.instances());
        invocation
            .arg(self.config.bus_lease.as_millis() as u64)
            .arg(grace(self.config.bus_lease).as_millis() as u64);
        let (live, lapsed): (Vec<u64>, Vec<u64>) = self
            .redis
            .run_script(Patience::Patient, &invocation)
            .await?;
        Ok(Registered {
            live: live.into_iter().filter(|i| *i != self.instance).collect(),
            lapsed: lapsed.iter().any(|i| *i != self.instance),
        })
    }

    /// Leaves the registry (at close): writes stop waiting for this instance.
    pub(crate) async fn leave(&self) {
        self.delivery.left.store(true, Ordering::SeqCst);
        let mut c = redis::cmd("ZREM");
        c.arg(self.names.instances()).arg(self.instance);
        let _ = self.redis.query::<i64>(Patience::Patient, &c).await;
    }

    /// Tells `origin` that this instance applied its message `id` of
    /// `shard` (in a task of its own: the bus does not wait for it; tried
    /// again if Redis does not take it). A pushed message is always
    /// confirmed; a replayed one only if recent by the origin's clock (so
    /// clocks apart never silence the live path).
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
            for _ in 0..CONFIRM_TRIES {
                if this
                    .redis
                    .query::<i64>(Patience::Patient, &cmd)
                    .await
                    .is_ok()
                {
                    return;
                }
            }
        });
    }

    /// Waits (at most `delivery_wait`) until every other live instance, as
    /// the registry says after the message `id` of `shard` was published,
    /// has confirmed it; true if all did and none was lapsed.
    pub(crate) async fn await_delivery(&self, at: (usize, StreamId)) -> bool {
        let within = self.config.delivery_wait;
        let Ok(Registered {
            live: peers,
            lapsed,
        }) = self.registered_now().await
        else {
            return false;
        };
        if peers.is_empty() {
            return !lapsed;
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
        delivered && !lapsed
    }
}
