//! PostgreSQL's side of reading from replicas (`crate::replica` is the
//! design): a pool per `DB_REPLICA_URLS` entry, a poller per replica
//! reading its replay position on a connection of its own, and the
//! primary's WAL position ([`PgPosition`]).

use std::{
    sync::{Arc, Weak},
    time::Duration,
};

use futures::future::BoxFuture;
use parking_lot::Mutex;
use sqlx::{
    postgres::{PgConnectOptions, PgPoolOptions},
    ConnectOptions, Connection, PgConnection, Postgres,
};
use tokio::{task::JoinHandle, time::Instant};

use super::{PgTarget, PgUrlError};
use crate::{
    config::ManagerConfig,
    replica::{Board, Position, ReplicaState, Replicas},
};

/// How often the primary's position is read for the lag figures (and to
/// lift the "position unknown" state).
const PRIMARY_POLL: Duration = Duration::from_millis(100);

/// The shortest time between two polls of one replica, however many reads
/// ask for one.
const MIN_POLL_GAP: Duration = Duration::from_millis(1);

/// Longest one position read may take before it counts as failed.
const POSITION_TIMEOUT: Duration = Duration::from_secs(2);

/// `pg_lsn` as a number (bytes since the start of the WAL).
const PRIMARY_SQL: &str = "SELECT (pg_current_wal_insert_lsn() - '0/0'::pg_lsn)::int8";

/// A replica's replay position, whether it still replays (a promoted one
/// does not, and is no replica of ours any more), and the age of the last
/// transaction it replayed.
const REPLICA_SQL: &str = "SELECT COALESCE((pg_last_wal_replay_lsn() - '0/0'::pg_lsn)::int8, 0), \
     pg_is_in_recovery(), \
     COALESCE((EXTRACT(EPOCH FROM (clock_timestamp() - pg_last_xact_replay_timestamp())) * 1000)::int8, 0)";

/// The replicas' pools and their pollers (stopped with the manager).
type Started = (Replicas<Postgres>, Vec<JoinHandle<()>>);

/// The replicas of `primary` that `config` names, their pollers started
/// (`None` without any). Each URL must be in the primary's mode (direct or
/// behind a pooler): the manager's statement deadline is one for all.
pub(crate) fn start(
    primary: &PgTarget,
    config: &ManagerConfig,
) -> Result<Option<Started>, PgUrlError> {
    let rc = &config.replica;
    if rc.urls.is_empty() {
        return Ok(None);
    }
    let mut targets = Vec::with_capacity(rc.urls.len());
    for url in &rc.urls {
        let t = PgTarget::from_url(url, config)?;
        if t.behind_pooler() != primary.behind_pooler() {
            return Err(PgUrlError::Parameter {
                url: t.redacted_url().to_string(),
                reason: "a replica must be reached like the primary (both direct, or both \
                         through a pooler with ?pgbouncer=true)"
                    .into(),
            });
        }
        targets.push(t);
    }
    let states: Vec<Arc<ReplicaState>> = targets
        .iter()
        .map(|t| {
            Arc::new(ReplicaState::new(
                t.redacted_url().to_string(),
                &config.health,
            ))
        })
        .collect();
    let position = Arc::new(PgPosition::new(primary.options().clone()));
    let shared = config.shared.url.is_some();
    let board = Arc::new(Board::new(states.clone(), rc.clone(), shared, position));
    let p = &config.pool;
    let pools = targets
        .iter()
        .map(|t| {
            PgPoolOptions::new()
                .min_connections(0)
                .max_connections(p.ceiling())
                .idle_timeout(Some(p.idle_timeout))
                .acquire_timeout(p.acquire_timeout)
                .max_lifetime(p.max_lifetime)
                .test_before_acquire(false)
                .connect_lazy_with(t.options().clone())
        })
        .collect();
    let mut tasks: Vec<JoinHandle<()>> = states
        .iter()
        .zip(&targets)
        .map(|(state, t)| {
            tokio::spawn(poll_replica(
                state.clone(),
                Arc::downgrade(&board),
                t.options().clone(),
                config.health.cooldown,
            ))
        })
        .collect();
    tasks.push(tokio::spawn(poll_primary(Arc::downgrade(&board))));
    tracing::info!(
        replicas = targets.len(),
        shared,
        "reads may go to replicas that have replayed what they must see"
    );
    Ok(Some((Replicas::new(pools, board), tasks)))
}

/// Reads the primary's position every [`PRIMARY_POLL`] while the board lives.
async fn poll_primary(board: Weak<Board>) {
    loop {
        let Some(b) = board.upgrade() else { return };
        b.primary_position().await;
        drop(b);
        tokio::time::sleep(PRIMARY_POLL).await;
    }
}

/// Reads one replica's position every `DB_REPLICA_POLL`, or at once when
/// a read waits for it; reconnects after `cooldown` when it fails.
async fn poll_replica(
    state: Arc<ReplicaState>,
    board: Weak<Board>,
    options: PgConnectOptions,
    cooldown: Duration,
) {
    let options = options.application_name("hpdb-replica-poll");
    let mut conn: Option<PgConnection> = None;
    loop {
        let Some(b) = board.upgrade() else { return };
        let (poll, max_lag) = (b.config.poll, b.config.max_lag);
        if conn.is_none() {
            match tokio::time::timeout(POSITION_TIMEOUT, options.connect()).await {
                Ok(Ok(c)) => conn = Some(c),
                _ => {
                    state
                        .c
                        .poll_failures
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    state.lost();
                    drop(b);
                    tokio::time::sleep(cooldown).await;
                    continue;
                }
            }
        }
        let Some(c) = conn.as_mut() else { continue };
        let read = tokio::time::timeout(
            POSITION_TIMEOUT,
            sqlx::query_as::<_, (i64, bool, i64)>(REPLICA_SQL).fetch_one(c),
        )
        .await;
        match read {
            Ok(Ok((replay, true, age_ms))) => {
                let replay = replay.max(0) as u64;
                let primary = b.last_primary();
                let lag = if replay >= primary {
                    Duration::ZERO
                } else {
                    Duration::from_millis(age_ms.max(0) as u64)
                };
                state.observe(replay, primary, lag, max_lag);
            }
            Ok(Ok((_, false, _))) => {
                tracing::error!(replica = %state.name, "not in recovery (promoted?): no reads go there");
                state.lost();
            }
            _ => {
                state
                    .c
                    .poll_failures
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                state.lost();
                conn = None;
                drop(b);
                tokio::time::sleep(cooldown).await;
                continue;
            }
        }
        drop(b);
        let polled = Instant::now();
        tokio::select! {
            _ = tokio::time::sleep(poll) => {}
            _ = state.poke.notified() => {
                // Reads waiting together are answered by one poll.
                tokio::time::sleep_until(polled + MIN_POLL_GAP).await;
            }
        }
    }
}

/// The primary's WAL insert position, on a connection of its own: a read
/// that started after a caller asked answers every caller waiting, so
/// invalidations and reads arriving together cost one round trip.
pub(crate) struct PgPosition {
    options: PgConnectOptions,
    conn: tokio::sync::Mutex<Option<PgConnection>>,
    /// When the last read was sent, and what it said.
    last: Mutex<Option<(Instant, u64)>>,
}

impl PgPosition {
    fn new(options: PgConnectOptions) -> Self {
        Self {
            options: options.application_name("hpdb-position"),
            conn: tokio::sync::Mutex::new(None),
            last: Mutex::new(None),
        }
    }

    async fn read(&self) -> Option<u64> {
        let asked = Instant::now();
        let mut conn = self.conn.lock().await;
        if let Some((sent, lsn)) = *self.last.lock() {
            // Sent after this caller asked: it covers every write
            // acknowledged before.
            if sent > asked {
                return Some(lsn);
            }
        }
        if conn.is_none() {
            let opened = tokio::time::timeout(POSITION_TIMEOUT, self.options.connect()).await;
            *conn = opened.ok().and_then(Result::ok);
        }
        let c = conn.as_mut()?;
        let sent = Instant::now();
        let read = tokio::time::timeout(
            POSITION_TIMEOUT,
            sqlx::query_scalar::<_, i64>(PRIMARY_SQL).fetch_one(c),
        )
        .await;
        match read {
            Ok(Ok(lsn)) => {
                let lsn = lsn.max(0) as u64;
                *self.last.lock() = Some((sent, lsn));
                Some(lsn)
            }
            _ => {
                if let Some(c) = conn.take() {
                    tokio::spawn(async move {
                        let _ = c.close().await;
                    });
                }
                None
            }
        }
    }
}

impl Position for PgPosition {
    fn now(&self) -> BoxFuture<'_, Option<u64>> {
        Box::pin(self.read())
    }
}
