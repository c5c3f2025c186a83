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

mod bus;
mod client;
mod codec;
mod message;
mod names;

use std::{
    collections::HashSet,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use bytes::Bytes;
use futures::future::join_all;
use hdrhistogram::Histogram;
use parking_lot::Mutex;
use redis::PushInfo;
use serde::Serialize;
use tokio::sync::mpsc::UnboundedReceiver;

pub(crate) use bus::{start as start_bus, LocalCache};
pub use codec::Stamp;
pub(crate) use names::Kind;

use self::{
    client::{Redis, Target},
    message::{Message, StreamId},
    names::{Names, SHARDS},
};
use crate::{
    breaker::CircuitState,
    config::SharedConfig,
    metrics::{histogram, Bucket, Distribution, Percentiles},
};

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
    lag_sum_us: AtomicU64,
}

/// Invalidations not yet published.
#[derive(Default)]
struct Pending {
    names: HashSet<(Kind, String)>,
    clear: bool,
}

/// What the shared level had for a key.
pub(crate) enum SharedLookup {
    /// A current entry: its value's bytes, its stamp, its time left.
    Hit {
        value: Bytes,
        stamp: Stamp,
        ttl_left: Duration,
    },
    /// Nothing current. `stamp` is what a fill starting now must carry
    /// (`None`: Redis did not answer, so the fill is not shared).
    Miss { stamp: Option<Stamp>, lease: Lease },
}

/// The fill lease, after a miss.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lease {
    /// This instance fills the key.
    Won,
    /// Another instance is filling it.
    Held,
    /// Not asked for, or Redis did not answer.
    None,
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
    known: moka::sync::Cache<(Kind, Arc<str>), u64>,
    pending: Mutex<Pending>,
    /// Per shard, the last stream id applied.
    shards: Vec<tokio::sync::Mutex<StreamId>>,
    c: Counters,
    lag: Mutex<Histogram<u64>>,
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
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let shared = Self {
            redis: Redis::new(target, config.call_timeout, tx),
            names: Names::new(&config.namespace),
            config: config.clone(),
            instance: rand::random::<u64>() | 1,
            epoch: AtomicU64::new(0),
            clock: std::time::Instant::now(),
            confirmed: AtomicU64::new(0),
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
        };
        Ok((shared, rx))
    }

    /// The epoch this instance is in (0: the bus has not read it yet).
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    /// Waits (at most `within`) for the bus's first heartbeat; true if it came.
    pub(crate) async fn ready(&self, within: Duration) -> bool {
        let until = tokio::time::Instant::now() + within;
        while self.epoch() == 0 {
            if tokio::time::Instant::now() >= until {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }

    /// True if an in-process entry fetched at `fetched` may be served: the
    /// bus was confirmed current within the lease, or the entry is younger
    /// than the lease.
    pub(crate) fn may_serve(&self, fetched: std::time::Instant) -> bool {
        let lease = self.config.bus_lease;
        let ok = fetched.elapsed() <= lease || self.since_confirmed().is_some_and(|d| d <= lease);
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

    /// Reads the entry under `key` and the generations of `key` and `tags`,
    /// and asks for the fill lease if `lease` says for how long, all in one
    /// round trip (the lease is given back at once if the entry is there:
    /// a miss, the case that goes to the database, waits for nothing more).
    pub(crate) async fn lookup(
        self: &Arc<Self>,
        key: &str,
        tags: &[Arc<str>],
        lease: Option<Duration>,
    ) -> SharedLookup {
        let epoch = self.epoch();
        let not_shared = SharedLookup::Miss {
            stamp: None,
            lease: Lease::None,
        };
        if epoch == 0 || self.is_pending(key, tags) {
            return not_shared;
        }
        // The entry, its key's generation and its lease share a slot: one pipeline.
        let mut own = redis::pipe();
        own.cmd("MGET")
            .arg(self.names.entry(key))
            .arg(self.names.generation(Kind::Key, key));
        if let Some(d) = lease {
            own.cmd("SET")
                .arg(self.names.lease(key))
                .arg(self.instance)
                .arg("NX")
                .arg("PX")
                .arg(d.as_millis().max(1) as u64);
        }
        let own = async {
            if lease.is_some() {
                self.redis
                    .pipeline::<(Vec<Option<Vec<u8>>>, Option<String>)>(&own)
                    .await
                    .map(|(e, l)| (e, Some(l)))
            } else {
                self.redis
                    .pipeline::<(Vec<Option<Vec<u8>>>,)>(&own)
                    .await
                    .map(|(e,)| (e, None))
            }
        };
        let tag_gens = async {
            if self.redis.target().is_cluster() {
                // Tags hash to different slots: one GET each, concurrently.
                let gets = tags.iter().map(|t| {
                    let mut c = redis::cmd("GET");
                    c.arg(self.names.generation(Kind::Tag, t));
                    async move { self.redis.query::<Option<Vec<u8>>>(&c).await }
                });
                join_all(gets)
                    .await
                    .into_iter()
                    .collect::<Result<Vec<_>, _>>()
            } else if tags.is_empty() {
                Ok(Vec::new())
            } else {
                let mut c = redis::cmd("MGET");
                for t in tags {
                    c.arg(self.names.generation(Kind::Tag, t));
                }
                self.redis.query::<Vec<Option<Vec<u8>>>>(&c).await
            }
        };
        let (own, gens) = futures::join!(own, tag_gens);
        let (Ok((mut own, lease)), Ok(gens)) = (own, gens) else {
            inc(&self.c.misses);
            return not_shared;
        };
        let lease = match lease {
            Some(Some(_)) => Lease::Won,
            Some(None) => Lease::Held,
            None => Lease::None,
        };
        let key_gen = generation(own.pop().flatten());
        let stamp = Stamp {
            epoch,
            key_gen,
            tag_gens: tags
                .iter()
                .cloned()
                .zip(gens.into_iter().map(generation))
                .collect(),
        };
        if let Some(hit) = own
            .pop()
            .flatten()
            .and_then(|raw| self.current(raw, &stamp))
        {
            inc(&self.c.hits);
            if lease == Lease::Won {
                self.release(Arc::from(key));
            }
            return hit;
        }
        inc(&self.c.misses);
        if lease == Lease::Won {
            inc(&self.c.leases_won);
        }
        SharedLookup::Miss {
            stamp: Some(stamp),
            lease,
        }
    }

    /// The entry in `raw` if its stamp is `current` and it has time left.
    fn current(&self, raw: Vec<u8>, current: &Stamp) -> Option<SharedLookup> {
        let env = match codec::decode(Bytes::from(raw)) {
            Ok(env) => env,
            Err(why) => {
                tracing::debug!(why, "shared entry not readable: a miss");
                return None;
            }
        };
        if env.stamp != *current {
            inc(&self.c.refused);
            return None;
        }
        let expires = env.stored_at_ms + u64::from(env.ttl_ms);
        let left = expires.checked_sub(unix_ms()).filter(|ms| *ms > 0)?;
        Some(SharedLookup::Hit {
            value: env.value,
            stamp: env.stamp,
            ttl_left: Duration::from_millis(left),
        })
    }

    /// The current entry under `key` whatever its tags (read from the
    /// entry itself): for warming, where the caller does not know them.
    pub(crate) async fn read_any(self: &Arc<Self>, key: &str) -> Option<(Bytes, Stamp, Duration)> {
        let mut c = redis::cmd("GET");
        c.arg(self.names.entry(key));
        let raw = self.redis.query::<Option<Vec<u8>>>(&c).await.ok()??;
        let env = codec::decode(Bytes::from(raw)).ok()?;
        let tags: Vec<Arc<str>> = env.stamp.tag_gens.iter().map(|(t, _)| t.clone()).collect();
        match self.lookup(key, &tags, None).await {
            SharedLookup::Hit {
                value,
                stamp,
                ttl_left,
            } => Some((value, stamp, ttl_left)),
            SharedLookup::Miss { .. } => None,
        }
    }

    /// Waits for the instance holding the fill lease of `key` to store it:
    /// polls with backoff until the entry is there, the lease is free (and
    /// then taken: this instance fills), or `until`.
    pub(crate) async fn wait_for_fill(
        self: &Arc<Self>,
        key: &str,
        tags: &[Arc<str>],
        lease: Duration,
        until: tokio::time::Instant,
    ) -> SharedLookup {
        inc(&self.c.lease_waits);
        let mut pause = Duration::from_millis(2);
        loop {
            let now = tokio::time::Instant::now();
            if now + pause >= until {
                return self.lookup(key, tags, None).await;
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(25));
            match self.lookup(key, tags, Some(lease)).await {
                SharedLookup::Miss {
                    lease: Lease::Held, ..
                } => continue,
                other => return other,
            }
        }
    }

    /// Stores a fill (in a task of its own: the caller does not wait), and
    /// gives back the fill lease if this instance held it.
    pub(crate) fn store(
        self: &Arc<Self>,
        key: Arc<str>,
        stamp: Stamp,
        ttl: Duration,
        value: Bytes,
        release_lease: bool,
    ) {
        let this = self.clone();
        tokio::spawn(async move { this.store_now(key, stamp, ttl, value, release_lease).await });
    }

    /// [`store`](Self::store), waited for; true if Redis took it.
    pub(crate) async fn store_now(
        &self,
        key: Arc<str>,
        stamp: Stamp,
        ttl: Duration,
        value: Bytes,
        release_lease: bool,
    ) -> bool {
        let this = self;
        {
            let ttl_ms = ttl.as_millis().clamp(1, u32::MAX as u128) as u32;
            let bytes = codec::encode(&stamp, unix_ms(), ttl_ms, &value);
            let mut p = redis::pipe();
            p.cmd("SET")
                .arg(this.names.entry(&key))
                .arg(bytes)
                .arg("PX")
                .arg(ttl_ms)
                .ignore();
            if release_lease {
                p.cmd("DEL").arg(this.names.lease(&key)).ignore();
            }
            let mut hot = redis::cmd("ZADD");
            hot.arg(this.names.hot()).arg(unix_ms()).arg(key.as_ref());
            let (stored, _) =
                futures::join!(this.redis.pipeline::<()>(&p), this.redis.query::<i64>(&hot));
            if stored.is_ok() {
                inc(&this.c.stores);
            }
            stored.is_ok()
        }
    }

    /// Gives back a fill lease without storing (the fill failed or was
    /// invalidated).
    pub(crate) fn release(self: &Arc<Self>, key: Arc<str>) {
        let this = self.clone();
        tokio::spawn(async move {
            let mut c = redis::cmd("DEL");
            c.arg(this.names.lease(&key));
            let _ = this.redis.query::<i64>(&c).await;
        });
    }

    /// Publishes an invalidation: [`bump`](Self::bump), then
    /// [`announce`](Self::announce). Returns the new generation if the bump
    /// was done; what could not be done is kept and done by the heartbeat.
    pub(crate) async fn publish(&self, kind: Kind, name: &str) -> Option<u64> {
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
            self.redis.query::<()>(&c).await.ok().map(|_| {
                self.epoch.store(epoch, Ordering::SeqCst);
                epoch
            })
        } else {
            let mut c = redis::cmd("INCR");
            c.arg(self.names.generation(kind, name));
            self.redis.query::<u64>(&c).await.ok()
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
    /// kept for the heartbeat if Redis did not take it.
    pub(crate) async fn announce(&self, kind: Kind, name: &str, generation: u64) {
        let msg = Message {
            origin: self.instance,
            kind,
            generation,
            published_us: unix_us(),
            epoch: self.epoch(),
            name: name.to_string(),
        };
        if bus::append(self, &msg).await.is_err() {
            self.keep_pending(kind, name);
        } else {
            inc(&self.c.published);
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

    /// The most recently filled keys starting with `prefix` (the shared hot
    /// set), newest first.
    pub(crate) async fn hot_keys(&self, prefix: &str, limit: usize) -> Vec<String> {
        let mut c = redis::cmd("ZREVRANGE");
        c.arg(self.names.hot()).arg(0).arg(HOT_MAX as i64);
        let keys: Vec<String> = self.redis.query(&c).await.unwrap_or_default();
        keys.into_iter()
            .filter(|k| k.starts_with(prefix))
            .take(limit)
            .collect()
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

    /// A snapshot of the shared level's figures.
    pub(crate) fn status(&self) -> SharedStatus {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let c = &self.c;
        let lag = Distribution::of(&self.lag.lock(), get(&c.lag_sum_us));
        let pending = {
            let p = self.pending.lock();
            p.names.len() as u64 + u64::from(p.clear)
        };
        SharedStatus {
            target: self.redis.target().redacted(),
            cluster: self.redis.target().is_cluster(),
            circuit: self.redis.circuit(),
            bus_current: self
                .since_confirmed()
                .is_some_and(|d| d <= self.config.bus_lease),
            seconds_since_confirmed: self.since_confirmed().map(|d| d.as_secs_f64()),
            hits: get(&c.hits),
            misses: get(&c.misses),
            stores: get(&c.stores),
            refused_stale: get(&c.refused),
            leases_won: get(&c.leases_won),
            lease_waits: get(&c.lease_waits),
            published: get(&c.published),
            received: get(&c.received),
            replayed: get(&c.replayed),
            flushes: get(&c.flushes),
            reconnects: get(&c.reconnects),
            pending,
            warmed: get(&c.warmed),
            lease_refusals: get(&c.lease_refusals),
            updates_refused: get(&c.updates_refused),
            redis_commands: get(&self.redis.commands),
            redis_failures: get(&self.redis.failures),
            redis_call_ms: Distribution::of(&self.redis.latency.lock(), 0).percentiles,
            delivery_lag_ms: lag.percentiles,
            delivery_lag_histogram: lag.buckets,
            delivery_lag_sum_ms: lag.sum_ms,
        }
    }
}

/// The shared level's figures, in [`Status`](crate::Status).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SharedStatus {
    /// Where Redis is (passwords replaced).
    pub target: String,
    /// A Redis Cluster.
    pub cluster: bool,
    /// The breaker in front of Redis.
    pub circuit: CircuitState,
    /// The bus was confirmed current within the lease.
    pub bus_current: bool,
    /// Since the last confirming heartbeat.
    pub seconds_since_confirmed: Option<f64>,
    /// Lookups served by the shared level.
    pub hits: u64,
    /// Lookups it could not serve.
    pub misses: u64,
    /// Fills and updates stored in it.
    pub stores: u64,
    /// Entries found but refused: a newer write or clear had passed them.
    pub refused_stale: u64,
    /// Fill leases this instance took.
    pub leases_won: u64,
    /// Misses that waited for another instance's fill.
    pub lease_waits: u64,
    /// Invalidations published.
    pub published: u64,
    /// Invalidations from other instances applied (pushed or replayed).
    pub received: u64,
    /// Of those, applied from a stream replay.
    pub replayed: u64,
    /// Times the in-process cache was emptied (clear, lost epoch, trimmed stream).
    pub flushes: u64,
    /// Times the bus found Redis again after losing it.
    pub reconnects: u64,
    /// Invalidations waiting to be published (a pending clear counts one).
    pub pending: u64,
    /// Entries copied into the in-process cache at start-up.
    pub warmed: u64,
    /// In-process entries not served because the bus was unconfirmed for
    /// longer than the lease and they were older than it.
    pub lease_refusals: u64,
    /// Updates in place not stored: another write (or a missing version)
    /// came between the snapshot and the write.
    pub updates_refused: u64,
    /// Commands sent to Redis.
    pub redis_commands: u64,
    /// Commands that failed or timed out.
    pub redis_failures: u64,
    /// How long Redis calls took, as this process saw them (queueing in
    /// this process included).
    pub redis_call_ms: Percentiles,
    /// Publish to apply, other instances' invalidations.
    pub delivery_lag_ms: Percentiles,
    /// The same, as cumulative buckets.
    pub delivery_lag_histogram: Vec<Bucket>,
    /// Sum of the lags, ms.
    pub delivery_lag_sum_ms: f64,
}
