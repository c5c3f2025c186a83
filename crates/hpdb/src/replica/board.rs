//! What is known of the replicas ([`ReplicaState`], one per replica, kept
//! by its poller and by the reads routed to it), the primary's WAL position
//! ([`Position`]), and the floors: the [`Board`] the core holds, and the
//! figures it reports ([`ReplicasStatus`]).

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering::Relaxed},
        Arc,
    },
    time::Duration,
};

use futures::future::BoxFuture;
use serde::Serialize;
use tokio::sync::Notify;

use super::floors::Floors;
use crate::{
    breaker::{CircuitBreaker, CircuitState},
    config::ReplicaConfig,
    metrics::{LatencyRecorder, Percentiles},
    shared::{api::SharedFloor, names::Kind},
};

/// The primary's current WAL insert position: at or past the commit of
/// every write acknowledged before it was read. `None`: not known now.
pub(crate) trait Position: Send + Sync {
    fn now(&self) -> BoxFuture<'_, Option<u64>>;
}

/// One replica as the router sees it.
pub(crate) struct ReplicaState {
    /// Its URL, password hidden.
    pub(crate) name: String,
    /// Its replay position (0: not known, and no read goes there).
    replay: AtomicU64,
    lag_bytes: AtomicU64,
    lag_ms: AtomicU64,
    in_rotation: AtomicBool,
    /// Its own: connects and polls that fail open it, not the primary's.
    pub(crate) breaker: CircuitBreaker,
    /// Told after every poll.
    pub(crate) updated: Notify,
    /// Asks the poller for a poll now (a read is waiting).
    pub(crate) poke: Notify,
    /// Told when it is found unreachable: the reads running there stop
    /// waiting for it.
    pub(crate) lost_signal: Notify,
    pub(crate) c: ReplicaCounters,
}

/// What happened to the reads offered to one replica.
#[derive(Default)]
pub(crate) struct ReplicaCounters {
    pub(crate) routed: AtomicU64,
    pub(crate) waited: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) polls: AtomicU64,
    pub(crate) poll_failures: AtomicU64,
    pub(crate) left_rotation: AtomicU64,
}

impl ReplicaState {
    pub(crate) fn new(name: String, config: &crate::config::HealthConfig) -> Self {
        Self {
            name,
            replay: AtomicU64::new(0),
            lag_bytes: AtomicU64::new(0),
            lag_ms: AtomicU64::new(0),
            in_rotation: AtomicBool::new(true),
            breaker: CircuitBreaker::new(config.failure_threshold, config.cooldown),
            updated: Notify::new(),
            poke: Notify::new(),
            lost_signal: Notify::new(),
            c: ReplicaCounters::default(),
        }
    }

    /// Its replay position (0: unknown).
    pub(crate) fn replay(&self) -> u64 {
        self.replay.load(Relaxed)
    }

    /// In rotation, reachable and its position known.
    pub(crate) fn usable(&self) -> bool {
        self.in_rotation.load(Relaxed)
            && self.breaker.state() == CircuitState::Closed
            && self.replay() > 0
    }

    /// A poll's answer: its replay position, how far the primary is ahead
    /// (`primary`, 0 if unknown), and for how long (`lag`). Leaves or
    /// rejoins the rotation with hysteresis.
    pub(crate) fn observe(&self, replay: u64, primary: u64, lag: Duration, max_lag: Duration) {
        self.c.polls.fetch_add(1, Relaxed);
        self.breaker.on_success();
        self.replay.store(replay, Relaxed);
        self.lag_bytes
            .store(primary.saturating_sub(replay), Relaxed);
        self.lag_ms.store(lag.as_millis() as u64, Relaxed);
        let was_in = self.in_rotation.load(Relaxed);
        if was_in && lag > max_lag {
            self.in_rotation.store(false, Relaxed);
            self.c.left_rotation.fetch_add(1, Relaxed);
            tracing::warn!(replica = %self.name, lag_ms = lag.as_millis() as u64, "replica behind: out of rotation");
        } else if !was_in && lag < max_lag / 2 {
            self.in_rotation.store(true, Relaxed);
            tracing::info!(replica = %self.name, "replica caught up: back in rotation");
        }
        self.updated.notify_waiters();
    }

    /// It could not be reached: its position is forgotten (a replica that
    /// comes back may have restarted from an earlier point) until a poll
    /// reads it again.
    pub(crate) fn lost(&self) {
        self.replay.store(0, Relaxed);
        self.lost_signal.notify_waiters();
        if self.breaker.on_failure() {
            tracing::warn!(replica = %self.name, "replica unreachable: its reads go to the primary");
        }
        self.updated.notify_waiters();
    }

    fn status(&self) -> ReplicaStatus {
        ReplicaStatus {
            name: self.name.clone(),
            in_rotation: self.in_rotation.load(Relaxed),
            circuit: self.breaker.state(),
            replay_lsn: self.replay(),
            lag_bytes: self.lag_bytes.load(Relaxed),
            lag_ms: self.lag_ms.load(Relaxed),
            routed: self.c.routed.load(Relaxed),
            waited: self.c.waited.load(Relaxed),
            failed: self.c.failed.load(Relaxed),
            polls: self.c.polls.load(Relaxed),
            poll_failures: self.c.poll_failures.load(Relaxed),
            left_rotation: self.c.left_rotation.load(Relaxed),
        }
    }
}

/// The replicas, the floors and the primary's position: what the core
/// holds when `DB_REPLICA_URLS` is set.
pub(crate) struct Board {
    pub(crate) replicas: Vec<Arc<ReplicaState>>,
    pub(crate) floors: Floors,
    pub(crate) config: ReplicaConfig,
    /// There is a shared level: other instances' writes are not in
    /// `floors` but in Redis, and a read the shared level did not answer
    /// takes the primary's position as its floor.
    pub(crate) shared: bool,
    position: Arc<dyn Position>,
    /// The primary's position as last read (for the lag in bytes).
    primary: AtomicU64,
    /// A write's position could not be read: every read goes to the
    /// primary until a position read afterwards is folded into the floors.
    unknown: AtomicBool,
    pub(crate) c: BoardCounters,
    /// What routing added to a read: its floor, and the wait for a
    /// replica to reach it (not the connection's acquisition, which a read
    /// on the primary pays too).
    pub(crate) routing: LatencyRecorder,
}

/// Routing figures of the whole set.
#[derive(Default)]
pub(crate) struct BoardCounters {
    /// Reads that ran on the primary because no replica had replayed
    /// their floor within the wait.
    pub(crate) behind: AtomicU64,
    /// … because no replica was usable (out of rotation, down, unknown).
    pub(crate) unavailable: AtomicU64,
    /// … because the replica failed mid-query (run again on the primary).
    pub(crate) retried: AtomicU64,
    /// Floors recorded (invalidations) and their position reads that failed.
    pub(crate) floors_recorded: AtomicU64,
    /// Reads that took the primary's position as their floor (uncached,
    /// with a shared level).
    pub(crate) strict: AtomicU64,
    /// Reads that ran on the primary because the shared level did not
    /// answer their lookup (their floor unknown).
    pub(crate) unanswered: AtomicU64,
    pub(crate) position_failures: AtomicU64,
}

impl Board {
    pub(crate) fn new(
        replicas: Vec<Arc<ReplicaState>>,
        config: ReplicaConfig,
        shared: bool,
        position: Arc<dyn Position>,
    ) -> Self {
        Self {
            replicas,
            floors: Floors::new(),
            config,
            shared,
            position,
            primary: AtomicU64::new(0),
            unknown: AtomicBool::new(false),
            c: BoardCounters::default(),
            routing: LatencyRecorder::default(),
        }
    }

    /// The primary's position now (remembered for the lag figures; one
    /// read after an unknown write's position raises every floor to it).
    pub(crate) async fn primary_position(&self) -> Option<u64> {
        let was_unknown = self.unknown.load(Relaxed);
        let pos = self.position.now().await;
        match pos {
            Some(p) => {
                self.primary.fetch_max(p, Relaxed);
                if was_unknown {
                    self.floors.raise_all(p);
                    self.unknown.store(false, Relaxed);
                }
            }
            None => {
                self.c.position_failures.fetch_add(1, Relaxed);
            }
        }
        pos
    }

    /// The primary's position as last read (0: never).
    pub(crate) fn last_primary(&self) -> u64 {
        self.primary.load(Relaxed)
    }

    /// An invalidation of `kind`/`name`: its write committed before now,
    /// or at `at` (the change stream's commit end). Called before the
    /// cached entries are dropped, so no reader misses them without it.
    /// Returns the floor, for the shared level to write with the
    /// invalidation (`None`: not known).
    pub(crate) async fn record(&self, kind: Kind, name: &str, at: Option<u64>) -> Option<u64> {
        let lsn = match at {
            Some(lsn) => Some(lsn),
            None => self.primary_position().await,
        };
        self.c.floors_recorded.fetch_add(1, Relaxed);
        match lsn {
            Some(lsn) => self.floors.raise(kind, name, lsn),
            // Not known: no replica read until a later position is.
            None => self.unknown.store(true, Relaxed),
        }
        lsn
    }

    /// The position a read of `key` with `tags` must run at or past;
    /// `None` (counted): only the primary will do, at once. `shared`: what
    /// the shared level said of their floors in this read's lookup.
    pub(crate) async fn floor(
        &self,
        key: &str,
        tags: &[Arc<str>],
        shared: SharedFloor,
    ) -> Option<u64> {
        let local = self.floors.of(key, tags);
        if self.unknown.load(Relaxed) {
            self.c.unavailable.fetch_add(1, Relaxed);
            return None;
        }
        match shared {
            SharedFloor::Floor(floor) => Some(local.max(floor)),
            // Redis is slow or away: other instances' floors are unknown,
            // and asking the primary would add a round trip to a read
            // already late. The primary answers.
            SharedFloor::Unanswered if self.shared => {
                self.c.unanswered.fetch_add(1, Relaxed);
                None
            }
            // Not cached, so not looked up: every write acknowledged
            // before this read is below the primary's position.
            SharedFloor::NotAsked | SharedFloor::Unanswered if self.shared => {
                self.c.strict.fetch_add(1, Relaxed);
                match self.primary_position().await {
                    Some(p) => Some(p.max(local)),
                    None => {
                        self.c.unavailable.fetch_add(1, Relaxed);
                        None
                    }
                }
            }
            SharedFloor::NotAsked | SharedFloor::Unanswered => Some(local),
        }
    }

    pub(crate) fn status(&self) -> ReplicasStatus {
        ReplicasStatus {
            shared_floors: self.shared,
            strict_reads: self.c.strict.load(Relaxed),
            primary_lsn: self.last_primary(),
            floors: self.floors.len() as u64,
            fallbacks_behind: self.c.behind.load(Relaxed),
            fallbacks_unavailable: self.c.unavailable.load(Relaxed),
            fallbacks_unanswered: self.c.unanswered.load(Relaxed),
            retried_on_primary: self.c.retried.load(Relaxed),
            floors_recorded: self.c.floors_recorded.load(Relaxed),
            position_failures: self.c.position_failures.load(Relaxed),
            routing_ms: self.routing.read().percentiles,
            replicas: self.replicas.iter().map(|r| r.status()).collect(),
        }
    }
}

/// The replicas' figures in [`Status::replicas`](crate::Status::replicas).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct ReplicasStatus {
    /// Floors travel through the shared level (other instances' writes
    /// count too).
    pub shared_floors: bool,
    /// Uncached reads (with a shared level, not looked up there), which
    /// took the primary's position as their floor (one round trip, shared
    /// by the reads asking at once).
    pub strict_reads: u64,
    /// The primary's WAL insert position as last read.
    pub primary_lsn: u64,
    /// Keys and tags whose floors are kept apart now.
    pub floors: u64,
    /// Reads that ran on the primary: no replica replayed their floor in time.
    pub fallbacks_behind: u64,
    /// … no replica was usable (or a write's position is unknown).
    pub fallbacks_unavailable: u64,
    /// … the shared level did not answer their lookup in time (Redis
    /// slow or away), so other instances' floors were unknown.
    pub fallbacks_unanswered: u64,
    /// Reads whose replica failed mid-query, run again on the primary.
    pub retried_on_primary: u64,
    /// Floors recorded by invalidations.
    pub floors_recorded: u64,
    /// Reads of the primary's position that failed.
    pub position_failures: u64,
    /// What routing added to each read offered to the replicas (its
    /// floor, and the wait for a replica to reach it), in ms.
    pub routing_ms: Percentiles,
    /// Each replica, in `DB_REPLICA_URLS` order.
    pub replicas: Vec<ReplicaStatus>,
}

/// One replica's figures.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct ReplicaStatus {
    /// Its URL, password hidden.
    pub name: String,
    /// In the rotation (not too far behind).
    pub in_rotation: bool,
    /// Its own circuit breaker.
    pub circuit: CircuitState,
    /// Its replay position as last polled (0: unknown).
    pub replay_lsn: u64,
    /// Bytes of WAL it has yet to replay, against the primary's last position.
    pub lag_bytes: u64,
    /// How far behind it is in time (0 when it has replayed everything).
    pub lag_ms: u64,
    /// Reads that ran there.
    pub routed: u64,
    /// Reads that waited for it to catch up first.
    pub waited: u64,
    /// Reads that lost their connection there.
    pub failed: u64,
    /// Polls of its position, and those that failed.
    pub polls: u64,
    /// Polls that failed.
    pub poll_failures: u64,
    /// Times it left the rotation for being too far behind.
    pub left_rotation: u64,
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicI64;

    use super::*;

    /// The primary's position as the test sets it (negative: unreadable).
    struct Fixed(AtomicI64);

    impl Position for Fixed {
        fn now(&self) -> BoxFuture<'_, Option<u64>> {
            let v = self.0.load(Relaxed);
            Box::pin(async move { u64::try_from(v).ok() })
        }
    }

    fn board(shared: bool, position: i64) -> (Board, Arc<Fixed>) {
        let p = Arc::new(Fixed(AtomicI64::new(position)));
        (
            Board::new(Vec::new(), ReplicaConfig::default(), shared, p.clone()),
            p,
        )
    }

    #[tokio::test]
    async fn a_write_raises_its_names_floor_to_the_primarys_position_after_it() {
        let (b, p) = board(false, 100);
        assert_eq!(b.record(Kind::Tag, "user:1", None).await, Some(100));
        p.0.store(250, Relaxed);
        assert_eq!(
            b.record(Kind::Key, "agg:2", Some(180)).await,
            Some(180),
            "the stream's own"
        );
        let tags: Vec<Arc<str>> = vec!["user:1".into()];
        assert_eq!(
            b.floor("agg:1", &tags, SharedFloor::NotAsked).await,
            Some(100)
        );
        assert_eq!(
            b.floor("agg:2", &[], SharedFloor::NotAsked).await,
            Some(180)
        );
        assert_eq!(b.floor("agg:3", &[], SharedFloor::NotAsked).await, Some(0));
    }

    #[tokio::test]
    async fn with_a_shared_level_the_floor_comes_from_redis_or_the_read_goes_to_the_primary() {
        let (b, _) = board(true, 900);
        b.record(Kind::Tag, "user:1", Some(300)).await;
        let tags: Vec<Arc<str>> = vec!["user:1".into()];
        assert_eq!(
            b.floor("k", &tags, SharedFloor::Floor(500)).await,
            Some(500)
        );
        assert_eq!(b.floor("k", &tags, SharedFloor::Floor(10)).await, Some(300));
        assert_eq!(b.floor("k", &tags, SharedFloor::Unanswered).await, None);
        assert_eq!(b.c.unanswered.load(Relaxed), 1);
        assert_eq!(
            b.floor("k", &tags, SharedFloor::NotAsked).await,
            Some(900),
            "an uncached read: the primary's position"
        );
        assert_eq!(b.c.strict.load(Relaxed), 1);
    }

    #[tokio::test]
    async fn a_write_whose_position_is_unknown_sends_reads_to_the_primary_until_one_is_read() {
        let (b, p) = board(false, -1);
        assert_eq!(b.record(Kind::Tag, "user:1", None).await, None);
        assert_eq!(b.floor("k", &[], SharedFloor::NotAsked).await, None);
        p.0.store(700, Relaxed);
        assert_eq!(
            b.floor("k", &[], SharedFloor::NotAsked).await,
            None,
            "not read yet"
        );
        assert_eq!(b.primary_position().await, Some(700));
        assert_eq!(
            b.floor("k", &[], SharedFloor::NotAsked).await,
            Some(700),
            "every name at least the position read after it"
        );
    }
}
