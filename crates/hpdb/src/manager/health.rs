//! Health: checks that replace broken connections, refill the pool to its
//! minimum and tell the circuit breaker whether the database answers; and
//! the background tasks that run them, scan for leaks and sweep the cache.
//!
//! Invariants:
//! - A check takes connections only through the gate (`try_acquire`, never
//!   waiting), so it never holds a slot a query is queued for, nor exceeds
//!   `max_connections`.
//! - Background tasks hold only a `Weak` to the manager and end with it
//!   (and are aborted when its last clone drops).

use std::{
    sync::{atomic::Ordering, Arc, Weak},
    time::Duration,
};

use serde::Serialize;
use sqlx::{pool::PoolConnection, Connection, Database};
use tokio::{
    task::JoinHandle,
    time::{sleep, timeout, Instant},
};

use super::{acquire::open_connection, Inner, Manager};
use crate::{admission::Permit, breaker::CircuitState};

/// What one health check found and did.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthReport {
    /// Whether the database answered.
    pub database_reachable: bool,
    /// Idle connections pinged.
    pub checked: u32,
    /// Connections that failed their ping and were closed.
    pub broken_closed: u32,
    /// Connections opened to bring the pool back to its minimum.
    pub opened: u32,
    /// Pool size after the check.
    pub pool_size: u32,
    /// The circuit breaker's state after the check.
    pub circuit: CircuitState,
    /// How long the check took, in milliseconds.
    pub took_ms: f64,
}

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
    /// Opens connections up to the minimum.
    pub(super) async fn warm_up(&self) -> Result<(), sqlx::Error> {
        let min = self.inner.min_connections.load(Ordering::Relaxed) as usize;
        if min == 0 {
            return Ok(());
        }
        // The first connection opens alone: it may initialise the database
        // (SQLite switches a new file to WAL under an exclusive lock, which
        // connections opening at the same moment fail on with "database is
        // locked"). The rest open together.
        let first = self.inner.pool.acquire().await?;
        let rest =
            futures::future::try_join_all((1..min).map(|_| self.inner.pool.acquire())).await?;
        drop((first, rest));
        Ok(())
    }

    /// Pings idle connections, closes broken ones, refills the pool to its
    /// minimum, and probes the database when the circuit is not closed.
    /// Runs every `health.interval`; callable on demand.
    pub async fn health_check(&self) -> HealthReport {
        let inner = &self.inner;
        let started = Instant::now();
        // Holding every checked connection (with its slot) until the end
        // makes the next try_acquire return a different idle one.
        let mut held: Vec<(PoolConnection<DB>, Permit)> = Vec::new();
        let pinged = self.ping_idle(&mut held).await;
        let size_before = inner.pool.size();
        let refilled = self.refill(&mut held).await;
        let opened = inner.pool.size().saturating_sub(size_before);
        drop(held);

        let reach = if pinged.healthy > 0 || opened > 0 {
            Reach::Yes
        } else if refilled != Reach::Yes {
            refilled
        } else {
            self.probe().await
        };
        match reach {
            Reach::Yes => inner.breaker.on_success(),
            Reach::No => self.connection_failed(),
            // Slow or full, not away: nothing for the breaker.
            Reach::Unknown => {}
        }
        HealthReport {
            database_reachable: reach != Reach::No,
            checked: pinged.checked,
            broken_closed: pinged.broken,
            opened,
            pool_size: inner.pool.size(),
            circuit: inner.breaker.state(),
            took_ms: started.elapsed().as_secs_f64() * 1000.0,
        }
    }

    /// Pings each idle connection that a free slot allows; keeps the healthy
    /// ones in `held`, closes the others.
    async fn ping_idle(&self, held: &mut Vec<(PoolConnection<DB>, Permit)>) -> Pinged {
        let inner = &self.inner;
        let ping_timeout = inner.config.health.ping_timeout;
        let mut pinged = Pinged::default();
        for _ in 0..inner.pool.num_idle() {
            let Some(permit) = inner.gate.try_acquire() else {
                break;
            };
            let Some(mut conn) = inner.pool.try_acquire() else {
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
    async fn refill(&self, held: &mut Vec<(PoolConnection<DB>, Permit)>) -> Reach {
        let inner = &self.inner;
        let min = inner.min_connections.load(Ordering::Relaxed);
        while inner.pool.size() < min {
            let Some(permit) = inner.gate.try_acquire() else {
                break;
            };
            match timeout(
                inner.config.pool.acquire_timeout,
                open_connection(&inner.pool),
            )
            .await
            {
                Ok(Ok(conn)) => held.push((conn, permit)),
                Ok(Err(e)) => return Reach::of(&e),
                Err(_) => return Reach::Unknown,
            }
        }
        Reach::Yes
    }

    /// One connection and a ping. With every slot busy the database is
    /// evidently answering, so that counts as reachable.
    async fn probe(&self) -> Reach {
        let inner = &self.inner;
        let Some(_permit) = inner.gate.try_acquire() else {
            return if inner.breaker.state() == CircuitState::Closed {
                Reach::Yes
            } else {
                Reach::Unknown
            };
        };
        let t = inner
            .config
            .pool
            .acquire_timeout
            .min(inner.config.health.ping_timeout * 2);
        match timeout(t, async {
            let mut c = open_connection(&inner.pool).await?;
            c.ping().await
        })
        .await
        {
            Ok(Ok(())) => Reach::Yes,
            Ok(Err(e)) => Reach::of(&e),
            Err(_) => Reach::Unknown,
        }
    }

    /// Starts the health loop, the leak scan and the cache sweep.
    pub(super) fn spawn_background_tasks(&self) {
        let weak = Arc::downgrade(&self.inner);
        let cfg = &self.inner.config;
        let health = tokio::spawn(health_loop(
            weak.clone(),
            cfg.health.interval,
            cfg.health.cooldown,
        ));
        let leak_every =
            (cfg.leak.threshold / 4).clamp(Duration::from_millis(10), Duration::from_secs(5));
        let leaks = spawn_periodic(weak.clone(), leak_every, |m| async move {
            m.inner.leaks.scan();
        });
        let sweep = spawn_periodic(weak, cfg.cache.sweep_interval, |m| async move {
            m.inner.cache.sweep().await;
        });
        let mut tasks = self.inner.tasks.lock();
        tasks.extend([health, leaks, sweep]);
        tasks.extend(self.spawn_tuning_loops());
        let pushes = self.inner.pushes.lock().take();
        if let (Some(shared), Some(pushes)) = (self.inner.shared.clone(), pushes) {
            let local: Weak<dyn crate::shared::LocalCache> = Arc::downgrade(&self.inner) as _;
            tasks.extend(crate::shared::start_bus(shared, local, pushes));
        }
    }
}

/// Health checks every `interval`, and every `cooldown` while the circuit
/// is not closed, so that a database that comes back is noticed within a
/// cooldown even when no query arrives to probe it. Advice is logged at the
/// regular interval only. Ends with the manager.
async fn health_loop<DB: Database>(weak: Weak<Inner<DB>>, interval: Duration, cooldown: Duration) {
    let mut wait = interval;
    let mut last_advice = Instant::now();
    loop {
        sleep(wait).await;
        let Some(inner) = weak.upgrade() else { return };
        let m = Manager { inner };
        if m.inner.pool.is_closed() {
            return;
        }
        let report = m.health_check().await;
        if last_advice.elapsed() >= interval {
            last_advice = Instant::now();
            for a in m.advice() {
                a.log();
            }
        }
        wait = if report.circuit == CircuitState::Closed {
            interval
        } else {
            cooldown
        };
    }
}

/// Runs `tick` every `every` for as long as the manager lives.
fn spawn_periodic<DB, F, Fut>(weak: Weak<Inner<DB>>, every: Duration, tick: F) -> JoinHandle<()>
where
    DB: Database,
    F: Fn(Manager<DB>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    tokio::spawn(async move {
        loop {
            sleep(every).await;
            let Some(inner) = weak.upgrade() else { return };
            tick(Manager { inner }).await;
        }
    })
}
