//! PostgreSQL's [`StatementDeadline`]: `SET LOCAL statement_timeout` in a
//! transaction opened for the query, when the session cannot carry it.

use std::{borrow::Cow, time::Duration};

use crate::deadline::StatementDeadline;

/// How each query's deadline reaches PostgreSQL; chosen by
/// [`PgTarget::statement_deadline`](super::PgTarget::statement_deadline).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PgStatementDeadline {
    /// A direct connection: the session's `statement_timeout` (set at
    /// start-up) is `timeout`, the manager's query timeout. Only a query
    /// given a longer deadline of its own runs in a transaction that raises
    /// it; every other query costs nothing extra.
    Session {
        /// The session's `statement_timeout`.
        timeout: Duration,
    },
    /// Behind a transaction-mode pooler: every query runs in a transaction
    /// that sets `statement_timeout` to the time the query has left and
    /// first drops the prepared statements the server connection may still
    /// hold from its previous client (`DEALLOCATE ALL`): two round trips
    /// (`BEGIN; SET LOCAL …; DEALLOCATE ALL` and `COMMIT`).
    PerQuery,
}

impl StatementDeadline for PgStatementDeadline {
    fn begin_statement(&self, left: Duration) -> Option<Cow<'static, str>> {
        let ms = millis(left);
        match *self {
            PgStatementDeadline::Session { timeout } if left <= timeout => None,
            PgStatementDeadline::Session { .. } => {
                Some(format!("BEGIN; SET LOCAL statement_timeout = {ms}").into())
            }
            PgStatementDeadline::PerQuery => {
                Some(format!("BEGIN; SET LOCAL statement_timeout = {ms}; DEALLOCATE ALL").into())
            }
        }
    }
}

/// A duration as PostgreSQL's timeout settings take it: whole milliseconds,
/// rounded up (0 would mean "no timeout"), at most `i32::MAX`.
pub(super) fn millis(d: Duration) -> u64 {
    let ms = d.as_micros().div_ceil(1000).max(1);
    ms.min(i32::MAX as u128) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_direct_session_wraps_only_queries_longer_than_its_timeout() {
        let d = PgStatementDeadline::Session {
            timeout: Duration::from_secs(15),
        };
        assert_eq!(d.begin_statement(Duration::from_secs(15)), None);
        assert_eq!(d.begin_statement(Duration::from_millis(10)), None);
        assert_eq!(
            d.begin_statement(Duration::from_secs(60)).as_deref(),
            Some("BEGIN; SET LOCAL statement_timeout = 60000")
        );
    }

    #[test]
    fn behind_a_pooler_every_query_carries_its_time_left() {
        let d = PgStatementDeadline::PerQuery;
        assert_eq!(
            d.begin_statement(Duration::from_micros(299_001)).as_deref(),
            Some("BEGIN; SET LOCAL statement_timeout = 300; DEALLOCATE ALL")
        );
    }
}
