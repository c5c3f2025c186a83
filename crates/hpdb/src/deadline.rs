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
//! [`postgres`](crate::postgres).
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

/// Runs `query` on `conn`, inside the transaction `deadline` asks for.
pub(crate) async fn run_with_deadline<DB: Database, T, F: QueryFn<DB, T>>(
    conn: &mut DB::Connection,
    deadline: Option<&dyn StatementDeadline>,
    left: Duration,
    query: F,
) -> Result<T, sqlx::Error> {
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
