//! Which database, and the two ways of reaching it.
//!
//! [`Db`] holds, for SQLite or PostgreSQL, the hpdb [`Manager`] (the
//! optimised path) and a plain sqlx pool of the same size (the baseline: the
//! seed's "before", one pool, no admission, no cache). Code that is the same
//! for both dialects is written once inside [`on_manager!`] / [`on_baseline!`],
//! which expand it for each concrete database type; sqlx's generic bounds
//! would otherwise swamp every function.

use std::{str::FromStr, time::Duration};

use hpdb::{Control, Manager, ManagerConfig};
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
        /// The manager, without its database type.
        control: Control,
    },
    /// The production backend.
    Postgres {
        /// The optimised path.
        manager: Manager<Postgres>,
        /// The baseline path.
        baseline: PgPool,
        /// The manager, without its database type.
        control: Control,
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
                let control = manager.control();
                Ok(Db::Sqlite {
                    manager,
                    baseline,
                    control,
                })
            }
            Backend::Postgres => {
                let opts = pg_options(url)?;
                let manager = Manager::<Postgres>::builder(config)
                    .connect_with(opts.clone().application_name("gistfans"))
                    .await
                    .map_err(|e| DataError::setup("cannot connect to PostgreSQL", e))?;
                crate::connection_plan::check(&manager, max).await?;
                let baseline = PgPoolOptions::new()
                    .max_connections(max)
                    .min_connections(0)
                    .idle_timeout(idle)
                    .acquire_timeout(acquire)
                    .connect_lazy_with(opts.application_name("gistfans_baseline"));
                let control = manager.control();
                Ok(Db::Postgres {
                    manager,
                    baseline,
                    control,
                })
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

    /// The manager, for everything that runs no query: status, advice,
    /// configuration, the cache, resizing, metrics, health checks.
    pub fn control(&self) -> &Control {
        match self {
            Db::Sqlite { control, .. } | Db::Postgres { control, .. } => control,
        }
    }

    /// The status of the manager.
    pub fn status(&self) -> hpdb::Status {
        self.control().status()
    }

    /// Queries queued for a connection in the manager now (cheap).
    pub fn pending_requests(&self) -> usize {
        self.control().pending_requests()
    }

    /// Whether the database answers a trivial query now, through the
    /// manager at critical priority, within `timeout`.
    pub async fn ping(&self, timeout: Duration) -> Result<(), hpdb::Error> {
        let opts = hpdb::QueryOptions::uncached()
            .priority(hpdb::Priority::CRITICAL)
            .timeout(timeout);
        on_manager!(self, m => m.execute_query("readyz", opts, |conn| Box::pin(async move {
            sqlx::query_scalar::<_, i64>("SELECT CAST(1 AS BIGINT)").fetch_one(conn).await
        })).await)?;
        Ok(())
    }

    /// Closes both pools.
    pub async fn close(&self) {
        on_manager!(self, m => m.close().await);
        on_baseline!(self, p => p.close().await);
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
