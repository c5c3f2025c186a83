//! The result cache: a layer behind a small trait.
//!
//! [`CacheLayer`] is the seam. The manager talks only to it, so a shared
//! second level (Redis) or a cross-instance invalidation bus can be stacked
//! in later without changing any caller of `execute_query`. The one layer
//! shipped here, [`MemoryCache`], is moka: bounded by entries *and* bytes,
//! per-entry TTL, LRU or TinyLFU eviction.
//!
//! Freshness is the manager's business, not the layer's: a layer keeps an
//! entry for its TTL plus the longer of the stale grace and the
//! revalidation grace, and the manager decides whether it is fresh, due
//! for a refresh, servable while it is refreshed, stale (servable only if
//! the database is unavailable) or condemned by the invalidation log.

pub(crate) mod memory;
mod value;

use std::{
    any::Any,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use futures::future::BoxFuture;
use serde::Serialize;

use crate::{invalidation::Seq, stamp::Stamp};

pub(crate) use value::weigh;
pub use value::CacheValue;

/// Turns a shared entry's bytes into a value and its weight.
pub(crate) type Decode = fn(Bytes) -> Option<(Arc<dyn Any + Send + Sync>, u32)>;

/// [`Decode`] for a type.
pub(crate) fn decoder<T: CacheValue>(bytes: Bytes) -> Option<(Arc<dyn Any + Send + Sync>, u32)> {
    let value = T::decode(bytes).ok()?;
    let size = weigh("", &value)?;
    Some((Arc::new(value), size))
}

/// One cached result.
#[derive(Clone)]
pub struct CacheEntry {
    /// The result, type-erased; the manager downcasts it to the caller's type.
    pub value: Arc<dyn Any + Send + Sync>,
    /// Size of the result as JSON, in bytes.
    pub size: u32,
    /// Invalidation tags.
    pub tags: Arc<[Arc<str>]>,
    /// Invalidation sequence at the start of the query that produced it.
    pub seq: Seq,
    /// When it was stored.
    pub stored_at: Instant,
    /// How long it is fresh.
    pub ttl: Duration,
    /// What it was checked against in the shared level (`None`: not
    /// shared, or fetched while Redis did not answer).
    pub stamp: Option<Arc<Stamp>>,
    /// How to read the value back from its shared encoding (`None`: not
    /// known): lets the bus replace an invalidated entry from the shared
    /// level instead of only dropping it.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) decode: Option<Decode>,
    /// How long its fetch took (XFetch's Δ: a costly entry is refreshed
    /// earlier); zero when not fetched (an update in place).
    pub(crate) cost: Duration,
    /// Set by the background refresh that stored it; raised by its first
    /// read. An entry dropped with it still down was a wasted refresh.
    pub(crate) refreshed: Option<Arc<AtomicBool>>,
}

impl CacheEntry {
    /// True while the entry is within its TTL.
    pub fn is_fresh(&self) -> bool {
        self.stored_at.elapsed() < self.ttl
    }

    /// The identity of this entry (its value's address, alive as long as
    /// the entry): tells a stored-again entry from the one read earlier.
    pub(crate) fn identity(&self) -> usize {
        Arc::as_ptr(&self.value) as *const () as usize
    }

    /// Notes a read, for the count of refreshed entries never read.
    pub(crate) fn mark_read(&self) {
        if let Some(mark) = &self.refreshed {
            if !mark.load(Ordering::Relaxed) {
                mark.store(true, Ordering::Relaxed);
            }
        }
    }

    /// True if a background refresh stored it and nobody has read it.
    pub(crate) fn unread_refresh(&self) -> bool {
        self.refreshed
            .as_ref()
            .is_some_and(|m| !m.load(Ordering::Relaxed))
    }
}

/// Counters of a cache layer.
#[derive(Debug, Clone, Copy, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CacheStats {
    /// Entries held (eventually consistent).
    pub entries: u64,
    /// Bytes held, as weighed for the byte bound.
    pub weighted_bytes: u64,
    /// Entries evicted to respect a bound.
    pub evictions: u64,
    /// Entries stored by a background refresh and dropped (replaced,
    /// invalidated, evicted, expired) before anyone read them.
    pub unread_refreshes: u64,
}

/// A level of the result cache.
pub trait CacheLayer: Send + Sync + 'static {
    /// The entry under `key`, fresh or within its stale grace.
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Option<CacheEntry>>;
    /// Stores an entry, replacing any previous one.
    fn insert(&self, key: Arc<str>, entry: CacheEntry) -> BoxFuture<'_, ()>;
    /// Drops the entry under `key`.
    fn invalidate<'a>(&'a self, key: &'a str) -> BoxFuture<'a, ()>;
    /// Drops entries tagged `tag`: later `get`s must not return them (the
    /// invalidation log's stamps do not outlive cached entries). Returns the
    /// entries it dropped, for per-class statistics and for replacing them
    /// from the shared level (empty if it cannot tell).
    fn invalidate_tag<'a>(&'a self, tag: &'a str) -> BoxFuture<'a, Vec<(Arc<str>, CacheEntry)>>;
    /// Drops entries tagged `tag` except those in `kept` (key and entry
    /// identity) that still hold that very entry: a write's updates in
    /// place, stored just before. Returns the entries it dropped.
    fn invalidate_tag_except<'a>(
        &'a self,
        tag: &'a str,
        kept: &'a [(Arc<str>, usize)],
    ) -> BoxFuture<'a, Vec<(Arc<str>, CacheEntry)>>;
    /// Drops everything.
    fn clear(&self) -> BoxFuture<'_, ()>;
    /// Removes expired entries now (called every `sweep_interval`).
    fn sweep(&self) -> BoxFuture<'_, ()>;
    /// Current counters.
    fn stats(&self) -> CacheStats;
}
