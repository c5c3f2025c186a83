//! [`MemoryCache`]: the in-process level (moka), bounded by entries and
//! bytes, with a tag index.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use futures::future::{ready, BoxFuture, FutureExt};
use moka::{notification::RemovalCause, policy::EvictionPolicy, sync::Cache, Expiry};

use super::{CacheEntry, CacheLayer, CacheStats};
use crate::config::{CacheConfig, CachePolicy};

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

    fn invalidate_tag_except<'a>(
        &'a self,
        tag: &'a str,
        kept: &'a [(Arc<str>, usize)],
    ) -> BoxFuture<'a, Vec<(Arc<str>, CacheEntry)>> {
        let mut dropped = Vec::new();
        for key in self.tags.take(tag) {
            let keep = kept.iter().find(|(k, _)| *k == key).and_then(|(_, id)| {
                let entry = self.cache.get(&key)?;
                (identity(&entry) == *id).then_some(entry)
            });
            match keep {
                // Still indexed under its other tags; back under this one.
                Some(entry) => self.tags.add(&key, &entry),
                None => dropped.extend(self.cache.remove(&key).map(|e| (key, e))),
            }
        }
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
