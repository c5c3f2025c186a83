//! The shared level (Redis) on the manager's paths: looked up by the leader
//! of a miss before the database, filled after it; what an invalidation
//! reports; the bus's hold on this instance's cache; warming from the
//! shared hot set. A write's cache step is in `update`. Without a shared
//! level every step here is a no-op.

use std::{any::Any, sync::Arc};

use bytes::Bytes;
use futures::{future::BoxFuture, StreamExt};
use sqlx::Database;
use tokio::time::Instant;

use super::{pipeline::Call, pipeline::Fill, Inner, Manager};
use crate::{
    cache::{weigh, CacheEntry, CacheValue},
    invalidation::Seq,
    options::QueryOptions,
    shared::{Kind, Lease, LocalCache, Patience, Shared, SharedLookup, Stamp},
};

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
    /// before it for at most `REDIS_BUS_LEASE` (the bus lease rule).
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
    pub(super) kind: Kind,
    pub(super) name: Arc<str>,
    pub(super) generation: Option<u64>,
    pub(super) delivery: Delivery,
    pub(super) refused: Vec<Arc<str>>,
}

impl Invalidation {
    pub(super) fn new(kind: Kind, name: &str, generation: Option<u64>, shared: bool) -> Self {
        Invalidation {
            kind,
            name: Arc::from(name),
            generation,
            delivery: if shared {
                Delivery::Unconfirmed
            } else {
                Delivery::Local
            },
            refused: Vec::new(),
        }
    }

    pub(super) fn unpublished(kind: Kind, name: &str, shared: bool) -> Self {
        Self::new(kind, name, None, shared)
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

    /// Keys of a write's cache step ([`Manager::update_tag`]) whose updated
    /// value was not stored because another write came between its
    /// snapshot and this one: no instance holds a current value for them
    /// until one is fetched again.
    pub fn refused(&self) -> &[Arc<str>] {
        &self.refused
    }

    /// Announces a bumped invalidation on the bus and waits for the other
    /// instances to confirm it.
    pub(super) async fn announce(&mut self, shared: Option<&Arc<Shared>>) {
        if let (Some(s), Some(g)) = (shared, self.generation) {
            if let Some(at) = s.announce(self.kind, &self.name, g).await {
                if s.await_delivery(at).await {
                    self.delivery = Delivery::Confirmed;
                }
            }
        }
    }
}

/// Turns a shared entry's bytes into a value and its weight.
pub(crate) type Decode = fn(Bytes) -> Option<(Arc<dyn Any + Send + Sync>, u32)>;

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
    pub(super) fn shared(&self) -> Option<&Arc<Shared>> {
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
        // Not cached (asked not to, or its class is bypassed): no shared
        // hit to copy in process, no fill lease to make others wait.
        if self.ttl_for(&call.key, &call.options).is_none() {
            return not_shared();
        }
        let left = call.deadline.saturating_duration_since(Instant::now());
        let lease = self.inner.config.shared.fill_lease.min(left);
        let ask = call.options.coalesce.then_some(lease);
        let mut found = shared
            .lookup(&call.key, &call.tags, ask, Patience::Reader)
            .await;
        if let SharedLookup::Miss {
            lease: Lease::Held, ..
        } = found
        {
            found = shared
                .wait_for_fill(&call.key, &call.tags, lease, Instant::now() + lease)
                .await;
        }
        match found {
            // A background refresh does not copy a shared entry that is
            // itself due: it fetches, stamped with the generations it read.
            SharedLookup::Hit {
                stamp, ttl_left, ..
            } if call
                .background
                .as_ref()
                .is_some_and(|b| ttl_left <= b.min_ttl_left) =>
            {
                SharedStep::Fill(SharedFill {
                    stamp: Some(Arc::new(stamp)),
                    holds_lease: false,
                })
            }
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

    /// Copies up to `limit` entries whose keys start with `prefix` from the
    /// shared hot set (the most recently filled keys) into this instance's
    /// cache, checked like any shared read; for a new instance, instead of
    /// warming from the database. Returns how many it copied.
    pub async fn warm_from_shared<T: CacheValue>(&self, prefix: &str, limit: usize) -> usize {
        self.warm_erased(prefix, limit, decoder::<T>).await
    }

    pub(crate) async fn warm_erased(&self, prefix: &str, limit: usize, decode: Decode) -> usize {
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

    async fn warm_one(&self, shared: &Arc<Shared>, key: String, decode: Decode) -> bool {
        if self.ttl_for(&key, &QueryOptions::default()).is_none() {
            return false;
        }
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
        self.store_sized(&Arc::from(key), &tags, &fill, value, size, Some(decode))
            .await;
        true
    }
}

/// Entries one bus message may replace from the shared level; the rest of
/// what it names is only dropped.
const REPLACE_MAX: usize = 16;

impl<DB: Database> Inner<DB> {
    /// Inserts `entry` unless `key` or one of its tags was invalidated since
    /// the entry's fetch began (`entry.seq`): such a result may predate the
    /// write. True if it stayed in.
    pub(super) async fn insert_checked(&self, key: &Arc<str>, entry: CacheEntry) -> bool {
        let (tags, since) = (entry.tags.clone(), entry.seq);
        if !self.log.is_current(key, &tags, since) {
            return false;
        }
        self.cache.insert(key.clone(), entry).await;
        // An invalidation between the check above and the insert would
        // otherwise leave a condemned entry in the cache after its stamp
        // expires: look again, and drop what was stored if so.
        if !self.log.is_current(key, &tags, since) {
            self.cache.invalidate(key).await;
            return false;
        }
        true
    }

    /// Puts back, from the shared level, entries another instance's write
    /// made this instance drop: the writer stored their updated values
    /// there, so the next read here is a hit in process, not a round trip.
    /// Only current shared entries are taken (checked like any shared
    /// read), and an invalidation arriving meanwhile wins.
    async fn replace_from_shared(
        &self,
        shared: &Arc<Shared>,
        dropped: Vec<(Arc<str>, CacheEntry)>,
    ) {
        let since = self.log.snapshot();
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
                if self.insert_checked(&key, entry).await {
                    shared.count_replaced();
                }
            });
        futures::future::join_all(replaced).await;
    }
}

impl<DB: Database> LocalCache for Inner<DB> {
    fn invalidate<'a>(
        &'a self,
        kind: Kind,
        name: &'a str,
    ) -> BoxFuture<'a, Vec<(Arc<str>, CacheEntry)>> {
        Box::pin(async move {
            match kind {
                Kind::Key | Kind::Tag => self.drop_local(kind, name, &[]).await,
                Kind::Clear => {
                    self.flush().await;
                    Vec::new()
                }
            }
        })
    }

    fn replace(&self, dropped: Vec<(Arc<str>, CacheEntry)>) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            if let Some(shared) = &self.shared {
                self.replace_from_shared(shared, dropped).await;
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
