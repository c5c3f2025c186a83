//! [`Replicas`]: a connection on a replica that has replayed a read's
//! floor, or why the read goes to the primary ([`Fallback`]).

use std::{
    pin::pin,
    sync::{
        atomic::{AtomicUsize, Ordering::Relaxed},
        Arc,
    },
    time::Duration,
};

use sqlx::{pool::PoolConnection, Database, Pool};
use tokio::time::{timeout_at, Instant};

use super::board::Board;

/// The longest a read waits for a replica connection to open before it
/// goes on without (a local connect takes milliseconds).
const OPEN_AT_MOST: Duration = Duration::from_millis(500);

/// The replicas' pools, in `DB_REPLICA_URLS` order, and what is known of them.
pub(crate) struct Replicas<DB: Database> {
    pools: Vec<Pool<DB>>,
    pub(crate) board: Arc<Board>,
    next: AtomicUsize,
}

/// Why a read runs on the primary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fallback {
    /// No usable replica replayed its floor within the wait.
    Behind,
    /// No replica usable (out of rotation, unreachable, position unknown).
    Unavailable,
}

impl<DB: Database> Replicas<DB> {
    pub(crate) fn new(pools: Vec<Pool<DB>>, board: Arc<Board>) -> Self {
        Self {
            pools,
            board,
            next: AtomicUsize::new(0),
        }
    }

    pub(crate) fn pools(&self) -> &[Pool<DB>] {
        &self.pools
    }

    /// A connection on a usable replica whose replay position is at or past
    /// `floor`, round robin; waiting for one to catch up until
    /// `DB_REPLICA_WAIT` from now (or `deadline`). Counted either way.
    /// `spent`: what computing the floor took, added to the routing time
    /// recorded.
    pub(crate) async fn connection(
        &self,
        floor: u64,
        spent: Duration,
        deadline: Instant,
    ) -> Result<(usize, PoolConnection<DB>), Fallback> {
        let board = &self.board;
        let started = Instant::now();
        // Once per read: the decision, not a connection's acquisition.
        let mut decided = false;
        let mut routed = || {
            if !std::mem::replace(&mut decided, true) {
                board.routing.record(spent + started.elapsed());
            }
        };
        let until = (started + board.config.wait).min(deadline);
        let n = self.pools.len();
        let start = self.next.fetch_add(1, Relaxed);
        let mut waited = false;
        loop {
            // Listening before looking, so no poll in between is missed.
            let mut notified: Vec<_> = board
                .replicas
                .iter()
                .map(|r| Box::pin(r.updated.notified()))
                .collect();
            for f in &mut notified {
                f.as_mut().enable();
            }
            let mut usable = false;
            for i in (0..n).map(|i| (start + i) % n) {
                let replica = &board.replicas[i];
                if !replica.usable() {
                    continue;
                }
                usable = true;
                if replica.replay() < floor {
                    continue;
                }
                routed();
                match self.take(i, deadline).await {
                    Some(conn) => {
                        replica.c.routed.fetch_add(1, Relaxed);
                        if waited {
                            replica.c.waited.fetch_add(1, Relaxed);
                        }
                        return Ok((i, conn));
                    }
                    None => continue,
                }
            }
            if !usable {
                routed();
                board.c.unavailable.fetch_add(1, Relaxed);
                return Err(Fallback::Unavailable);
            }
            if Instant::now() >= until {
                routed();
                board.c.behind.fetch_add(1, Relaxed);
                return Err(Fallback::Behind);
            }
            waited = true;
            for r in &board.replicas {
                r.poke.notify_one();
            }
            let any = futures::future::select_all(notified);
            let _ = timeout_at(until, pin!(any)).await;
        }
    }

    /// A connection of replica `i`'s pool: an idle one, else one opened
    /// now (for at most [`OPEN_AT_MOST`], and within `deadline`); `None`
    /// (and the replica marked lost when the open says it is unreachable)
    /// if that fails: the read goes on elsewhere rather than wait for a
    /// replica that is slow to accept.
    async fn take(&self, i: usize, deadline: Instant) -> Option<PoolConnection<DB>> {
        let pool = &self.pools[i];
        if let Some(conn) = pool.try_acquire() {
            return Some(conn);
        }
        let until = deadline.min(Instant::now() + OPEN_AT_MOST);
        match timeout_at(until, crate::manager::open_connection(pool)).await {
            Ok(Ok(conn)) => Some(conn),
            Ok(Err(e)) => {
                if crate::error::is_unreachable(&e) {
                    self.board.replicas[i].lost();
                }
                tracing::debug!(replica = %self.board.replicas[i].name, error = %e, "no connection on the replica");
                None
            }
            Err(_) => None,
        }
    }
}
