//! SQLite: other processes' commits drop the cache (issue 21).
//!
//! SQLite has no change stream. What it has is `PRAGMA data_version`: on
//! one connection, a number that changes when, and only when, *another*
//! connection has committed since it was last read (a connection's own
//! commits leave it as it was). Another connection includes the other
//! connections of our own pool, so a watcher on a connection of its own
//! would see every write of ours too, and drop the cache at each: the hit
//! rate would collapse under any write load. Ignoring changes while one of
//! our writes ran would, in turn, miss the foreign commits made meanwhile.
//!
//! So [`ManagerBuilder::connect_sqlite`] gives the manager a *writer
//! lane* (`manager::writer`): every query marked
//! [`writes`](crate::QueryOptions::writes) runs on one dedicated
//! connection, and the version is read on that connection, before each
//! write and every `DB_DATA_VERSION_POLL` (250 ms) while no write holds
//! it. Our readers never commit, so a change seen there is exactly a commit
//! by someone else: another process, the `sqlite3` shell, a query of ours
//! not marked as a write (a mistake, and a safe one: it only costs a
//! clear). Then every cached entry is dropped through the ordinary path
//! (`Control::clear_cache`; with a shared level, on every instance). SQLite
//! lets one writer commit at a time anyway, so one write connection costs
//! no concurrency.
//!
//! What it guarantees, and what it does not:
//! - A commit by another connection drops every entry cached before it
//!   within the poll interval plus the time one write holds the writer
//!   (the first check that starts after the commit sees it); a read that
//!   starts after that drop is fresh.
//! - A write of ours never drops the cache: its aggregates are updated in
//!   place as before. An update in place whose snapshot predates a drop is
//!   refused, and the writer fetches the value again (a drop may stand for
//!   a commit its snapshot missed).
//! - Coarse: a drop empties the whole cache, whatever the commit changed;
//!   several commits between two checks are one drop. A busy external
//!   writer therefore costs the hit rate (its figures are in
//!   [`Status::changes`](crate::Status::changes): checks, foreign commits,
//!   epochs).
//! - With several instances on one SQLite file, each instance's writes are
//!   another's foreign commits: each of them drops every cache.
//! - A writer connection opened anew (after an error) knows no earlier
//!   version: its first check drops the cache.
//! - The writer connection is one more than `DB_POOL_MAX` (not in the
//!   pool's figures); writes queue for it on its own lock, not at the
//!   gate (they hold no slot a reader could use, and their wait is not
//!   counted as the pool's). It is opened from the pool's connect options:
//!   hooks given to `ManagerBuilder::pool_options` (`after_connect`) do
//!   not run on it. Built with `background_tasks(false)`, only writes
//!   check.
//! - A write waits for the writer while a hot user's write holds it
//!   through its whole cache step (the application's locks taken after
//!   the connection): on SQLite one write at a time, whatever the users.
//! - A write that times out on our side may still commit (SQLite has no
//!   server-side deadline); its commit is ours, so the watch does not
//!   see it either: what it changed stays cached until an invalidation or
//!   the TTL.

use futures::future::BoxFuture;
use sqlx::{sqlite::SqliteConnectOptions, Sqlite, SqliteConnection};

use crate::{
    changes::ChangeMode,
    manager::{
        builder::{BuildError, ManagerBuilder},
        writer::WriteWatch,
        Manager,
    },
};

/// `PRAGMA data_version`.
struct DataVersion;

impl WriteWatch<Sqlite> for DataVersion {
    fn version<'c>(
        &'c self,
        conn: &'c mut SqliteConnection,
    ) -> BoxFuture<'c, Result<i64, sqlx::Error>> {
        Box::pin(sqlx::query_scalar("PRAGMA data_version").fetch_one(conn))
    }
}

impl ManagerBuilder<Sqlite> {
    /// Connects to SQLite with `options`, and (unless
    /// `DB_DATA_VERSION_POLL` is 0) watches for other connections'
    /// commits: writes (queries marked
    /// [`writes`](crate::QueryOptions::writes)) run on one connection,
    /// whose `PRAGMA data_version` is read before each write and every
    /// poll interval while idle; a change drops every cached entry. One log
    /// line says so, and [`Status::changes`](crate::Status::changes) is in
    /// mode [`ChangeMode::DataVersion`] (else `Unavailable`, with why).
    pub async fn connect_sqlite(
        self,
        options: SqliteConnectOptions,
    ) -> Result<Manager<Sqlite>, BuildError> {
        let manager = self.write_watch(DataVersion).connect_with(options).await?;
        let poll = manager.config().data_version_poll;
        let (mode, detail) = if poll.is_zero() {
            let why = "DB_DATA_VERSION_POLL is 0: writes made by other processes stay cached \
                       until their TTL";
            tracing::warn!("SQLite: {why}");
            (ChangeMode::Unavailable, why.to_string())
        } else {
            let what = format!(
                "other processes' commits are detected by PRAGMA data_version on the writer \
                 connection (at each write, and every {} ms while idle); each drops every cached \
                 entry (coarse: the whole cache)",
                poll.as_millis()
            );
            tracing::info!("SQLite: {what}");
            (ChangeMode::DataVersion, what)
        };
        manager.core().changes.set_mode(mode, Some(detail));
        Ok(manager)
    }
}
