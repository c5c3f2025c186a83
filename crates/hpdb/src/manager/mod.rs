//! The manager: one handle in front of a sqlx pool.
//!
//! One call, [`Manager::execute_query`], runs a caller's sqlx code on a pooled
//! connection, passing through each mechanism in turn:
//!
//! ```text
//! cache lookup ─hit─▶ return
//!     │miss (a stale entry is kept aside for stale-if-error)
//! circuit breaker ─open─▶ stale entry, or CircuitOpen
//!     │
//! single-flight ─follower─▶ wait for the leader's outcome
//!     │leader
//! shared level ─current─▶ return (and keep in process)
//!     │miss (fill lease taken, or another instance's fill waited for)
//! priority gate (queued) ─▶ sqlx pool (acquire) ─▶ closure (execute)
//!     │
//! store in cache (unless invalidated meanwhile), and in the shared level
//!     ─▶ hand outcome to followers
//! ```
//!
//! The pool is sqlx's, wrapped rather than replaced: the gate admits at most
//! `max_connections` holders, so sqlx's own queue never forms and every
//! ordering decision is ours (see the admission module). sqlx keeps doing
//! what it does well: opening, recycling, idle reaping and min maintenance.
//!
//! A manager is two halves: the backend-free [`Control`] (its core holds
//! the gate, the cache, the invalidation log, the flights, the breaker,
//! tuning, the shared level; every operation that runs no query of the
//! caller's is written there once, and a `Manager` dereferences to it), and
//! the [`DbPool`] with the sqlx pool and what needs the database type. Only
//! running queries is generic, in this module:
//!
//! | file | one job |
//! | --- | --- |
//! | `builder` | [`ManagerBuilder`](builder::ManagerBuilder): configuration to a running manager |
//! | `pipeline` | `execute_query`: the path above, step by step |
//! | `call` | one call as the steps pass it on |
//! | `store` | a miss's shared step, and storing and sharing its result |
//! | `acquire` | admission, a connection, running the closure on it |
//! | `health` | the pool's side of health checks and probes |
//! | `refresh` | background refreshes (refresh-ahead, stale-while-revalidate) started behind a read |
//! | `read` | reads that may run on a replica (`execute_read_then`), and their floor |
//! | `open` | one connection opened without waiting out sqlx's retries of a refused connect |
//! | `writer` | the writer lane: writes on one connection, checked for other connections' commits (SQLite's data-version watch) |
//!
//! The shared level's protocol is `shared`'s; self-tuning's is `tuning`'s.
//! Neither is branched on here: without Redis, or with a loop off, their
//! steps do nothing.

mod acquire;
pub(crate) mod builder;
mod call;
mod health;
mod open;
mod pipeline;
mod read;
mod refresh;
mod store;
pub(crate) mod writer;

pub(crate) use open::open_connection;

use std::{
    ops::Deref,
    sync::{Arc, Weak},
};

use sqlx::{Database, Pool};
use tokio::{sync::Semaphore, time::Instant};

use crate::{
    control::{core::Core, Control},
    deadline::{SessionDeadline, StatementDeadline},
    error::{Error, TimeoutPhase},
};

/// What needs the database type: sqlx's pool, how a query's deadline
/// reaches the database, and the bound on connections being opened.
pub(crate) struct DbPool<DB: Database> {
    pool: Pool<DB>,
    /// How each query's deadline reaches the database, if it does.
    deadline: Option<Arc<dyn StatementDeadline>>,
    /// How the backend's session limit is set before each query, if it is.
    session: Option<Arc<dyn SessionDeadline<DB>>>,
    /// Bounds connections being opened at once (see `acquire_connection`).
    opens: Arc<Semaphore>,
    /// The writer lane, if the backend watches for other connections'
    /// commits (SQLite; see `writer`).
    writer: Option<Arc<writer::Writer<DB>>>,
    /// Replicas reads may use (`replica`; PostgreSQL with `DB_REPLICA_URLS`).
    replicas: Option<crate::replica::Replicas<DB>>,
}

/// The connection manager. Cheap to clone; clones share everything.
/// Dereferences to its [`Control`], whose methods (status, invalidation,
/// cached values, resizing, health checks, closing) are the manager's too.
pub struct Manager<DB: Database> {
    control: Control,
    db: Arc<DbPool<DB>>,
}

impl<DB: Database> Clone for Manager<DB> {
    fn clone(&self) -> Self {
        Self {
            control: self.control.clone(),
            db: self.db.clone(),
        }
    }
}

impl<DB: Database> Deref for Manager<DB> {
    type Target = Control;

    fn deref(&self) -> &Control {
        &self.control
    }
}

impl<DB: Database> Manager<DB> {
    /// The underlying sqlx pool, for code that must bypass the manager
    /// (migrations, the benchmark's baseline). Connections taken from it are
    /// not admitted by priority and not counted.
    pub fn pool(&self) -> &Pool<DB> {
        &self.db.pool
    }

    /// A handle on this manager that does not name the database type.
    pub fn control(&self) -> Control {
        self.control.clone()
    }

    /// A handle that does not keep the manager alive: what a verifier of
    /// the consistency monitor ([`Control::verify_prefix`]), which lives in
    /// the manager, holds to run its re-reads.
    pub fn downgrade(&self) -> WeakManager<DB> {
        WeakManager {
            core: Arc::downgrade(&self.control.core),
            db: Arc::downgrade(&self.db),
        }
    }

    pub(crate) fn core(&self) -> &Core {
        &self.control.core
    }
}

/// A [`Manager`] held weakly ([`Manager::downgrade`]).
pub struct WeakManager<DB: Database> {
    core: Weak<Core>,
    db: Weak<DbPool<DB>>,
}

impl<DB: Database> Clone for WeakManager<DB> {
    fn clone(&self) -> Self {
        Self {
            core: self.core.clone(),
            db: self.db.clone(),
        }
    }
}

impl<DB: Database> WeakManager<DB> {
    /// The manager, unless every handle on it has been dropped.
    pub fn upgrade(&self) -> Option<Manager<DB>> {
        Some(Manager {
            control: Control {
                core: self.core.upgrade()?,
            },
            db: self.db.upgrade()?,
        })
    }
}

/// The timeout error for `key` in `phase`, with the time since `started`.
fn timeout_error(key: &Arc<str>, phase: TimeoutPhase, started: Instant) -> Error {
    Error::Timeout {
        key: key.clone(),
        phase,
        elapsed: started.elapsed(),
    }
}
