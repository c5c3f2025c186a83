//! MySQL and MariaDB: deadlines the server itself enforces.
//!
//! The manager is generic over the database; this module is what only
//! MySQL and MariaDB need. [`ManagerBuilder::connect_mysql`] asks the
//! server which it is and builds a manager whose every query carries its
//! deadline to the server:
//!
//! ```
//! use std::time::Duration;
//!
//! use hpdb::{mysql::MySqlFlavour, Manager, ManagerConfig};
//! use sqlx::mysql::MySqlConnectOptions;
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let options: MySqlConnectOptions = "mysql://app@db:3306/app".parse()?;
//! let builder = Manager::<sqlx::MySql>::builder(ManagerConfig::default());
//! // Then, with the server up:
//! // let db = builder.connect_mysql(options).await?;
//! # let _ = (builder, options);
//! // What it sends before a query with 1.5 s left, on MariaDB:
//! let flavour = MySqlFlavour::from_version("10.11.6-MariaDB-0+deb12u1");
//! assert_eq!(flavour, MySqlFlavour::MariaDb);
//! assert_eq!(
//!     flavour.limit_statement(Duration::from_millis(1500)),
//!     "SET SESSION max_statement_time = 1.500"
//! );
//! # Ok(()) }
//! ```
//!
//! ## The server stops a query when its deadline passes
//!
//! The manager's deadline ends the caller's wait; without more, the
//! statement runs on in the server until it finishes, holding its
//! connection (sqlx drains it before the connection is reused), its locks
//! and a thread. So before each query the manager limits the session's
//! statements to the time the query has left, on the connection the query
//! will use (one round trip, `SET SESSION …`):
//!
//! - **MariaDB**: `max_statement_time`, in seconds (with fractions); it
//!   applies to every statement, and the server answers `ER_STATEMENT_TIMEOUT`
//!   (1969) when it stops one.
//! - **MySQL** (5.7.8 and later): `max_execution_time`, in milliseconds; it
//!   applies to read-only `SELECT`s only (MySQL has no limit for other
//!   statements), and the server answers `ER_QUERY_TIMEOUT` (3024).
//!
//! Which server it is comes from `SELECT VERSION()` (MariaDB says so in
//! it), asked once at start-up ([`MySqlFlavour::detect`]); the two names
//! are not interchangeable (each server refuses the other's variable).
//!
//! Why a session setting, unlike PostgreSQL's transaction-local one
//! (`postgres`): neither server has a transaction-local setting, MariaDB's
//! per-statement form (`SET STATEMENT … FOR`) would have to wrap the
//! caller's own SQL, and no transaction-mode pooler multiplexes these
//! sessions. Cost: one round trip per query (a direct session limit of
//! `DB_QUERY_TIMEOUT` set at connect time would cost none, but would let a
//! query with less time left run on past its deadline). Measured with
//! `examples/mysql_price.rs` (MariaDB 10.11 on loopback, dev profile, one
//! connection, sequential uncached `SELECT ?`, a loaded 2-core machine, so
//! noisy): 44–103 µs per query without it, 85–125 µs with it, about +40 µs.
//!
//! The limit stays on the connection after the query: work done on
//! [`Manager::pool`](crate::Manager::pool) directly, outside the manager,
//! runs under the last query's limit unless it sets its own.

use std::time::Duration;

use futures::future::BoxFuture;
use sqlx::{
    mysql::{MySqlConnectOptions, MySqlConnection},
    ConnectOptions, Connection, MySql,
};

use crate::{
    deadline::SessionDeadline,
    manager::{
        builder::{BuildError, ManagerBuilder},
        Manager,
    },
};

/// Which server a MySQL URL reaches: they name the statement limit
/// differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum MySqlFlavour {
    /// MariaDB: `max_statement_time`, seconds, every statement.
    MariaDb,
    /// MySQL: `max_execution_time`, milliseconds, read-only `SELECT`s.
    MySql,
}

impl MySqlFlavour {
    /// The flavour a `SELECT VERSION()` answer names: MariaDB's contains
    /// "MariaDB" (`10.11.6-MariaDB-0+deb12u1`), MySQL's does not (`8.4.3`).
    pub fn from_version(version: &str) -> Self {
        if version.to_ascii_lowercase().contains("mariadb") {
            MySqlFlavour::MariaDb
        } else {
            MySqlFlavour::MySql
        }
    }

    /// Asks the server: opens one connection with `options`, reads
    /// `SELECT VERSION()` and closes it.
    pub async fn detect(options: &MySqlConnectOptions) -> Result<Self, sqlx::Error> {
        let mut conn = options.connect().await?;
        let version: String = sqlx::query_scalar("SELECT VERSION()")
            .fetch_one(&mut conn)
            .await?;
        let _ = conn.close().await;
        Ok(Self::from_version(&version))
    }

    /// The statement that limits the session's next statements to `left`
    /// (rounded up to the millisecond; never 0, which means "no limit").
    pub fn limit_statement(self, left: Duration) -> String {
        let ms = left.as_micros().div_ceil(1000).max(1);
        match self {
            // At most a year (the server's own maximum, 31536000 s).
            MySqlFlavour::MariaDb => {
                let ms = ms.min(31_536_000_000);
                format!(
                    "SET SESSION max_statement_time = {}.{:03}",
                    ms / 1000,
                    ms % 1000
                )
            }
            MySqlFlavour::MySql => format!(
                "SET SESSION max_execution_time = {}",
                ms.min(u128::from(u32::MAX))
            ),
        }
    }
}

impl SessionDeadline<MySql> for MySqlFlavour {
    fn limit<'c>(
        &'c self,
        conn: &'c mut MySqlConnection,
        left: Duration,
    ) -> BoxFuture<'c, Result<(), sqlx::Error>> {
        // Audited: the statement is built from a duration, never from a
        // caller's or a client's text.
        let sql = sqlx::AssertSqlSafe(self.limit_statement(left));
        Box::pin(async move {
            sqlx::raw_sql(sql).execute(conn).await?;
            Ok(())
        })
    }
}

impl ManagerBuilder<MySql> {
    /// Gives each query's deadline to the server too, as `flavour` names
    /// it (see the [module docs](self)): a query past its deadline stops
    /// on the server, not only in the caller.
    pub fn server_deadline(self, flavour: MySqlFlavour) -> Self {
        self.session_deadline(flavour)
    }

    /// Asks the server which flavour it is ([`MySqlFlavour::detect`]),
    /// then connects with `options` and opens the minimum connections, with
    /// the [`server_deadline`](Self::server_deadline) it needs.
    pub async fn connect_mysql(
        self,
        options: MySqlConnectOptions,
    ) -> Result<Manager<MySql>, BuildError> {
        let flavour = match MySqlFlavour::detect(&options).await {
            Ok(flavour) => flavour,
            Err(e) => return Err(self.connect_failed(None, e)),
        };
        self.server_deadline(flavour).connect_with(options).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flavour_is_read_from_the_version() {
        assert_eq!(
            MySqlFlavour::from_version("10.11.19-MariaDB-0+deb12u1"),
            MySqlFlavour::MariaDb
        );
        assert_eq!(MySqlFlavour::from_version("8.4.3"), MySqlFlavour::MySql);
    }

    #[test]
    fn each_flavour_names_its_own_limit_in_its_own_unit() {
        let left = Duration::from_micros(299_001);
        assert_eq!(
            MySqlFlavour::MariaDb.limit_statement(left),
            "SET SESSION max_statement_time = 0.300"
        );
        assert_eq!(
            MySqlFlavour::MySql.limit_statement(left),
            "SET SESSION max_execution_time = 300"
        );
        assert_eq!(
            MySqlFlavour::MariaDb.limit_statement(Duration::from_secs(15)),
            "SET SESSION max_statement_time = 15.000"
        );
    }

    #[test]
    fn no_time_left_is_still_a_limit() {
        assert_eq!(
            MySqlFlavour::MySql.limit_statement(Duration::ZERO),
            "SET SESSION max_execution_time = 1"
        );
        assert_eq!(
            MySqlFlavour::MariaDb.limit_statement(Duration::ZERO),
            "SET SESSION max_statement_time = 0.001"
        );
    }
}
