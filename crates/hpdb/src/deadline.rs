//! The seam through which a database itself is told a query's deadline.
//!
//! The manager's deadline ends the *wait*: at the deadline the caller's
//! future is dropped and the caller hears [`Error::Timeout`](crate::Error).
//! The statement it sent keeps running on the server until it ends, holding
//! a connection, locks and CPU. A [`StatementDeadline`] lets a backend
//! close that gap where a session setting cannot (behind a
//! transaction-mode pooler a session setting lands on some server
//! connection, not the one the query will use): it names a statement that
//! opens a transaction around each query, in which the backend's local
//! settings hold for exactly that query. PostgreSQL's implementation is in
//! `postgres`.
//!
//! A backend whose session setting *is* the right tool (MySQL and MariaDB:
//! no pooler multiplexes their sessions, and there is no transaction-local
//! setting) implements [`SessionDeadline`] instead: one statement on the
//! query's own connection, before the query, that limits the session's
//! statements to the time left (`mysql`).
//!
//! Invariants:
//! - Without a strategy, or when it answers `None`, the caller's closure
//!   runs on the connection exactly as before: no extra round trip.
//! - With one, the closure runs inside the transaction; it is committed if
//!   the closure succeeds and rolled back otherwise, including when the
//!   caller gives up (sqlx rolls back a dropped transaction before the
//!   connection is reused). A closure's own `begin()` becomes a savepoint.
//!   A closure that swallows a statement's error and still returns `Ok`
//!   loses its earlier writes: the database has aborted the transaction,
//!   and the commit rolls it back.

use std::{borrow::Cow, time::Duration};

use futures::future::BoxFuture;
use sqlx::{Connection, Database};

use crate::query::QueryFn;

/// How a manager tells the database the deadline of each query; set with
/// [`ManagerBuilder::statement_deadline`](crate::ManagerBuilder::statement_deadline).
///
/// Keep `begin_statement` cheap: it runs on every query, with the
/// connection held.
pub trait StatementDeadline: Send + Sync + 'static {
    /// The statement that opens a transaction around one query that has
    /// `left` before its deadline, e.g. `BEGIN; SET LOCAL statement_timeout
    /// = 1500` (it is sent as one simple query, so several statements cost
    /// one round trip, and must leave the connection in a transaction).
    /// `None` runs the query outside a transaction, as it is.
    fn begin_statement(&self, left: Duration) -> Option<Cow<'static, str>>;
}

/// A backend's own way to give the server a query's deadline on the
/// query's connection, before it runs: a session setting, so the server
/// stops every statement of the query when its time is up (implemented for
/// MySQL and MariaDB in `mysql`).
///
/// The setting stays on the connection until the next query through the
/// manager sets it again.
pub(crate) trait SessionDeadline<DB: Database>: Send + Sync + 'static {
    /// Limits `conn`'s next statements to `left`.
    fn limit<'c>(
        &'c self,
        conn: &'c mut DB::Connection,
        left: Duration,
    ) -> BoxFuture<'c, Result<(), sqlx::Error>>;
}

/// Runs `query` on `conn`: after `session`'s limit, if any, and inside the
/// transaction `deadline` asks for, if any.
pub(crate) async fn run_with_deadline<DB: Database, T, F: QueryFn<DB, T>>(
    conn: &mut DB::Connection,
    deadline: Option<&dyn StatementDeadline>,
    session: Option<&dyn SessionDeadline<DB>>,
    left: Duration,
    query: F,
) -> Result<T, sqlx::Error> {
    if let Some(session) = session {
        session.limit(conn, left).await?;
    }
    let Some(begin) = deadline.and_then(|d| d.begin_statement(left)) else {
        return query(conn).await;
    };
    // Audited: a strategy's statement is built by the strategy from a
    // duration (milliseconds), never from a caller's or a client's text.
    let mut tx = conn
        .begin_with(sqlx::AssertSqlSafe(begin.into_owned()))
        .await?;
    let value = query(&mut *tx).await?;
    tx.commit().await?;
    Ok(value)
}
