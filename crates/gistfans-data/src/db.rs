//! Which database, and the two ways of reaching it.
//!
//! [`Db`] holds, for SQLite or PostgreSQL, the hpdb [`Manager`] (the
//! optimised path) and a plain sqlx pool of the same size (the baseline: the
//! seed's "before", one pool, no admission, no cache). Code that is the same
//! for both dialects is written once inside [`on_manager!`] / [`on_baseline!`],
//! which expand it for each concrete database type; sqlx's generic bounds
//! would otherwise swamp every function.

use std::{str::FromStr, time::Duration};

use hpdb::{Manager, ManagerConfig};
use sqlx::{
    postgres::{PgConnectOptions, PgPoolOptions},
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous},
    PgPool, Postgres, Sqlite, SqlitePool,
};

use crate::error::DataError;

/// The database, through the manager and through the plain baseline pool.
#[derive(Clone)]
pub enum Db {
    /// The embedded default.
    Sqlite {
        /// The optimised path.
        manager: Manager<Sqlite>,
        /// The baseline path.
        baseline: SqlitePool,
    },
    /// The production backend.
    Postgres {
        /// The optimised path.
        manager: Manager<Postgres>,
        /// The baseline path.
        baseline: PgPool,
    },
}

/// Runs `$body` with `$m` bound to the manager, for either backend.
#[macro_export]
macro_rules! on_manager {
    ($db:expr, $m:ident => $body:expr) => {
        match $db {
            $crate::Db::Sqlite { manager: $m, .. } => $body,
            $crate::Db::Postgres { manager: $m, .. } => $body,
        }
    };
}

/// Runs `$body` with `$p` bound to the baseline pool, for either backend.
#[macro_export]
macro_rules! on_baseline {
    ($db:expr, $p:ident => $body:expr) => {
        match $db {
            $crate::Db::Sqlite { baseline: $p, .. } => $body,
            $crate::Db::Postgres { baseline: $p, .. } => $body,
        }
    };
}

/// The dialect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// SQLite.
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

impl Backend {
    /// The backend a URL names.
    pub fn of_url(url: &str) -> Result<Backend, DataError> {
        if url.starts_with("sqlite:") {
            Ok(Backend::Sqlite)
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Ok(Backend::Postgres)
        } else {
            Err(DataError::Invalid(format!(
                "DATABASE_URL `{url}` is neither sqlite: nor postgres:"
            )))
        }
    }
}

/// SQLite connect options: WAL, foreign keys, a busy timeout, created if missing.
pub fn sqlite_options(url: &str) -> Result<SqliteConnectOptions, DataError> {
    let opts = SqliteConnectOptions::from_str(url)
        .map_err(|e| DataError::setup(format!("bad SQLite URL `{url}`"), e))?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .foreign_keys(true)
        .busy_timeout(Duration::from_secs(5));
    if let Some(dir) = opts.get_filename().parent() {
        if !dir.as_os_str().is_empty() {
            std::fs::create_dir_all(dir)
                .map_err(|e| DataError::setup(format!("cannot create {}", dir.display()), e))?;
        }
    }
    Ok(opts)
}

fn pg_options(url: &str) -> Result<PgConnectOptions, DataError> {
    PgConnectOptions::from_str(url).map_err(|e| DataError::setup("bad PostgreSQL URL", e))
}

impl Db {
    /// Connects both paths. The baseline pool opens connections lazily.
    pub async fn connect(url: &str, config: ManagerConfig) -> Result<Db, DataError> {
        let max = config.pool.max_connections;
        let acquire = config.pool.acquire_timeout;
        let idle = config.pool.idle_timeout;
        match Backend::of_url(url)? {
            Backend::Sqlite => {
                let opts = sqlite_options(url)?;
                let manager = Manager::<Sqlite>::builder(config)
                    .connect_with(opts.clone())
                    .await
                    .map_err(|e| DataError::setup(format!("cannot open {url}"), e))?;
                let baseline = SqlitePoolOptions::new()
                    .max_connections(max)
                    .min_connections(0)
                    .idle_timeout(idle)
                    .acquire_timeout(acquire)
                    .connect_lazy_with(opts);
                Ok(Db::Sqlite { manager, baseline })
            }
            Backend::Postgres => {
                let opts = pg_options(url)?;
                let manager = Manager::<Postgres>::builder(config)
                    .connect_with(opts.clone().application_name("gistfans"))
                    .await
                    .map_err(|e| DataError::setup("cannot connect to PostgreSQL", e))?;
                check_connection_plan(&manager, max).await?;
                let baseline = PgPoolOptions::new()
                    .max_connections(max)
                    .min_connections(0)
                    .idle_timeout(idle)
                    .acquire_timeout(acquire)
                    .connect_lazy_with(opts.application_name("gistfans_baseline"));
                Ok(Db::Postgres { manager, baseline })
            }
        }
    }

    /// Which dialect.
    pub fn backend(&self) -> Backend {
        match self {
            Db::Sqlite { .. } => Backend::Sqlite,
            Db::Postgres { .. } => Backend::Postgres,
        }
    }

    /// The status of the manager.
    pub fn status(&self) -> hpdb::Status {
        on_manager!(self, m => m.status())
    }

    /// Queries queued for a connection in the manager now (cheap).
    pub fn pending_requests(&self) -> usize {
        on_manager!(self, m => m.pending_requests())
    }

    /// Closes both pools.
    pub async fn close(&self) {
        on_manager!(self, m => m.close().await);
        on_baseline!(self, p => p.close().await);
    }
}

/// Checks the pools' plan against PostgreSQL's connection limit.
///
/// This process may open up to `manager max + baseline max` connections
/// (the baseline pool only when its routes are used). PostgreSQL keeps
/// `superuser_reserved_connections` (and, from 16, `reserved_connections`)
/// out of everyone else's reach. A manager maximum beyond what PostgreSQL
/// allows at all can never work: start-up fails and names both numbers.
/// A plan that fits only if other clients leave room is logged as a
/// warning, and the manager's advisor alerts on it for as long as it runs.
async fn check_connection_plan(
    manager: &Manager<Postgres>,
    baseline_max: u32,
) -> Result<(), DataError> {
    let (limit, reserved, in_use): (i32, i32, i64) = manager
        .execute_query(
            "connection_plan",
            hpdb::QueryOptions::uncached(),
            |conn| {
                Box::pin(async move {
                    sqlx::query_as(
                        "SELECT current_setting('max_connections')::int, \
                                current_setting('superuser_reserved_connections')::int \
                                + coalesce(current_setting('reserved_connections', true)::int, 0), \
                                (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')",
                    )
                    .fetch_one(conn)
                    .await
                })
            },
        )
        .await
        .map(|r| *r)
        .map_err(|e| DataError::setup("cannot read PostgreSQL's connection limit", e))?;
    let plan = plan_connections(
        manager.config().pool.max_connections,
        baseline_max,
        limit,
        reserved,
        in_use,
        manager.pool().size(),
    );
    if let Some(budget) = plan.budget {
        manager.set_connection_budget(budget);
    }
    match plan.verdict {
        PlanVerdict::Fits => Ok(()),
        PlanVerdict::Tight(message) => {
            tracing::warn!("{message}");
            Ok(())
        }
        PlanVerdict::Impossible(message) => Err(DataError::Invalid(message)),
    }
}

/// What [`plan_connections`] found.
#[derive(Debug, PartialEq)]
struct Plan {
    /// Connections the database can give the manager's pool.
    budget: Option<u32>,
    verdict: PlanVerdict,
}

#[derive(Debug, PartialEq)]
enum PlanVerdict {
    Fits,
    Tight(String),
    Impossible(String),
}

/// The arithmetic of [`check_connection_plan`]: `ours` is how many of the
/// `in_use` client connections are this manager's own.
fn plan_connections(
    manager_max: u32,
    baseline_max: u32,
    limit: i32,
    reserved: i32,
    in_use: i64,
    ours: u32,
) -> Plan {
    let usable = i64::from(limit - reserved).max(0);
    let others = (in_use - i64::from(ours)).max(0);
    let free = (usable - others).max(0);
    let budget = u32::try_from((free - i64::from(baseline_max)).max(0)).ok();
    let planned = i64::from(manager_max) + i64::from(baseline_max);
    let verdict = if i64::from(manager_max) > usable {
        PlanVerdict::Impossible(format!(
            "DB_POOL_MAX is {manager_max}, but PostgreSQL accepts at most {usable} ordinary connections \
             (max_connections {limit} less {reserved} reserved): lower DB_POOL_MAX or raise max_connections"
        ))
    } else if planned > free {
        PlanVerdict::Tight(format!(
            "this server may open {planned} connections (pool {manager_max} + baseline {baseline_max}) \
             but PostgreSQL has {free} free ({usable} usable, {others} held by other clients): \
             under load, other clients may be refused; lower DB_POOL_MAX or raise max_connections"
        ))
    } else {
        PlanVerdict::Fits
    };
    Plan { budget, verdict }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pool_larger_than_the_database_allows_is_refused() {
        let plan = plan_connections(150, 150, 100, 3, 5, 2);
        assert!(
            matches!(plan.verdict, PlanVerdict::Impossible(ref m) if m.contains("150") && m.contains("97")),
            "{plan:?}"
        );
    }

    #[test]
    fn a_plan_that_needs_other_clients_to_leave_room_is_tight() {
        // 97 usable, 40 held by others: 57 free, and we may open 60.
        let plan = plan_connections(30, 30, 100, 3, 42, 2);
        assert!(matches!(plan.verdict, PlanVerdict::Tight(_)), "{plan:?}");
        assert_eq!(plan.budget, Some(27));
    }

    #[test]
    fn the_defaults_fit_a_default_postgresql() {
        let plan = plan_connections(10, 10, 100, 3, 7, 2);
        assert_eq!(plan.verdict, PlanVerdict::Fits);
        assert_eq!(plan.budget, Some(82));
    }
}

/// Applies the migrations. On PostgreSQL they run over `direct_url` when
/// given (bypassing a transaction-mode pooler such as PgBouncer, which
/// cannot hold the migration lock), else over `url`.
pub async fn migrate(url: &str, direct_url: Option<&str>) -> Result<(), DataError> {
    let fail = |e: sqlx::migrate::MigrateError| DataError::setup("migration failed", e);
    match Backend::of_url(url)? {
        Backend::Sqlite => {
            let pool = SqlitePoolOptions::new()
                .max_connections(1)
                .connect_with(sqlite_options(url)?)
                .await
                .map_err(|e| DataError::setup(format!("cannot open {url}"), e))?;
            sqlx::migrate!("./migrations/sqlite")
                .run(&pool)
                .await
                .map_err(fail)?;
            pool.close().await;
        }
        Backend::Postgres => {
            let target = direct_url.unwrap_or(url);
            let pool = PgPoolOptions::new()
                .max_connections(1)
                .connect_with(pg_options(target)?)
                .await
                .map_err(|e| DataError::setup("cannot connect to PostgreSQL for migrations", e))?;
            sqlx::migrate!("./migrations/postgres")
                .run(&pool)
                .await
                .map_err(fail)?;
            pool.close().await;
        }
    }
    Ok(())
}
