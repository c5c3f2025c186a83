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

use std::{
    any::Any,
    collections::HashMap,
    io,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use futures::future::{ready, BoxFuture, FutureExt};
use moka::{notification::RemovalCause, policy::EvictionPolicy, sync::Cache, Expiry};
use serde::{de::DeserializeOwned, Serialize};

use crate::{
    config::{CacheConfig, CachePolicy},
    invalidation::Seq,
    shared::Stamp,
};

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
    pub(crate) decode: Option<crate::manager::Decode>,
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
    fn unread_refresh(&self) -> bool {
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
    /// Drops everything.
    fn clear(&self) -> BoxFuture<'_, ()>;
    /// Removes expired entries now (called every `sweep_interval`).
    fn sweep(&self) -> BoxFuture<'_, ()>;
    /// Current counters.
    fn stats(&self) -> CacheStats;
}

/// Keeps each entry for its own TTL plus the longer grace (stale-if-error,
/// stale-while-revalidate).
struct EntryExpiry {
    grace: Duration,
}

impl Expiry<Arc<str>, CacheEntry> for EntryExpiry {
    fn expire_after_create(&self, _: &Arc<str>, v: &CacheEntry, _: Instant) -> Option<Duration> {
        Some(v.ttl + self.grace)
    }
    fn expire_after_update(
        &self,
        _: &Arc<str>,
        v: &CacheEntry,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(v.ttl + self.grace)
    }
}

/// The in-process cache (moka).
///
/// Two bounds with one weigher: each entry weighs `max(its bytes, slot)` where
/// `slot = max_bytes / max_entries`, and the capacity is `slot * max_entries`.
/// So the total weight bound implies both at most `max_entries` entries and
/// at most `max_bytes` bytes. (Small entries are charged a whole slot; that
/// is what keeps the entry bound exact.)
pub struct MemoryCache {
    cache: Cache<Arc<str>, CacheEntry>,
    evictions: Arc<AtomicU64>,
    unread: Arc<AtomicU64>,
    tags: Arc<TagIndex>,
}

/// Which keys hold each tag, so that dropping a tag touches its entries
/// only. (moka's `invalidate_entries_if` scans the whole cache in its
/// housekeeping: with tens of thousands of entries, every write paid for a
/// full scan.) Each key is recorded with the identity of its entry (the
/// address of its value, alive until the entry's removal is reported), so
/// that the late report of an old entry's removal never unlists the key's
/// newer entry. Keys leave the index when their entry leaves the cache: it
/// holds at most the cache's keys.
#[derive(Default)]
struct TagIndex {
    keys: parking_lot::Mutex<HashMap<Arc<str>, KeysOfTag>>,
}

/// The keys holding one tag, each with its entry's identity.
type KeysOfTag = HashMap<Arc<str>, usize>;

/// The identity of an entry, for the tag index.
fn identity(entry: &CacheEntry) -> usize {
    entry.identity()
}

impl TagIndex {
    fn add(&self, key: &Arc<str>, entry: &CacheEntry) {
        if entry.tags.is_empty() {
            return;
        }
        let id = identity(entry);
        let mut map = self.keys.lock();
        for t in entry.tags.iter() {
            map.entry(t.clone()).or_default().insert(key.clone(), id);
        }
    }

    fn remove(&self, key: &str, entry: &CacheEntry) {
        let id = identity(entry);
        let mut map = self.keys.lock();
        for t in entry.tags.iter() {
            if let Some(keys) = map.get_mut(t) {
                if keys.get(key) == Some(&id) {
                    keys.remove(key);
                }
                if keys.is_empty() {
                    map.remove(t);
                }
            }
        }
    }

    fn take(&self, tag: &str) -> Vec<Arc<str>> {
        self.keys
            .lock()
            .remove(tag)
            .map(|keys| keys.into_keys().collect())
            .unwrap_or_default()
    }
}

impl MemoryCache {
    /// Builds the cache from its configuration.
    pub fn new(config: &CacheConfig) -> Self {
        let slot = (config.max_bytes / config.max_entries).max(1);
        let evictions = Arc::new(AtomicU64::new(0));
        let counter = evictions.clone();
        let unread = Arc::new(AtomicU64::new(0));
        let unread_counter = unread.clone();
        let tags = Arc::new(TagIndex::default());
        let index = tags.clone();
        let policy = match config.policy {
            CachePolicy::Lru => EvictionPolicy::lru(),
            CachePolicy::TinyLfu => EvictionPolicy::tiny_lfu(),
        };
        let cache = Cache::builder()
            .max_capacity(slot * config.max_entries)
            .weigher(move |_k: &Arc<str>, v: &CacheEntry| {
                u64::from(v.size).max(slot).min(u64::from(u32::MAX)) as u32
            })
            .eviction_policy(policy)
            .expire_after(EntryExpiry {
                grace: config.stale_grace.max(config.revalidate_grace),
            })
            .eviction_listener(move |k: Arc<Arc<str>>, v: CacheEntry, cause| {
                if cause == RemovalCause::Size {
                    counter.fetch_add(1, Ordering::Relaxed);
                }
                if v.unread_refresh() {
                    unread_counter.fetch_add(1, Ordering::Relaxed);
                }
                index.remove(&k, &v);
            })
            .build();
        Self {
            cache,
            evictions,
            unread,
            tags,
        }
    }
}

impl CacheLayer for MemoryCache {
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Option<CacheEntry>> {
        ready(self.cache.get(key)).boxed()
    }

    fn insert(&self, key: Arc<str>, entry: CacheEntry) -> BoxFuture<'_, ()> {
        self.tags.add(&key, &entry);
        self.cache.insert(key, entry);
        ready(()).boxed()
    }

    fn invalidate<'a>(&'a self, key: &'a str) -> BoxFuture<'a, ()> {
        self.cache.invalidate(key);
        ready(()).boxed()
    }

    fn invalidate_tag<'a>(&'a self, tag: &'a str) -> BoxFuture<'a, Vec<(Arc<str>, CacheEntry)>> {
        let dropped = self
            .tags
            .take(tag)
            .into_iter()
            .filter_map(|key| {
                let entry = self.cache.remove(&key)?;
                Some((key, entry))
            })
            .collect();
        ready(dropped).boxed()
    }

    fn clear(&self) -> BoxFuture<'_, ()> {
        self.cache.invalidate_all();
        // moka removes invalidated entries in its housekeeping: run it now,
        // so the memory is given back and the counts say empty at once.
        self.cache.run_pending_tasks();
        ready(()).boxed()
    }

    fn sweep(&self) -> BoxFuture<'_, ()> {
        self.cache.run_pending_tasks();
        ready(()).boxed()
    }

    fn stats(&self) -> CacheStats {
        CacheStats {
            entries: self.cache.entry_count(),
            weighted_bytes: self.cache.weighted_size(),
            evictions: self.evictions.load(Ordering::Relaxed),
            unread_refreshes: self.unread.load(Ordering::Relaxed),
        }
    }
}

/// A value the cache can hold: it knows how many bytes it takes, and how
/// to travel through the shared level (Redis) as bytes.
///
/// Every `Serialize + Deserialize` type is one: weighed by its JSON size
/// (measured without building the JSON), shared as JSON. A type that
/// already holds its own encoding (a pre-rendered response body, say)
/// implements this trait itself, is not `Serialize`, and so is never
/// serialised a second time just to be weighed or shared.
pub trait CacheValue: Send + Sync + 'static {
    /// The bytes this value stands for in the cache's byte bound, or why
    /// it cannot say (it is then not cached).
    fn cache_size(&self) -> Result<usize, String>;

    /// The value as bytes for the shared level; `None` keeps it in process.
    fn encode(&self) -> Option<Bytes> {
        None
    }

    /// The value back from the bytes [`encode`](Self::encode) gave.
    fn decode(bytes: Bytes) -> Result<Self, String>
    where
        Self: Sized,
    {
        let _ = bytes;
        Err("this type is not shared".into())
    }
}

impl<T: Serialize + DeserializeOwned + Send + Sync + 'static> CacheValue for T {
    fn cache_size(&self) -> Result<usize, String> {
        json_size(self).map_err(|e| e.to_string())
    }

    fn encode(&self) -> Option<Bytes> {
        serde_json::to_vec(self).ok().map(Bytes::from)
    }

    fn decode(bytes: Bytes) -> Result<Self, String> {
        serde_json::from_slice(&bytes).map_err(|e| e.to_string())
    }
}

/// The weight of a value about to be cached under `key`, saturated to
/// `u32`; `None` (and a warning) if it cannot say, in which case it is not
/// cached.
pub(crate) fn weigh<T: CacheValue + ?Sized>(key: &str, value: &T) -> Option<u32> {
    match value.cache_size() {
        Ok(n) => Some(u32::try_from(n).unwrap_or(u32::MAX)),
        Err(e) => {
            tracing::warn!(key, error = %e, "not cached: the value cannot be weighed");
            None
        }
    }
}

/// The JSON size of a value, measured without building the JSON.
pub(crate) fn json_size<T: Serialize>(value: &T) -> Result<usize, serde_json::Error> {
    struct Count(usize);
    impl io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let mut c = Count(0);
    serde_json::to_writer(&mut c, value)?;
    Ok(c.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(size: u32, ttl: Duration) -> CacheEntry {
        CacheEntry {
            value: Arc::new(()),
            size,
            tags: Arc::from(vec![Arc::<str>::from("t")]),
            seq: 0,
            stored_at: Instant::now(),
            ttl,
            stamp: None,
            decode: None,
            cost: Duration::ZERO,
            refreshed: None,
        }
    }

    fn config(max_entries: u64, max_bytes: u64) -> CacheConfig {
        CacheConfig {
            max_entries,
            max_bytes,
            ..CacheConfig::default()
        }
    }

    #[test]
    fn json_size_counts_bytes() {
        assert_eq!(json_size(&"abc").unwrap(), 5);
        assert_eq!(json_size(&vec![1, 2, 3]).unwrap(), 7);
    }

    #[test]
    fn the_entry_bound_holds_for_small_entries() {
        let c = MemoryCache::new(&config(10, 10_000));
        for i in 0..100 {
            c.cache.insert(
                Arc::from(format!("k{i}")),
                entry(8, Duration::from_secs(60)),
            );
        }
        c.cache.run_pending_tasks();
        assert!(c.stats().entries <= 10, "{:?}", c.stats());
        assert!(c.stats().evictions >= 90);
    }

    #[test]
    fn a_tag_drops_its_entries_only_and_the_index_forgets_dropped_keys() {
        let c = MemoryCache::new(&config(100, 100_000));
        let tagged = |tag: &str| CacheEntry {
            tags: Arc::from(vec![Arc::<str>::from(tag)]),
            ..entry(10, Duration::from_secs(60))
        };
        futures::executor::block_on(async {
            c.insert(Arc::from("a"), tagged("t")).await;
            c.insert(Arc::from("b"), tagged("u")).await;
            // "a" dropped and stored again.
            c.invalidate("a").await;
            c.insert(Arc::from("a"), tagged("t")).await;
            c.sweep().await;
            c.invalidate_tag("t").await;
            assert!(
                c.get("a").await.is_none(),
                "the stored-again entry is listed"
            );
            assert!(c.get("b").await.is_some());
            c.sweep().await;
            assert!(
                c.tags.keys.lock().get("t").is_none(),
                "the index forgets dropped keys"
            );
        });
    }

    #[test]
    fn a_clear_empties_the_cache_at_once() {
        let c = MemoryCache::new(&config(100, 100_000));
        for i in 0..40 {
            c.cache.insert(
                Arc::from(format!("k{i}")),
                entry(100, Duration::from_secs(60)),
            );
        }
        c.cache.run_pending_tasks();
        assert_eq!(c.stats().entries, 40);
        futures::executor::block_on(c.clear());
        let s = c.stats();
        assert_eq!((s.entries, s.weighted_bytes), (0, 0), "{s:?}");
    }

    #[test]
    fn the_byte_bound_holds_for_large_entries() {
        let c = MemoryCache::new(&config(100, 10_000));
        for i in 0..100 {
            c.cache.insert(
                Arc::from(format!("k{i}")),
                entry(1_000, Duration::from_secs(60)),
            );
        }
        c.cache.run_pending_tasks();
        let s = c.stats();
        assert!(s.entries <= 10, "{s:?}");
        assert!(s.weighted_bytes <= 10_000, "{s:?}");
    }

    #[test]
    fn entries_expire_after_ttl_plus_grace() {
        let c = MemoryCache::new(&CacheConfig {
            stale_grace: Duration::from_millis(30),
            revalidate_grace: Duration::from_millis(10),
            ..CacheConfig::default()
        });
        c.cache
            .insert(Arc::from("k"), entry(8, Duration::from_millis(30)));
        let e = c.cache.get("k").unwrap();
        assert!(e.is_fresh());
        std::thread::sleep(Duration::from_millis(40));
        let e = c.cache.get("k").expect("kept during the stale grace");
        assert!(!e.is_fresh());
        std::thread::sleep(Duration::from_millis(40));
        assert!(c.cache.get("k").is_none());
    }
}
