//! The Redis implementation's state: the connection, the names, this
//! instance's epoch, bus position, registration and counters, and the two
//! steps of every invalidation (`bump`, `announce`) with what is kept while
//! Redis does not take them.

use std::{
    collections::HashSet,
    sync::LazyLock,
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

use super::{
    acks::Acks,
    budget::{Budget, Patience},
    client::Redis,
    message::StreamId,
    names::{Kind, Names, SHARDS},
    target::Target,
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
pub(super) struct Counters {
    pub(super) hits: AtomicU64,
    pub(super) misses: AtomicU64,
    pub(super) stores: AtomicU64,
    pub(super) refused: AtomicU64,
    pub(super) leases_won: AtomicU64,
    pub(super) lease_waits: AtomicU64,
    pub(super) published: AtomicU64,
    pub(super) received: AtomicU64,
    pub(super) replayed: AtomicU64,
    pub(super) flushes: AtomicU64,
    pub(super) reconnects: AtomicU64,
    pub(super) warmed: AtomicU64,
    pub(super) lease_refusals: AtomicU64,
    pub(super) updates_refused: AtomicU64,
    pub(super) fills_dropped: AtomicU64,
    pub(super) lag_sum_us: AtomicU64,
    pub(super) delivery_waits: AtomicU64,
    pub(super) delivery_timeouts: AtomicU64,
    pub(super) lock_waits: AtomicU64,
    pub(super) replaced: AtomicU64,
}

/// Invalidations not yet published.
#[derive(Default)]
pub(super) struct Pending {
    pub(super) names: HashSet<(Kind, String)>,
    pub(super) clear: bool,
}

/// The shared level and the bus, as the manager uses them.
pub(crate) struct Shared {
    pub(super) redis: Redis,
    pub(super) names: Names,
    pub(super) config: SharedConfig,
    pub(super) instance: u64,
    /// The epoch this instance is in; 0 until the bus has read it.
    pub(super) epoch: AtomicU64,
    pub(super) clock: std::time::Instant,
    /// ms since `clock` (plus one) at the start of the last heartbeat round
    /// that caught up.
    pub(super) caught_up: AtomicU64,
    /// ms since `clock` (plus one) at the start of the last registration
    /// Redis took (0: never); see `delivery`.
    pub(super) registered: AtomicU64,
    pub(super) known: moka::sync::Cache<(Kind, Arc<str>), u64>,
    pub(super) pending: Mutex<Pending>,
    /// Per shard, the last stream id applied.
    pub(super) shards: Vec<tokio::sync::Mutex<StreamId>>,
    pub(super) c: Counters,
    pub(super) lag: Mutex<Histogram<u64>>,
    pub(super) delivery: Acks,
    /// What Redis pushes (bus messages, confirmations), until the bus's
    /// receiving task takes it.
    pub(super) pushes: Mutex<Option<UnboundedReceiver<PushInfo>>>,
}

/// Now, in ms (or µs) since the Unix epoch.
pub(super) fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

pub(super) fn unix_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

pub(super) fn inc(a: &AtomicU64) {
    a.fetch_add(1, Ordering::Relaxed);
}

/// A generation as Redis holds it (missing: 0).
/// How long a name's replica floor stays in Redis after its last write:
/// far longer than any replica may lag and stay in the rotation
/// (`DB_REPLICA_MAX_LAG` is at most 10 minutes), so a floor gone from Redis
/// is one every replica in the rotation has replayed.
pub(crate) const FLOOR_TTL: Duration = Duration::from_secs(3600);

/// A generation bumped and its floor raised, in one step.
static BUMP_WITH_FLOOR: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"local g = redis.call('INCR', KEYS[1])
          local f = redis.call('GET', KEYS[2])
          if (not f) or f < ARGV[1] then
            redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
          else
            redis.call('PEXPIRE', KEYS[2], ARGV[2])
          end
          return g",
    )
});

/// A floor as stored: 16 hex digits, so that string order is number order.
pub(crate) fn floor_text(lsn: u64) -> String {
    format!("{lsn:016x}")
}

/// A stored floor (0 when absent or unreadable).
pub(super) fn floor_value(raw: Option<Vec<u8>>) -> u64 {
    raw.and_then(|b| u64::from_str_radix(std::str::from_utf8(&b).ok()?, 16).ok())
        .unwrap_or(0)
}

pub(super) fn generation(raw: Option<Vec<u8>>) -> u64 {
    raw.and_then(|b| std::str::from_utf8(&b).ok()?.parse().ok())
        .unwrap_or(0)
}

impl Shared {
    /// The shared level described by `config` (whose URL must be set); its
    /// connection opens with the bus's first heartbeat.
    pub(crate) fn new(config: &SharedConfig) -> Result<Self, String> {
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
                Budget::new(config.call_timeout, config.bus_lease),
                tx,
            ),
            names: Names::new(&config.namespace),
            config: config.clone(),
            instance: rand::random::<u64>() | 1,
            epoch: AtomicU64::new(0),
            clock: std::time::Instant::now(),
            caught_up: AtomicU64::new(0),
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
            delivery: Acks::default(),
            pushes: Mutex::new(Some(rx)),
        };
        Ok(shared)
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
    /// `delivery`), and its bus was caught up within the lease or
    /// the entry is younger than the lease (a write that this instance did
    /// not confirm was answered as not confirmed, and the lease bounds how
    /// long it may go unseen here).
    pub(crate) fn may_serve(&self, fetched: std::time::Instant) -> bool {
        let lease = self.config.bus_lease;
        let ok = !self.excluded()
            && (fetched.elapsed() <= lease || self.since_caught_up().is_some_and(|d| d <= lease));
        if !ok {
            inc(&self.c.lease_refusals);
        }
        ok
    }

    pub(super) fn since_caught_up(&self) -> Option<Duration> {
        let at = self.caught_up.load(Ordering::SeqCst).checked_sub(1)?;
        Some(
            self.clock
                .elapsed()
                .saturating_sub(Duration::from_millis(at)),
        )
    }

    pub(super) fn mark_caught_up(&self, round_started: std::time::Instant) {
        let ms = round_started
            .saturating_duration_since(self.clock)
            .as_millis() as u64
            + 1;
        self.caught_up.fetch_max(ms, Ordering::SeqCst);
    }

    pub(super) fn is_pending(&self, key: &str, tags: &[Arc<str>]) -> bool {
        let p = self.pending.lock();
        p.clear
            || (!p.names.is_empty()
                && (p.names.contains(&(Kind::Key, key.to_string()))
                    || tags
                        .iter()
                        .any(|t| p.names.contains(&(Kind::Tag, t.to_string())))))
    }

    pub(super) fn keep_pending(&self, kind: Kind, name: &str) {
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

    pub(super) fn learn_generation(&self, kind: Kind, name: &str, gen: u64) {
        self.known
            .entry((kind, Arc::from(name)))
            .and_upsert_with(|old| old.map_or(gen, |o| o.into_value().max(gen)));
    }

    /// Bumps the generation of a key or tag (for a clear, replaces the
    /// epoch): from now on no reader serves a shared entry stamped before.
    /// `None` (and the invalidation kept) if Redis did not take it.
    ///
    /// With `floor` (replicas: a WAL position at or past the write's
    /// commit), the name's replica floor is raised to it in the same round
    /// trip, so a reader that sees the new generation sees the floor too.
    pub(crate) async fn bump(&self, kind: Kind, name: &str, floor: Option<u64>) -> Option<u64> {
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
        } else if let Some(floor) = floor {
            let mut c = BUMP_WITH_FLOOR.key(self.names.generation(kind, name));
            c.key(self.names.floor(kind, name))
                .arg(floor_text(floor))
                .arg(FLOOR_TTL.as_millis() as u64);
            self.redis
                .run_script::<u64>(Patience::Patient, &c)
                .await
                .ok()
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

    pub(crate) fn count_update_refused(&self) {
        inc(&self.c.updates_refused);
    }

    pub(crate) fn count_warmed(&self, n: usize) {
        self.c.warmed.fetch_add(n as u64, Ordering::Relaxed);
    }

    pub(super) fn record_lag(&self, published_us: u64) {
        let lag = unix_us().saturating_sub(published_us);
        self.c.lag_sum_us.fetch_add(lag, Ordering::Relaxed);
        self.lag.lock().saturating_record(lag.max(1));
    }
}
