//! The background tasks of a manager: the health loop (with the advice it
//! logs), the leak scan, the cache sweep, the consistency monitor, the
//! tuning loops and the shared level's bus.
//!
//! Invariant: every task holds the core only weakly and ends with it (and
//! is aborted when it drops), so dropping the last manager and control
//! stops them all.

use std::{
    sync::{Arc, Weak},
    time::Duration,
};

use tokio::{
    task::JoinHandle,
    time::{sleep, Instant},
};

use super::core::Core;
use crate::{advisor, breaker::CircuitState, shared::api::LocalCache};

/// Starts the health loop, the leak scan, the cache sweep, the tuning
/// loops that are on and the bus (with a shared level).
pub(crate) fn start(core: &Arc<Core>) {
    let weak = Arc::downgrade(core);
    let cfg = &core.config;
    let health = tokio::spawn(health_loop(
        weak.clone(),
        cfg.health.interval,
        cfg.health.cooldown,
    ));
    let leak_every =
        (cfg.leak.threshold / 4).clamp(Duration::from_millis(10), Duration::from_secs(5));
    let leaks = spawn_periodic(weak.clone(), leak_every, |core| async move {
        core.leaks.scan();
    });
    let sweep = spawn_periodic(weak.clone(), cfg.cache.sweep_interval, |core| async move {
        core.cache.sweep().await;
    });
    let monitor = tokio::spawn(super::consistency::monitor_loop(
        weak,
        core.consistency.clone(),
    ));
    let mut tasks = core.tasks.lock();
    tasks.extend([health, leaks, sweep, monitor]);
    tasks.extend(core.tuning.start(&core.gate));
    let local: Weak<dyn LocalCache> = Arc::downgrade(core) as _;
    tasks.extend(core.shared.start(local));
}

/// Health checks every `interval`, and every `cooldown` while the circuit
/// is not closed, so that a database that comes back is noticed within a
/// cooldown even when no query arrives to probe it. Advice is logged at the
/// regular interval only. Ends with the manager.
async fn health_loop(weak: Weak<Core>, interval: Duration, cooldown: Duration) {
    let mut wait = interval;
    let mut last_advice = Instant::now();
    loop {
        sleep(wait).await;
        let Some(core) = weak.upgrade() else { return };
        if core.pool.is_closed() {
            return;
        }
        let report = core.pool.health_check(&core).await;
        if last_advice.elapsed() >= interval {
            last_advice = Instant::now();
            let control = super::Control { core: core.clone() };
            for a in advisor::advise(&control.status(), &core.config.advisor) {
                a.log();
            }
        }
        wait = if report.circuit == CircuitState::Closed {
            interval
        } else {
            cooldown
        };
    }
}

/// Runs `tick` every `every` for as long as the manager lives.
fn spawn_periodic<F, Fut>(weak: Weak<Core>, every: Duration, tick: F) -> JoinHandle<()>
where
    F: Fn(Arc<Core>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    tokio::spawn(async move {
        loop {
            sleep(every).await;
            let Some(core) = weak.upgrade() else { return };
            tick(core).await;
        }
    })
}
