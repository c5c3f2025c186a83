//! The invalidation log: which keys and tags were invalidated, and when.
//!
//! A result is only as fresh as the moment its query *started*. A query that
//! starts before a write and finishes after the write's invalidation would
//! otherwise store pre-write data and serve it until its TTL ran out. So every
//! invalidation takes a stamp from a global sequence, a fetch records the
//! sequence at its start, and an entry (or an in-flight query that a newcomer
//! wants to join) is current only if no key, tag or `clear` stamp is newer
//! than its start. Invalidating is O(1) and immediately visible; entries are
//! dropped lazily when next looked at.
//!
//! A stamp only has to outlive the entries it could condemn, so stamps expire
//! after the longest time an entry can live (`max_ttl + stale_grace`).

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use moka::sync::Cache;

/// A point in the invalidation sequence.
pub(crate) type Seq = u64;

pub(crate) struct InvalidationLog {
    seq: AtomicU64,
    cleared: AtomicU64,
    keys: Cache<Arc<str>, Seq>,
    tags: Cache<Arc<str>, Seq>,
}

impl InvalidationLog {
    pub(crate) fn new(retention: Duration) -> Self {
        let stamps = || Cache::builder().time_to_live(retention).build();
        Self {
            seq: AtomicU64::new(0),
            cleared: AtomicU64::new(0),
            keys: stamps(),
            tags: stamps(),
        }
    }

    /// The sequence number a fetch starting now must record.
    pub(crate) fn snapshot(&self) -> Seq {
        self.seq.load(Ordering::SeqCst)
    }

    fn stamp(&self) -> Seq {
        self.seq.fetch_add(1, Ordering::SeqCst) + 1
    }

    pub(crate) fn invalidate_key(&self, key: &str) {
        let s = self.stamp();
        self.keys.insert(Arc::from(key), s);
    }

    pub(crate) fn invalidate_tag(&self, tag: &str) {
        let s = self.stamp();
        self.tags.insert(Arc::from(tag), s);
    }

    pub(crate) fn invalidate_all(&self) {
        let s = self.stamp();
        self.cleared.store(s, Ordering::SeqCst);
    }

    /// True if nothing that touches `key` or `tags` was invalidated after `since`.
    pub(crate) fn is_current(&self, key: &str, tags: &[Arc<str>], since: Seq) -> bool {
        if self.cleared.load(Ordering::SeqCst) > since {
            return false;
        }
        if self.keys.get(key).is_some_and(|s| s > since) {
            return false;
        }
        !tags
            .iter()
            .any(|t| self.tags.get(t.as_ref()).is_some_and(|s| s > since))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_invalidation_after_the_start_condemns_the_result() {
        let log = InvalidationLog::new(Duration::from_secs(60));
        let tags: Vec<Arc<str>> = vec!["user:1".into()];
        let before = log.snapshot();
        assert!(log.is_current("k", &tags, before));
        log.invalidate_tag("user:1");
        assert!(!log.is_current("k", &tags, before));
        // A fetch that starts after the invalidation is current.
        assert!(log.is_current("k", &tags, log.snapshot()));
        log.invalidate_key("k");
        assert!(!log.is_current("k", &[], before));
        assert!(log.is_current("other", &[], before));
        let s = log.snapshot();
        log.invalidate_all();
        assert!(!log.is_current("other", &[], s));
    }
}
