//! The command line: `serve` (the default), `migrate`, `seed`.
//!
//! Every knob has a flag and an environment variable (the seed's names where
//! the seed has one) and the seed's default.

use std::{net::SocketAddr, time::Duration};

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use hpdb::{CachePolicy, ManagerConfig};

/// The GistFans server and tools.
#[derive(Debug, Parser)]
#[command(name = "gistfans", version, about)]
pub struct Cli {
    /// What to do (default: serve).
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Options of `serve` when no command is given.
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// Sub-commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP server (creating, migrating and seeding an embedded SQLite database on first start).
    Serve(ServeArgs),
    /// Apply the database migrations.
    Migrate(DbArgs),
    /// Fill an empty database with deterministic demo data.
    Seed(SeedArgs),
    /// Compare the per-component baseline with the optimised route under load.
    Bench(crate::bench::BenchArgs),
}

/// Where the database is.
#[derive(Debug, Clone, Args)]
pub struct DbArgs {
    /// `sqlite://path` (embedded) or `postgres://…`.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "sqlite://data/gistfans.db",
        global = true
    )]
    pub database_url: String,
    /// Direct PostgreSQL URL for migrations (bypassing a pooler such as PgBouncer).
    #[arg(long, env = "DIRECT_URL", global = true)]
    pub direct_url: Option<String>,
}

/// Connection manager knobs (durations in milliseconds, as in the seed).
#[derive(Debug, Clone, Args)]
pub struct PoolArgs {
    /// Connections kept open.
    #[arg(long, env = "DB_POOL_MIN", default_value_t = 2)]
    pub pool_min: u32,
    /// Most connections open.
    #[arg(long, env = "DB_POOL_MAX", default_value_t = 10)]
    pub pool_max: u32,
    /// Idle connections above the minimum close after this long (ms).
    #[arg(long, env = "DB_POOL_TIMEOUT", default_value_t = 30_000)]
    pub pool_idle_timeout_ms: u64,
    /// Longest wait for a connection once admitted (ms).
    #[arg(long, env = "DB_ACQUIRE_TIMEOUT", default_value_t = 10_000)]
    pub acquire_timeout_ms: u64,
    /// Deadline of one database call, queueing included (ms).
    #[arg(long, env = "DB_QUERY_TIMEOUT", default_value_t = 15_000)]
    pub query_timeout_ms: u64,
    /// Most keys per batch.
    #[arg(long, env = "DB_BATCH_SIZE", default_value_t = 50)]
    pub batch_size: usize,
    /// Longest a batch gathers keys (ms).
    #[arg(long, env = "DB_BATCH_WINDOW", default_value_t = 100)]
    pub batch_window_ms: u64,
    /// Most cached results.
    #[arg(long, env = "DB_CACHE_SIZE", default_value_t = 1000)]
    pub cache_size: u64,
    /// Most cached bytes.
    #[arg(long, env = "DB_CACHE_MAX_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub cache_max_bytes: u64,
    /// Cache TTL (ms).
    #[arg(long, env = "DB_CACHE_TTL", default_value_t = 300_000)]
    pub cache_ttl_ms: u64,
    /// Cache eviction policy: `lru` or `tinylfu`.
    #[arg(long, env = "DB_CACHE_POLICY", default_value = "tinylfu", value_parser = parse_policy)]
    pub cache_policy: CachePolicy,
    /// Health check interval (ms).
    #[arg(long, env = "DB_HEALTH_INTERVAL", default_value_t = 30_000)]
    pub health_interval_ms: u64,
    /// A connection held longer than this is reported as a leak (ms).
    #[arg(long, env = "DB_LEAK_THRESHOLD", default_value_t = 10_000)]
    pub leak_threshold_ms: u64,
}

fn parse_policy(s: &str) -> Result<CachePolicy, String> {
    s.parse()
}

impl PoolArgs {
    /// The manager configuration these flags describe, validated.
    pub fn manager_config(&self) -> anyhow::Result<ManagerConfig> {
        let ms = Duration::from_millis;
        let mut c = ManagerConfig::new();
        c.pool.min_connections = self.pool_min;
        c.pool.max_connections = self.pool_max;
        c.pool.idle_timeout = ms(self.pool_idle_timeout_ms);
        c.pool.acquire_timeout = ms(self.acquire_timeout_ms);
        c.query_timeout = ms(self.query_timeout_ms);
        c.batch.max_batch_size = self.batch_size;
        c.batch.window = ms(self.batch_window_ms);
        c.cache.max_entries = self.cache_size;
        c.cache.max_bytes = self.cache_max_bytes;
        c.cache.ttl = ms(self.cache_ttl_ms);
        c.cache.policy = self.cache_policy;
        c.health.interval = ms(self.health_interval_ms);
        c.leak.threshold = ms(self.leak_threshold_ms);
        c.validate()?;
        Ok(c)
    }
}

/// `gistfans serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Database location.
    #[command(flatten)]
    pub db: DbArgs,
    /// Manager knobs.
    #[command(flatten)]
    pub pool: PoolArgs,
    /// Address to listen on.
    #[arg(long, env = "BIND_ADDR", default_value = "127.0.0.1:3000")]
    pub bind: SocketAddr,
    /// Token for the admin routes (`Authorization: Bearer …`); admin routes answer 403 without it.
    #[arg(long, env = "ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Redis for a cache shared by several instances (not built yet: see the README).
    #[arg(long, env = "REDIS_URL")]
    pub redis_url: Option<String>,
    /// Longest a request may take (ms).
    #[arg(long, env = "REQUEST_TIMEOUT", default_value_t = 20_000)]
    pub request_timeout_ms: u64,
    /// Longest wait for a request's headers; also how long an idle
    /// keep-alive connection stays open (ms).
    #[arg(long, env = "HEADER_READ_TIMEOUT", default_value_t = 10_000)]
    pub header_read_timeout_ms: u64,
    /// Longest a response write may make no progress before the client is
    /// dropped (ms).
    #[arg(long, env = "WRITE_TIMEOUT", default_value_t = 10_000)]
    pub write_timeout_ms: u64,
    /// Most client connections open at once; 0 derives the cap from the
    /// process's file-descriptor limit (at most 10,000).
    #[arg(long, env = "MAX_CONNECTIONS", default_value_t = 0)]
    pub max_connections: usize,
    /// Profiles of the most-followed users to warm at start-up.
    #[arg(long, env = "WARM_USERS", default_value_t = 200)]
    pub warm_users: i64,
    /// Log as JSON lines instead of text.
    #[arg(long, env = "LOG_JSON")]
    pub log_json: bool,
}

impl ServeArgs {
    /// The connection layer's deadlines and bounds.
    pub fn connection_limits(&self) -> crate::listener::ConnectionLimits {
        crate::listener::ConnectionLimits {
            header_read_timeout: Duration::from_millis(self.header_read_timeout_ms),
            write_timeout: Duration::from_millis(self.write_timeout_ms),
            max_connections: crate::listener::connection_cap(self.max_connections),
            max_headers: crate::request_limits::MAX_HEADERS * 2,
            drain_timeout: Duration::from_millis(self.request_timeout_ms) + Duration::from_secs(1),
        }
    }
}

/// `gistfans seed`.
#[derive(Debug, Clone, Args)]
pub struct SeedArgs {
    /// Database location.
    #[command(flatten)]
    pub db: DbArgs,
    /// Users.
    #[arg(long, default_value_t = 10_000)]
    pub users: i64,
    /// Posts.
    #[arg(long, default_value_t = 100_000)]
    pub posts: i64,
    /// Stars.
    #[arg(long, default_value_t = 1_000_000)]
    pub stars: i64,
    /// Follows.
    #[arg(long, default_value_t = 200_000)]
    pub follows: i64,
    /// RNG seed: the same seed gives the same data.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
}

impl SeedArgs {
    /// The generator configuration.
    pub fn seed_config(&self) -> gistfans_data::seed::SeedConfig {
        gistfans_data::seed::SeedConfig {
            users: self.users,
            posts: self.posts,
            stars: self.stars,
            follows: self.follows,
            seed: self.seed,
            ..Default::default()
        }
    }
}

fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info,sqlx=warn".into());
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Parses the command line and runs it.
pub async fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        None => {
            init_logging(cli.serve.log_json);
            crate::server::serve(cli.serve).await
        }
        Some(Command::Serve(args)) => {
            init_logging(args.log_json);
            crate::server::serve(args).await
        }
        Some(Command::Migrate(db)) => {
            init_logging(false);
            gistfans_data::migrate(&db.database_url, db.direct_url.as_deref())
                .await
                .context("gistfans migrate")?;
            tracing::info!("migrations applied");
            Ok(())
        }
        Some(Command::Bench(args)) => {
            init_logging(false);
            crate::bench::run(args).await
        }
        Some(Command::Seed(args)) => {
            init_logging(false);
            let started = std::time::Instant::now();
            gistfans_data::migrate(&args.db.database_url, args.db.direct_url.as_deref())
                .await
                .context("gistfans seed: migrating first")?;
            let report =
                gistfans_data::seed::seed(&args.db.database_url, &args.seed_config(), true)
                    .await
                    .context("gistfans seed")?;
            tracing::info!(?report, seconds = started.elapsed().as_secs_f64(), "seeded");
            Ok(())
        }
    }
}
