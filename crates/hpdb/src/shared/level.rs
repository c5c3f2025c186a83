//! The shared level's reads and writes: a lookup that reads an entry, its
//! key's generation and its tags' generations together (and asks for the
//! fill lease in the same round trip), waiting for another instance's fill,
//! storing fills and updated values, fill leases, the hot set.

use std::{
    sync::{Arc, LazyLock},
    time::Duration,
};

use bytes::Bytes;
use futures::future::join_all;
use redis::Script;

use super::{
    budget::Patience,
    client::RedisCallError,
    codec,
    names::Kind,
    state::{floor_value, generation, inc, unix_ms, Shared, HOT_MAX},
};
use crate::stamp::Stamp;

/// What the shared level had for a key.
pub(crate) enum SharedLookup {
    /// A current entry: its value's bytes, its stamp, its time left, and
    /// the replica floor of its key and tags.
    Hit {
        value: Bytes,
        stamp: Stamp,
        ttl_left: Duration,
        floor: u64,
    },
    /// Nothing current. `stamp` is what a fill starting now must carry
    /// (`None`: Redis did not answer, so the fill is not shared); `floor`
    /// the highest replica floor of the key and its tags (`crate::replica`).
    Miss {
        stamp: Option<Stamp>,
        lease: Lease,
        floor: u64,
    },
}

/// Generations of tags and their floors, as Redis gave them.
type TagGens = (Vec<Option<Vec<u8>>>, Vec<Option<Vec<u8>>>);

/// The fill lease, after a miss.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lease {
    /// This instance fills the key.
    Won,
    /// Another instance is filling it.
    Held,
    /// Not asked for, or Redis did not answer.
    None,
}

impl Shared {
    /// Reads the entry under `key` and the generations of `key` and `tags`,
    /// and asks for the fill lease if `lease` says for how long, all in one
    /// round trip (the lease is given back at once if the entry is there:
    /// a miss, the case that goes to the database, waits for nothing more).
    pub(crate) async fn lookup(
        self: &Arc<Self>,
        key: &str,
        tags: &[Arc<str>],
        lease: Option<Duration>,
        patience: Patience,
    ) -> SharedLookup {
        let found = self.lookup_uncounted(key, tags, lease, patience).await;
        match &found {
            SharedLookup::Hit { .. } => inc(&self.c.hits),
            SharedLookup::Miss { .. } => inc(&self.c.misses),
        }
        found
    }

    /// [`lookup`](Self::lookup) without counting a hit or a miss (the bus
    /// replacing entries: not a read).
    pub(crate) async fn lookup_uncounted(
        self: &Arc<Self>,
        key: &str,
        tags: &[Arc<str>],
        lease: Option<Duration>,
        patience: Patience,
    ) -> SharedLookup {
        let epoch = self.epoch();
        let not_shared = SharedLookup::Miss {
            stamp: None,
            lease: Lease::None,
            floor: 0,
        };
        if epoch == 0 || self.is_pending(key, tags) {
            return not_shared;
        }
        let (own, gens) = futures::join!(
            self.read_own(key, lease, patience),
            self.read_tag_gens(tags, patience)
        );
        let (Ok((mut own, lease)), Ok(gens)) = (own, gens) else {
            // The lease asked for may be ours though the answer is not
            // (its SET landed, or lands after a reader went on without
            // it): given back, or every other instance's reader of the key
            // waits for it until it lapses (`REDIS_FILL_LEASE`).
            if lease.is_some() {
                self.release(Arc::from(key));
            }
            return not_shared;
        };
        let lease = match lease {
            Some(Some(_)) => Lease::Won,
            Some(None) => Lease::Held,
            None => Lease::None,
        };
        let mut floor = floor_value(own.pop().flatten());
        let key_gen = generation(own.pop().flatten());
        let (gens, floors) = gens;
        floor = floors.into_iter().map(floor_value).fold(floor, u64::max);
        let stamp = Stamp {
            epoch,
            key_gen,
            tag_gens: tags
                .iter()
                .cloned()
                .zip(gens.into_iter().map(generation))
                .collect(),
        };
        if let Some(hit) = own
            .pop()
            .flatten()
            .and_then(|raw| self.current(raw, &stamp, floor))
        {
            if lease == Lease::Won {
                self.release(Arc::from(key));
            }
            return hit;
        }
        if lease == Lease::Won {
            inc(&self.c.leases_won);
        }
        SharedLookup::Miss {
            stamp: Some(stamp),
            lease,
            floor,
        }
    }

    /// The entry, its key's generation and floor (and the lease, if asked
    /// for): they share a slot, so one pipeline.
    async fn read_own(
        &self,
        key: &str,
        lease: Option<Duration>,
        patience: Patience,
    ) -> Result<(Vec<Option<Vec<u8>>>, Option<Option<String>>), RedisCallError> {
        let mut own = redis::pipe();
        own.cmd("MGET")
            .arg(self.names.entry(key))
            .arg(self.names.generation(Kind::Key, key))
            .arg(self.names.floor(Kind::Key, key));
        if let Some(d) = lease {
            own.cmd("SET")
                .arg(self.names.lease(key))
                .arg(self.instance)
                .arg("NX")
                .arg("PX")
                .arg(d.as_millis().max(1) as u64);
        }
        if lease.is_some() {
            self.redis
                .pipeline::<(Vec<Option<Vec<u8>>>, Option<String>)>(patience, &own)
                .await
                .map(|(e, l)| (e, Some(l)))
        } else {
            self.redis
                .pipeline::<(Vec<Option<Vec<u8>>>,)>(patience, &own)
                .await
                .map(|(e,)| (e, None))
        }
    }

    /// The generations of `tags`, and their replica floors.
    async fn read_tag_gens(
        &self,
        tags: &[Arc<str>],
        patience: Patience,
    ) -> Result<TagGens, RedisCallError> {
        if self.redis.target().is_cluster() {
            // Tags hash to different slots: one MGET each (a tag's
            // generation and floor share one), concurrently.
            let gets = tags.iter().map(|t| {
                let mut c = redis::cmd("MGET");
                c.arg(self.names.generation(Kind::Tag, t))
                    .arg(self.names.floor(Kind::Tag, t));
                async move { self.redis.query::<Vec<Option<Vec<u8>>>>(patience, &c).await }
            });
            let mut gens = Vec::with_capacity(tags.len());
            let mut floors = Vec::with_capacity(tags.len());
            for pair in join_all(gets).await {
                let mut pair = pair?.into_iter();
                gens.push(pair.next().flatten());
                floors.push(pair.next().flatten());
            }
            Ok((gens, floors))
        } else if tags.is_empty() {
            Ok((Vec::new(), Vec::new()))
        } else {
            let mut c = redis::cmd("MGET");
            for t in tags {
                c.arg(self.names.generation(Kind::Tag, t));
            }
            for t in tags {
                c.arg(self.names.floor(Kind::Tag, t));
            }
            let mut gens = self
                .redis
                .query::<Vec<Option<Vec<u8>>>>(patience, &c)
                .await?;
            let floors = gens.split_off(tags.len().min(gens.len()));
            Ok((gens, floors))
        }
    }

    /// The entry in `raw` if its stamp is `current` and it has time left.
    fn current(&self, raw: Vec<u8>, current: &Stamp, floor: u64) -> Option<SharedLookup> {
        let env = match codec::decode(Bytes::from(raw)) {
            Ok(env) => env,
            Err(why) => {
                tracing::debug!(why, "shared entry not readable: a miss");
                return None;
            }
        };
        if env.stamp != *current {
            inc(&self.c.refused);
            return None;
        }
        let expires = env.stored_at_ms + u64::from(env.ttl_ms);
        let left = expires.checked_sub(unix_ms()).filter(|ms| *ms > 0)?;
        Some(SharedLookup::Hit {
            value: env.value,
            stamp: env.stamp,
            ttl_left: Duration::from_millis(left),
            floor,
        })
    }

    /// The current entry under `key` whatever its tags (read from the
    /// entry itself): for warming and a writer's snapshot, where the
    /// caller does not know them (patient: no reader waits on it).
    pub(crate) async fn read_any(self: &Arc<Self>, key: &str) -> Option<(Bytes, Stamp, Duration)> {
        let mut c = redis::cmd("GET");
        c.arg(self.names.entry(key));
        let raw = self
            .redis
            .query::<Option<Vec<u8>>>(Patience::Patient, &c)
            .await
            .ok()??;
        let env = codec::decode(Bytes::from(raw)).ok()?;
        let tags: Vec<Arc<str>> = env.stamp.tag_gens.iter().map(|(t, _)| t.clone()).collect();
        match self.lookup(key, &tags, None, Patience::Patient).await {
            SharedLookup::Hit {
                value,
                stamp,
                ttl_left,
                ..
            } => Some((value, stamp, ttl_left)),
            SharedLookup::Miss { .. } => None,
        }
    }

    /// Waits for the instance holding the fill lease of `key` to store it:
    /// polls with backoff until the entry is there, the lease is free (and
    /// then taken: this instance fills), or `until`.
    pub(crate) async fn wait_for_fill(
        self: &Arc<Self>,
        key: &str,
        tags: &[Arc<str>],
        lease: Duration,
        until: tokio::time::Instant,
    ) -> SharedLookup {
        inc(&self.c.lease_waits);
        // Short pauses first: a writer's updated value is usually stored
        // within a round trip or two of its bump.
        let mut pause = Duration::from_millis(1);
        loop {
            let now = tokio::time::Instant::now();
            if now + pause >= until {
                return self.lookup(key, tags, None, Patience::Reader).await;
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 3 / 2).min(Duration::from_millis(25));
            match self.lookup(key, tags, Some(lease), Patience::Reader).await {
                SharedLookup::Miss {
                    lease: Lease::Held, ..
                } => continue,
                other => return other,
            }
        }
    }

    /// Stores a fill (in a task of its own: the caller does not wait), and
    /// gives back the fill lease if this instance held it.
    pub(crate) fn store(
        self: &Arc<Self>,
        key: Arc<str>,
        stamp: Stamp,
        ttl: Duration,
        value: Bytes,
        release_lease: bool,
    ) {
        let this = self.clone();
        tokio::spawn(async move {
            // A write may have bumped a generation since the stamp was read:
            // then this fill predates it and would only overwrite (perhaps
            // the writer's updated value) with an entry every reader refuses.
            if this.still_current(&key, &stamp).await {
                this.store_now(key, stamp, ttl, value, release_lease).await;
            } else {
                inc(&this.c.fills_dropped);
                if release_lease {
                    this.release(key);
                }
            }
        });
    }

    /// True if the generations of `key` and of the stamp's tags are still
    /// the stamp's (or Redis did not say: the readers check anyway).
    async fn still_current(&self, key: &str, stamp: &Stamp) -> bool {
        let tags: Vec<Arc<str>> = stamp.tag_gens.iter().map(|(t, _)| t.clone()).collect();
        let mut own = redis::cmd("GET");
        own.arg(self.names.generation(Kind::Key, key));
        let (own, gens) = futures::join!(
            self.redis.query::<Option<Vec<u8>>>(Patience::Patient, &own),
            self.read_tag_gens(&tags, Patience::Patient)
        );
        let (Ok(own), Ok((gens, _))) = (own, gens) else {
            return true;
        };
        generation(own) == stamp.key_gen
            && gens
                .into_iter()
                .map(generation)
                .eq(stamp.tag_gens.iter().map(|(_, g)| *g))
    }

    /// [`store`](Self::store), waited for; true if Redis took it.
    pub(crate) async fn store_now(
        &self,
        key: Arc<str>,
        stamp: Stamp,
        ttl: Duration,
        value: Bytes,
        release_lease: bool,
    ) -> bool {
        let this = self;
        {
            let ttl_ms = ttl.as_millis().clamp(1, u32::MAX as u128) as u32;
            let bytes = codec::encode(&stamp, unix_ms(), ttl_ms, &value);
            let mut p = redis::pipe();
            p.cmd("SET")
                .arg(this.names.entry(&key))
                .arg(bytes)
                .arg("PX")
                .arg(ttl_ms)
                .ignore();
            if release_lease {
                p.cmd("DEL").arg(this.names.lease(&key)).ignore();
            }
            let mut hot = redis::cmd("ZADD");
            hot.arg(this.names.hot()).arg(unix_ms()).arg(key.as_ref());
            let (stored, _) = futures::join!(
                this.redis.pipeline::<()>(Patience::Patient, &p),
                this.redis.query::<i64>(Patience::Patient, &hot)
            );
            if stored.is_ok() {
                inc(&this.c.stores);
            }
            stored.is_ok()
        }
    }

    /// Takes the fill lease of `key` for a writer about to store its
    /// updated value: an instance that misses the key meanwhile waits for
    /// that value instead of querying. True if taken.
    pub(crate) async fn lease_for_update(&self, key: &str) -> bool {
        let mut c = redis::cmd("SET");
        c.arg(self.names.lease(key))
            .arg(self.instance)
            .arg("NX")
            .arg("PX")
            .arg(self.config.fill_lease.as_millis().max(1) as u64);
        matches!(
            self.redis
                .query::<Option<String>>(Patience::Patient, &c)
                .await,
            Ok(Some(_))
        )
    }

    pub(crate) fn count_replaced(&self) {
        inc(&self.c.replaced);
    }

    /// Gives back a fill lease without storing (the fill failed or was
    /// invalidated), if this instance holds it: one that lapsed and was
    /// taken by another instance meanwhile is not ours to drop. Sent after
    /// the call that may have taken it, on the same connection, so it runs
    /// after that call even if its caller stopped waiting for it (unless
    /// the connection was replaced in between: the lease then lapses).
    pub(crate) fn release(self: &Arc<Self>, key: Arc<str>) {
        static SCRIPT: LazyLock<Script> = LazyLock::new(|| {
            Script::new(
                r"if redis.call('GET', KEYS[1]) == ARGV[1] then
                    return redis.call('DEL', KEYS[1])
                  end
                  return 0",
            )
        });
        let this = self.clone();
        tokio::spawn(async move {
            let mut invocation = SCRIPT.key(this.names.lease(&key));
            invocation.arg(this.instance);
            let _ = this
                .redis
                .run_script::<i64>(Patience::Patient, &invocation)
                .await;
        });
    }

    /// The most recently filled keys starting with `prefix` (the shared hot
    /// set), newest first.
    pub(crate) async fn hot_keys(&self, prefix: &str, limit: usize) -> Vec<String> {
        let mut c = redis::cmd("ZREVRANGE");
        c.arg(self.names.hot()).arg(0).arg(HOT_MAX as i64);
        let keys: Vec<String> = self
            .redis
            .query(Patience::Patient, &c)
            .await
            .unwrap_or_default();
        keys.into_iter()
            .filter(|k| k.starts_with(prefix))
            .take(limit)
            .collect()
    }
}
