//! The shared level (Redis) on the manager's paths: looked up by the leader
//! of a miss before the database, filled after it; invalidations published
//! to the other instances; the bus's hold on this instance's cache; a
//! write's cache step (`update_tag`: updates in place that stay correct
//! across instances); warming from the shared hot set. Without a shared
//! level every step here is a no-op.

use std::{any::Any, sync::Arc, time::Duration};

use bytes::Bytes;
use futures::{future::BoxFuture, StreamExt};
use sqlx::Database;
use tokio::time::Instant;

use super::{pipeline::Call, pipeline::Fill, Inner, Manager};
use crate::{
    cache::{weigh, CacheEntry, CacheValue},
    invalidation::Seq,
    options::QueryOptions,
    shared::{Kind, Lease, LocalCache, Shared, SharedLookup, Stamp},
};

/// What an invalidation did: its new generation in the shared level, if
/// there is one and Redis took it.
#[derive(Debug, Clone)]
pub struct Invalidation {
    kind: Kind,
    name: Arc<str>,
    generation: Option<u64>,
}

impl Invalidation {
    pub(super) fn new(kind: Kind, name: &str, generation: Option<u64>) -> Self {
        Invalidation {
            kind,
            name: Arc::from(name),
            generation,
        }
    }

    pub(super) fn unpublished(kind: Kind, name: &str) -> Self {
        Self::new(kind, name, None)
    }

    /// The key's or tag's generation after this invalidation (`None`:
    /// no shared level, or Redis did not answer; the invalidation is then
    /// published when it does).
    pub fn generation(&self) -> Option<u64> {
        self.generation
    }
}

/// A cached value read before a write, with what an update in place needs.
#[derive(Debug, Clone)]
pub struct Versioned<T: ?Sized> {
    /// The value.
    pub value: Arc<T>,
    /// The time it had left: the updated value keeps it, never more.
    pub ttl_left: Duration,
    pub(crate) stamp: Option<Arc<Stamp>>,
}

/// A value updated in place, type-erased (see [`Manager::update_tag`]).
pub(crate) struct Update {
    pub(crate) key: Arc<str>,
    pub(crate) ttl_left: Duration,
    pub(crate) before: Option<Arc<Stamp>>,
    pub(crate) value: Arc<dyn Any + Send + Sync>,
    pub(crate) size: u32,
    pub(crate) encoded: Option<Bytes>,
}

impl Update {
    /// Updates as [`Manager::update_tag`] takes them, erased (encoded for
    /// the shared level only if there is one; unweighable values dropped).
    pub(crate) fn erase<T: CacheValue>(
        shared: bool,
        updates: Vec<(Arc<str>, Versioned<T>, Arc<T>)>,
    ) -> Vec<Update> {
        updates
            .into_iter()
            .filter_map(|(key, before, value)| {
                let size = weigh(&key, &*value)?;
                Some(Update {
                    key,
                    ttl_left: before.ttl_left,
                    before: before.stamp,
                    encoded: if shared { value.encode() } else { None },
                    value,
                    size,
                })
            })
            .collect()
    }
}

/// Turns a shared entry's bytes into a value and its weight.
pub(crate) type Decode<'a> =
    &'a (dyn Fn(Bytes) -> Option<(Arc<dyn Any + Send + Sync>, u32)> + Sync);

/// [`Decode`] for a type.
pub(crate) fn decoder<T: CacheValue>(bytes: Bytes) -> Option<(Arc<dyn Any + Send + Sync>, u32)> {
    let value = T::decode(bytes).ok()?;
    let size = weigh("", &value)?;
    Some((Arc::new(value), size))
}

/// The outcome of the shared step of a miss.
pub(super) enum SharedStep<T> {
    /// A current shared entry, now also in process.
    Served(Arc<T>),
    /// Go to the database, with this.
    Fill(SharedFill),
}

/// What a fill from the database carries back to the shared level.
pub(super) struct SharedFill {
    /// The stamp read before the fetch (`None`: do not share the result).
    pub(super) stamp: Option<Arc<Stamp>>,
    holds_lease: bool,
}

impl<DB: Database> Manager<DB> {
    fn shared(&self) -> Option<&Arc<Shared>> {
        self.inner.shared.as_ref()
    }

    /// True unless the bus has not been confirmed current for longer than
    /// its lease and the entry is older than that.
    pub(super) fn may_serve(&self, entry: &CacheEntry) -> bool {
        self.shared().is_none_or(|s| s.may_serve(entry.stored_at))
    }

    /// A miss's shared step, as the leader: the shared entry if current (or
    /// once the instance holding the fill lease has stored it), else what
    /// the fill needs.
    pub(super) async fn shared_step<T: CacheValue>(
        &self,
        call: &Call,
        since: Seq,
        fetched_at: std::time::Instant,
    ) -> SharedStep<T> {
        let not_shared = || {
            SharedStep::Fill(SharedFill {
                stamp: None,
                holds_lease: false,
            })
        };
        let Some(shared) = self.shared() else {
            return not_shared();
        };
        if !call.options.use_cache {
            return not_shared();
        }
        let left = call.deadline.saturating_duration_since(Instant::now());
        let lease = self.inner.config.shared.fill_lease.min(left);
        let ask = call.options.coalesce.then_some(lease);
        let mut found = shared.lookup(&call.key, &call.tags, ask).await;
        if let SharedLookup::Miss {
            lease: Lease::Held, ..
        } = found
        {
            found = shared
                .wait_for_fill(&call.key, &call.tags, lease, Instant::now() + lease)
                .await;
        }
        match found {
            SharedLookup::Hit {
                value,
                stamp,
                ttl_left,
            } => match T::decode(value) {
                Ok(v) => {
                    let v = Arc::new(v);
                    let fill = Fill {
                        since,
                        fetched_at,
                        ttl: ttl_left,
                        stamp: Some(Arc::new(stamp)),
                    };
                    self.store(&call.key, &call.tags, &fill, v.clone()).await;
                    SharedStep::Served(v)
                }
                Err(e) => {
                    tracing::warn!(key = %call.key, error = %e, "shared entry not decodable: a miss");
                    not_shared()
                }
            },
            SharedLookup::Miss { stamp, lease } => SharedStep::Fill(SharedFill {
                stamp: stamp.map(Arc::new),
                holds_lease: lease == Lease::Won,
            }),
        }
    }

    /// After a fill from the database: stores it in the shared level too,
    /// unless an invalidation passed while it was fetched (or it has no
    /// stamp or no encoding); gives back the fill lease either way.
    pub(super) fn share<T: CacheValue>(
        &self,
        call: &Call,
        fill: &Fill,
        how: &SharedFill,
        value: &T,
    ) {
        let Some(shared) = self.shared() else { return };
        let current = self.inner.log.is_current(&call.key, &call.tags, fill.since);
        match (&how.stamp, current) {
            (Some(stamp), true) => match value.encode() {
                Some(bytes) => shared.store(
                    call.key.clone(),
                    (**stamp).clone(),
                    fill.ttl,
                    bytes,
                    how.holds_lease,
                ),
                None => self.release_lease(call, how),
            },
            _ => self.release_lease(call, how),
        }
    }

    /// Gives back the fill lease if this call held it.
    pub(super) fn release_lease(&self, call: &Call, how: &SharedFill) {
        if let (true, Some(shared)) = (how.holds_lease, self.shared()) {
            shared.release(call.key.clone());
        }
    }

    /// The cached value under `key` (fresh, current), with what
    /// [`update_tag`](Self::update_tag) needs; read it before the write.
    /// In process first; else, with a shared level, its current shared
    /// entry (so that a write updates in place what any instance cached,
    /// not only what this one did).
    pub async fn peek_versioned<T: CacheValue>(&self, key: &str) -> Option<Versioned<T>> {
        let v = self.peek_versioned_erased(key, &decoder::<T>).await?;
        Some(Versioned {
            value: v.value.downcast::<T>().ok()?,
            ttl_left: v.ttl_left,
            stamp: v.stamp,
        })
    }

    pub(crate) async fn peek_versioned_erased(
        &self,
        key: &str,
        decode: Decode<'_>,
    ) -> Option<Versioned<dyn Any + Send + Sync>> {
        if let Some(entry) = self.peek_entry(key).await {
            if let Some(ttl_left) = entry.ttl.checked_sub(entry.stored_at.elapsed()) {
                return Some(Versioned {
                    value: entry.value,
                    ttl_left,
                    stamp: entry.stamp,
                });
            }
        }
        let (bytes, stamp, ttl_left) = self.shared()?.read_any(key).await?;
        let (value, _) = decode(bytes)?;
        Some(Versioned {
            value,
            ttl_left,
            stamp: Some(Arc::new(stamp)),
        })
    }

    /// A write's whole cache step for `tag`: invalidates it everywhere
    /// and replaces the given keys with their values updated in place
    /// (`before` read with [`peek_versioned`](Self::peek_versioned) before
    /// the write; each keeps the time `before` had left, never more).
    ///
    /// In order: the tag's shared generation is bumped (no instance serves
    /// a shared entry from before it from then on); the updated values go
    /// to the shared level, each only if the bump directly follows its
    /// `before` (no other instance wrote the tag in between); this
    /// instance's entries of the tag are dropped and the updated ones
    /// stored, with no wait between the two; then the bus tells the others,
    /// which drop theirs and find the updated values in Redis. On one
    /// instance (no shared level) the caller's own lock orders its writes
    /// and every update is stored. Runs to completion in a task of its own:
    /// a caller that goes away does not leave an instance uninformed.
    pub async fn update_tag<T: CacheValue>(
        &self,
        tag: &str,
        options: &QueryOptions,
        updates: Vec<(Arc<str>, Versioned<T>, Arc<T>)>,
    ) -> Invalidation {
        let updates = Update::erase(self.shared().is_some(), updates);
        self.update_tag_erased(tag, options, updates).await
    }

    pub(crate) async fn update_tag_erased(
        &self,
        tag: &str,
        options: &QueryOptions,
        updates: Vec<Update>,
    ) -> Invalidation {
        let (this, tag, options) = (self.clone(), Arc::<str>::from(tag), options.clone());
        let task = tokio::spawn(async move { this.update_tag_now(tag, options, updates).await });
        match task.await {
            Ok(done) => done,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            // Only a runtime shutting down cancels the task.
            Err(_) => Invalidation::unpublished(Kind::Tag, ""),
        }
    }

    async fn update_tag_now(
        &self,
        tag: Arc<str>,
        options: QueryOptions,
        updates: Vec<Update>,
    ) -> Invalidation {
        let shared = self.shared().cloned();
        // The keys' fill leases first: an instance missing one of them
        // between the bump and the store waits for the updated value.
        let leased: Vec<bool> = match &shared {
            Some(s) => {
                let takes = updates.iter().map(|u| s.lease_for_update(&u.key));
                futures::future::join_all(takes).await
            }
            None => Vec::new(),
        };
        let generation = match &shared {
            Some(s) => s.bump(Kind::Tag, &tag).await,
            None => None,
        };
        let after = Invalidation {
            kind: Kind::Tag,
            name: tag.clone(),
            generation,
        };
        let mut ready = Vec::new();
        for (i, u) in updates.into_iter().enumerate() {
            let leased = leased.get(i).copied().unwrap_or(false);
            match &shared {
                None => ready.push((u, None, false)),
                Some(s) => match updated(s, u.before.as_deref(), &after) {
                    Some(stamp) => ready.push((u, Some(stamp), leased)),
                    None => {
                        s.count_update_refused();
                        if leased {
                            s.release(u.key.clone());
                        }
                    }
                },
            }
        }
        if let Some(s) = &shared {
            let stores = ready.iter().map(|(u, stamp, leased)| async move {
                match (stamp.clone(), u.encoded.clone()) {
                    (Some(stamp), Some(bytes)) => {
                        s.store_now(u.key.clone(), stamp, u.ttl_left, bytes, *leased)
                            .await;
                    }
                    _ if *leased => s.release(u.key.clone()),
                    _ => {}
                }
            });
            futures::future::join_all(stores).await;
        }
        self.inner.log.invalidate_tag(&tag);
        self.inner.cache.invalidate_tag(&tag).await;
        let tags: Arc<[Arc<str>]> = options.tags.clone().into();
        for (u, stamp, _) in ready {
            self.put_updated(&tags, u, stamp, &after).await;
        }
        if let (Some(s), Some(g)) = (&shared, generation) {
            s.announce(Kind::Tag, &tag, g).await;
        }
        after
    }

    /// Stores one value updated in place, unless a newer write of the tag
    /// has arrived by the bus (checked again after the insert).
    async fn put_updated(
        &self,
        tags: &Arc<[Arc<str>]>,
        u: Update,
        stamp: Option<Stamp>,
        after: &Invalidation,
    ) {
        let newest = || match (self.shared(), after.generation) {
            (Some(s), Some(g)) => s.known_generation(after.kind, &after.name) == g,
            (Some(_), None) => false,
            (None, _) => true,
        };
        if !newest() {
            if let Some(s) = self.shared() {
                s.count_update_refused();
            }
            return;
        }
        let fill = Fill {
            since: self.inner.log.snapshot(),
            fetched_at: std::time::Instant::now(),
            ttl: u.ttl_left,
            stamp: stamp.map(Arc::new),
        };
        self.store_sized(&u.key, tags, &fill, u.value, u.size).await;
        if !newest() {
            self.inner.cache.invalidate(&u.key).await;
        }
    }

    /// Copies up to `limit` entries whose keys start with `prefix` from the
    /// shared hot set (the most recently filled keys) into this instance's
    /// cache, checked like any shared read; for a new instance, instead of
    /// warming from the database. Returns how many it copied.
    pub async fn warm_from_shared<T: CacheValue>(&self, prefix: &str, limit: usize) -> usize {
        self.warm_erased(prefix, limit, &decoder::<T>).await
    }

    pub(crate) async fn warm_erased(
        &self,
        prefix: &str,
        limit: usize,
        decode: Decode<'_>,
    ) -> usize {
        let Some(shared) = self.shared() else {
            return 0;
        };
        if !shared.ready(self.inner.config.shared.bus_lease * 2).await {
            return 0;
        }
        let keys = shared.hot_keys(prefix, limit).await;
        let warmed = futures::stream::iter(keys)
            .map(|key| self.warm_one(shared, key, decode))
            .buffer_unordered(16)
            .filter(|ok| futures::future::ready(*ok))
            .count()
            .await;
        shared.count_warmed(warmed);
        warmed
    }

    async fn warm_one(&self, shared: &Arc<Shared>, key: String, decode: Decode<'_>) -> bool {
        let since = self.inner.log.snapshot();
        let fetched_at = std::time::Instant::now();
        let Some((value, stamp, ttl_left)) = shared.read_any(&key).await else {
            return false;
        };
        let Some((value, size)) = decode(value) else {
            return false;
        };
        let tags: Arc<[Arc<str>]> = stamp.tag_gens.iter().map(|(t, _)| t.clone()).collect();
        let fill = Fill {
            since,
            fetched_at,
            ttl: ttl_left,
            stamp: Some(Arc::new(stamp)),
        };
        self.store_sized(&Arc::from(key), &tags, &fill, value, size)
            .await;
        true
    }
}

/// `before`'s stamp moved to `after`'s generation, if `after` is the very
/// next invalidation of its key or tag since `before` was read.
fn updated(shared: &Shared, before: Option<&Stamp>, after: &Invalidation) -> Option<Stamp> {
    let generation = after.generation?;
    let stamp = before?;
    if stamp.epoch != shared.epoch() {
        return None;
    }
    match after.kind {
        Kind::Tag => (stamp.tag_gen(&after.name)? + 1 == generation)
            .then(|| stamp.with_tag_gen(&after.name, generation)),
        Kind::Key => (stamp.key_gen + 1 == generation).then(|| Stamp {
            key_gen: generation,
            ..stamp.clone()
        }),
        Kind::Clear => None,
    }
}

impl<DB: Database> LocalCache for Inner<DB> {
    fn invalidate<'a>(&'a self, kind: Kind, name: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            match kind {
                Kind::Key => {
                    self.log.invalidate_key(name);
                    self.cache.invalidate(name).await;
                }
                Kind::Tag => {
                    self.log.invalidate_tag(name);
                    self.cache.invalidate_tag(name).await;
                }
                Kind::Clear => self.flush().await,
            }
        })
    }

    fn flush(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            self.log.invalidate_all();
            self.cache.clear().await;
        })
    }
}
