//! The composition root: a [`ServerConfig`] (plain data) becomes a
//! [`Server`] — database prepared, pools connected, service, router, bound
//! socket — in one place, [`Server::build`]. `gistfans serve` and the API
//! tests both start the server this way; `gistfans bench` starts
//! `gistfans serve` as a child process.
//!
//! Nothing here parses flags or reads the environment: `cli` turns flags
//! and variables into a `ServerConfig`, and hpdb reads its own variables
//! (`ManagerConfig::from_env`).

use std::{future::Future, net::SocketAddr, time::Duration};

use anyhow::Context;
use gistfans_data::{seed, Backend, DataAggregationService, Db, Preload};
use hpdb::ManagerConfig;
use tokio::net::TcpListener;

use crate::{
    dashboard::{Feed, StreamLimits},
    listener::{self, ConnectionLimits},
    routes,
    state::AppState,
};

/// The server's defaults, shared by [`ServerConfig::new`] and the CLI's help.
pub mod defaults {
    /// The embedded SQLite database, created and seeded on first start.
    pub const DATABASE_URL: &str = "sqlite://data/gistfans.db";
    /// Loopback only.
    pub const BIND: &str = "127.0.0.1:3000";
    /// Longest a request may take (ms).
    pub const REQUEST_TIMEOUT_MS: u64 = 20_000;
    /// Longest wait for a request head; also the keep-alive idle timeout (ms).
    pub const HEADER_READ_TIMEOUT_MS: u64 = 10_000;
    /// Longest a response write may make no progress (ms).
    pub const WRITE_TIMEOUT_MS: u64 = 10_000;
    /// Client connections open at once; 0 derives the cap from the
    /// file-descriptor limit (at most 10,000).
    pub const MAX_CONNECTIONS: usize = 0;
    /// Profiles of the most-followed users warmed at start-up.
    pub const WARM_USERS: i64 = 200;
    /// Which profiles a profile view preloads.
    pub const PRELOAD: gistfans_data::Preload = gistfans_data::Preload::Followees;
}

/// Everything the server is built from.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// `sqlite://path` or `postgres://…`.
    pub database_url: String,
    /// Direct PostgreSQL URL for migrations and seeding (bypassing a pooler).
    pub direct_url: Option<String>,
    /// The baseline routes' own database URL (default: `database_url`).
    pub baseline_url: Option<String>,
    /// The connection manager's knobs.
    pub manager: ManagerConfig,
    /// Address to listen on (port 0: any free port, see [`Server::local_addr`]).
    pub bind: SocketAddr,
    /// Token of the admin routes; they answer 403 without one.
    pub admin_token: Option<String>,
    /// Longest a request may take.
    pub request_timeout: Duration,
    /// The connection layer's deadlines and bounds; `max_connections` 0 is
    /// derived from the file-descriptor limit when the server is built.
    pub limits: ConnectionLimits,
    /// Profiles of the most-followed users warmed at start-up (0: none).
    pub warm_users: i64,
    /// Bounds of the dashboard's status stream (clients, lifetime, backlog).
    pub stream: StreamLimits,
    /// Which profiles reading a profile preloads (off only in tests that
    /// count queries or need a profile to stay uncached).
    pub preload: Preload,
    /// A bare axum handler on this address besides the server (see
    /// [`ceiling_router`]): what `gistfans bench --mode ceiling` measures.
    pub ceiling_bind: Option<SocketAddr>,
    /// Invalidate from PostgreSQL's change stream (default true; see
    /// `hpdb::changes`): writes made around the server reach the caches.
    /// (SQLite's counterpart is the manager's `DB_DATA_VERSION_POLL`.)
    pub change_stream: bool,
}

impl ServerConfig {
    /// The defaults ([`defaults`], `ManagerConfig::default()`) over `database_url`.
    pub fn new(database_url: impl Into<String>) -> Self {
        let ms = Duration::from_millis;
        let request_timeout = ms(defaults::REQUEST_TIMEOUT_MS);
        Self {
            database_url: database_url.into(),
            direct_url: None,
            baseline_url: None,
            manager: ManagerConfig::default(),
            bind: defaults::BIND.parse().expect("the default address parses"),
            admin_token: None,
            request_timeout,
            limits: client_limits(
                ms(defaults::HEADER_READ_TIMEOUT_MS),
                ms(defaults::WRITE_TIMEOUT_MS),
                defaults::MAX_CONNECTIONS,
                request_timeout,
            ),
            warm_users: defaults::WARM_USERS,
            stream: StreamLimits::default(),
            preload: defaults::PRELOAD,
            ceiling_bind: None,
            change_stream: true,
        }
    }
}

/// The connection layer's limits for these settings: hyper's header bound
/// sits behind the router's own JSON 431, and a graceful shutdown waits for
/// a request's whole timeout and a second more.
pub fn client_limits(
    header_read_timeout: Duration,
    write_timeout: Duration,
    max_connections: usize,
    request_timeout: Duration,
) -> ConnectionLimits {
    ConnectionLimits {
        header_read_timeout,
        write_timeout,
        max_connections,
        max_headers: crate::request_limits::MAX_HEADERS * 2,
        drain_timeout: request_timeout + Duration::from_secs(1),
    }
}

/// A built server: database connected, socket bound, not yet serving.
pub struct Server {
    listener: TcpListener,
    ceiling: Option<TcpListener>,
    app: axum::Router,
    db: Db,
    limits: ConnectionLimits,
    feed: Feed,
    /// The change-stream consumer, while the server runs.
    changes: Option<hpdb::changes::ChangeStream>,
}

impl Server {
    /// Builds everything from `config`: validates it, migrates (and on the
    /// embedded SQLite default seeds on first start), connects the pools,
    /// starts warming the hottest profiles, builds the router, binds.
    pub async fn build(config: ServerConfig) -> anyhow::Result<Server> {
        config
            .manager
            .validate()
            .context("invalid database configuration")?;
        prepare_database(&config.database_url, config.direct_url.as_deref()).await?;
        if let Some(url) = &config.manager.shared.url {
            tracing::info!(redis = %hpdb::redacted_url(url), "shared cache level and invalidation bus on");
        }
        let db = Db::connect_with_baseline(
            &config.database_url,
            config.baseline_url.as_deref(),
            config.manager,
        )
        .await?;
        let changes = watch_changes(
            &db,
            config.change_stream,
            &config.database_url,
            config.direct_url.as_deref(),
        );
        let service = DataAggregationService::new(db.clone()).with_preload(config.preload);
        spawn_warming(service.clone(), config.warm_users);
        if config.admin_token.is_none() {
            tracing::info!("admin routes disabled (set ADMIN_TOKEN to enable them)");
        }
        let state = AppState::new(service, config.admin_token, config.stream);
        let feed = state.feed.clone();
        let app = routes::router(state, config.request_timeout);
        let listener = TcpListener::bind(config.bind)
            .await
            .with_context(|| format!("cannot listen on {}", config.bind))?;
        let mut limits = config.limits;
        limits.max_connections = listener::connection_cap(limits.max_connections);
        let ceiling = match config.ceiling_bind {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("cannot listen on {addr}"))?,
            ),
            None => None,
        };
        Ok(Server {
            listener,
            ceiling,
            app,
            db,
            limits,
            feed,
            changes,
        })
    }

    /// The bound address (the real port when the configuration said 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// The database the server uses.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Serves until `shutdown` completes, lets in-flight requests finish
    /// (at most the drain timeout), then closes the pools. The dashboard's
    /// streams end as the shutdown begins: an endless response would
    /// otherwise hold the drain for its whole timeout.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        tracing::info!(addr = %self.local_addr(), backend = ?self.db.backend(), max_connections = self.limits.max_connections, "listening");
        let feed = self.feed;
        let shutdown = async move {
            shutdown.await;
            feed.close();
        };
        let ceiling = self.ceiling.map(|l| {
            tokio::spawn(async move {
                // TCP_NODELAY as the real listener sets it: the ceiling
                // differs from the server in its stack only.
                use axum::serve::ListenerExt;
                let l = l.tap_io(|tcp| {
                    let _ = tcp.set_nodelay(true);
                });
                if let Err(e) = axum::serve(l, ceiling_router()).await {
                    tracing::warn!(error = %e, "the ceiling handler stopped");
                }
            })
        });
        listener::serve(self.listener, self.app, self.limits, shutdown).await;
        if let Some(task) = ceiling {
            task.abort();
        }
        tracing::info!("shutting down: closing database connections");
        drop(self.changes);
        self.db.close().await;
    }
}

/// The ceiling: `GET /api/ping` answering what the trivial route answers,
/// with nothing around it (no layers, axum's own server). The trivial
/// route's throughput against this one's, in the same process and run, is
/// the price of the server's own stack.
pub fn ceiling_router() -> axum::Router {
    axum::Router::new().route(
        "/api/ping",
        axum::routing::get(|| async { axum::Json(serde_json::json!({ "pong": true })) }),
    )
}

/// Starts the change-stream consumer when asked to (PostgreSQL only:
/// SQLite's manager watches `PRAGMA data_version` itself, see
/// `hpdb::sqlite`; behind a pooler without `DIRECT_URL`, the status says
/// why writes made around the server stay cached until their TTL).
fn watch_changes(
    db: &Db,
    on: bool,
    database_url: &str,
    direct_url: Option<&str>,
) -> Option<hpdb::changes::ChangeStream> {
    if db.backend() == Backend::Sqlite {
        return None;
    }
    if !on {
        tracing::info!("change stream off (CHANGE_STREAM=false): writes made around this server stay cached until their TTL");
        return None;
    }
    match gistfans_data::session_url(database_url, direct_url) {
        Ok(direct) => db.watch_changes(direct),
        Err(e) => {
            hpdb::changes::ChangeStream::unavailable(db.control(), &e.to_string());
            None
        }
    }
}

/// Warms the `n` hottest profiles in the background (nothing if `n <= 0`).
fn spawn_warming(service: DataAggregationService, n: i64) {
    if n <= 0 {
        return;
    }
    tokio::spawn(async move {
        match service.warm_hottest(n).await {
            Ok(n) => tracing::info!(users = n, "warmed the hottest profiles"),
            Err(e) => tracing::warn!(error = %e, "warming failed"),
        }
    });
}

/// Migrates, and on the embedded SQLite default seeds the demo data on first start.
pub async fn prepare_database(url: &str, direct_url: Option<&str>) -> anyhow::Result<()> {
    gistfans_data::migrate(url, direct_url)
        .await
        .context("migrating the database")?;
    let session = gistfans_data::session_url(url, direct_url)?;
    if seed::is_seeded(session).await? {
        return Ok(());
    }
    match Backend::of_url(url)? {
        Backend::Sqlite => {
            tracing::info!(%url, "first start: seeding the embedded database with demo data");
            let report = seed::seed(session, &seed::SeedConfig::default(), true)
                .await
                .context("seeding demo data")?;
            tracing::info!(?report, "demo data ready");
        }
        Backend::Postgres => {
            tracing::warn!("the database has no users yet: run `gistfans seed` to load demo data");
        }
    }
    Ok(())
}

/// Builds the server from `config` and serves until SIGTERM or Ctrl-C.
pub async fn serve(config: ServerConfig) -> anyhow::Result<()> {
    Server::build(config).await?.run(shutdown_signal()).await;
    Ok(())
}

/// SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutdown signal received: finishing in-flight requests");
}

#[cfg(test)]
mod tests {
    use axum::{body::Body, http::Request};
    use tower::ServiceExt;

    /// The ceiling answers what the trivial route answers, and nothing else.
    #[tokio::test]
    async fn the_ceiling_answers_the_trivial_routes_body() {
        let get = |path: &str| {
            Request::get(path)
                .body(Body::empty())
                .expect("a valid request")
        };
        let r = super::ceiling_router()
            .oneshot(get("/api/ping"))
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let body = axum::body::to_bytes(r.into_body(), 1024).await.unwrap();
        assert_eq!(&body[..], br#"{"pong":true}"#);
        let r = super::ceiling_router()
            .oneshot(get("/api/user/stats-optimized"))
            .await
            .unwrap();
        assert_eq!(r.status(), 404);
    }
}
