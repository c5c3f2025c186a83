//! Closed-loop virtual users: each opens a profile page, waits for it, and
//! opens the next; a share of operations are writes, each followed by a
//! read that must see it.

use gistfans_data::witness::Witness;
use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use rand::{rngs::StdRng, RngExt, SeedableRng};
use rand_distr::{Distribution, Zipf};

use super::{
    measures::{Counts, Mode, Snapshot},
    probe::{Probe, Tally},
    report::ModeReport,
    server::Target,
    vu::{write_and_check, Vu, VuResult, WriteOutcome},
    BenchArgs,
};

/// The seeded data's extent.
pub struct Universe {
    /// Users, ids 1..=users.
    pub users: i64,
}

impl Universe {
    /// Finds the number of users by binary search over `/api/users/{id}/stats`
    /// (seeded ids are contiguous).
    pub async fn discover(t: &Target) -> anyhow::Result<Universe> {
        let exists = |id: i64| {
            let url = format!("{}/api/users/{id}/stats", t.base());
            let http = t.http.clone();
            async move { http.get(url).send().await.map(|r| r.status().is_success()) }
        };
        anyhow::ensure!(
            exists(1).await?,
            "user 1 does not exist: seed the database first (`gistfans seed`)"
        );
        let (mut lo, mut hi) = (1i64, 2i64);
        while exists(hi).await? {
            lo = hi;
            hi *= 2;
        }
        while hi - lo > 1 {
            let mid = (lo + hi) / 2;
            if exists(mid).await? {
                lo = mid
            } else {
                hi = mid
            }
        }
        Ok(Universe { users: lo })
    }
}

/// Flags and counters shared by the virtual users, the control loop and the spinner.
#[derive(Default)]
struct Shared {
    measuring: AtomicBool,
    stop: AtomicBool,
    loads: AtomicU64,
}

/// What every virtual user of a run does.
struct Plan<'a> {
    t: &'a Target,
    mode: Mode,
    zipf: Zipf<f64>,
    n_users: i64,
    write_ratio: f64,
    limit: Option<u64>,
    shared: &'a Shared,
    tally: Option<&'a Tally>,
}

/// Runs one mode at one concurrency and reports it. With a `probe`, the
/// virtual users also count into its tally and its callback gets the figures
/// every period; a probed run (the soak) never reads the admin monitor.
pub async fn run_mode(
    t: &Target,
    witness: &Arc<Witness>,
    universe: &Universe,
    args: &BenchArgs,
    mode: Mode,
    users: usize,
    mut probe: Option<Probe<'_>>,
) -> anyhow::Result<ModeReport> {
    let shared = Arc::new(Shared::default());
    let plan = Plan {
        t,
        mode,
        zipf: Zipf::new(universe.users as f64, args.zipf)
            .map_err(|e| anyhow::anyhow!("zipf: {e}"))?,
        n_users: universe.users,
        write_ratio: if mode.is_http_only() {
            0.0
        } else {
            args.write_ratio
        },
        limit: args.requests,
        shared: &shared,
        tally: probe.as_ref().map(|p| p.tally),
    };
    let (bar, ticker) = spinner(format!("{mode:?} x{users}"), shared.clone());
    // The virtual users borrow the target, so they run as futures joined on
    // this task (tokio drives their I/O concurrently) rather than as spawned tasks.
    let vus = (0..users).map(|vu| {
        let seed = args.seed ^ ((vu as u64) << 20) ^ ((users as u64) << 40) ^ (mode as u64);
        virtual_user(&plan, seed, vu % t.bases.len())
    });
    let (results, (before, after, peak_connections, elapsed)) = tokio::join!(
        futures::future::join_all(vus),
        control(t, witness, args, mode, &shared, probe.as_mut())
    );
    ticker.abort();
    bar.finish_and_clear();
    if let Some(p) = probe {
        // The remainder, counted until the last virtual user stopped.
        (p.on_tick)(p.tally.take());
    }

    let (latency, total) = merge(results);
    let mut report = ModeReport::build(
        mode,
        users,
        elapsed,
        &latency,
        &total_counts(&total),
        total.errors,
        &before,
        &after,
        peak_connections,
    );
    report.add_instances(t.bases.len(), total.delivery.as_ref(), &before, &after);
    report.add_writes(total.write_latency.as_ref());
    eprintln!("{}", report.one_line());
    if !report.circuit_opens.is_empty() {
        eprintln!(
            "    per instance: circuit openings {:?}, Redis budget misses {:?}, readers' slow Redis calls {:?}",
            report.circuit_opens, report.redis_budget_misses, report.redis_slow_calls
        );
    }
    if let (Some(a), Some(b)) = (
        after.monitor.as_ref().and_then(|m| m.get("refresh")),
        before.monitor.as_ref().and_then(|m| m.get("refresh")),
    ) {
        let n = |k: &str| {
            let get =
                |v: &serde_json::Value| v.get(k).and_then(serde_json::Value::as_i64).unwrap_or(0);
            get(a) - get(b)
        };
        if mode == Mode::Optimized {
            eprintln!(
                "    refreshes: {} ahead of expiry, {} revalidations, {} reads served while refreshing, {} skipped, {} wasted",
                n("ahead"), n("revalidations"), n("servedWhileRefreshing"), n("skipped"), n("wasted")
            );
        }
    }
    let shared = after.monitor.as_ref().and_then(|m| m.get("shared"));
    if let Some(shared) = shared.filter(|s| !s.is_null()) {
        // The shared level's own counts (all instances, since they started).
        let n = |k: &str| {
            shared
                .get(k)
                .and_then(serde_json::Value::as_u64)
                .unwrap_or(0)
        };
        eprintln!(
            "    shared level: {} hits, {} misses, {} stores, {} refused stale, {} lease waits, {} lock waits, {} updates refused, {} received, {} replaced, {} replayed, {} flushes, {} delivery waits ({} timed out), bus lag p99 {} ms",
            n("hits"), n("misses"), n("stores"), n("refusedStale"), n("leaseWaits"), n("lockWaits"),
            n("updatesRefused"), n("received"), n("replaced"), n("replayed"), n("flushes"),
            n("deliveryWaits"), n("deliveryTimeouts"),
            shared["deliveryLagMs"]["p99"]
        );
    }
    Ok(report)
}

/// A progress line that says the phase and the page loads so far.
fn spinner(label: String, shared: Arc<Shared>) -> (ProgressBar, tokio::task::JoinHandle<()>) {
    let bar = ProgressBar::new_spinner();
    bar.set_style(ProgressStyle::with_template("{spinner} {msg}").expect("valid template"));
    let b = bar.clone();
    let ticker = tokio::spawn(async move {
        let started = Instant::now();
        loop {
            let phase = if shared.measuring.load(Ordering::Relaxed) {
                "measuring"
            } else {
                "warming up"
            };
            b.set_message(format!(
                "{label}: {phase}, {} page loads, {:.0} s",
                shared.loads.load(Ordering::Relaxed),
                started.elapsed().as_secs_f64()
            ));
            b.tick();
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    (bar, ticker)
}

/// One virtual user, until the run stops; counts only while measuring.
async fn virtual_user(plan: &Plan<'_>, seed: u64, home: usize) -> VuResult {
    let s = plan.shared;
    let mut rng = StdRng::seed_from_u64(seed);
    let mut vu = Vu {
        t: plan.t,
        mode: plan.mode,
        res: VuResult {
            latency: Some(Histogram::new(3).expect("3 significant figures")),
            ..Default::default()
        },
        home,
        at: home,
        measuring: false,
    };
    while !s.stop.load(Ordering::Relaxed) {
        let user = plan.zipf.sample(&mut rng) as i64;
        let on = s.measuring.load(Ordering::Relaxed);
        vu.measuring = on;
        if rng.random_bool(plan.write_ratio) {
            let outcome = write_and_check(&mut vu, &mut rng, user, plan.n_users).await;
            if on {
                match outcome {
                    Ok(WriteOutcome::Seen) => {}
                    Ok(WriteOutcome::Conflict) => vu.res.conflicts += 1,
                    Ok(WriteOutcome::Stale) => {
                        vu.res.stale += 1;
                        if let Some(t) = plan.tally {
                            t.stale();
                        }
                    }
                    Err(kind) => vu.count_error(kind, plan.tally),
                }
            }
            continue;
        }
        let t0 = Instant::now();
        let r = vu.page(user, false).await;
        if on && !s.stop.load(Ordering::Relaxed) {
            match r {
                Ok(_) => {
                    let us = t0.elapsed().as_micros() as u64;
                    // `record` grows the histogram; `saturating_record` would clamp.
                    let _ = vu
                        .res
                        .latency
                        .as_mut()
                        .expect("set above")
                        .record(us.max(1));
                    if let Some(t) = plan.tally {
                        t.load(us);
                    }
                    let n = s.loads.fetch_add(1, Ordering::Relaxed) + 1;
                    if plan.limit.is_some_and(|l| n >= l) {
                        s.stop.store(true, Ordering::Relaxed);
                    }
                }
                Err(kind) => vu.count_error(kind, plan.tally),
            }
        }
    }
    vu.res
}

/// Waits out the warm-up, then measures until the deadline or the page-load
/// limit, calling the probe every period; stops the virtual users.
async fn control(
    t: &Target,
    witness: &Arc<Witness>,
    args: &BenchArgs,
    mode: Mode,
    shared: &Shared,
    mut probe: Option<&mut Probe<'_>>,
) -> (Snapshot, Snapshot, Option<i64>, Duration) {
    tokio::time::sleep(Duration::from_secs(args.warmup)).await;
    let monitor = probe.is_none();
    let before = Snapshot::take(t, witness, monitor).await;
    // The connections of the path under test: the manager's pool for the
    // optimised route, the plain pool for the baseline.
    let sampler = witness.sample_connections(match mode {
        Mode::Optimized => Some("gistfans"),
        Mode::Baseline => Some("gistfans_baseline"),
        Mode::Trivial | Mode::Ceiling => None,
    });
    let started = Instant::now();
    shared.loads.store(0, Ordering::Relaxed);
    if let Some(p) = &probe {
        p.tally.restart();
    }
    shared.measuring.store(true, Ordering::Relaxed);
    let deadline = started + Duration::from_secs(args.duration);
    let mut next_tick = probe.as_ref().map(|p| started + p.every);
    while Instant::now() < deadline && !shared.stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if let (Some(p), Some(next)) = (probe.as_deref_mut(), next_tick.as_mut()) {
            // The tick at the deadline is the remainder, handed over by run_mode.
            if Instant::now() >= *next && *next < deadline {
                (p.on_tick)(p.tally.take());
                *next += p.every;
            }
        }
    }
    shared.stop.store(true, Ordering::Relaxed);
    let elapsed = started.elapsed();
    let after = Snapshot::take(t, witness, monitor).await;
    (before, after, sampler.finish(), elapsed)
}

/// All virtual users' results as one.
fn merge(results: Vec<VuResult>) -> (Histogram<u64>, VuResult) {
    let mut latency = Histogram::<u64>::new(3).expect("3 significant figures");
    let mut total = VuResult::default();
    for r in results {
        if let Some(h) = &r.latency {
            latency.add(h).expect("same bounds");
        }
        if let Some(h) = &r.write_latency {
            total
                .write_latency
                .get_or_insert_with(|| Histogram::new(3).expect("3 significant figures"))
                .add(h)
                .expect("same bounds");
        }
        if let Some(h) = &r.delivery {
            total
                .delivery
                .get_or_insert_with(|| Histogram::new(3).expect("3 significant figures"))
                .add(h)
                .expect("same bounds");
        }
        total.requests += r.requests;
        total.writes += r.writes;
        total.conflicts += r.conflicts;
        total.stale += r.stale;
        for (k, v) in r.errors {
            *total.errors.entry(k).or_default() += v;
        }
    }
    (latency, total)
}

fn total_counts(r: &VuResult) -> Counts {
    Counts {
        requests: r.requests,
        writes: r.writes,
        conflicts: r.conflicts,
        stale: r.stale,
    }
}
