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
//! A stamp only has to outlive the fetches it could condemn, not the cache
//! entries: an invalidation also drops the cached entries it touches at
//! once, and a fetch that stores its result checks the log again *after*
//! the insert and drops what it stored if an invalidation slipped in
//! between (see `Core::insert_checked`). So a stamp lives as long as the longest
//! deadline any query has been given (the manager's query timeout unless a
//! caller asks for more), plus a second of slack. Keeping stamps for the
//! cache's longest TTL instead made the log grow with every key a write
//! touched for an hour: tens of megabytes under a steady write load.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use moka::{sync::Cache, Expiry};

/// A point in the invalidation sequence.
pub(crate) type Seq = u64;

/// Slack added to the longest deadline: scheduling delay between a
/// deadline passing and the fetch noticing it.
const SLACK: Duration = Duration::from_secs(1);

pub(crate) struct InvalidationLog {
    seq: AtomicU64,
    cleared: AtomicU64,
    /// The longest query deadline seen, in ms: how long stamps must live.
    horizon_ms: Arc<AtomicU64>,
    keys: Cache<Arc<str>, Seq>,
    tags: Cache<Arc<str>, Seq>,
}

/// Each stamp lives for the current horizon from its last write.
struct StampExpiry {
    horizon_ms: Arc<AtomicU64>,
}

impl StampExpiry {
    fn life(&self) -> Option<Duration> {
        Some(Duration::from_millis(self.horizon_ms.load(Ordering::Relaxed)) + SLACK)
    }
}

impl Expiry<Arc<str>, Seq> for StampExpiry {
    fn expire_after_create(&self, _: &Arc<str>, _: &Seq, _: Instant) -> Option<Duration> {
        self.life()
    }

    fn expire_after_update(
        &self,
        _: &Arc<str>,
        _: &Seq,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        self.life()
    }
}

impl InvalidationLog {
    /// A log whose stamps live at least `deadline` (the longest a query may
    /// run unless a caller asks for longer: see [`note_deadline`](Self::note_deadline)).
    pub(crate) fn new(deadline: Duration) -> Self {
        let horizon_ms = Arc::new(AtomicU64::new(deadline.as_millis() as u64));
        let stamps = || {
            Cache::builder()
                .expire_after(StampExpiry {
                    horizon_ms: horizon_ms.clone(),
                })
                .build()
        };
        Self {
            seq: AtomicU64::new(0),
            cleared: AtomicU64::new(0),
            keys: stamps(),
            tags: stamps(),
            horizon_ms,
        }
    }

    /// Records that a query may run for `deadline`: stamps made from now on
    /// live at least that long.
    pub(crate) fn note_deadline(&self, deadline: Duration) {
        self.horizon_ms
            .fetch_max(deadline.as_millis() as u64, Ordering::Relaxed);
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

    /// A stamp for a tag invalidation to come ([`invalidate_tag_at`]):
    /// entries stored as of it are current after that invalidation, and
    /// everything fetched before it is not.
    ///
    /// [`invalidate_tag_at`]: Self::invalidate_tag_at
    pub(crate) fn reserve(&self) -> Seq {
        self.stamp()
    }

    /// Invalidates `tag` at a stamp [`reserve`](Self::reserve)d earlier
    /// (never lowering a later one).
    pub(crate) fn invalidate_tag_at(&self, tag: &str, stamp: Seq) {
        self.tags
            .entry(Arc::from(tag))
            .and_upsert_with(|now| now.map_or(stamp, |e| (*e.value()).max(stamp)));
    }

    pub(crate) fn invalidate_all(&self) {
        let s = self.stamp();
        self.cleared.store(s, Ordering::SeqCst);
    }

    /// True if every entry was dropped (`clear`) after `since`.
    pub(crate) fn cleared_after(&self, since: Seq) -> bool {
        self.cleared.load(Ordering::SeqCst) > since
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
    fn stamps_live_as_long_as_the_longest_deadline() {
        let log = InvalidationLog::new(Duration::from_millis(10));
        let before = log.snapshot();
        log.invalidate_key("short");
        log.note_deadline(Duration::from_secs(60));
        log.invalidate_key("long");
        std::thread::sleep(SLACK + Duration::from_millis(50));
        log.keys.run_pending_tasks();
        assert!(
            log.is_current("short", &[], before),
            "expired with its horizon"
        );
        assert!(
            !log.is_current("long", &[], before),
            "kept for the longer deadline"
        );
    }

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
