//! Which database, and the two ways of reaching it.
//!
//! [`Db`] is chosen once, from the URL, at start-up: a [`Store`] for SQLite
//! or PostgreSQL behind a trait object (the optimised path through the hpdb
//! manager, and a plain sqlx pool of the same size for the baseline: one
//! pool, no admission, no cache), and the manager's backend-free
//! [`Control`]. Nothing outside this module and `store` names a sqlx
//! database type.

use std::{str::FromStr, sync::Arc, time::Duration};

use hpdb::{postgres::PgTarget, Control, Manager, ManagerConfig};
use sqlx::{
    pool::PoolOptions,
    postgres::PgConnectOptions,
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous},
    Database, Postgres, Sqlite,
};

use crate::{
    error::DataError,
    store::{SqlStore, Store, WriteSql},
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
        let own_prefix = hpdb::changes::ChangesConfig::new("", &config.shared.namespace).own_prefix;
        let (control, store): (Control, Arc<dyn Store>) = match backend {
            Backend::Sqlite => {
                let opts = sqlite_options(url)?;
                let baseline = baseline_options(&config);
                let manager = Manager::<Sqlite>::builder(config)
                    .connect_sqlite(opts)
                    .await
                    .map_err(|e| DataError::setup(format!("cannot open {url}"), e))?;
                let baseline = baseline.connect_lazy_with(sqlite_options(baseline_url)?);
                (
                    manager.control(),
                    Arc::new(SqlStore::new(manager, baseline, false, WriteSql::plain())),
                )
            }
            Backend::Postgres => {
                let target = PgTarget::from_url(url, &config)
                    .map_err(|e| DataError::setup("bad DATABASE_URL", e))?
                    .map_options(|o| o.application_name("gistfans"));
                let baseline_target = PgTarget::from_url(baseline_url, &config)
                    .map_err(|e| DataError::setup("bad baseline database URL", e))?
                    .map_options(|o| o.application_name("gistfans_baseline"));
                let max = config.pool.max_connections;
                let baseline = baseline_options(&config);
                let manager = Manager::<Postgres>::builder(config)
                    .connect_target(&target)
                    .await
                    .map_err(|e| DataError::setup("cannot connect to PostgreSQL", e))?;
                if target.behind_pooler() {
                    // The pooler, not this process, decides how many server
                    // connections PostgreSQL sees.
                    tracing::info!(url = target.redacted_url(), "PostgreSQL behind a transaction-mode pooler: statements unnamed, deadlines per query");
                } else {
                    crate::connection_plan::check(&manager, max).await?;
                }
                let pinned = baseline_target.behind_pooler();
                let baseline = baseline.connect_lazy_with(baseline_target.options().clone());
                (
                    manager.control(),
                    Arc::new(SqlStore::new(
                        manager,
                        baseline,
                        pinned,
                        WriteSql::marked(&own_prefix),
                    )),
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

    /// The database code, held weakly: for what the manager itself keeps
    /// (the consistency monitor's verifiers), which must not keep it alive.
    pub(crate) fn store_weak(&self) -> std::sync::Weak<dyn Store> {
        Arc::downgrade(&self.store)
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

/// The URL for work that needs a session of its own (migrations, which hold
/// a lock across transactions; seeding, which prepares statements and bulk
/// loads): `direct_url` when given, else `url`, unless `url` says it goes
/// through a transaction-mode pooler (`?pgbouncer=true`), which cannot
/// give one.
pub fn session_url<'a>(url: &'a str, direct_url: Option<&'a str>) -> Result<&'a str, DataError> {
    if let Some(direct) = direct_url {
        return Ok(direct);
    }
    if Backend::of_url(url)? == Backend::Postgres {
        let target = PgTarget::from_url(url, &ManagerConfig::default())
            .map_err(|e| DataError::setup("bad DATABASE_URL", e))?;
        if target.behind_pooler() {
            return Err(DataError::Invalid(format!(
                "{} goes through a transaction-mode pooler, which cannot hold a session for \
                 migrations and seeding: set DIRECT_URL to the database itself",
                target.redacted_url()
            )));
        }
    }
    Ok(url)
}

/// Applies the migrations, over [`session_url`].
pub async fn migrate(url: &str, direct_url: Option<&str>) -> Result<(), DataError> {
    // One connection, not a pool: a failure to connect then says why
    // (refused, authentication, no such database), not "pool timed out".
    use sqlx::{ConnectOptions, Connection};
    let fail = |e: sqlx::migrate::MigrateError| DataError::setup("migration failed", e);
    match Backend::of_url(url)? {
        Backend::Sqlite => {
            let mut conn = sqlite_options(url)?
                .connect()
                .await
                .map_err(|e| DataError::setup(format!("cannot open {url}"), e))?;
            sqlx::migrate!("./migrations/sqlite")
                .run(&mut conn)
                .await
                .map_err(fail)?;
            conn.close().await.ok();
        }
        Backend::Postgres => {
            let target = session_url(url, direct_url)?;
            let mut conn = pg_options(target)?.connect().await.map_err(|e| {
                let at = hpdb::redacted_url(target);
                DataError::setup(format!("cannot connect to {at} for migrations"), e)
            })?;
            sqlx::migrate!("./migrations/postgres")
                .run(&mut conn)
                .await
                .map_err(fail)?;
            conn.close().await.ok();
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_never_go_through_a_transaction_mode_pooler() {
        let pooled = "postgres://app:s3cret@127.0.0.1:6432/gf?pgbouncer=true";
        let direct = "postgres://app:s3cret@127.0.0.1:5432/gf";
        assert_eq!(session_url(pooled, Some(direct)).unwrap(), direct);
        assert_eq!(session_url(direct, None).unwrap(), direct);
        assert_eq!(session_url("sqlite://x.db", None).unwrap(), "sqlite://x.db");
        let refused = session_url(pooled, None).unwrap_err().to_string();
        assert!(refused.contains("set DIRECT_URL"), "{refused}");
        assert!(
            !refused.contains("s3cret"),
            "the password leaked: {refused}"
        );
    }
}
