//! The library's one error type.
//!
//! Every failure a caller can see is a variant of [`Error`]. Timeouts say which
//! phase they happened in, because "timed out" alone does not tell an operator
//! whether the pool is too small (queued), the database is slow to accept
//! connections (acquire) or the query itself is slow (execute).
//!
//! `Error` is `Clone` (sqlx errors are shared behind an `Arc`) so that one
//! failed execution can be handed to every caller that joined it.
//!
//! An error whose usual cause is a transaction-mode pooler the manager was
//! not told about (prepared statements missing or taken, a start-up
//! parameter refused) says so, and what to set.

use std::{fmt, sync::Arc, time::Duration};

use serde::Serialize;

/// Where a query was when its deadline passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum TimeoutPhase {
    /// Waiting in the priority queue for a free connection slot: the pool is
    /// saturated; consider a larger pool or fewer long-running queries.
    Queued,
    /// Holding a slot, waiting for sqlx to hand over (or open) a connection:
    /// the database is slow to accept connections.
    Acquire,
    /// Running the caller's closure: the query itself is slow.
    Execute,
    /// Waiting for an identical query that another caller is already running.
    Joined,
}

impl fmt::Display for TimeoutPhase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TimeoutPhase::Queued => "queued for a connection slot",
            TimeoutPhase::Acquire => "acquiring a connection",
            TimeoutPhase::Execute => "executing",
            TimeoutPhase::Joined => "waiting for an identical in-flight query",
        })
    }
}

/// Errors returned by the manager.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The query's deadline passed; `phase` says where it was.
    #[error("query `{key}` timed out after {elapsed:?} while {phase}")]
    Timeout {
        /// The query key.
        key: Arc<str>,
        /// The phase the query was in when the deadline passed.
        phase: TimeoutPhase,
        /// Time since the call started.
        elapsed: Duration,
    },
    /// The circuit breaker is open after repeated connection failures and no
    /// cached value could stand in.
    #[error(
        "database unavailable: the circuit breaker opened after {failures} consecutive connection \
         failures; retry in {retry_after:?}"
    )]
    CircuitOpen {
        /// Consecutive connection failures that opened the circuit.
        failures: u32,
        /// When the breaker will let a probe through.
        retry_after: Duration,
    },
    /// A connection could not be obtained from the database.
    #[error(
        "could not obtain a database connection for `{key}`: {source}{}",
        pooler_hint(.source)
    )]
    Connect {
        /// The query key.
        key: Arc<str>,
        /// The underlying sqlx error.
        #[source]
        source: Arc<sqlx::Error>,
    },
    /// The caller's query returned an error.
    #[error("query `{key}` failed: {source}{}", pooler_hint(.source))]
    Query {
        /// The query key.
        key: Arc<str>,
        /// The underlying sqlx error.
        #[source]
        source: Arc<sqlx::Error>,
    },
    /// Two call sites used the same key for results of different types.
    #[error(
        "query key `{key}` is used for results of different types; give each query its own key"
    )]
    KeyTypeMismatch {
        /// The query key.
        key: Arc<str>,
    },
    /// A batch loader's task ended without producing a result (it panicked).
    #[error("the batch for `{key}` ended without a result")]
    BatchAborted {
        /// The loader's name.
        key: Arc<str>,
    },
    /// The pool was closed.
    #[error("the connection pool is closed")]
    Closed,
    /// A read routed to a replica lost its connection there (the replica
    /// stopped or failed mid-query). [`Manager::execute_read_then`](crate::Manager::execute_read_then)
    /// runs it again on the primary, so its callers do not see this; it
    /// is counted in the replicas' status (`retried_on_primary`).
    #[error("query `{key}` failed on replica {replica}: {source}")]
    Replica {
        /// The query key.
        key: Arc<str>,
        /// The replica's URL, password hidden.
        replica: String,
        /// The underlying sqlx error.
        #[source]
        source: Arc<sqlx::Error>,
    },
}

impl Error {
    /// True when the error says the database (not the query) is unavailable:
    /// these count towards the circuit breaker and allow stale-if-error.
    pub fn is_unavailable(&self) -> bool {
        match self {
            Error::Connect { .. }
            | Error::CircuitOpen { .. }
            | Error::Closed
            | Error::Replica { .. } => true,
            Error::Timeout { phase, .. } => *phase == TimeoutPhase::Acquire,
            Error::Query { source, .. } => is_connection_error(source),
            _ => false,
        }
    }

    /// True for a timeout in any phase.
    pub fn is_timeout(&self) -> bool {
        matches!(self, Error::Timeout { .. })
    }

    /// How long a client should wait before retrying, when that is known.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::CircuitOpen { retry_after, .. } => Some(*retry_after),
            Error::Timeout {
                phase: TimeoutPhase::Queued | TimeoutPhase::Acquire,
                ..
            } => Some(Duration::from_secs(1)),
            _ => None,
        }
    }
}

/// True when a sqlx error means the connection or the database went away,
/// rather than the statement being wrong.
pub(crate) fn is_connection_error(err: &sqlx::Error) -> bool {
    matches!(
        err,
        sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed
            | sqlx::Error::Protocol(_)
    ) || matches!(err, sqlx::Error::Database(db) if is_unavailable_db_code(db.code().as_deref()))
}

/// True when a failed connect, or a connection lost mid-query, says the
/// database cannot be reached as configured: refused, reset or aborted
/// connections, a name that does not resolve, TLS, a broken protocol,
/// authentication, the server shutting down. This is all the circuit
/// breaker counts. Never pool contention (`PoolTimedOut`), a connect that
/// timed out on a busy machine, or a server at its connection limit
/// (53300): those say the database is slow or full, a load signal for the
/// tuning loop, not that it is away.
pub(crate) fn is_unreachable(err: &sqlx::Error) -> bool {
    use std::io::ErrorKind;
    match err {
        sqlx::Error::Io(e) => !matches!(
            e.kind(),
            ErrorKind::TimedOut | ErrorKind::WouldBlock | ErrorKind::Interrupted
        ),
        sqlx::Error::Tls(_) | sqlx::Error::Protocol(_) | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => matches!(
            db.code().as_deref(),
            // PostgreSQL: admin shutdown, crash shutdown, cannot connect
            // now, invalid authorization, invalid password, no such database.
            Some("57P01" | "57P02" | "57P03" | "28000" | "28P01" | "3D000")
            // SQLite: SQLITE_CANTOPEN (14) and SQLITE_IOERR (10).
            | Some("14" | "10")
        ),
        _ => false,
    }
}

/// True when the database refused a connection because it is at its own
/// connection limit (PostgreSQL's "sorry, too many clients already").
pub(crate) fn is_connection_limit_error(err: &sqlx::Error) -> bool {
    // PostgreSQL: too_many_connections; MySQL and MariaDB: ER_CON_COUNT_ERROR.
    matches!(err, sqlx::Error::Database(db) if matches!(db.code().as_deref(), Some("53300" | "08004")))
}

/// True when the server cancelled the statement at its deadline
/// (PostgreSQL's `statement_timeout`, MariaDB's `max_statement_time`,
/// MySQL's `max_execution_time`).
pub(crate) fn is_query_cancelled(err: &sqlx::Error) -> bool {
    let sqlx::Error::Database(db) = err else {
        return false;
    };
    // PostgreSQL: query_canceled. MariaDB: ER_STATEMENT_TIMEOUT (1969) and
    // ER_QUERY_INTERRUPTED (1317), SQLSTATE 70100.
    if matches!(db.code().as_deref(), Some("57014" | "70100")) {
        return true;
    }
    // MySQL's `max_execution_time`: ER_QUERY_TIMEOUT (3024), whose
    // SQLSTATE is the generic HY000.
    #[cfg(feature = "mysql")]
    if let Some(e) = db.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>() {
        return e.number() == 3024;
    }
    false
}

/// Database error codes that mean "the server cannot serve you right now".
fn is_unavailable_db_code(code: Option<&str>) -> bool {
    matches!(
        code,
        // PostgreSQL: admin shutdown, crash shutdown, cannot connect now, too many connections.
        Some("57P01" | "57P02" | "57P03" | "53300")
        // SQLite: SQLITE_CANTOPEN (14) and SQLITE_IOERR (10).
        | Some("14" | "10")
        // MySQL and MariaDB: too many connections (1040), server shutdown (1053).
        | Some("08004" | "08S01")
    )
}

/// The advice appended to an error that a transaction-mode pooler in front
/// of PostgreSQL causes when the manager is not in pooler-safe mode:
/// prepared statements missing (SQLSTATE 26000) or taken (42P05) on the
/// server connection the pooler picked, a statement of the same name with
/// other parameters, or PgBouncer refusing the start-up `options`
/// parameter that carries a direct connection's `statement_timeout`.
pub(crate) fn pooler_hint(err: &sqlx::Error) -> &'static str {
    let sqlx::Error::Database(db) = err else {
        return "";
    };
    let message = db.message();
    let pooler = matches!(db.code().as_deref(), Some("26000" | "42P05"))
        || message.contains("prepared statement")
        || message.contains("unsupported startup parameter");
    if pooler {
        POOLER_HINT
    } else {
        ""
    }
}

/// What [`pooler_hint`] says.
pub(crate) const POOLER_HINT: &str = " (behind a transaction-mode pooler such as PgBouncer set \
     ?pgbouncer=true in the URL or DB_STATEMENT_CACHE=0, and build the manager with \
     hpdb::postgres::PgTarget)";

#[cfg(test)]
mod tests {
    use super::*;

    fn io(kind: std::io::ErrorKind) -> sqlx::Error {
        sqlx::Error::Io(std::io::Error::from(kind))
    }

    #[test]
    fn only_what_says_the_database_is_away_counts_for_the_breaker() {
        use std::io::ErrorKind;
        for away in [
            io(ErrorKind::ConnectionRefused),
            io(ErrorKind::ConnectionReset),
            io(ErrorKind::ConnectionAborted),
            io(ErrorKind::NotFound),
            io(ErrorKind::UnexpectedEof),
            sqlx::Error::Protocol("garbled".into()),
            sqlx::Error::WorkerCrashed,
        ] {
            assert!(is_unreachable(&away), "{away:?}");
        }
        for busy in [
            io(ErrorKind::TimedOut),
            sqlx::Error::PoolTimedOut,
            sqlx::Error::PoolClosed,
            sqlx::Error::RowNotFound,
        ] {
            assert!(!is_unreachable(&busy), "{busy:?}");
        }
    }
}
