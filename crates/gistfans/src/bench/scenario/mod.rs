//! `gistfans bench --scenario`: the self-tuning loops against fixed
//! settings, each scenario in one run on PostgreSQL, every configuration
//! on a server of its own started for it (a fresh process, a cold cache).
//!
//! - `pool`: load steps 16 → 256 → 16 users, then 256 users while the
//!   database is slowed down by CPU-heavy queries; fixed pools of 5, 10
//!   and 50 against the automatic size (`DB_POOL_AUTO`, up to 50).
//! - `ttl`: fixed TTLs against adaptive ones, at zero stale reads.
//! - `navigation`: viewers following links from profile to profile;
//!   learned preloading (and the followee rule) against the followee rule
//!   alone and against none.
//! - `changes`: writes made around three instances at a fixed rate while
//!   virtual users read through them; the time from commit to fresh on
//!   every instance, and the hit rate with the stream on against off
//!   (issue 21).

use std::sync::Arc;

use anyhow::Context;
use gistfans_data::witness::Witness;

use super::{server::Target, workload::Universe, BenchArgs};

mod changes;
mod navigation;
mod pool;
mod ttl;

/// Which scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// Fixed pool sizes against the automatic one, under load steps and a slowed database.
    Pool,
    /// Fixed TTLs against adaptive ones.
    Ttl,
    /// Learned preloading against the followee rule and none.
    Navigation,
    /// Writes made around three instances: commit to fresh everywhere (p50/p99).
    Changes,
}

/// Runs `scenario`; fails on errors or stale reads.
pub async fn run(scenario: Scenario, args: &BenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.url.is_none() && args.database_url.starts_with("postgres"),
        "--scenario runs on PostgreSQL with servers it starts itself (not --url)"
    );
    let direct = gistfans_data::session_url(&args.database_url, args.direct_url.as_deref())?;
    let witness = Arc::new(Witness::connect(Some(direct)).await);
    match scenario {
        Scenario::Pool => pool::run(args, &witness, direct).await,
        Scenario::Ttl => ttl::run(args, &witness).await,
        Scenario::Navigation => navigation::run(args).await,
        Scenario::Changes => changes::run(args, &witness, direct).await,
    }
}

/// A server started with `configure` applied to a copy of `args`, the
/// seeded data's extent, and the copy.
async fn start(
    args: &BenchArgs,
    configure: impl FnOnce(&mut BenchArgs),
) -> anyhow::Result<(Target, Universe, BenchArgs)> {
    let mut a = args.clone();
    configure(&mut a);
    let target = Target::start(&a, 1)
        .await
        .context("starting the server to benchmark")?;
    let universe = Universe::discover(&target).await?;
    if let Some(settings) = target.settings().await {
        eprintln!("bench: server settings: {settings}");
    }
    Ok((target, universe, a))
}

/// Writes `value` as JSON to --json, if given.
fn write_json(args: &BenchArgs, value: &serde_json::Value) -> anyhow::Result<()> {
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(value)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
