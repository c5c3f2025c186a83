//! The writer lane: every query marked [`writes`](crate::QueryOptions::writes)
//! runs on one dedicated connection, and before each, and every
//! `DB_DATA_VERSION_POLL` while no write holds it, a [`WriteWatch`] asks
//! that connection whether another connection committed since the last
//! check; if so, every cached entry is dropped (`Control::clear_cache`).
//!
//! Why one connection: SQLite's `PRAGMA data_version` changes on a
//! connection when *any other* connection commits, our own pool's included.
//! Read on a connection that makes every write of ours, it changes only for
//! commits by others: exactly the ones no invalidation of ours covered
//! (issue 21; the backend's side is in `sqlite`). SQLite lets one writer
//! commit at a time anyway, so the lane costs no concurrency.
//!
//! Invariants:
//! - Our readers never commit, and our writes all run here: a change seen
//!   here is another connection's commit, and no commit of ours is one.
//! - A commit by another connection is seen by the first check that
//!   starts after it: at the next write, or at the next tick that finds
//!   the writer free (within the poll interval plus one write's time).
//! - The cache is cleared *after* the version is read: whatever was
//!   fetched before the clear is dropped (and any fetch still running is
//!   refused by the invalidation log), and whatever the reads after it
//!   missed was committed after the version was read, so the next check
//!   sees it.
//! - A new writer connection (the first, or one opened after an error)
//!   knows no earlier version: its first check clears the cache too.

use std::{
    sync::{Arc, Weak},
    time::Duration,
};

use futures::future::BoxFuture;
use sqlx::{ConnectOptions, Connection, Database};
use tokio::{
    sync::{Mutex, OwnedMutexGuard},
    task::JoinHandle,
};

use crate::control::{core::Core, Control};

/// A backend's way to tell, on one connection, whether other connections
/// committed (implemented for SQLite in `sqlite`).
pub(crate) trait WriteWatch<DB: Database>: Send + Sync + 'static {
    /// A number that differs from the one last read on the same
    /// connection if, and only if, another connection committed since.
    fn version<'c>(
        &'c self,
        conn: &'c mut DB::Connection,
    ) -> BoxFuture<'c, Result<i64, sqlx::Error>>;
}

/// The writer connection, and what was last seen on it.
pub(crate) struct Slot<DB: Database> {
    conn: Option<DB::Connection>,
    /// The version last read on `conn`.
    seen: Option<i64>,
    /// The manager closed: no connection is opened again, and a write
    /// fails as a read does (`Error::Closed`).
    closed: bool,
}

/// The writer lane.
pub(crate) struct Writer<DB: Database> {
    slot: Arc<Mutex<Slot<DB>>>,
    options: Arc<<DB::Connection as Connection>::Options>,
    watch: Arc<dyn WriteWatch<DB>>,
}

/// The writer connection held by one write, checked.
pub(crate) struct Held<DB: Database>(OwnedMutexGuard<Slot<DB>>);

impl<DB: Database> Held<DB> {
    /// The connection (present: `Writer::take` opened it).
    pub(crate) fn conn(&mut self) -> &mut DB::Connection {
        self.0
            .conn
            .as_mut()
            .expect("a held writer has its connection")
    }

    /// Forgets a broken connection: the next use opens another (and
    /// clears the cache, knowing no earlier version).
    pub(crate) fn discard(&mut self) {
        self.0.conn = None;
        self.0.seen = None;
    }
}

/// Why taking the writer failed: opening its connection, or the check.
pub(crate) enum TakeError {
    Open(sqlx::Error),
    Check(sqlx::Error),
}

impl<DB: Database> Writer<DB> {
    /// A lane over connections made with `options`, checked by `watch`.
    pub(crate) fn new(
        options: Arc<<DB::Connection as Connection>::Options>,
        watch: Arc<dyn WriteWatch<DB>>,
    ) -> Self {
        Self {
            slot: Arc::new(Mutex::new(Slot {
                conn: None,
                seen: None,
                closed: false,
            })),
            options,
            watch,
        }
    }

    /// Waits for the writer connection, then checks it (see the module's
    /// invariants). The caller bounds the wait.
    pub(crate) async fn take(&self, control: &Control) -> Result<Held<DB>, TakeError> {
        let mut held = Held(self.slot.clone().lock_owned().await);
        self.check(&mut held, control).await?;
        Ok(held)
    }

    /// One check on a held writer: opens the connection if there is none,
    /// reads the version, and clears the cache if it moved (or was unknown).
    async fn check(&self, held: &mut Held<DB>, control: &Control) -> Result<(), TakeError> {
        let slot = &mut *held.0;
        if slot.closed {
            return Err(TakeError::Open(sqlx::Error::PoolClosed));
        }
        if slot.conn.is_none() {
            slot.conn = Some(self.options.connect().await.map_err(TakeError::Open)?);
            slot.seen = None;
        }
        let version = match self.watch.version(held.conn()).await {
            Ok(v) => v,
            // A broken connection is replaced (and the next one, knowing no
            // earlier version, clears the cache); a passing failure (a busy
            // file) keeps the connection and what it saw.
            Err(e) => {
                if crate::error::is_connection_error(&e) {
                    held.discard();
                }
                return Err(TakeError::Check(e));
            }
        };
        let before = held.0.seen.replace(version);
        let changes = &control.core.changes;
        changes.update(|s| s.polls += 1);
        if before == Some(version) {
            return Ok(());
        }
        if before.is_some() {
            tracing::debug!("another connection committed: dropping every cached entry");
        }
        changes.update(|s| {
            s.epochs += 1;
            s.foreign_commits += u64::from(before.is_some());
        });
        // Runs to its end in a task of its own, even if this caller is
        // dropped now: the version just read is not checked again.
        control.clear_cache().await;
        Ok(())
    }

    /// Closes the writer connection (when the manager closes).
    pub(crate) async fn close(&self) {
        let conn = {
            let mut slot = self.slot.lock().await;
            slot.seen = None;
            slot.closed = true;
            slot.conn.take()
        };
        if let Some(conn) = conn {
            let _ = conn.close().await;
        }
    }

    /// Checks every `interval` while no write holds the writer, until the
    /// manager is gone (a write checks for itself).
    pub(crate) fn spawn_poll(
        self: &Arc<Self>,
        core: Weak<Core>,
        interval: Duration,
    ) -> JoinHandle<()> {
        let writer = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let (Some(writer), Some(core)) = (writer.upgrade(), core.upgrade()) else {
                    return;
                };
                if core.pool.is_closed() {
                    return;
                }
                let Ok(guard) = writer.slot.clone().try_lock_owned() else {
                    continue;
                };
                let control = Control { core };
                if let Err(TakeError::Open(e) | TakeError::Check(e)) =
                    writer.check(&mut Held(guard), &control).await
                {
                    tracing::debug!(error = %e, "the data-version check failed; retrying");
                }
            }
        })
    }
}
