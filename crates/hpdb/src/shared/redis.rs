//! The shared level in Redis, as the manager's paths see it: a miss's
//! lookup (with the fill lease, or the wait for another instance's fill),
//! the fill after the database, invalidations bumped, announced and
//! waited for, warming from the hot set, the bus started. The protocol
//! itself is in the module doc of `shared`.

use std::{
    sync::{Arc, Weak},
    time::{Duration, Instant},
};

use bytes::Bytes;
use futures::{future::BoxFuture, StreamExt};
use tokio::task::JoinHandle;

use super::{
    api::{
        Ask, Delivery, FillTicket, Found, Invalidation, LocalCache, SharedFloor, SharedLevel,
        Update,
    },
    budget::Patience,
    bus,
    level::{Lease, SharedLookup},
    lock::TagLocks,
    names::Kind,
    state::Shared,
    status::SharedStatus,
    update::{announce, update_tag},
};
use crate::{
    cache::{CacheEntry, Decode},
    stamp::Stamp,
};

/// Redis under every instance's in-process cache, and the bus.
pub(crate) struct RedisLevel {
    shared: Arc<Shared>,
}

impl RedisLevel {
    pub(crate) fn new(shared: Shared) -> Self {
        Self {
            shared: Arc::new(shared),
        }
    }

    /// Copies one shared entry into `local`, checked like any shared read.
    async fn warm_one(&self, local: &dyn LocalCache, key: String, decode: Decode) -> bool {
        if !local.caches(&key) {
            return false;
        }
        let since = local.position();
        let fetched_at = Instant::now();
        let Some((value, stamp, ttl_left)) = self.shared.read_any(&key).await else {
            return false;
        };
        let Some((value, size)) = decode(value) else {
            return false;
        };
        let tags: Arc<[Arc<str>]> = stamp.tag_gens.iter().map(|(t, _)| t.clone()).collect();
        let entry = CacheEntry {
            value,
            size,
            tags,
            seq: since,
            stored_at: fetched_at,
            ttl: ttl_left,
            stamp: Some(Arc::new(stamp)),
            decode: Some(decode),
            cost: fetched_at.elapsed(),
            refreshed: None,
        };
        local.store(Arc::from(key), entry).await;
        true
    }
}

impl SharedLevel for RedisLevel {
    /// The shared entry if current (or once the instance holding the fill
    /// lease has stored it), else what the fill needs.
    fn find<'a>(&'a self, ask: Ask<'a>) -> BoxFuture<'a, Found> {
        Box::pin(async move {
            let s = &self.shared;
            let now = tokio::time::Instant::now();
            let lease = s
                .config
                .fill_lease
                .min(ask.deadline.saturating_duration_since(now));
            let want = ask.coalesce.then_some(lease);
            let mut found = s.lookup(ask.key, ask.tags, want, Patience::Reader).await;
            if let SharedLookup::Miss {
                lease: Lease::Held, ..
            } = found
            {
                let until = tokio::time::Instant::now() + lease;
                found = s.wait_for_fill(ask.key, ask.tags, lease, until).await;
            }
            match found {
                // A background refresh does not copy a shared entry that is
                // itself due: it fetches, stamped with the generations it read.
                SharedLookup::Hit {
                    stamp,
                    ttl_left,
                    floor,
                    ..
                } if ask.due_within.is_some_and(|d| ttl_left <= d) => Found::Miss(FillTicket {
                    stamp: Some(Arc::new(stamp)),
                    holds_lease: false,
                    floor: SharedFloor::Floor(floor),
                }),
                SharedLookup::Hit {
                    value,
                    stamp,
                    ttl_left,
                    ..
                } => Found::Hit {
                    value,
                    stamp,
                    ttl_left,
                },
                SharedLookup::Miss {
                    stamp,
                    lease,
                    floor,
                } => Found::Miss(FillTicket {
                    floor: match stamp {
                        Some(_) => SharedFloor::Floor(floor),
                        None => SharedFloor::Unanswered,
                    },
                    stamp: stamp.map(Arc::new),
                    holds_lease: lease == Lease::Won,
                }),
            }
        })
    }

    fn fill(&self, key: Arc<str>, ticket: &FillTicket, ttl: Duration, value: Option<Bytes>) {
        match (&ticket.stamp, value) {
            (Some(stamp), Some(bytes)) => {
                self.shared
                    .store(key, (**stamp).clone(), ttl, bytes, ticket.holds_lease)
            }
            _ if ticket.holds_lease => self.shared.release(key),
            _ => {}
        }
    }

    fn may_serve(&self, stored_at: Instant) -> bool {
        self.shared.may_serve(stored_at)
    }

    /// The shared generation bumped first (no instance serves a shared
    /// entry from before it from then on), this instance's cache next, the
    /// bus last.
    fn invalidate<'a>(
        &'a self,
        local: &'a dyn LocalCache,
        kind: Kind,
        name: &'a str,
        floor: Option<u64>,
    ) -> BoxFuture<'a, Invalidation> {
        Box::pin(async move {
            let generation = self.shared.bump(kind, name, floor).await;
            local.drop_named(kind, name).await;
            let mut done = Invalidation::new(kind, name, generation, Delivery::Unconfirmed);
            done.floor = floor;
            announce(&self.shared, &mut done).await;
            done
        })
    }

    fn update_tag<'a>(
        &'a self,
        local: &'a dyn LocalCache,
        tag: &'a str,
        tags: Arc<[Arc<str>]>,
        updates: Vec<Update>,
        floor: Option<u64>,
    ) -> BoxFuture<'a, Invalidation> {
        Box::pin(update_tag(&self.shared, local, tag, tags, updates, floor))
    }

    fn read_any<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Option<(Bytes, Stamp, Duration)>> {
        Box::pin(self.shared.read_any(key))
    }

    fn lock_tags<'a>(&'a self, tags: &'a [&'a str]) -> BoxFuture<'a, TagLocks> {
        Box::pin(self.shared.lock_tags(tags))
    }

    /// Copies up to `limit` entries of the shared hot set (the most
    /// recently filled keys) whose keys start with `prefix`, once the bus
    /// has registered this instance.
    fn warm<'a>(
        &'a self,
        local: &'a dyn LocalCache,
        prefix: &'a str,
        limit: usize,
        decode: Decode,
    ) -> BoxFuture<'a, usize> {
        Box::pin(async move {
            let s = &self.shared;
            if !s.ready(s.config.bus_lease * 2).await {
                return 0;
            }
            let keys = s.hot_keys(prefix, limit).await;
            let warmed = futures::stream::iter(keys)
                .map(|key| self.warm_one(local, key, decode))
                .buffer_unordered(16)
                .filter(|ok| futures::future::ready(*ok))
                .count()
                .await;
            s.count_warmed(warmed);
            warmed
        })
    }

    fn start(&self, local: Weak<dyn LocalCache>) -> Vec<JoinHandle<()>> {
        match self.shared.pushes.lock().take() {
            Some(pushes) => bus::start(self.shared.clone(), local, pushes),
            None => Vec::new(),
        }
    }

    fn leave(&self) -> BoxFuture<'_, ()> {
        Box::pin(self.shared.leave())
    }

    fn status(&self) -> Option<SharedStatus> {
        Some(self.shared.status())
    }

    fn interrupted(&self, kind: Kind, name: &str) -> Invalidation {
        Invalidation::new(kind, name, None, Delivery::Unconfirmed)
    }
}
