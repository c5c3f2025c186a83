//! Updates in place across instances. The writer's side: a write's cache
//! step for a tag (`update_tag`), in an order that stays correct whatever
//! the other instances do. The receiver's side: putting back, from the
//! shared level, what another instance's write made this one drop
//! (`replace`). And the last step of every invalidation: `announce`.

use std::sync::Arc;

use futures::future::join_all;

use super::{
    api::{Delivery, Invalidation, LocalCache, Update},
    budget::Patience,
    level::SharedLookup,
    names::Kind,
    state::Shared,
};
use crate::{cache::CacheEntry, stamp::Stamp};

/// Entries one bus message may replace from the shared level; the rest of
/// what it names is only dropped.
const REPLACE_MAX: usize = 16;

/// Announces a bumped invalidation on the bus and waits for the other
/// instances to confirm it.
pub(super) async fn announce(shared: &Shared, done: &mut Invalidation) {
    if let Some(g) = done.generation {
        let floor = done.floor.unwrap_or(0);
        if let Some(at) = shared.announce(done.kind, &done.name, g, floor).await {
            if shared.await_delivery(at).await {
                done.delivery = Delivery::Confirmed;
            }
        }
    }
}

/// A write's whole cache step for `tag`. In order: the keys' fill leases
/// (an instance missing one of them between the bump and the store waits
/// for the updated value); the tag's shared generation bumped (no instance
/// serves a shared entry from before it from then on); the updated values
/// stored in the shared level, each only if the bump directly follows its
/// snapshot (no other instance wrote the tag in between); this instance's
/// entries of the tag dropped and the updated ones stored, with no wait
/// between the two (as readers see it, one step: `LocalCache::replace_tag`); then the bus tells the others, which drop theirs and
/// find the updated values in Redis.
pub(super) async fn update_tag(
    shared: &Arc<Shared>,
    local: &dyn LocalCache,
    tag: &str,
    tags: Arc<[Arc<str>]>,
    updates: Vec<Update>,
    floor: Option<u64>,
) -> Invalidation {
    let leased: Vec<bool> = join_all(updates.iter().map(|u| shared.lease_for_update(&u.key))).await;
    let generation = shared.bump(Kind::Tag, tag, floor).await;
    let mut after = Invalidation::new(Kind::Tag, tag, generation, Delivery::Unconfirmed);
    after.floor = floor;
    let mut ready = Vec::new();
    for (u, leased) in updates.into_iter().zip(leased) {
        match updated(shared, u.before.as_deref(), &after) {
            Some(stamp) => ready.push((u, stamp, leased)),
            None => {
                shared.count_update_refused();
                if leased {
                    shared.release(u.key.clone());
                }
                after.refused.push(u.key);
            }
        }
    }
    let stores = ready.iter().map(|(u, stamp, leased)| async move {
        match u.encoded() {
            Some(bytes) => {
                shared
                    .store_now(u.key.clone(), stamp.clone(), u.ttl_left, bytes, *leased)
                    .await;
            }
            None if *leased => shared.release(u.key.clone()),
            None => {}
        }
    });
    join_all(stores).await;
    // Stored only if no newer write of the tag has arrived by the bus and
    // no clear came after the snapshot (it may stand for a write the
    // snapshot did not see); checked again after the store.
    let newest = |u: &Update| {
        after
            .generation
            .is_some_and(|g| shared.known_generation(after.kind, &after.name) == g)
            && !local.cleared_after(u.since)
    };
    let mut entries = Vec::with_capacity(ready.len());
    let mut placed = Vec::with_capacity(ready.len());
    for (u, stamp, _) in ready {
        if newest(&u) {
            entries.push((u.key.clone(), u.entry(&tags, Some(stamp))));
            placed.push(u);
        } else {
            shared.count_update_refused();
        }
    }
    local.replace_tag(tag, entries).await;
    for u in placed {
        if !newest(&u) {
            shared.count_update_refused();
            local.remove(&u.key).await;
        }
    }
    announce(shared, &mut after).await;
    after
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

/// Puts back, from the shared level, entries another instance's write
/// made this instance drop: the writer stored their updated values there,
/// so the next read here is a hit in process, not a round trip. Only
/// current shared entries are taken (checked like any shared read), and an
/// invalidation arriving meanwhile wins.
pub(super) async fn replace(
    shared: &Arc<Shared>,
    local: &dyn LocalCache,
    dropped: Vec<(Arc<str>, CacheEntry)>,
) {
    let since = local.position();
    let replaced = dropped
        .into_iter()
        .filter(|(_, e)| e.stamp.is_some())
        .filter_map(|(key, e)| Some((key, e.tags, e.decode?)))
        .take(REPLACE_MAX)
        .map(|(key, tags, decode)| async move {
            let fetched_at = std::time::Instant::now();
            let SharedLookup::Hit {
                value,
                stamp,
                ttl_left,
                ..
            } = shared
                .lookup_uncounted(&key, &tags, None, Patience::Patient)
                .await
            else {
                return;
            };
            let Some((value, size)) = decode(value) else {
                return;
            };
            let entry = CacheEntry {
                value,
                size,
                tags,
                seq: since,
                stored_at: fetched_at,
                ttl: ttl_left,
                stamp: Some(Arc::new(stamp)),
                decode: Some(decode),
                cost: std::time::Duration::ZERO,
                refreshed: None,
            };
            if local.store(key, entry).await {
                shared.count_replaced();
            }
        });
    join_all(replaced).await;
}
