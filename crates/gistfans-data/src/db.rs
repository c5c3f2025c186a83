//! Which database, and the two ways of reaching it.
//!
//! [`Db`] is chosen once, from the URL, at start-up: a [`Store`] for SQLite
//! or PostgreSQL behind a trait object (the optimised path through the hpdb
//! manager, and a plain sqlx pool of the same size for the baseline: one
//! pool, no admission, no cache), and the manager's backend-free
//! [`Control`]. Nothing outside this module and `store` names a sqlx
//! database type.

use std::{str::FromStr, sync::Arc, time::Duration};

use hpdb::{Control, Manager, ManagerConfig};
use sqlx::{
    pool::PoolOptions,
    postgres::{PgConnectOptions, PgPoolOptions},
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous},
    Database, Postgres, Sqlite,
};

use crate::{
    error::DataError,
    store::{SqlStore, Store},
};

/// The database: the store of the backend chosen at start-up, and the
/// manager's control handle. Cheap to clone.
#[derive(Clone)]
pub struct Db {
    backend: Backend,
    control: Control,
    store: Arc<dyn Store>,
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

/// The baseline pool: as large as the manager's, opened lazily.
fn baseline_options<DB: Database>(config: &ManagerConfig) -> PoolOptions<DB> {
    PoolOptions::new()
        .max_connections(config.pool.max_connections)
        .min_connections(0)
        .idle_timeout(config.pool.idle_timeout)
        .acquire_timeout(config.pool.acquire_timeout)
}

impl Db {
    /// Connects both paths. The baseline pool opens connections lazily.
    pub async fn connect(url: &str, config: ManagerConfig) -> Result<Db, DataError> {
        Self::connect_with_baseline(url, None, config).await
    }

    /// Connects both paths, the baseline pool to `baseline_url` when given
    /// (the same database behind a pooler, say); it opens connections lazily.
    pub async fn connect_with_baseline(
        url: &str,
        baseline_url: Option<&str>,
        config: ManagerConfig,
    ) -> Result<Db, DataError> {
        let backend = Backend::of_url(url)?;
        let baseline_url = baseline_url.unwrap_or(url);
        if Backend::of_url(baseline_url)? != backend {
            return Err(DataError::Invalid(
                "the baseline's database URL names another kind of database".into(),
            ));
        }
        let (control, store): (Control, Arc<dyn Store>) = match backend {
            Backend::Sqlite => {
                let opts = sqlite_options(url)?;
                let baseline = baseline_options(&config);
                let manager = Manager::<Sqlite>::builder(config)
                    .connect_with(opts)
                    .await
                    .map_err(|e| DataError::setup(format!("cannot open {url}"), e))?;
                let baseline = baseline.connect_lazy_with(sqlite_options(baseline_url)?);
                (
                    manager.control(),
                    Arc::new(SqlStore::new(manager, baseline)),
                )
            }
            Backend::Postgres => {
                let opts = pg_options(url)?;
                let max = config.pool.max_connections;
                let baseline = baseline_options(&config);
                let manager = Manager::<Postgres>::builder(config)
                    .connect_with(opts.application_name("gistfans"))
                    .await
                    .map_err(|e| DataError::setup("cannot connect to PostgreSQL", e))?;
                crate::connection_plan::check(&manager, max).await?;
                let baseline = baseline
                    .connect_lazy_with(pg_options(baseline_url)?.application_name("gistfans_baseline"));
                (
                    manager.control(),
                    Arc::new(SqlStore::new(manager, baseline)),
                )
            }
        };
        Ok(Db {
            backend,
            control,
            store,
        })
    }

    /// Which dialect.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The manager, for everything that runs no query: status, advice,
    /// configuration, the cache, resizing, metrics, health checks.
    pub fn control(&self) -> &Control {
        &self.control
    }

    /// The database code of the chosen backend.
    pub(crate) fn store(&self) -> &dyn Store {
        &*self.store
    }

    /// The status of the manager.
    pub fn status(&self) -> hpdb::Status {
        self.control.status()
    }

    /// Queries queued for a connection in the manager now (cheap).
    pub fn pending_requests(&self) -> usize {
        self.control.pending_requests()
    }

    /// Whether the database answers a trivial query now, through the
    /// manager at critical priority, within `timeout`.
    pub async fn ping(&self, timeout: Duration) -> Result<(), hpdb::Error> {
        self.store.ping(timeout).await
    }

    /// Closes both pools.
    pub async fn close(&self) {
        self.store.close().await
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
