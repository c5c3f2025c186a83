//! Admission and a connection: the gate's slot, then a connection from
//! sqlx's pool, then the caller's closure on it under the deadline.
//!
//! Invariants:
//! - A connection is taken only with a slot of the gate held, and goes back
//!   to the pool before the slot is handed on.
//! - Every wait ends at the caller's deadline, with the phase it was in
//!   (queued, acquire, execute).
//! - At most `max_concurrent_opens` connections are being opened at once;
//!   an open whose caller has gone finishes in its own task and its
//!   connection lands idle in the pool (sqlx #3132).
//! - A failure to connect, or a connection lost mid-query, counts against
//!   the circuit breaker only if it says the database is unreachable
//!   (`is_unreachable`: refused, reset, DNS, TLS, authentication); a slow
//!   open, pool contention, a server at its connection limit or a query's
//!   own error (bad SQL, a constraint) never does.
//! - The closure runs inside the transaction the manager's statement
//!   deadline asks for, if any; the time it is told is what is left once
//!   the connection is held.

use std::{sync::Arc, time::Duration};

use sqlx::{pool::PoolConnection, Database};
use tokio::{
    task::JoinHandle,
    time::{sleep, timeout_at, Instant},
};

use super::{
    open::open_connection,
    timeout_error,
    writer::{Held, TakeError},
    Manager,
};
use crate::{
    admission::Permit,
    deadline::run_with_deadline,
    error::{
        is_connection_error, is_connection_limit_error, is_query_cancelled, is_unreachable, Error,
        TimeoutPhase,
    },
    io_runtime,
    metrics::inc,
    options::Priority,
    query::QueryFn,
    replica::ReplicaState,
};

impl<DB: Database> Manager<DB> {
    /// Waits for admission, then runs `query` on a connection (the writer
    /// connection if it `writes` and the manager has one; a replica's that
    /// has replayed `floor`, if given and there is one in time: the floor,
    /// and what computing it took).
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn admit_and_run<T: Send + 'static, F: QueryFn<DB, T> + 'static>(
        &self,
        key: &Arc<str>,
        priority: Priority,
        writes: bool,
        floor: Option<(u64, Duration)>,
        started: Instant,
        deadline: Instant,
        query: F,
    ) -> Result<T, Error> {
        let queued_at = Instant::now();
        let lane = match (writes && self.db.writer.is_some(), floor) {
            (true, _) => Lane::Writer,
            (false, Some((floor, spent))) if self.db.replicas.is_some() => {
                Lane::Replica { floor, spent }
            }
            (false, _) => Lane::Pool,
        };
        let permit = match lane {
            // The writer connection is outside the pool: its own lock is
            // its gate (one write at a time), and a write waiting for it
            // holds no slot a reader could use.
            Lane::Writer => None,
            Lane::Pool | Lane::Replica { .. } => Some(
                timeout_at(deadline, self.core().gate.acquire(priority))
                    .await
                    .map_err(|_| timeout_error(key, TimeoutPhase::Queued, started))?,
            ),
        };
        let (this, key) = (self.clone(), key.clone());
        io_runtime::run(self.core().config.pool.io_threads, async move {
            this.run_admitted(permit, lane, &key, queued_at, started, deadline, query)
                .await
        })
        .await
    }

    /// Fails at once while the circuit is open (for the batch loader, which
    /// checks before it queues its keys).
    pub(crate) fn check_circuit(&self) -> Result<(), Error> {
        self.core().breaker.admit()
    }

    /// Waits in the gate's queue for a slot at `priority`, without a
    /// deadline (for the batch loader, which races it against its window).
    pub(crate) async fn wait_for_slot(&self, priority: Priority) -> Permit {
        self.core().gate.acquire(priority).await
    }

    /// Runs one keyed batch of `keys` keys with its slot already held, and
    /// counts it (for the batch loader). The wait is measured from `started`.
    pub(crate) async fn run_batch<T: Send + 'static, F: QueryFn<DB, T> + 'static>(
        &self,
        permit: Permit,
        name: &Arc<str>,
        keys: usize,
        started: Instant,
        deadline: Instant,
        query: F,
    ) -> Result<T, Error> {
        let c = &self.core().metrics.c;
        inc(&c.batches);
        c.batched_keys
            .fetch_add(keys as u64, std::sync::atomic::Ordering::Relaxed);
        let (this, name) = (self.clone(), name.clone());
        io_runtime::run(self.core().config.pool.io_threads, async move {
            this.run_admitted(
                Some(permit),
                Lane::Pool,
                &name,
                started,
                started,
                deadline,
                query,
            )
            .await
        })
        .await
    }

    /// Runs `query` with an admission permit already held (none on the
    /// writer lane, which the writer's lock admits).
    #[allow(clippy::too_many_arguments)]
    async fn run_admitted<T, F: QueryFn<DB, T>>(
        &self,
        permit: Option<Permit>,
        lane: Lane,
        key: &Arc<str>,
        queued_at: Instant,
        started: Instant,
        deadline: Instant,
        query: F,
    ) -> Result<T, Error> {
        let core = self.core();
        let mut conn = match self.take_connection(lane, key, started, deadline).await {
            Ok(conn) => conn,
            Err(e) => {
                // Waiting for the writer says nothing about the pool's size.
                if matches!(e, Error::Timeout { .. }) && !matches!(lane, Lane::Writer) {
                    core.tuning.overloaded();
                }
                return Err(e);
            }
        };
        if !matches!(lane, Lane::Writer) {
            core.metrics.record_wait(queued_at.elapsed());
        }
        let _held = core.leaks.hold(key);
        let on_replica = conn.replica();
        inc(&core.metrics.c.db_queries);
        let began = Instant::now();
        let left = deadline.saturating_duration_since(began);
        let framed = run_with_deadline::<DB, T, F>(
            conn.conn(),
            self.db.deadline.as_deref(),
            self.db.session.as_deref(),
            left,
            query,
        );
        // A replica that stops answering is found out by its poller (within
        // its poll timeout), which cuts the reads in flight there: they
        // end as the replica's failure, and run again on the primary.
        let cut = async {
            match &on_replica {
                Some(state) => state.lost_signal.notified().await,
                None => std::future::pending().await,
            }
        };
        let ran = tokio::select! {
            r = timeout_at(deadline, framed) => r,
            () = cut => Ok(Err(sqlx::Error::Io(std::io::Error::new(
                std::io::ErrorKind::ConnectionAborted,
                "the replica stopped answering",
            )))),
        };
        let result = match ran {
            // On drop, sqlx pings the connection before reusing it, which
            // drains the interrupted query; the connection's slot in sqlx's
            // pool stays taken until then, so the database never sees more
            // than the pool's bound.
            Err(_) => Err(timeout_error(key, TimeoutPhase::Execute, started)),
            // The server enforced the same deadline a moment before our timer.
            Ok(Err(e)) if is_query_cancelled(&e) && Instant::now() >= deadline => {
                Err(timeout_error(key, TimeoutPhase::Execute, started))
            }
            // A replica's failure is the replica's: its own breaker, and
            // the caller may run the read again on the primary. So is a
            // query the replica cancelled because replaying the primary's
            // WAL conflicted with it (SQLSTATE 40001 on a standby).
            Ok(Err(e))
                if on_replica.is_some()
                    && (is_connection_error(&e) || is_recovery_conflict(&e)) =>
            {
                let state = on_replica.as_ref().expect("a replica connection");
                if is_unreachable(&e) {
                    state.lost();
                }
                state
                    .c
                    .failed
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if is_connection_error(&e) {
                    conn.discard();
                }
                Err(Error::Replica {
                    key: key.clone(),
                    replica: state.name.clone(),
                    source: Arc::new(e),
                })
            }
            Ok(Err(e)) => {
                if is_connection_error(&e) {
                    if is_unreachable(&e) {
                        self.core().connection_failed();
                    }
                    conn.discard();
                } else if on_replica.is_none() {
                    core.breaker.on_success();
                }
                Err(Error::Query {
                    key: key.clone(),
                    source: Arc::new(e),
                })
            }
            Ok(Ok(v)) => {
                if on_replica.is_none() {
                    core.breaker.on_success();
                }
                Ok(v)
            }
        };
        // What the primary's answers say about it: the time a query took
        // (one cut short by its deadline took at least that); a query's own
        // error says nothing about the database's load.
        match &result {
            Ok(_) | Err(Error::Timeout { .. }) if on_replica.is_none() => {
                core.tuning.served(began.elapsed())
            }
            _ => {}
        }
        // The connection goes back before the slot is handed on.
        drop(conn);
        drop(permit);
        result
    }

    /// The connection an admitted caller runs on: the writer, checked, for
    /// a write when the manager has one; else one of the pool's.
    async fn take_connection(
        &self,
        lane: Lane,
        key: &Arc<str>,
        started: Instant,
        deadline: Instant,
    ) -> Result<Conn<DB>, Error> {
        let writer = match (lane, &self.db.writer, &self.db.replicas) {
            (Lane::Writer, Some(writer), _) => writer,
            (Lane::Replica { floor, spent }, _, Some(replicas)) => {
                if let Ok((i, conn)) = replicas.connection(floor, spent, deadline).await {
                    return Ok(Conn::Replica(replicas.board.replicas[i].clone(), conn));
                }
                return self
                    .acquire_connection(key, started, deadline)
                    .await
                    .map(Conn::Pooled);
            }
            _ => {
                return self
                    .acquire_connection(key, started, deadline)
                    .await
                    .map(Conn::Pooled)
            }
        };
        match timeout_at(deadline, writer.take(&self.control)).await {
            Err(_) => Err(timeout_error(key, TimeoutPhase::Acquire, started)),
            Ok(Ok(held)) => Ok(Conn::Writer(held)),
            Ok(Err(TakeError::Open(e))) => Err(self.open_failed(key, started, e)),
            Ok(Err(TakeError::Check(e))) => Err(Error::Query {
                key: key.clone(),
                source: Arc::new(e),
            }),
        }
    }

    /// Gets a connection from sqlx for an admitted caller.
    ///
    /// HikariCP's lesson: when opening a connection costs far more than a
    /// query, a caller is better served by the next connection another caller
    /// returns than by waiting for its own new one. So at most
    /// `max_concurrent_opens` connections are being opened at a time, and an
    /// admitted caller takes whichever comes first: an idle connection (polled
    /// every millisecond while none is free) or the one it started opening.
    /// An open that loses the race still completes in its own task and its
    /// connection lands idle in the pool, never thrown away half-open
    /// (sqlx #3132).
    async fn acquire_connection(
        &self,
        key: &Arc<str>,
        started: Instant,
        deadline: Instant,
    ) -> Result<PoolConnection<DB>, Error> {
        let db = &self.db;
        let mut opening: Option<JoinHandle<Result<PoolConnection<DB>, sqlx::Error>>> = None;
        loop {
            if let Some(conn) = db.pool.try_acquire() {
                return Ok(conn);
            }
            if opening.is_none() {
                if let Ok(open_permit) = db.opens.clone().try_acquire_owned() {
                    let pool = db.pool.clone();
                    opening = Some(tokio::spawn(async move {
                        let _open_permit = open_permit;
                        open_connection(&pool).await
                    }));
                }
            }
            let poll = sleep(Duration::from_millis(1));
            let opened = match opening.as_mut() {
                Some(handle) => tokio::select! {
                    r = handle => Some(r),
                    _ = poll => None,
                    _ = tokio::time::sleep_until(deadline) => {
                        return Err(timeout_error(key, TimeoutPhase::Acquire, started));
                    }
                },
                None => tokio::select! {
                    _ = poll => None,
                    _ = tokio::time::sleep_until(deadline) => {
                        return Err(timeout_error(key, TimeoutPhase::Acquire, started));
                    }
                },
            };
            match opened {
                None => continue,
                Some(Ok(Ok(conn))) => return Ok(conn),
                Some(Err(join)) => {
                    return Err(Error::Connect {
                        key: key.clone(),
                        source: Arc::new(sqlx::Error::Io(std::io::Error::other(join.to_string()))),
                    })
                }
                Some(Ok(Err(e))) => return Err(self.open_failed(key, started, e)),
            }
        }
    }

    /// Records a failed open (a refusal for being full, a breaker failure
    /// if it says the database is unreachable) and says it as the caller's
    /// error.
    fn open_failed(&self, key: &Arc<str>, started: Instant, e: sqlx::Error) -> Error {
        if is_connection_limit_error(&e) {
            self.core().metrics.limit_refused();
            self.core().tuning.overloaded();
            tracing::error!(error = %e, "the database refused a connection: it is at its connection limit");
        } else if matches!(e, sqlx::Error::PoolTimedOut) {
            self.core().tuning.overloaded();
        }
        if is_unreachable(&e) {
            self.core().connection_failed();
        }
        match e {
            sqlx::Error::PoolTimedOut => timeout_error(key, TimeoutPhase::Acquire, started),
            sqlx::Error::PoolClosed => Error::Closed,
            e => Error::Connect {
                key: key.clone(),
                source: Arc::new(e),
            },
        }
    }
}

/// Which connections a query runs on.
#[derive(Clone, Copy)]
enum Lane {
    /// The pool's, admitted by the gate.
    Pool,
    /// The writer's (a write, when the manager has a writer).
    Writer,
    /// A replica's that has replayed `floor`, admitted by the gate; the
    /// pool's if none has in time. `spent`: computing the floor took that.
    Replica { floor: u64, spent: Duration },
}

/// A connection held for one query.
enum Conn<DB: Database> {
    Pooled(PoolConnection<DB>),
    Writer(Held<DB>),
    Replica(Arc<ReplicaState>, PoolConnection<DB>),
}

impl<DB: Database> Conn<DB> {
    fn conn(&mut self) -> &mut DB::Connection {
        match self {
            Conn::Pooled(c) | Conn::Replica(_, c) => c,
            Conn::Writer(h) => h.conn(),
        }
    }

    /// The replica it is on, if it is.
    fn replica(&self) -> Option<Arc<ReplicaState>> {
        match self {
            Conn::Replica(state, _) => Some(state.clone()),
            _ => None,
        }
    }

    /// Not to be used again: the query broke it.
    fn discard(&mut self) {
        match self {
            Conn::Pooled(c) | Conn::Replica(_, c) => c.close_on_drop(),
            Conn::Writer(h) => h.discard(),
        }
    }
}

/// A standby cancelled the query: replaying the primary's WAL conflicted
/// with it (a row version it needed was removed, a lock it held was
/// wanted). Only a replica's queries see it; the primary would not.
fn is_recovery_conflict(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.code().as_deref() == Some("40001"))
}
