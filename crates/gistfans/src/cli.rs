//! The command line: `serve` (the default), `migrate`, `seed`, `bench`.
//!
//! Every knob has a flag and an environment variable. The server's own
//! variables (`DATABASE_URL`, `BIND_ADDR`, …) are declared here, with
//! defaults from [`server::defaults`]; the connection manager's variables
//! are read by hpdb alone (`ManagerConfig::from_env`, listed in
//! `hpdb::env::ENV_VARS`) and overridden by the flags of [`manager_flags`]. `serve` turns its arguments into a
//! [`ServerConfig`] and hands it to [`server::serve`]; this module depends
//! on `server`, never the other way round.

use std::{net::SocketAddr, time::Duration};

use anyhow::Context;
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};

use gistfans_data::Preload;

use crate::server::{self, defaults, ServerConfig};

pub mod manager_flags;

pub use manager_flags::ManagerFlags;

/// Said after the options of `serve`.
const SERVE_AFTER_HELP: &str = "The database options are also read from environment \
variables (named in each option's help) by the hpdb library; see the README's Configuration \
table. A flag overrides its variable. Durations are in milliseconds.";

/// The GistFans server and tools.
#[derive(Debug, Parser)]
#[command(name = "gistfans", version, about, after_help = SERVE_AFTER_HELP)]
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
    #[command(after_help = SERVE_AFTER_HELP)]
    Serve(Box<ServeArgs>),
    /// Apply the database migrations.
    Migrate(DbArgs),
    /// Fill an empty database with deterministic demo data.
    Seed(SeedArgs),
    /// Compare the per-component baseline with the optimised route under load.
    Bench(Box<crate::bench::BenchArgs>),
}

/// Where the database is.
#[derive(Debug, Clone, Args)]
pub struct DbArgs {
    /// `sqlite://path` (embedded) or `postgres://…`.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = defaults::DATABASE_URL,
        global = true
    )]
    pub database_url: String,
    /// Direct PostgreSQL URL for migrations and seeding (bypassing a pooler such as PgBouncer).
    #[arg(long, env = "DIRECT_URL", global = true)]
    pub direct_url: Option<String>,
}

/// `gistfans serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Database location.
    #[command(flatten)]
    pub db: DbArgs,
    /// Address to listen on.
    #[arg(long, env = "BIND_ADDR", default_value = defaults::BIND)]
    pub bind: SocketAddr,
    /// Token for the admin routes (`Authorization: Bearer …`); admin routes answer 403 without it.
    #[arg(long, env = "ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Database URL of the per-component (baseline) routes only (default:
    /// DATABASE_URL); for comparing them behind a pooler with the manager.
    #[arg(long, env = "BASELINE_DATABASE_URL")]
    pub baseline_database_url: Option<String>,
    /// Longest a request may take (ms).
    #[arg(long, env = "REQUEST_TIMEOUT", default_value_t = defaults::REQUEST_TIMEOUT_MS)]
    pub request_timeout_ms: u64,
    /// Longest wait for a request's headers; also how long an idle
    /// keep-alive connection stays open (ms).
    #[arg(long, env = "HEADER_READ_TIMEOUT", default_value_t = defaults::HEADER_READ_TIMEOUT_MS)]
    pub header_read_timeout_ms: u64,
    /// Longest a response write may make no progress before the client is
    /// dropped (ms).
    #[arg(long, env = "WRITE_TIMEOUT", default_value_t = defaults::WRITE_TIMEOUT_MS)]
    pub write_timeout_ms: u64,
    /// Most client connections open at once; 0 derives the cap from the
    /// process's file-descriptor limit (at most 10,000).
    #[arg(long, env = "MAX_CONNECTIONS", default_value_t = defaults::MAX_CONNECTIONS)]
    pub max_connections: usize,
    /// Profiles of the most-followed users to warm at start-up.
    #[arg(long, env = "WARM_USERS", default_value_t = defaults::WARM_USERS)]
    pub warm_users: i64,
    /// Which profiles reading a profile preloads: `off`, `followees` (its
    /// user's latest followees) or `learned` (those, and what viewers
    /// opened next after it lately).
    #[arg(long, env = "PRELOAD", default_value_t = defaults::PRELOAD)]
    pub preload: Preload,
    /// Log as JSON lines instead of text.
    #[arg(long, env = "LOG_JSON")]
    pub log_json: bool,
    /// Invalidate from PostgreSQL's change stream (logical replication over
    /// DIRECT_URL, else DATABASE_URL), so writes made around the server
    /// (psql, cron jobs, other services) reach every instance's cache.
    /// SQLite has none: its watch is DB_DATA_VERSION_POLL.
    #[arg(long, env = "CHANGE_STREAM", default_value_t = true, action = clap::ArgAction::Set)]
    pub change_stream: bool,
    /// Also serve a bare axum handler (`GET /api/ping`, no layers, axum's
    /// own server) on this address, in this process: the ceiling that
    /// `gistfans bench --mode ceiling` compares the trivial route with.
    #[arg(long, hide = true)]
    pub ceiling_bind: Option<SocketAddr>,
    /// Manager knobs (last: they open their own help section).
    #[command(flatten)]
    pub manager: ManagerFlags,
}

impl ServeArgs {
    /// The server's configuration: these flags and variables, and the
    /// manager's configuration (hpdb's variables under the flags).
    pub fn server_config(&self) -> anyhow::Result<ServerConfig> {
        let ms = Duration::from_millis;
        let request_timeout = ms(self.request_timeout_ms);
        Ok(ServerConfig {
            database_url: self.db.database_url.clone(),
            direct_url: self.db.direct_url.clone(),
            baseline_url: self.baseline_database_url.clone(),
            manager: self
                .manager
                .manager_config()
                .context("invalid database configuration")?,
            bind: self.bind,
            admin_token: self.admin_token.clone(),
            request_timeout,
            limits: server::client_limits(
                ms(self.header_read_timeout_ms),
                ms(self.write_timeout_ms),
                self.max_connections,
                request_timeout,
            ),
            warm_users: self.warm_users,
            stream: Default::default(),
            preload: self.preload,
            ceiling_bind: self.ceiling_bind,
            change_stream: self.change_stream,
        })
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

/// The command line's definition.
pub fn command() -> clap::Command {
    Cli::command()
}

/// Parses the command line (exits with clap's message on bad flags).
pub fn parse() -> Cli {
    let matches = command().get_matches();
    Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    init_logging(args.log_json);
    server::serve(args.server_config()?).await
}

/// Parses the command line and runs it.
pub async fn run() -> anyhow::Result<()> {
    let cli = parse();
    match cli.command {
        None => serve(cli.serve).await,
        Some(Command::Serve(args)) => serve(*args).await,
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
            crate::bench::run(*args).await
        }
        Some(Command::Seed(args)) => {
            init_logging(false);
            let started = std::time::Instant::now();
            gistfans_data::migrate(&args.db.database_url, args.db.direct_url.as_deref())
                .await
                .context("gistfans seed: migrating first")?;
            let session =
                gistfans_data::session_url(&args.db.database_url, args.db.direct_url.as_deref())?;
            let report = gistfans_data::seed::seed(session, &args.seed_config(), true)
                .await
                .context("gistfans seed")?;
            tracing::info!(?report, seconds = started.elapsed().as_secs_f64(), "seeded");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rows of the README's Configuration table, split into cells.
    fn readme_rows() -> Vec<Vec<String>> {
        let readme = include_str!("../../../README.md");
        let section = readme
            .split("## Configuration")
            .nth(1)
            .and_then(|s| s.split("\n## ").next())
            .expect("the README has a Configuration section");
        section
            .lines()
            .filter(|l| l.starts_with("| `"))
            .map(|l| l.split('|').map(|c| c.trim().to_string()).collect())
            .collect()
    }

    /// One row per environment variable, with its flag and the code's default.
    #[test]
    fn the_readme_table_matches_the_code() {
        let rows = readme_rows();
        let row = |var: &str| {
            let cell = format!("`{var}`");
            let found: Vec<_> = rows.iter().filter(|r| r[1] == cell).collect();
            assert_eq!(found.len(), 1, "README rows for {var}");
            found[0].clone()
        };
        let mut expected = 0;
        let serve = Cli::command();
        let serve = serve.find_subcommand("serve").unwrap();
        for arg in serve.get_arguments() {
            let Some(var) = arg.get_env() else { continue };
            let r = row(&var.to_string_lossy());
            assert_eq!(r[2], format!("`--{}`", arg.get_long().unwrap()), "{r:?}");
            let default = match arg.get_default_values().first() {
                _ if !arg.get_action().takes_values() => "off".to_string(),
                None => "unset".to_string(),
                Some(d) => d.to_string_lossy().into_owned(),
            };
            assert_eq!(r[4].trim_matches('`'), default, "{r:?}");
            expected += 1;
        }
        // The manager's rows are hpdb's table, rendered: the README holds
        // exactly what `EnvVar::markdown_row` writes, in the table's order.
        let readme = include_str!("../../../README.md");
        let rendered: Vec<String> = hpdb::env::ENV_VARS
            .iter()
            .map(|v| v.markdown_row())
            .collect();
        let present: Vec<&str> = readme
            .lines()
            .filter(|l| l.starts_with("| `DB_") || l.starts_with("| `REDIS_"))
            .collect();
        assert_eq!(
            present,
            rendered,
            "the README's DB_/REDIS_ rows must be exactly these:\n{}",
            rendered.join("\n")
        );
        expected += rendered.len();
        assert_eq!(
            rows.len(),
            expected,
            "a README row for a variable that does not exist"
        );
    }

    #[test]
    fn the_command_line_is_well_formed() {
        command().debug_assert();
        let mut cli = command();
        let help = cli
            .find_subcommand_mut("serve")
            .unwrap()
            .render_help()
            .to_string();
        assert!(help.contains("--pool-max <N>"), "{help}");
        assert!(help.contains("[env: BIND_ADDR="), "{help}");
    }

    /// The `gistfans serve` that `gistfans bench <bench_flags>` starts, as
    /// `serve` parses its command line.
    fn server_of_bench(bench_flags: &[&str]) -> ServeArgs {
        let argv = ["gistfans", "bench"].iter().chain(bench_flags);
        let Some(Command::Bench(bench)) = Cli::try_parse_from(argv).unwrap().command else {
            panic!("not bench")
        };
        let argv = std::iter::once("gistfans".to_string())
            .chain(crate::bench::serve_args(&bench, 4321, 4322));
        let Some(Command::Serve(serve)) = Cli::try_parse_from(argv).unwrap().command else {
            panic!("not serve")
        };
        *serve
    }

    /// Every flag `gistfans bench` passes to its `gistfans serve` child exists.
    #[test]
    fn the_bench_servers_command_line_parses() {
        let serve = server_of_bench(&[]);
        assert_eq!(serve.bind.port(), 4321);
        assert_eq!(serve.ceiling_bind.map(|a| a.port()), Some(4322));
        assert_eq!(serve.warm_users, 0);
        // Without flags, the server under test runs on the product's defaults.
        assert_eq!(serve.manager, ManagerFlags::default());
        // Every manager flag of the bench reaches its servers as given.
        let serve = server_of_bench(&[
            "--pool-max=7",
            "--cache-size=500",
            "--cache-policy=lru",
            "--redis-delivery-wait-ms=0",
        ]);
        let c = serve.manager.manager_config().unwrap();
        assert_eq!(c.pool.max_connections, 7);
        assert_eq!(c.cache.max_entries, 500);
        assert_eq!(c.cache.policy, hpdb::CachePolicy::Lru);
        assert!(c.shared.delivery_wait.is_zero());
    }

    #[test]
    fn serve_builds_the_server_config_from_flags() {
        let cli = Cli::try_parse_from([
            "gistfans",
            "serve",
            "--bind=127.0.0.1:0",
            "--query-timeout-ms=1234",
            "--request-timeout-ms=5000",
        ])
        .unwrap();
        let Some(Command::Serve(args)) = cli.command else {
            panic!("not serve")
        };
        let c = args.server_config().unwrap();
        assert_eq!(c.manager.query_timeout, Duration::from_millis(1234));
        assert_eq!(c.request_timeout, Duration::from_secs(5));
        assert_eq!(c.limits.drain_timeout, Duration::from_secs(6));
        assert_eq!(c.preload, crate::server::defaults::PRELOAD);
    }
}
