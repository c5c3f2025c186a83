//! PostgreSQL in production: behind a transaction-mode pooler, and with
//! deadlines the server itself enforces.
//!
//! The manager is generic over the database; this module is what only
//! PostgreSQL needs. [`PgTarget::from_url`] reads a URL and the
//! configuration once, and [`ManagerBuilder::connect_target`] builds a
//! manager that uses them:
//!
//! ```
//! use hpdb::{postgres::PgTarget, Manager, ManagerConfig};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let config = ManagerConfig::default();
//! let target = PgTarget::from_url("postgres://app@pgbouncer:6432/app?pgbouncer=true", &config)?
//!     .map_options(|o| o.application_name("app"));
//! // `?pgbouncer=true`: pooler-safe mode (no named statements, deadlines by `SET LOCAL`).
//! assert!(target.behind_pooler());
//! assert_eq!(target.options().get_application_name(), Some("app"));
//! // Then, with the pooler up:
//! // let db = Manager::<sqlx::Postgres>::builder(config).connect_target(&target).await?;
//! # let _ = Manager::<sqlx::Postgres>::builder;
//! # Ok(()) }
//! ```
//!
//! ## The server stops a query when its deadline passes
//!
//! The manager's deadline ends the caller's wait; without more, the
//! statement runs on in PostgreSQL until it finishes, holding its
//! connection (sqlx drains it before reuse), its locks and a CPU. So the
//! deadline is also given to PostgreSQL as `statement_timeout`:
//!
//! - **Direct connection**: in the start-up packet (`options=-c
//!   statement_timeout=<DB_QUERY_TIMEOUT>`), so it costs no round trip. A
//!   statement is stopped at most the query timeout after it *started*
//!   (the call's own deadline also counts its queueing, so the caller
//!   always hears first). A query given a longer deadline of its own
//!   (`QueryOptions::timeout`) runs in a transaction that raises it with
//!   `SET LOCAL`.
//! - **Behind a transaction-mode pooler** (PgBouncer 1.18): the start-up
//!   `options` parameter is refused ("unsupported startup parameter"; and
//!   ignoring it would drop it silently), and a session `SET` lands on
//!   whichever server connection serves that one statement. What does
//!   work is a transaction: the pooler keeps one server connection for a
//!   transaction's whole length, so each query runs in a transaction that
//!   begins with `SET LOCAL statement_timeout = <time left>` (the generic
//!   seam is [`StatementDeadline`](crate::StatementDeadline)). Cost: two
//!   round trips per query, `BEGIN; SET LOCAL …; DEALLOCATE ALL` (one simple
//!   query) and `COMMIT`. Measured through PgBouncer 1.18 on loopback (release
//!   build, one connection, sequential `SELECT $1::bigint`, a loaded 2-core
//!   machine): 0.56 ms per query, against 0.18–0.36 ms for the same query
//!   sent without the transaction (unsafe under concurrency) and 0.06 ms on
//!   a direct connection with the statement cache on; so about +0.2–0.4 ms
//!   per query, paid only in this mode.
//!   Statements that cannot run in a transaction (`VACUUM`, `CREATE
//!   INDEX CONCURRENTLY`, `CREATE DATABASE`) fail in this mode: run them
//!   over a direct URL. A closure's own `begin()` becomes a savepoint; a
//!   closure that calls `begin_with` fails.
//!
//! Also considered: a cancel request at the deadline (sqlx 0.8 keeps the
//! backend key private to `PgConnection`, so there is no cancel request to
//! send), and PgBouncer's own `query_timeout` (one setting for every
//! client of the pooler, not the manager's per-query deadline; a useful
//! backstop to configure anyway).
//!
//! ## Prepared statements behind a pooler
//!
//! sqlx names the statements it prepares (`sqlx_s_1`, `sqlx_s_2`, …,
//! counted per client connection) and caches them per connection. Behind a
//! transaction-mode pooler, the next transaction may run on a server
//! connection that lacks the statement (`… does not exist`, SQLSTATE
//! 26000) or already has one of that name from another client (`…
//! already exists`, 42P05) (sqlx issue #67), or, worst, has *another*
//! client's statement of that name with the same parameter types, which
//! runs and returns the wrong rows (seen in `tests/postgres_pooler.rs`: up
//! to 30 wrong answers in 200 queries). Turning the cache off is not
//! enough with sqlx 0.8.6: it still names every statement and never closes
//! it, so the names collide all the same (sqlx issue #2473). Pooler-safe
//! mode (`?pgbouncer=true` or `DB_STATEMENT_CACHE=0`) therefore turns the
//! cache off *and* begins each query's transaction with `DEALLOCATE ALL`,
//! so a server connection carries no statement from its previous client.
//! Only queries through the manager are covered: a plain sqlx pool built
//! from the same options is not safe behind a pooler.
//!
//! When PostgreSQL answers with one of these errors anyway, hpdb's error
//! says how to fix it.
//!
//! The other price of unnamed statements: PostgreSQL plans each one on
//! every call, where a prepared statement is planned once per connection.
//! For a heavy statement planning can cost as much as running it
//! (GistFans' profile aggregate: ~1.8 ms to plan, ~2.5-3.5 ms to run). A
//! PL/pgSQL function keeps its statements' plans per server connection,
//! which a pooler's server connections outlive: put such a statement in
//! one (GistFans' `gistfans_profile`, migration 0003: 1,289 calls a second
//! against 614 for the bare statement, 1,369 prepared; pgbench, simple
//! protocol, two clients).

mod deadline;
mod replica;
mod target;

use sqlx::Postgres;

pub use deadline::PgStatementDeadline;
pub use target::{PgTarget, PgUrlError};

use crate::manager::{
    builder::{BuildError, ManagerBuilder},
    Manager,
};

impl ManagerBuilder<Postgres> {
    /// Connects to `target` and opens the minimum connections, with the
    /// statement deadline it needs. A connection failure names the URL
    /// (password hidden).
    ///
    /// With `DB_REPLICA_URLS`, reads made with
    /// [`Manager::execute_read_then`] may run on those replicas (see the
    /// `replica` module); their pools open connections on first use.
    pub async fn connect_target(self, target: &PgTarget) -> Result<Manager<Postgres>, BuildError> {
        self.with_replicas(target)?
            .statement_deadline(target.statement_deadline())
            .connect_to(target.options().clone(), Some(target.redacted_url()))
            .await
    }

    /// Builds for `target` without connecting (see
    /// [`build_lazy`](ManagerBuilder::build_lazy)), with the statement
    /// deadline it needs.
    pub fn build_lazy_target(self, target: &PgTarget) -> Result<Manager<Postgres>, BuildError> {
        self.with_replicas(target)?
            .statement_deadline(target.statement_deadline())
            .build_lazy(target.options().clone())
    }

    /// The replicas `DB_REPLICA_URLS` names for `primary`, if any.
    fn with_replicas(self, primary: &PgTarget) -> Result<Self, BuildError> {
        match replica::start(primary, self.config())
            .map_err(|e| BuildError::Config(crate::ConfigError(e.to_string())))?
        {
            Some((replicas, tasks)) => Ok(self.replicas(replicas, tasks)),
            None => Ok(self),
        }
    }
}
