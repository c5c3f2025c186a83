//! The shared level: Redis under every instance's in-process cache, and the
//! bus that carries invalidations between instances.
//!
//! ## The protocol
//! - **Generations.** Every key and tag has a counter in Redis, bumped by
//!   each invalidation of it (`INCR`); a clear replaces the *epoch*. A
//!   shared entry carries a [`Stamp`]: the epoch and the generations of its
//!   key and tags read *before* its data was fetched. A reader reads the
//!   entry and the current generations together and serves the entry only
//!   if the stamp still holds. So a fill that raced a write (fetched before
//!   it, stored after) is refused by every reader once the write's `INCR`
//!   is done, whatever the timing: the memcache "lease" idea, with version
//!   numbers instead of tokens.
//! - **Bus.** After its `INCR`, an invalidation is appended to a Redis
//!   Stream (one per shard, trimmed to [`STREAM_LEN`]) and published on the
//!   shard's channel with its stream id and the id before it. Receivers drop
//!   the named entries from their in-process cache. A receiver that sees a
//!   gap, reconnects, or misses a push replays the stream from the last id
//!   it applied; one that cannot (the stream was trimmed past it, or Redis
//!   lost its data: the epoch changed) empties its in-process cache.
//! - **Delivery.** A receiver confirms each applied message to its origin
//!   (on the origin's own channel), after putting back from the shared
//!   level what the invalidation made it drop (the writer stored its
//!   updated values there). The origin's invalidation waits, at most
//!   `delivery_wait`, for every instance the registry (a sorted set scored
//!   by Redis's clock, refreshed by each heartbeat) lists as live once the
//!   message is published: once it returns `Confirmed`, the next read on
//!   any instance sees the write. `delivery`'s module doc gives the rules
//!   that make that hold whatever the timing (instances starting, stalled,
//!   lapsed).
//! - **Write locks.** Writers of one tag on several instances take turns
//!   ([`TagLocks`]), so that each update in place follows the previous one.
//! - **Confirmation.** A heartbeat reads every shard's head and the epoch
//!   every `bus_lease / 5`; a round that finds nothing unapplied *confirms*
//!   the instance current as of the round's start. While unconfirmed for
//!   longer than `bus_lease`, the manager serves no in-process entry older
//!   than `bus_lease`.
//! - **Fill leases.** The first instance to miss a key takes a short lease
//!   (`SET NX PX`); the others poll the shared level until the filler stores
//!   it (or the lease lapses), so N instances missing one key make about one
//!   query.
//! - **Faults.** Every call has a short budget and goes through a breaker
//!   (see `client`); an invalidation that cannot be published is kept
//!   (bounded: past [`PENDING_MAX`] names it becomes a clear) and published
//!   by the heartbeat when Redis answers again; meanwhile this instance does
//!   not read the shared level for the names it holds.
//!
//! `CLIENT TRACKING` (Redis's client-side caching) was not used: it tracks
//! keys, not tags, and a reconnect loses every notification with no way to
//! replay them.

mod budget;
mod bus;
mod client;
mod codec;
mod delivery;
mod level;
mod lock;
mod message;
mod names;
mod status;

use std::{
    collections::HashSet,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use hdrhistogram::Histogram;
use parking_lot::Mutex;
use redis::PushInfo;
use tokio::sync::mpsc::UnboundedReceiver;

pub(crate) use budget::Patience;
pub(crate) use bus::{start as start_bus, LocalCache};
pub use codec::Stamp;
pub(crate) use level::{Lease, SharedLookup};
pub use lock::TagLocks;
pub(crate) use names::Kind;
pub use status::SharedStatus;

use self::{
    client::{Redis, Target},
    message::{Message, StreamId},
    names::{Names, SHARDS},
};
use crate::{config::SharedConfig, metrics::histogram};

/// Entries kept per bus stream (about; trimmed with `MAXLEN ~`).
pub(crate) const STREAM_LEN: usize = 10_000;
/// Unpublished invalidations kept by name before they collapse into a clear.
pub(crate) const PENDING_MAX: usize = 10_000;
/// Keys kept in the shared hot set (for warming new instances).
pub(crate) const HOT_MAX: usize = 10_000;

/// Counters of the shared level.
#[derive(Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    stores: AtomicU64,
    refused: AtomicU64,
    leases_won: AtomicU64,
    lease_waits: AtomicU64,
    published: AtomicU64,
    received: AtomicU64,
    replayed: AtomicU64,
    flushes: AtomicU64,
    reconnects: AtomicU64,
    warmed: AtomicU64,
    lease_refusals: AtomicU64,
    updates_refused: AtomicU64,
    fills_dropped: AtomicU64,
    lag_sum_us: AtomicU64,
    delivery_waits: AtomicU64,
    delivery_timeouts: AtomicU64,
    lock_waits: AtomicU64,
    replaced: AtomicU64,
}

/// Invalidations not yet published.
#[derive(Default)]
struct Pending {
    names: HashSet<(Kind, String)>,
    clear: bool,
}

/// The shared level and the bus, as the manager uses them.
pub(crate) struct Shared {
    redis: Redis,
    names: Names,
    config: SharedConfig,
    instance: u64,
    /// The epoch this instance is in; 0 until the bus has read it.
    epoch: AtomicU64,
    clock: std::time::Instant,
    /// ms since `clock` (plus one) at the start of the last confirming round.
    confirmed: AtomicU64,
    /// ms since `clock` (plus one) at the start of the last registration
    /// Redis took (0: never); see `delivery`.
    registered: AtomicU64,
    known: moka::sync::Cache<(Kind, Arc<str>), u64>,
    pending: Mutex<Pending>,
    /// Per shard, the last stream id applied.
    shards: Vec<tokio::sync::Mutex<StreamId>>,
    c: Counters,
    lag: Mutex<Histogram<u64>>,
    delivery: delivery::Delivery,
}

/// Checks a `REDIS_URL` without connecting.
pub(crate) fn check_url(url: &str) -> Result<(), String> {
    Target::parse(url).map(|_| ())
}

/// Now, in ms (or µs) since the Unix epoch.
fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn unix_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

fn inc(a: &AtomicU64) {
    a.fetch_add(1, Ordering::Relaxed);
}

/// A generation as Redis holds it (missing: 0).
fn generation(raw: Option<Vec<u8>>) -> u64 {
    raw.and_then(|b| std::str::from_utf8(&b).ok()?.parse().ok())
        .unwrap_or(0)
}

impl Shared {
    /// The shared level described by `config` (whose URL must be set), and
    /// the receiver of its pushes, to hand to [`bus::run`].
    pub(crate) fn new(
        config: &SharedConfig,
    ) -> Result<(Self, UnboundedReceiver<PushInfo>), String> {
        let url = config.url.as_deref().ok_or("no Redis URL")?;
        let target = Target::parse(url)?;
        if config.delivery_wait.is_zero() {
            tracing::warn!(
                "REDIS_DELIVERY_WAIT=0: writes do not wait for the other instances; \
                 across instances a write is seen within REDIS_BUS_LEASE, not by the next read"
            );
        }
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let shared = Self {
            redis: Redis::new(
                target,
                budget::Budget::new(config.call_timeout, config.bus_lease),
                tx,
            ),
            names: Names::new(&config.namespace),
            config: config.clone(),
            instance: rand::random::<u64>() | 1,
            epoch: AtomicU64::new(0),
            clock: std::time::Instant::now(),
            confirmed: AtomicU64::new(0),
            registered: AtomicU64::new(0),
            known: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(Duration::from_secs(600))
                .build(),
            pending: Mutex::new(Pending::default()),
            shards: (0..SHARDS)
                .map(|_| tokio::sync::Mutex::new(StreamId::default()))
                .collect(),
            c: Counters::default(),
            lag: Mutex::new(histogram()),
            delivery: delivery::Delivery::default(),
        };
        Ok((shared, rx))
    }

    /// The epoch this instance is in (0: the bus has not read it yet).
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    /// Waits (at most `within`) for the bus's first heartbeat to have read
    /// the epoch and registered this instance (which empties the in-process
    /// cache once); true if it did.
    pub(crate) async fn ready(&self, within: Duration) -> bool {
        let until = tokio::time::Instant::now() + within;
        while self.epoch() == 0 || self.excluded() {
            if tokio::time::Instant::now() >= until {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }

    /// True if an in-process entry fetched at `fetched` may be served: this
    /// instance is registered (no writer can take it for gone, see
    /// `delivery`), and its bus was confirmed current within the lease or
    /// the entry is younger than the lease (a write that this instance did
    /// not confirm was answered as not confirmed, and the lease bounds how
    /// long it may go unseen here).
    pub(crate) fn may_serve(&self, fetched: std::time::Instant) -> bool {
        let lease = self.config.bus_lease;
        let ok = !self.excluded()
            && (fetched.elapsed() <= lease || self.since_confirmed().is_some_and(|d| d <= lease));
        if !ok {
            inc(&self.c.lease_refusals);
        }
        ok
    }

    fn since_confirmed(&self) -> Option<Duration> {
        let at = self.confirmed.load(Ordering::SeqCst).checked_sub(1)?;
        Some(
            self.clock
                .elapsed()
                .saturating_sub(Duration::from_millis(at)),
        )
    }

    fn confirm(&self, round_started: std::time::Instant) {
        let ms = round_started
            .saturating_duration_since(self.clock)
            .as_millis() as u64
            + 1;
        self.confirmed.fetch_max(ms, Ordering::SeqCst);
    }

    fn is_pending(&self, key: &str, tags: &[Arc<str>]) -> bool {
        let p = self.pending.lock();
        p.clear
            || (!p.names.is_empty()
                && (p.names.contains(&(Kind::Key, key.to_string()))
                    || tags
                        .iter()
                        .any(|t| p.names.contains(&(Kind::Tag, t.to_string())))))
    }

    fn keep_pending(&self, kind: Kind, name: &str) {
        let mut p = self.pending.lock();
        if kind == Kind::Clear || p.names.len() >= PENDING_MAX {
            p.clear = true;
            p.names.clear();
        } else if !p.clear {
            p.names.insert((kind, name.to_string()));
        }
    }

    /// The newest generation of a key or tag this instance knows of.
    pub(crate) fn known_generation(&self, kind: Kind, name: &str) -> u64 {
        self.known.get(&(kind, Arc::from(name))).unwrap_or(0)
    }

    fn learn_generation(&self, kind: Kind, name: &str, gen: u64) {
        self.known
            .entry((kind, Arc::from(name)))
            .and_upsert_with(|old| old.map_or(gen, |o| o.into_value().max(gen)));
    }

    /// Publishes an invalidation: [`bump`](Self::bump), then
    /// [`announce`](Self::announce), without waiting for its delivery.
    /// Returns the new generation if the bump was done; what could not be
    /// done is kept and done by the heartbeat.
    async fn publish(&self, kind: Kind, name: &str) -> Option<u64> {
        let generation = self.bump(kind, name).await?;
        self.announce(kind, name, generation).await;
        Some(generation)
    }

    /// Bumps the generation of a key or tag (for a clear, replaces the
    /// epoch): from now on no reader serves a shared entry stamped before.
    /// `None` (and the invalidation kept) if Redis did not take it.
    pub(crate) async fn bump(&self, kind: Kind, name: &str) -> Option<u64> {
        let generation = if kind == Kind::Clear {
            let epoch = rand::random::<u64>() | 1;
            let mut c = redis::cmd("SET");
            c.arg(self.names.epoch()).arg(epoch);
            self.redis
                .query::<()>(Patience::Patient, &c)
                .await
                .ok()
                .map(|_| {
                    self.epoch.store(epoch, Ordering::SeqCst);
                    epoch
                })
        } else {
            let mut c = redis::cmd("INCR");
            c.arg(self.names.generation(kind, name));
            self.redis.query::<u64>(Patience::Patient, &c).await.ok()
        };
        let Some(generation) = generation else {
            self.keep_pending(kind, name);
            return None;
        };
        if kind != Kind::Clear {
            self.learn_generation(kind, name, generation);
        }
        Some(generation)
    }

    /// Tells the other instances (the bus) about a bumped invalidation;
    /// kept for the heartbeat if Redis did not take it. Returns where it
    /// went on the bus (for [`await_delivery`](Self::await_delivery)).
    pub(crate) async fn announce(
        &self,
        kind: Kind,
        name: &str,
        generation: u64,
    ) -> Option<(usize, StreamId)> {
        let msg = Message {
            origin: self.instance,
            kind,
            generation,
            published_us: unix_us(),
            epoch: self.epoch(),
            name: name.to_string(),
        };
        match bus::append(self, &msg).await {
            Ok(at) => {
                inc(&self.c.published);
                Some(at)
            }
            Err(_) => {
                self.keep_pending(kind, name);
                None
            }
        }
    }

    /// Publishes what could not be published before; true if nothing is left.
    async fn publish_pending(&self) -> bool {
        let Pending { names, clear } = std::mem::take(&mut *self.pending.lock());
        if clear {
            return self.publish(Kind::Clear, "").await.is_some()
                && self.pending.lock().names.is_empty();
        }
        for (kind, name) in names {
            self.publish(kind, &name).await;
        }
        let p = self.pending.lock();
        !p.clear && p.names.is_empty()
    }

    pub(crate) fn count_update_refused(&self) {
        inc(&self.c.updates_refused);
    }

    pub(crate) fn count_warmed(&self, n: usize) {
        self.c.warmed.fetch_add(n as u64, Ordering::Relaxed);
    }

    fn record_lag(&self, published_us: u64) {
        let lag = unix_us().saturating_sub(published_us);
        self.c.lag_sum_us.fetch_add(lag, Ordering::Relaxed);
        self.lag.lock().saturating_record(lag.max(1));
    }
}
