//! The shared level: Redis under every instance's in-process cache, and the
//! bus that carries invalidations between instances.
//!
//! ## The protocol
//! - **Generations.** Every key and tag has a counter in Redis, bumped by
//!   each invalidation of it (`INCR`); a clear replaces the *epoch*. A
//!   shared entry carries a [`Stamp`](crate::Stamp): the epoch and the generations of its
//!   key and tags read *before* its data was fetched. A reader reads the
//!   entry and the current generations together and serves the entry only
//!   if the stamp still holds. So a fill that raced a write (fetched before
//!   it, stored after) is refused by every reader once the write's `INCR`
//!   is done, whatever the timing: the memcache "lease" idea, with version
//!   numbers instead of tokens.
//! - **Bus.** After its `INCR`, an invalidation is appended to a Redis
//!   Stream (one per shard, trimmed to `STREAM_LEN`) and published on the
//!   shard's channel with its stream id and the id before it. Receivers drop
//!   the named entries from their in-process cache. A receiver that sees a
//!   gap, reconnects, or misses a push replays the stream from the last id
//!   it applied; one that cannot (the stream was trimmed past it, or Redis
//!   lost its data: the epoch changed) empties its in-process cache.
//! - **Delivery.** A receiver confirms each applied message to its origin
//!   (on the origin's own channel), after putting back from the shared
//!   level what the invalidation made it drop (the writer stored its
//!   updated values there). The origin's invalidation waits, at most
//!   `delivery_wait`, for every instance the registry (a sorted set scored
//!   by Redis's clock, refreshed by each heartbeat) lists as live once the
//!   message is published: once it returns `Confirmed`, the next read on
//!   any instance sees the write. `delivery`'s module doc gives the rules
//!   that make that hold whatever the timing (instances starting, stalled,
//!   lapsed).
//! - **Write locks.** Writers of one tag on several instances take turns
//!   ([`TagLocks`]), so that each update in place follows the previous one.
//! - **Catching up.** A heartbeat reads every shard's head and the epoch
//!   every `bus_lease / 5`; a round that finds nothing unapplied marks the
//!   instance *caught up* as of the round's start. While not caught up for
//!   longer than `bus_lease` (the bus lease), the manager serves no
//!   in-process entry older than `bus_lease`.
//! - **Fill leases.** The first instance to miss a key takes a short lease
//!   (`SET NX PX`); the others poll the shared level until the filler stores
//!   it (or the lease lapses), so N instances missing one key make about one
//!   query.
//! - **Faults.** Every call has a short budget and goes through a breaker
//!   (see `client`); an invalidation that cannot be published is kept
//!   (bounded: past `PENDING_MAX` names it becomes a clear) and published
//!   by the heartbeat when Redis answers again; meanwhile this instance does
//!   not read the shared level for the names it holds.
//!
//! `CLIENT TRACKING` (Redis's client-side caching) was not used: it tracks
//! keys, not tags, and a reconnect loses every notification with no way to
//! replay them.
//!
//! ## Where things are
//! The manager sees one trait, [`SharedLevel`] (`api`), built here by
//! [`build`]: [`NoShared`](none) without `REDIS_URL`, `RedisLevel` (`redis`)
//! with it. Behind `redis`: `state` (the connection, counters, the two steps
//! of an invalidation), `level` (reads, fills, fill leases), `update` (a
//! write's updates in place, and the bus's replacing of what it dropped),
//! `bus`, `delivery` and `acks` (the registry and confirmations), `lock`
//! (tag locks), `client`, `budget`, `target`, `codec`, `message`, `names`.
//!
//! ## Without the `redis` feature
//! Only the backend-free part is built: `api`, `none`, `status`'s figures,
//! [`TagLocks`] (which then never holds a lock) and `names::Kind`. A
//! configuration that names a `REDIS_URL` is refused ([`check_url`]): an
//! instance that silently ran without the shared level would break the
//! promise that the others' writes reach it.

#[cfg(feature = "redis")]
mod acks;
pub(crate) mod api;
#[cfg(feature = "redis")]
mod budget;
#[cfg(feature = "redis")]
mod bus;
#[cfg(feature = "redis")]
mod client;
#[cfg(feature = "redis")]
mod codec;
#[cfg(feature = "redis")]
mod delivery;
#[cfg(feature = "redis")]
mod level;
pub(crate) mod lock;
#[cfg(feature = "redis")]
mod message;
pub(crate) mod names;
mod none;
#[cfg(feature = "redis")]
mod redis;
#[cfg(feature = "redis")]
mod state;
pub(crate) mod status;
#[cfg(feature = "redis")]
mod target;
#[cfg(feature = "redis")]
mod update;

use std::sync::Arc;

use self::{api::SharedLevel, none::NoShared};
use crate::config::{ConfigError, SharedConfig};

/// The shared level `config` describes: Redis if it names a URL, else none.
pub(crate) fn build(config: &SharedConfig) -> Result<Arc<dyn SharedLevel>, ConfigError> {
    Ok(match config.url {
        #[cfg(feature = "redis")]
        Some(_) => Arc::new(redis::RedisLevel::new(
            state::Shared::new(config).map_err(ConfigError)?,
        )),
        #[cfg(not(feature = "redis"))]
        Some(ref url) => {
            return Err(ConfigError(format!(
                "REDIS_URL {}",
                check_url(url).unwrap_err()
            )))
        }
        None => Arc::new(NoShared),
    })
}

/// Checks a `REDIS_URL` without connecting.
#[cfg(feature = "redis")]
pub(crate) fn check_url(url: &str) -> Result<(), String> {
    target::check_url(url)
}

/// Refuses a `REDIS_URL`: this build has no shared level to give it.
#[cfg(not(feature = "redis"))]
pub(crate) fn check_url(_url: &str) -> Result<(), String> {
    Err(
        "is set, but hpdb was built without its `redis` feature (the shared cache level \
         and bus): enable the feature, or unset the variable"
            .into(),
    )
}

#[cfg(not(feature = "redis"))]
#[cfg(test)]
mod tests {
    use crate::config::ManagerConfig;

    #[test]
    fn a_redis_url_is_refused_when_built_without_the_shared_level() {
        let mut config = ManagerConfig::default();
        config.shared.url = Some("redis://127.0.0.1:6379".into());
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("REDIS_URL"), "{err}");
        assert!(err.contains("`redis` feature"), "{err}");
        let err = super::build(&config.shared).err().unwrap().to_string();
        assert!(err.contains("`redis` feature"), "{err}");
    }
}
