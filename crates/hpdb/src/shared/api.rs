//! What the manager asks of a shared level, and the types on that seam:
//! [`SharedLevel`] (implemented by Redis, `redis`, and by nothing at all,
//! `none`), the [`LocalCache`] a level works on, a miss's question and
//! answer ([`Ask`], [`Found`]), an invalidation's report
//! ([`Invalidation`], [`Delivery`]), and an update in place ([`Versioned`],
//! [`Update`]). The manager's paths call these unconditionally: whether
//! there is a Redis behind them is the implementation's business.

// Without the `redis` feature only `none` implements the seam, and it
// reads none of what a level is given: the inputs are the Redis level's.
#![cfg_attr(not(feature = "redis"), allow(dead_code))]

use std::{
    any::Any,
    sync::{Arc, Weak},
    time::{Duration, Instant},
};

use bytes::Bytes;
use futures::future::BoxFuture;
use tokio::task::JoinHandle;

use super::{lock::TagLocks, names::Kind, status::SharedStatus};
use crate::{
    cache::{decoder, weigh, CacheEntry, CacheValue, Decode},
    invalidation::Seq,
    stamp::Stamp,
};

/// The shared level, as the manager's paths use it.
pub(crate) trait SharedLevel: Send + Sync {
    /// A miss's leader asks for `ask.key` before going to the database.
    fn find<'a>(&'a self, ask: Ask<'a>) -> BoxFuture<'a, Found>;
    /// After the database: shares `value` (the result's encoding; `None`
    /// when it must not be shared: not current, not encodable, not
    /// cached) under the ticket's stamp, and gives the fill lease back.
    fn fill(&self, key: Arc<str>, ticket: &FillTicket, ttl: Duration, value: Option<Bytes>);
    /// Whether an in-process entry stored at `stored_at` may be served.
    fn may_serve(&self, stored_at: Instant) -> bool;
    /// Invalidates a key or a tag (or everything) here and everywhere.
    fn invalidate<'a>(
        &'a self,
        local: &'a dyn LocalCache,
        kind: Kind,
        name: &'a str,
        floor: Option<u64>,
    ) -> BoxFuture<'a, Invalidation>;
    /// A write's cache step for `tag`: invalidated everywhere, `updates`
    /// stored in place where they still follow their snapshot.
    fn update_tag<'a>(
        &'a self,
        local: &'a dyn LocalCache,
        tag: &'a str,
        tags: Arc<[Arc<str>]>,
        updates: Vec<Update>,
        floor: Option<u64>,
    ) -> BoxFuture<'a, Invalidation>;
    /// The current shared entry under `key`, whatever its tags.
    fn read_any<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Option<(Bytes, Stamp, Duration)>>;
    /// Write locks of `tags` across instances (none without other instances).
    fn lock_tags<'a>(&'a self, tags: &'a [&'a str]) -> BoxFuture<'a, TagLocks>;
    /// Copies up to `limit` shared entries under `prefix` into `local`.
    fn warm<'a>(
        &'a self,
        local: &'a dyn LocalCache,
        prefix: &'a str,
        limit: usize,
        decode: Decode,
    ) -> BoxFuture<'a, usize>;
    /// Starts what runs in the background (the bus); ends with `local`.
    fn start(&self, local: Weak<dyn LocalCache>) -> Vec<JoinHandle<()>>;
    /// Leaves the other instances (at close).
    fn leave(&self) -> BoxFuture<'_, ()>;
    /// Its figures, if it is more than nothing.
    fn status(&self) -> Option<SharedStatus>;
    /// What an invalidation reports when its task was cancelled before
    /// it could say (a runtime shutting down).
    fn interrupted(&self, kind: Kind, name: &str) -> Invalidation;
}

/// The in-process cache, as a shared level works on it (the manager's
/// core implements it).
pub(crate) trait LocalCache: Send + Sync {
    /// Drops what a key or tag invalidation names: the invalidation log
    /// first (no running fetch stores its older result), then the cache.
    /// Returns what a tag dropped.
    fn drop_named<'a>(
        &'a self,
        kind: Kind,
        name: &'a str,
    ) -> BoxFuture<'a, Vec<(Arc<str>, CacheEntry)>>;
    /// A write's updates in place of `tag`: stores `updated` (their `seq`
    /// set here), then drops the tag's other entries, so that a reader
    /// never finds a gap between the value before the write and the
    /// updated one (see `Core::replace_tag_local`).
    fn replace_tag<'a>(
        &'a self,
        tag: &'a str,
        updated: Vec<(Arc<str>, CacheEntry)>,
    ) -> BoxFuture<'a, ()>;
    /// Drops everything, with the same guarantee.
    fn flush(&self) -> BoxFuture<'_, ()>;
    /// Stores `entry` unless an invalidation of its key or tags has passed
    /// its `seq`; true if it stayed in.
    fn store(&self, key: Arc<str>, entry: CacheEntry) -> BoxFuture<'_, bool>;
    /// Removes `key`'s entry (an update in place that lost to a newer write).
    fn remove<'a>(&'a self, key: &'a str) -> BoxFuture<'a, ()>;
    /// The invalidation log's position: the `seq` of what is fetched now.
    fn position(&self) -> Seq;
    /// Whether every entry was dropped after `seq` (an update in place
    /// whose snapshot predates a clear is refused: the clear may stand
    /// for a write it did not see, e.g. another process's commit).
    fn cleared_after(&self, seq: Seq) -> bool;
    /// Whether results under `key` are cached at all (its class may not be).
    fn caches(&self, key: &str) -> bool;
    /// A write elsewhere must be seen by reads of `kind`/`name` here: its
    /// replica floor (`crate::replica`; nothing without replicas).
    fn raise_floor(&self, kind: Kind, name: &str, floor: u64);
}

/// A miss's question to the shared level.
pub(crate) struct Ask<'a> {
    /// The key, and its tags.
    pub(crate) key: &'a str,
    /// Its tags.
    pub(crate) tags: &'a [Arc<str>],
    /// Whether the caller coalesces (and so may take the fill lease, and
    /// wait for another instance's fill).
    pub(crate) coalesce: bool,
    /// The caller's deadline.
    pub(crate) deadline: tokio::time::Instant,
    /// A background refresh: a shared entry with no more than this left
    /// is due too, and is not copied.
    pub(crate) due_within: Option<Duration>,
}

/// The shared level's answer to a miss.
pub(crate) enum Found {
    /// A current entry: its value's bytes, its stamp, its time left.
    Hit {
        value: Bytes,
        stamp: Stamp,
        ttl_left: Duration,
    },
    /// Nothing to serve: go to the database with this.
    Miss(FillTicket),
}

/// What a fill from the database carries back to the shared level.
#[derive(Debug, Default)]
pub(crate) struct FillTicket {
    /// The stamp read before the fetch (`None`: do not share the result).
    pub(crate) stamp: Option<Arc<Stamp>>,
    /// This instance holds the key's fill lease.
    pub(crate) holds_lease: bool,
    /// What the shared level said of the key's and its tags' replica
    /// floors (`crate::replica`: other instances' writes).
    pub(crate) floor: SharedFloor,
}

/// The shared level's answer about a miss's replica floor.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SharedFloor {
    /// Not asked (the read is not cached, or there is no shared level).
    #[default]
    NotAsked,
    /// Asked, and Redis did not answer in time.
    Unanswered,
    /// The highest floor of the key and its tags (0: none).
    Floor(u64),
}

/// Whether the other instances had applied an invalidation when the call
/// that made it returned: what a write can promise its client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Delivery {
    /// No shared level: this instance is the only one that caches, and it
    /// applied the invalidation before returning.
    Local,
    /// Every instance that could serve a cached value from before the
    /// invalidation had applied it (or there was none): the next read on
    /// any instance sees the write.
    Confirmed,
    /// An instance did not confirm within `REDIS_DELIVERY_WAIT`, or Redis
    /// did not take the invalidation: an instance may serve the value from
    /// before it for at most `REDIS_BUS_LEASE` (the bus lease).
    Unconfirmed,
}

impl Delivery {
    /// The weaker of two deliveries (a write of several invalidations is
    /// as delivered as its least delivered one).
    pub fn and(self, other: Delivery) -> Delivery {
        use Delivery::*;
        match (self, other) {
            (Unconfirmed, _) | (_, Unconfirmed) => Unconfirmed,
            (Confirmed, _) | (_, Confirmed) => Confirmed,
            (Local, Local) => Local,
        }
    }

    /// Its name in the `X-Delivery` header and in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Delivery::Local => "local",
            Delivery::Confirmed => "confirmed",
            Delivery::Unconfirmed => "unconfirmed",
        }
    }
}

/// What an invalidation did: its new generation in the shared level, if
/// there is one and Redis took it, and how far it was delivered.
#[derive(Debug, Clone)]
pub struct Invalidation {
    pub(crate) kind: Kind,
    pub(crate) name: Arc<str>,
    pub(crate) generation: Option<u64>,
    pub(crate) delivery: Delivery,
    pub(crate) refused: Vec<Arc<str>>,
    /// The replica floor written with it, carried on the bus.
    pub(crate) floor: Option<u64>,
}

impl Invalidation {
    pub(crate) fn new(kind: Kind, name: &str, generation: Option<u64>, delivery: Delivery) -> Self {
        Invalidation {
            kind,
            name: Arc::from(name),
            generation,
            delivery,
            refused: Vec::new(),
            floor: None,
        }
    }

    /// The key's or tag's generation after this invalidation (`None`:
    /// no shared level, or Redis did not answer; the invalidation is then
    /// published when it does).
    pub fn generation(&self) -> Option<u64> {
        self.generation
    }

    /// True if every other live instance confirmed it had applied this
    /// invalidation before it returned (see `REDIS_DELIVERY_WAIT`); false
    /// without a shared level, or if one did not confirm within the wait.
    pub fn delivered(&self) -> bool {
        self.delivery == Delivery::Confirmed
    }

    /// How far this invalidation was delivered when it returned.
    pub fn delivery(&self) -> Delivery {
        self.delivery
    }

    /// Keys of a write's cache step ([`Control::update_tag`](crate::Control::update_tag))
    /// whose updated value was not stored because another write came
    /// between its snapshot and this one: no instance holds a current value
    /// for them until one is fetched again.
    pub fn refused(&self) -> &[Arc<str>] {
        &self.refused
    }

    /// The WAL position recorded as the invalidated name's replica floor
    /// (with `DB_REPLICA_URLS`): a session that wants its later reads of
    /// other names to see this write passes it on
    /// ([`QueryOptions::read_after`](crate::QueryOptions::read_after)).
    pub fn floor(&self) -> Option<u64> {
        self.floor
    }
}

/// A cached value read before a write, with what an update in place needs.
#[derive(Debug, Clone)]
pub struct Versioned<T: ?Sized> {
    /// The value.
    pub value: Arc<T>,
    /// The time it had left: the updated value keeps it, never more (zero
    /// for an entry past its TTL but within the revalidation grace).
    pub ttl_left: Duration,
    /// How long past its TTL it was (within the revalidation grace): the
    /// updated value is as overdue, so the grace still ends when the
    /// original's would have.
    pub(crate) overdue: Duration,
    pub(crate) stamp: Option<Arc<Stamp>>,
    /// The invalidation log's position before it was read.
    pub(crate) since: Seq,
}

impl Versioned<dyn Any + Send + Sync> {
    /// The same, typed (`None` if the value is of another type).
    pub(crate) fn downcast<T: Send + Sync + 'static>(self) -> Option<Versioned<T>> {
        Some(Versioned {
            value: self.value.downcast::<T>().ok()?,
            ttl_left: self.ttl_left,
            overdue: self.overdue,
            stamp: self.stamp,
            since: self.since,
        })
    }
}

/// A value updated in place, type-erased (see `Control::update_tag`).
pub(crate) struct Update {
    pub(crate) key: Arc<str>,
    pub(crate) ttl_left: Duration,
    pub(crate) overdue: Duration,
    pub(crate) before: Option<Arc<Stamp>>,
    /// The invalidation log's position before the snapshot was read.
    pub(crate) since: Seq,
    pub(crate) value: Arc<dyn Any + Send + Sync>,
    pub(crate) size: u32,
    /// Its bytes for the shared level, made only if a level asks.
    encode: fn(&(dyn Any + Send + Sync)) -> Option<Bytes>,
    pub(crate) decode: Decode,
}

/// [`Update`]'s encoder for a type.
fn encoder<T: CacheValue>(value: &(dyn Any + Send + Sync)) -> Option<Bytes> {
    value.downcast_ref::<T>()?.encode()
}

impl Update {
    /// Updates as `update_tag` takes them, erased (unweighable values
    /// dropped).
    pub(crate) fn erase<T: CacheValue>(
        updates: Vec<(Arc<str>, Versioned<T>, Arc<T>)>,
    ) -> Vec<Update> {
        updates
            .into_iter()
            .filter_map(|(key, before, value)| {
                let size = weigh(&key, &*value)?;
                Some(Update {
                    key,
                    ttl_left: before.ttl_left,
                    overdue: before.overdue,
                    before: before.stamp,
                    since: before.since,
                    value,
                    size,
                    encode: encoder::<T>,
                    decode: decoder::<T>,
                })
            })
            .collect()
    }

    /// The value's bytes for the shared level.
    pub(crate) fn encoded(&self) -> Option<Bytes> {
        (self.encode)(&*self.value)
    }

    /// The in-process entry of this update, checked against `stamp`: as
    /// overdue as the value it replaces. Its `seq` is set when it is
    /// stored (`LocalCache::replace_tag`).
    pub(crate) fn entry(&self, tags: &Arc<[Arc<str>]>, stamp: Option<Stamp>) -> CacheEntry {
        let stored_at = Instant::now()
            .checked_sub(self.overdue)
            .unwrap_or_else(Instant::now);
        CacheEntry {
            value: self.value.clone(),
            size: self.size,
            tags: tags.clone(),
            seq: 0,
            stored_at,
            ttl: self.ttl_left,
            stamp: stamp.map(Arc::new),
            decode: Some(self.decode),
            cost: stored_at.elapsed(),
            refreshed: None,
        }
    }
}
