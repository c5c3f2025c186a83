//! Health, the pool's side: checks that replace broken connections, refill
//! the pool to its minimum and tell the circuit breaker whether the
//! database answers ([`PoolOps`], which the backend-free core calls; its
//! loop is in `control::tasks`), and the minimum opened at start.
//!
//! Invariant: a check takes connections only through the gate
//! (`try_acquire`, never waiting), so it never holds a slot a query is
//! queued for, nor exceeds `max_connections`.

use std::{sync::Arc, time::Duration};

use futures::future::BoxFuture;
use sqlx::{pool::PoolConnection, Connection, Database};
use tokio::time::{timeout, Instant};

use super::{open::open_connection, DbPool, Manager};
use crate::{
    admission::Permit,
    breaker::CircuitState,
    control::{
        core::{Core, PoolOps},
        health::HealthReport,
    },
    io_runtime,
};

/// What a check says about the database, for the circuit breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reach {
    /// It answered.
    Yes,
    /// It cannot be reached (see `error::is_unreachable`).
    No,
    /// It did not answer in time, or is full: slow, not away.
    Unknown,
}

impl Reach {
    fn of(e: &sqlx::Error) -> Reach {
        if crate::error::is_unreachable(e) {
            Reach::No
        } else {
            Reach::Unknown
        }
    }
}

/// What pinging the idle connections found.
#[derive(Default)]
struct Pinged {
    checked: u32,
    broken: u32,
    healthy: u32,
}

impl<DB: Database> Manager<DB> {
    /// Opens connections up to the minimum, and the writer connection if
    /// there is a writer lane (its first check reads the version every
    /// later one is compared with).
    pub(super) async fn warm_up(&self) -> Result<(), sqlx::Error> {
        self.warm_up_pool().await?;
        if let Some(writer) = &self.db.writer {
            use super::writer::TakeError;
            writer
                .take(&self.control)
                .await
                .map_err(|(TakeError::Open(e) | TakeError::Check(e))| e)?;
        }
        Ok(())
    }

    async fn warm_up_pool(&self) -> Result<(), sqlx::Error> {
        let min = self.core().min_connections() as usize;
        if min == 0 {
            return Ok(());
        }
        // The first connection opens alone: it may initialise the database
        // (SQLite switches a new file to WAL under an exclusive lock, which
        // connections opening at the same moment fail on with "database is
        // locked"). The rest open together.
        // Opened on the I/O runtime, whose reactor their sockets then use.
        let pool = self.db.pool.clone();
        io_runtime::run(self.core().config.pool.io_threads, async move {
            let first = pool.acquire().await?;
            let rest = futures::future::try_join_all((1..min).map(|_| pool.acquire())).await?;
            drop((first, rest));
            Ok(())
        })
        .await
    }
}

/// The longest closing the replicas' pools may take.
const REPLICA_CLOSE_AT_MOST: Duration = Duration::from_secs(5);

impl<DB: Database> PoolOps for DbPool<DB> {
    fn size(&self) -> u32 {
        self.pool.size()
    }

    fn num_idle(&self) -> usize {
        self.pool.num_idle()
    }

    fn is_closed(&self) -> bool {
        self.pool.is_closed()
    }

    fn replicas(&self) -> Option<Arc<crate::replica::Board>> {
        self.replicas.as_ref().map(|r| r.board.clone())
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            if let Some(replicas) = &self.replicas {
                // A replica that stopped answering would hold the close
                // (sqlx waits for each connection's goodbye): bounded.
                let closes = futures::future::join_all(replicas.pools().iter().map(|p| p.close()));
                if timeout(REPLICA_CLOSE_AT_MOST, closes).await.is_err() {
                    tracing::warn!("a replica's connections did not close in time; left behind");
                }
            }
            self.pool.close().await;
            if let Some(writer) = &self.writer {
                writer.close().await;
            }
        })
    }

    fn health_check<'a>(&'a self, core: &'a Core) -> BoxFuture<'a, HealthReport> {
        Box::pin(self.check(core))
    }
}

impl<DB: Database> DbPool<DB> {
    /// Pings idle connections, closes broken ones, refills the pool to its
    /// minimum, and probes the database when the circuit is not closed.
    async fn check(&self, core: &Core) -> HealthReport {
        let started = Instant::now();
        // Holding every checked connection (with its slot) until the end
        // makes the next try_acquire return a different idle one.
        let mut held: Vec<(PoolConnection<DB>, Permit)> = Vec::new();
        let pinged = self.ping_idle(core, &mut held).await;
        let size_before = self.pool.size();
        let refilled = self.refill(core, &mut held).await;
        let opened = self.pool.size().saturating_sub(size_before);
        drop(held);

        let reach = if pinged.healthy > 0 || opened > 0 {
            Reach::Yes
        } else if refilled != Reach::Yes {
            refilled
        } else {
            self.probe(core).await
        };
        match reach {
            Reach::Yes => core.breaker.on_success(),
            Reach::No => core.connection_failed(),
            // Slow or full, not away: nothing for the breaker.
            Reach::Unknown => {}
        }
        HealthReport {
            database_reachable: reach != Reach::No,
            checked: pinged.checked,
            broken_closed: pinged.broken,
            opened,
            pool_size: self.pool.size(),
            circuit: core.breaker.state(),
            took_ms: started.elapsed().as_secs_f64() * 1000.0,
        }
    }

    /// Pings each idle connection that a free slot allows; keeps the healthy
    /// ones in `held`, closes the others.
    async fn ping_idle(&self, core: &Core, held: &mut Vec<(PoolConnection<DB>, Permit)>) -> Pinged {
        let ping_timeout = core.config.health.ping_timeout;
        let mut pinged = Pinged::default();
        for _ in 0..self.pool.num_idle() {
            let Some(permit) = core.gate.try_acquire() else {
                break;
            };
            let Some(mut conn) = self.pool.try_acquire() else {
                break;
            };
            pinged.checked += 1;
            match timeout(ping_timeout, conn.ping()).await {
                Ok(Ok(())) => {
                    pinged.healthy += 1;
                    held.push((conn, permit));
                }
                _ => {
                    pinged.broken += 1;
                    tracing::warn!("health check: closing a connection that failed its ping");
                    conn.close_on_drop();
                }
            }
        }
        pinged
    }

    /// Opens connections (into `held`) until the pool is back at its
    /// minimum or no slot is free. `Yes` unless an open failed; then what
    /// its failure says.
    async fn refill(&self, core: &Core, held: &mut Vec<(PoolConnection<DB>, Permit)>) -> Reach {
        let min = core.min_connections();
        while self.pool.size() < min {
            let Some(permit) = core.gate.try_acquire() else {
                break;
            };
            let pool = self.pool.clone();
            let open = io_runtime::run(core.config.pool.io_threads, async move {
                open_connection(&pool).await
            });
            match timeout(core.config.pool.acquire_timeout, open).await {
                Ok(Ok(conn)) => held.push((conn, permit)),
                Ok(Err(e)) => return Reach::of(&e),
                Err(_) => return Reach::Unknown,
            }
        }
        Reach::Yes
    }

    /// One connection and a ping. With every slot busy the database is
    /// evidently answering, so that counts as reachable.
    async fn probe(&self, core: &Core) -> Reach {
        let Some(_permit) = core.gate.try_acquire() else {
            return if core.breaker.state() == CircuitState::Closed {
                Reach::Yes
            } else {
                Reach::Unknown
            };
        };
        let t = core
            .config
            .pool
            .acquire_timeout
            .min(core.config.health.ping_timeout * 2);
        let pool = self.pool.clone();
        let ping = io_runtime::run(core.config.pool.io_threads, async move {
            let mut c = open_connection(&pool).await?;
            c.ping().await
        });
        match timeout(t, ping).await {
            Ok(Ok(())) => Reach::Yes,
            Ok(Err(e)) => Reach::of(&e),
            Err(_) => Reach::Unknown,
        }
    }
}
