//! From configuration to a running [`Manager`]: validation, the sqlx pool
//! options, the shared state, the background tasks, and (unless built lazily)
//! the minimum connections opened before the manager is handed out.

use std::sync::Arc;

use sqlx::{pool::PoolOptions, Connection, Database};
use tokio::{sync::Semaphore, task::JoinHandle};

use super::{
    writer::{WriteWatch, Writer},
    DbPool, Manager,
};
use crate::{
    config::{ConfigError, ManagerConfig},
    control::{core::Core, tasks, Control},
    deadline::{SessionDeadline, StatementDeadline},
    error::pooler_hint,
    io_runtime,
    redact::redacted_url,
    replica::Replicas,
};

/// Failure to start a manager.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// The configuration was rejected.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The minimum connections could not be opened.
    #[error(
        "could not open the minimum {min} connections{}: {source}{}",
        to_target(.target),
        pooler_hint(.source)
    )]
    Connect {
        /// The configured minimum.
        min: u32,
        /// Where, as a URL with its password hidden (when the manager was
        /// given a URL).
        target: Option<String>,
        /// The underlying sqlx error.
        #[source]
        source: sqlx::Error,
    },
}

fn to_target(target: &Option<String>) -> String {
    target
        .as_ref()
        .map(|t| format!(" to {t}"))
        .unwrap_or_default()
}

/// A caller's adjustment of the sqlx pool options.
type CustomizePool<DB> = Box<dyn FnOnce(PoolOptions<DB>) -> PoolOptions<DB> + Send>;

/// Builds a [`Manager`]; see [`Manager::builder`].
#[must_use]
pub struct ManagerBuilder<DB: Database> {
    config: ManagerConfig,
    customize: Option<CustomizePool<DB>>,
    deadline: Option<Arc<dyn StatementDeadline>>,
    session: Option<Arc<dyn SessionDeadline<DB>>>,
    watch: Option<Arc<dyn WriteWatch<DB>>>,
    background: bool,
    /// Replicas reads may use, with their pollers (PostgreSQL's
    /// `connect_target` sets them from `DB_REPLICA_URLS`).
    replicas: Option<(Replicas<DB>, Vec<JoinHandle<()>>)>,
}

impl<DB: Database> Manager<DB> {
    /// Starts building a manager with `config`.
    pub fn builder(config: ManagerConfig) -> ManagerBuilder<DB> {
        ManagerBuilder {
            config,
            customize: None,
            deadline: None,
            session: None,
            watch: None,
            background: true,
            replicas: None,
        }
    }

    /// Connects to `url` with `config`.
    pub async fn connect(url: &str, config: ManagerConfig) -> Result<Self, BuildError> {
        Self::builder(config).connect(url).await
    }
}

impl<DB: Database> ManagerBuilder<DB> {
    /// Adjusts the sqlx pool options after the manager has applied its
    /// configuration (for `after_connect` hooks and the like).
    pub fn pool_options(
        mut self,
        f: impl FnOnce(PoolOptions<DB>) -> PoolOptions<DB> + Send + 'static,
    ) -> Self {
        self.customize = Some(Box::new(f));
        self
    }

    /// How each query's deadline reaches the database (default: it does
    /// not; the caller stops waiting and the statement runs on). See
    /// [`StatementDeadline`]; `connect_target` (feature `postgres`) sets
    /// PostgreSQL's, `connect_mysql` (feature `mysql`) MySQL's and MariaDB's.
    pub fn statement_deadline(mut self, deadline: impl StatementDeadline) -> Self {
        self.deadline = Some(Arc::new(deadline));
        self
    }

    /// Sets the backend's session limit before each query (see
    /// [`SessionDeadline`]; `mysql` installs MySQL's and MariaDB's).
    #[cfg_attr(not(feature = "mysql"), allow(dead_code))]
    pub(crate) fn session_deadline(mut self, session: impl SessionDeadline<DB>) -> Self {
        self.session = Some(Arc::new(session));
        self
    }

    /// The configuration being built.
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    pub(crate) fn config(&self) -> &ManagerConfig {
        &self.config
    }

    /// Replicas reads may use, and the tasks that poll them (stopped with
    /// the manager; `postgres` installs them).
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    pub(crate) fn replicas(mut self, replicas: Replicas<DB>, tasks: Vec<JoinHandle<()>>) -> Self {
        self.replicas = Some((replicas, tasks));
        self
    }

    /// Runs writes on one connection checked by `watch` for other
    /// connections' commits, every `data_version_poll` while idle (see
    /// `writer`; `sqlite` installs SQLite's `data_version`). Backends
    /// without one leave it unset.
    #[cfg_attr(not(feature = "sqlite"), allow(dead_code))]
    pub(crate) fn write_watch(mut self, watch: impl WriteWatch<DB>) -> Self {
        self.watch = Some(Arc::new(watch));
        self
    }

    /// A failure to reach the database before the manager exists (a
    /// backend's start-up question), as [`connect`](Self::connect)'s.
    #[cfg_attr(not(feature = "mysql"), allow(dead_code))]
    pub(crate) fn connect_failed(&self, target: Option<&str>, source: sqlx::Error) -> BuildError {
        BuildError::Connect {
            min: self.config.pool.min_connections,
            target: target.map(str::to_string),
            source,
        }
    }

    /// Whether to start the health, leak and sweep tasks (default true).
    /// Tests that drive them by hand turn this off.
    pub fn background_tasks(mut self, on: bool) -> Self {
        self.background = on;
        self
    }

    /// Connects to `url` and opens the minimum connections.
    pub async fn connect(self, url: &str) -> Result<Manager<DB>, BuildError> {
        let target = redacted_url(url);
        let opts = url
            .parse::<<DB::Connection as Connection>::Options>()
            .map_err(|source| BuildError::Connect {
                min: self.config.pool.min_connections,
                target: Some(target.clone()),
                source,
            })?;
        self.connect_to(opts, Some(&target)).await
    }

    /// Connects with explicit connect options and opens the minimum connections.
    pub async fn connect_with(
        self,
        opts: <DB::Connection as Connection>::Options,
    ) -> Result<Manager<DB>, BuildError> {
        self.connect_to(opts, None).await
    }

    /// [`connect_with`](Self::connect_with), naming `target` in its error.
    pub(crate) async fn connect_to(
        self,
        opts: <DB::Connection as Connection>::Options,
        target: Option<&str>,
    ) -> Result<Manager<DB>, BuildError> {
        let min = self.config.pool.min_connections;
        let manager = self.build_lazy(opts)?;
        manager
            .warm_up()
            .await
            .map_err(|source| BuildError::Connect {
                min,
                target: target.map(str::to_string),
                source,
            })?;
        Ok(manager)
    }

    /// Builds without connecting: connections open on first use. Useful when
    /// the database may be down at start-up (the circuit breaker takes over).
    pub fn build_lazy(
        self,
        opts: <DB::Connection as Connection>::Options,
    ) -> Result<Manager<DB>, BuildError> {
        let config = self.config;
        config.validate()?;
        let p = &config.pool;
        let mut pool_options = PoolOptions::<DB>::new()
            .min_connections(p.min_connections)
            .max_connections(p.ceiling())
            .idle_timeout(Some(p.idle_timeout))
            .acquire_timeout(p.acquire_timeout)
            .max_lifetime(p.max_lifetime)
            // The health monitor pings idle connections; sqlx pings every
            // connection on release already, so a ping per acquire would only
            // add a round trip to every query.
            .test_before_acquire(false);
        if let Some(f) = self.customize {
            pool_options = f(pool_options);
        }
        // sqlx's pool maintenance (idle reaping, the minimum's refill)
        // spawns where the pool is built: on the I/O runtime, as the
        // connections it opens.
        let pool = io_runtime::enter(p.io_threads, || pool_options.connect_lazy_with(opts));
        let poll = config.data_version_poll;
        let writer = self
            .watch
            .filter(|_| !poll.is_zero())
            .map(|watch| Arc::new(Writer::new(pool.connect_options(), watch)));
        let (replicas, replica_tasks) = match self.replicas {
            Some((r, tasks)) => (Some(r), tasks),
            None => (None, Vec::new()),
        };
        let db = Arc::new(DbPool {
            pool,
            deadline: self.deadline,
            session: self.session,
            opens: Arc::new(Semaphore::new(p.max_concurrent_opens.max(1) as usize)),
            writer: writer.clone(),
            replicas,
        });
        let core = Arc::new(Core::new(config, db.clone())?);
        core.tasks.lock().extend(replica_tasks);
        if self.background {
            tasks::start(&core);
            if let Some(writer) = &writer {
                let poll = writer.spawn_poll(Arc::downgrade(&core), poll);
                core.tasks.lock().push(poll);
            }
        }
        let manager = Manager {
            control: Control { core },
            db,
        };
        Ok(manager)
    }
}
