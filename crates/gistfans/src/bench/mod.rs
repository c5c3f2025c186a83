//! `gistfans bench`: users opening profile pages, the old way against the
//! new, side by side in one run, on the same database.
//!
//! - `baseline`: a page load is the four per-component requests, in
//!   parallel, on the plain pool (the seed's "before");
//! - `optimized`: a page load is one request to `/api/user/stats-optimized`;
//! - `trivial`: one request to `/api/ping`, through the server's whole stack;
//! - `ceiling`: the same request to a bare axum handler in the server's
//!   process: trivial ÷ ceiling is the price of the server's own stack.
//!
//! Writes are reported apart from page loads (their own p50 and p99).
//!
//! Closed-loop virtual users pick user ids from a Zipf law and mix in
//! writes (stars, follows, posts); each write is followed by a read that
//! must see it, or it counts as a stale read. The database itself is the
//! witness where it can be: PostgreSQL's `pg_stat_statements` for statements
//! per page load and `pg_stat_activity` for peak connections.
//!
//! `--soak MINUTES` runs one mode for minutes instead and reports the
//! server's memory and each minute's figures (`soak`).

use std::{path::PathBuf, time::Duration};

use anyhow::Context;
use clap::Args;

mod chart;
mod consistency;
mod html;
mod measures;
mod probe;
mod replicas;
mod report;
mod scenario;
mod server;
mod soak;
mod vu;
mod workload;

pub use measures::Mode;
pub use report::ModeReport;
#[cfg(test)]
pub(crate) use server::serve_args;

/// `gistfans bench`.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Database for the server this command starts (ignored with --url).
    #[arg(long, env = "DATABASE_URL", default_value = crate::server::defaults::DATABASE_URL)]
    pub database_url: String,
    /// The database itself when DATABASE_URL goes through a pooler: the
    /// server migrates over it, and the witness (pg_stat_statements,
    /// pg_stat_activity) reads it.
    #[arg(long, env = "DIRECT_URL")]
    pub direct_url: Option<String>,
    /// Database URL of the server's per-component (baseline) routes only,
    /// for example the same database behind PgBouncer (default: DATABASE_URL).
    #[arg(long, env = "BASELINE_DATABASE_URL")]
    pub baseline_database_url: Option<String>,
    /// Target an already running server instead of starting one.
    #[arg(long)]
    pub url: Option<String>,
    /// Admin token of the server given by --url (for the monitor's figures).
    #[arg(long, env = "ADMIN_TOKEN")]
    pub admin_token: Option<String>,
    /// Modes, comma-separated: baseline, optimized, trivial, ceiling
    /// [default: baseline, optimized, trivial; optimized with --soak].
    #[arg(long, value_delimiter = ',')]
    pub mode: Vec<Mode>,
    /// Virtual users; a comma-separated list sweeps (e.g. 1,16,64,256,1000).
    #[arg(long, default_value = "256", value_delimiter = ',')]
    pub concurrency: Vec<usize>,
    /// Measured seconds per mode and concurrency.
    #[arg(long, default_value_t = 20)]
    pub duration: u64,
    /// Stop a mode after this many page loads (whichever comes first).
    #[arg(long)]
    pub requests: Option<u64>,
    /// Unmeasured warm-up seconds before each measurement.
    #[arg(long, default_value_t = 5)]
    pub warmup: u64,
    /// Zipf exponent of which profiles are opened.
    #[arg(long, default_value_t = 1.1)]
    pub zipf: f64,
    /// Fraction of operations that are writes (each followed by a checking read).
    #[arg(long, default_value_t = 0.02)]
    pub write_ratio: f64,
    /// Instances of the server to start, sharing the database and the Redis
    /// of --redis-url; a comma-separated list runs each (e.g. 1,3: one
    /// instance and three, in the same run). Virtual users are spread over
    /// the instances, and each write's checking read goes to another
    /// instance than the write (polled until it shows the write: the
    /// cross-instance delivery).
    #[arg(long, default_value = "1", value_delimiter = ',')]
    pub instances: Vec<usize>,
    /// Preloading rule of the server this command starts: off, followees,
    /// learned (default: the product's, `PRELOAD`).
    #[arg(long)]
    pub preload: Option<gistfans_data::Preload>,
    /// Run a self-tuning scenario instead of the mode comparison, on
    /// PostgreSQL: `pool` (load steps and a slowed database, fixed pools
    /// against the automatic one), `ttl` (fixed against adaptive TTLs),
    /// `navigation` (viewers following links: learned preloading against
    /// the followee rule and none), `changes` (writes made around three
    /// instances: commit to fresh everywhere). Each starts its own servers.
    #[arg(long)]
    pub scenario: Option<scenario::Scenario>,
    /// Short run for a smoke test: 32 users, 2 s warm-up, 5 s per mode.
    #[arg(long)]
    pub quick: bool,
    /// Write the results as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Draw throughput and p99 by concurrency to this SVG file.
    #[arg(long)]
    pub chart: Option<PathBuf>,
    /// Write the report (table, ratios, charts, the results as JSON) to
    /// this self-contained HTML file; it loads nothing from the network.
    #[arg(long)]
    pub html: Option<PathBuf>,
    /// RNG seed of the workload.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Soak: the first mode at the first concurrency for this many minutes
    /// (after the warm-up), the server's RSS sampled every 10 s, one row per
    /// minute; nothing scrapes /metrics meanwhile. Reports RSS growth, fails
    /// only on errors and stale reads.
    #[arg(long, value_name = "MINUTES", value_parser = clap::value_parser!(u64).range(1..))]
    pub soak: Option<u64>,
    /// The manager knobs of the servers this command starts, every one of
    /// `gistfans serve`'s, passed on as given (unset: the product's
    /// defaults, or the environment's `DB_*`/`REDIS_*`). `--redis-url` (or
    /// `REDIS_URL`) is needed for --instances above 1; each run gets a
    /// Redis namespace of its own.
    #[command(flatten)]
    pub manager: crate::cli::ManagerFlags,
    /// Whether the servers started consume the change stream (set by
    /// `--scenario changes` only: a run's slot must not outlive it).
    #[arg(skip)]
    pub change_stream: bool,
}

impl BenchArgs {
    /// The Redis of the servers this command starts, if any: the flag, else
    /// the environment.
    pub fn redis_url(&self) -> Option<String> {
        self.manager
            .get(&hpdb::env::REDIS_URL)
            .map(str::to_string)
            .or_else(|| std::env::var("REDIS_URL").ok())
            .filter(|u| !u.is_empty())
    }
}

/// Runs the benchmark; fails if any page load failed or a read was stale.
pub async fn run(mut args: BenchArgs) -> anyhow::Result<()> {
    prepare(&mut args)?;
    if let Some(scenario) = args.scenario {
        return scenario::run(scenario, &args).await;
    }
    let replica_urls: Vec<String> = args
        .manager
        .get(&hpdb::env::REPLICA_URLS)
        .map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|u| !u.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    let witness = std::sync::Arc::new(
        gistfans_data::witness::Witness::connect(match &args.url {
            Some(_) => None,
            None => gistfans_data::session_url(&args.database_url, args.direct_url.as_deref()).ok(),
        })
        .await
        .with_replicas(&replica_urls)
        .await,
    );
    let mut reports = Vec::new();
    let mut soak = None;
    let mut cpu_note = false;
    for &instances in &args.instances {
        let target = match &args.url {
            Some(url) => server::Target::external(url, args.admin_token.clone()),
            None => server::Target::start(&args, instances)
                .await
                .context("starting the server to benchmark")?,
        };
        let universe = workload::Universe::discover(&target)
            .await
            .context("reading the seeded data's size")?;
        announce(&args, &target, &universe);
        if let Some(settings) = target.settings().await {
            eprintln!("bench: server settings: {settings}");
        }
        match args.soak {
            Some(minutes) => {
                let (r, s) = soak::run(&target, &witness, &universe, &args, minutes).await?;
                reports.push(r);
                soak = Some(s);
            }
            None => {
                for &users in &args.concurrency {
                    for &mode in &args.mode {
                        let r = workload::run_mode(
                            &target, &witness, &universe, &args, mode, users, None,
                        )
                        .await?;
                        reports.push(r);
                    }
                }
            }
        }
        cpu_note = target.can_measure_process();
        target.stop().await;
    }

    report::print_table(&reports, cpu_note);
    if let Some(s) = &soak {
        soak::print(s);
    }
    write_outputs(&args, &reports, soak.as_ref())?;
    let errors: u64 = reports.iter().map(|r| r.errors_total()).sum();
    let stale: u64 = reports.iter().map(|r| r.stale_reads).sum();
    anyhow::ensure!(
        errors == 0 && stale == 0,
        "{errors} errors and {stale} stale reads"
    );
    Ok(())
}

/// Applies --quick and the modes' default, and checks the flags.
fn prepare(args: &mut BenchArgs) -> anyhow::Result<()> {
    if args.quick {
        args.concurrency = vec![32];
        args.duration = 5;
        args.warmup = 2;
    }
    if args.mode.is_empty() {
        args.mode = match args.soak {
            Some(_) => vec![Mode::Optimized],
            None => vec![Mode::Baseline, Mode::Optimized, Mode::Trivial],
        };
    }
    anyhow::ensure!(
        args.concurrency.iter().all(|c| (1..=5000).contains(c)),
        "--concurrency must be 1 to 5000"
    );
    anyhow::ensure!(
        (0.0..=0.5).contains(&args.write_ratio),
        "--write-ratio must be between 0 and 0.5"
    );
    anyhow::ensure!(args.zipf > 0.0, "--zipf must be above 0");
    anyhow::ensure!(
        args.instances.iter().all(|n| (1..=16).contains(n)),
        "--instances must be 1 to 16"
    );
    anyhow::ensure!(
        args.instances.iter().all(|n| *n == 1) || (args.redis_url().is_some() && args.url.is_none()),
        "--instances above 1 needs --redis-url (REDIS_URL), and servers the bench starts (not --url)"
    );
    anyhow::ensure!(
        args.soak.is_none() || args.instances == [1],
        "--soak runs one instance"
    );
    anyhow::ensure!(
        args.url.is_none() || !args.mode.contains(&Mode::Ceiling),
        "--mode ceiling needs a server the bench starts (not --url)"
    );
    Ok(())
}

/// Says what is about to run.
fn announce(args: &BenchArgs, target: &server::Target, universe: &workload::Universe) {
    let Some(minutes) = args.soak else {
        eprintln!(
            "bench: {} ({} users), modes {:?}, concurrency {:?}, {} s per run after {} s warm-up, zipf {}, writes {:.0}%",
            target.describe(), universe.users, args.mode, args.concurrency, args.duration, args.warmup,
            args.zipf, args.write_ratio * 100.0
        );
        return;
    };
    if args.mode.len() > 1 || args.concurrency.len() > 1 {
        eprintln!("bench: --soak runs the first mode at the first concurrency only");
    }
    eprintln!(
        "bench: {} ({} users), soak: {:?} x{} for {minutes} min after {} s warm-up, zipf {}, writes {:.0}%",
        target.describe(), universe.users, args.mode[0], args.concurrency[0], args.warmup,
        args.zipf, args.write_ratio * 100.0
    );
}

/// Writes --json (the reports; with --soak, `{reports, soak}`), --chart and --html.
fn write_outputs(
    args: &BenchArgs,
    reports: &[ModeReport],
    soak: Option<&soak::Soak>,
) -> anyhow::Result<()> {
    if let Some(path) = &args.json {
        let body = match soak {
            Some(s) => {
                serde_json::to_vec_pretty(&serde_json::json!({"reports": reports, "soak": s}))?
            }
            None => serde_json::to_vec_pretty(reports)?,
        };
        std::fs::write(path, body).with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &args.chart {
        chart::draw(path, reports).with_context(|| format!("drawing {}", path.display()))?;
        eprintln!("bench: chart written to {}", path.display());
    }
    if let Some(path) = &args.html {
        std::fs::write(path, html::render(reports))
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("bench: HTML report written to {}", path.display());
    }
    Ok(())
}

/// How long to wait for a server's first start (it may seed the demo data).
pub(crate) const START_TIMEOUT: Duration = Duration::from_secs(300);
