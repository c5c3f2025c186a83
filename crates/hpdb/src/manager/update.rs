//! A write's cache step: the values it changes read before it
//! (`peek_versioned`, in process or in the shared level), then
//! `update_tag`: the tag invalidated everywhere and those values replaced
//! in place, in an order that stays correct across instances.

use std::{any::Any, sync::Arc, time::Duration};

use bytes::Bytes;
use sqlx::Database;

use super::{
    pipeline::Fill,
    shared::{decoder, Decode, Invalidation},
    Manager,
};
use crate::{
    cache::{weigh, CacheValue},
    options::QueryOptions,
    shared::{Kind, Shared, Stamp, TagLocks},
};

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
}

impl Versioned<dyn Any + Send + Sync> {
    /// The same, typed (`None` if the value is of another type).
    pub(crate) fn downcast<T: Send + Sync + 'static>(self) -> Option<Versioned<T>> {
        Some(Versioned {
            value: self.value.downcast::<T>().ok()?,
            ttl_left: self.ttl_left,
            overdue: self.overdue,
            stamp: self.stamp,
        })
    }
}

/// A value updated in place, type-erased (see [`Manager::update_tag`]).
pub(crate) struct Update {
    pub(crate) key: Arc<str>,
    pub(crate) ttl_left: Duration,
    pub(crate) overdue: Duration,
    pub(crate) before: Option<Arc<Stamp>>,
    pub(crate) value: Arc<dyn Any + Send + Sync>,
    pub(crate) size: u32,
    pub(crate) encoded: Option<Bytes>,
    pub(crate) decode: Option<Decode>,
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
                    overdue: before.overdue,
                    before: before.stamp,
                    encoded: if shared { value.encode() } else { None },
                    decode: Some(decoder::<T>),
                    value,
                    size,
                })
            })
            .collect()
    }
}

impl<DB: Database> Manager<DB> {
    /// Takes the write locks of `tags` across instances (see [`TagLocks`]):
    /// hold them from before [`peek_versioned`](Self::peek_versioned) to
    /// after [`update_tag`](Self::update_tag), so that writes to a tag
    /// through several instances take turns and their updates in place
    /// follow each other. A fast path, never what makes it correct; without
    /// a shared level (one instance: the caller's own lock orders writes)
    /// it holds nothing.
    pub async fn lock_tags(&self, tags: &[&str]) -> TagLocks {
        match self.shared() {
            Some(s) => s.lock_tags(tags).await,
            None => TagLocks::none(),
        }
    }

    /// The cached value under `key` (fresh, current), with what
    /// [`update_tag`](Self::update_tag) needs; read it before the write.
    /// In process first; else, with a shared level, its current shared
    /// entry (so that a write updates in place what any instance cached,
    /// not only what this one did).
    pub async fn peek_versioned<T: CacheValue>(&self, key: &str) -> Option<Versioned<T>> {
        self.peek_versioned_erased(key, decoder::<T>)
            .await?
            .downcast()
    }

    pub(crate) async fn peek_versioned_erased(
        &self,
        key: &str,
        decode: Decode,
    ) -> Option<Versioned<dyn Any + Send + Sync>> {
        if let Some(entry) = self.peek_entry_to_update(key).await {
            let age = entry.stored_at.elapsed();
            return Some(Versioned {
                value: entry.value,
                ttl_left: entry.ttl.saturating_sub(age),
                overdue: age.saturating_sub(entry.ttl),
                stamp: entry.stamp,
            });
        }
        let (bytes, stamp, ttl_left) = self.shared()?.read_any(key).await?;
        let (value, _) = decode(bytes)?;
        Some(Versioned {
            value,
            ttl_left,
            overdue: Duration::ZERO,
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
            Err(_) => Invalidation::unpublished(Kind::Tag, "", self.shared().is_some()),
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
        let mut after = Invalidation::new(Kind::Tag, &tag, generation, shared.is_some());
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
                        after.refused.push(u.key);
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
        let restored: Vec<Arc<str>> = ready.iter().map(|(u, _, _)| u.key.clone()).collect();
        self.inner.drop_local(Kind::Tag, &tag, &restored).await;
        let tags: Arc<[Arc<str>]> = options.tags.clone().into();
        for (u, stamp, _) in ready {
            self.put_updated(&tags, u, stamp, &after).await;
        }
        after.announce(shared.as_ref()).await;
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
            // An overdue original's update is as overdue: its grace ends
            // when the original's would have.
            fetched_at: std::time::Instant::now()
                .checked_sub(u.overdue)
                .unwrap_or_else(std::time::Instant::now),
            ttl: u.ttl_left,
            stamp: stamp.map(Arc::new),
        };
        self.store_sized(&u.key, tags, &fill, u.value, u.size, u.decode)
            .await;
        if !newest() {
            self.inner.cache.invalidate(&u.key).await;
        }
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
