//! `gistfans serve`: prepare the database, start the service, serve until
//! SIGTERM or Ctrl-C, let in-flight requests finish, close the pools.

use std::time::Duration;

use anyhow::Context;
use gistfans_data::{seed, Backend, DataAggregationService, Db};
use tokio::net::TcpListener;

use crate::{cli::ServeArgs, routes, state::AppState};

/// Migrates, and on the embedded SQLite default seeds the demo data on first start.
pub async fn prepare_database(url: &str, direct_url: Option<&str>) -> anyhow::Result<()> {
    gistfans_data::migrate(url, direct_url)
        .await
        .context("migrating the database")?;
    if seed::is_seeded(url).await? {
        return Ok(());
    }
    match Backend::of_url(url)? {
        Backend::Sqlite => {
            tracing::info!(%url, "first start: seeding the embedded database with demo data");
            let report = seed::seed(url, &seed::SeedConfig::default(), true)
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

/// Runs the server until a shutdown signal.
pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = args
        .pool
        .manager_config()
        .context("invalid pool configuration")?;
    prepare_database(&args.db.database_url, args.db.direct_url.as_deref()).await?;
    if args.redis_url.is_some() {
        tracing::warn!("REDIS_URL is set, but the shared Redis cache is not built yet: this instance caches in process only");
    }
    let db = Db::connect(&args.db.database_url, config).await?;
    let service = DataAggregationService::new(db.clone());
    let warm = service.clone();
    let warm_users = args.warm_users;
    tokio::spawn(async move {
        if warm_users <= 0 {
            return;
        }
        match warm.warm_hottest(warm_users).await {
            Ok(n) => tracing::info!(users = n, "warmed the hottest profiles"),
            Err(e) => tracing::warn!(error = %e, "warming failed"),
        }
    });
    if args.admin_token.is_none() {
        tracing::info!("admin routes disabled (set ADMIN_TOKEN to enable them)");
    }
    let limits = args.connection_limits();
    let app = routes::router(
        AppState::new(service, args.admin_token),
        Duration::from_millis(args.request_timeout_ms),
    );
    let listener = TcpListener::bind(args.bind)
        .await
        .with_context(|| format!("cannot listen on {}", args.bind))?;
    tracing::info!(addr = %listener.local_addr()?, backend = ?db.backend(), max_connections = limits.max_connections, "listening");
    crate::listener::serve(listener, app, limits, shutdown_signal()).await;
    tracing::info!("shutting down: closing database connections");
    db.close().await;
    Ok(())
}

async fn shutdown_signal() {
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
