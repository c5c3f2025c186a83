//! The consistency monitor on the manager (the design is the
//! `consistency` module's doc): registering a family's verifier, the task
//! that starts the checks as they fall due, and one check.
//!
//! Invariants:
//! - The task holds the core weakly (the monitor's queue strongly) and
//!   ends with the core; a running check holds it for one verification
//!   at most (under the manager's query timeout), never longer.
//! - At most `DB_CONSISTENCY_CHECKS` checks run at once (a permit each);
//!   none starts while a query waits at the gate or the circuit is open.
//! - A check never changes the cache: it reads the entry, asks the
//!   verifier, and counts.

use std::sync::{Arc, Weak};

use tokio::{
    sync::OwnedSemaphorePermit,
    time::{sleep, sleep_until, timeout},
};

use super::{core::Core, Control};
use crate::{
    breaker::CircuitState,
    consistency::{Monitor, Outcome, Verdict, Verify, VerifyFuture, CONFIRM_AFTER},
};

impl Control {
    /// Registers the consistency monitor's verifier for the keys starting
    /// with `prefix` (replacing any of that prefix; the longest matching
    /// prefix is used). After an invalidation or an update in place of such
    /// a key, a sample of them (`DB_CONSISTENCY_SAMPLE`) is checked at each
    /// delay: `verify(key, cached)` gets the value cached then (of the type
    /// the family's queries cache; another type counts as an error) and
    /// re-reads the database, at low priority and bypassing the cache, to
    /// say whether it still holds ([`Verdict`]).
    ///
    /// The verifier lives as long as the manager: hold anything that
    /// itself holds the manager weakly, or the manager is never dropped.
    pub fn verify_prefix<T, F>(&self, prefix: &str, verify: F)
    where
        T: Send + Sync + 'static,
        F: Fn(Arc<str>, Arc<T>) -> VerifyFuture + Send + Sync + 'static,
    {
        self.core.consistency.verifiers.add(prefix, verify);
    }
}

/// The monitor's task: waits for the next due check (or a new one), and
/// starts each due check once a permit is free, skipping it while real
/// traffic waits. Ends with the core.
pub(crate) async fn monitor_loop(weak: Weak<Core>, monitor: Arc<Monitor>) {
    loop {
        match monitor.next_due() {
            Some(at) => tokio::select! {
                _ = sleep_until(at) => {}
                _ = monitor.wake.notified() => {}
            },
            None => monitor.wake.notified().await,
        }
        while let Some((index, key)) = monitor.pop_due() {
            let Ok(permit) = monitor.permits.clone().acquire_owned().await else {
                return;
            };
            let Some(core) = weak.upgrade() else { return };
            if core.pool.is_closed() {
                return;
            }
            if core.gate.queued() > 0 || core.breaker.state() != CircuitState::Closed {
                monitor.record(index, Outcome::Skipped);
                continue;
            }
            tokio::spawn(async move {
                let outcome = check(&core, index, key, permit).await;
                core.consistency.record(index, outcome);
            });
        }
    }
}

/// One check of `key` at the delay `index`: the entry the cache would
/// serve now, against the verifier's re-read; a stale verdict confirmed
/// by a second look after `CONFIRM_AFTER` (the same entry, still
/// differing).
async fn check(core: &Core, index: usize, key: Arc<str>, _permit: OwnedSemaphorePermit) -> Outcome {
    let Some(verify) = core.consistency.verifiers.find(&key) else {
        return Outcome::Absent;
    };
    let Some(entry) = core.peek_entry_to_update(&key).await else {
        return Outcome::Absent;
    };
    match ask(core, &verify, &key, &entry.value).await {
        Ok(Verdict::Fresh) => return Outcome::Fresh,
        Ok(Verdict::Stale(_)) => {}
        Err(outcome) => return outcome,
    }
    sleep(CONFIRM_AFTER).await;
    let again = core.peek_entry_to_update(&key).await;
    if again.map(|e| e.identity()) != Some(entry.identity()) {
        return Outcome::Raced;
    }
    match ask(core, &verify, &key, &entry.value).await {
        Ok(Verdict::Fresh) => Outcome::Fresh,
        Ok(Verdict::Stale(detail)) => {
            tracing::warn!(
                key = %key,
                within = %core.consistency.within(index),
                detail = %detail,
                "consistency monitor: a cached entry differs from the database"
            );
            core.consistency.found_stale(key);
            Outcome::Stale
        }
        Err(outcome) => outcome,
    }
}

/// Runs the verifier under the manager's query timeout; a failure is the
/// `Error` outcome (logged at debug: the database's own trouble is
/// reported elsewhere).
async fn ask(
    core: &Core,
    verify: &Verify,
    key: &Arc<str>,
    value: &Arc<dyn std::any::Any + Send + Sync>,
) -> Result<Verdict, Outcome> {
    let Some(future) = verify(key.clone(), value.clone()) else {
        tracing::debug!(key = %key, "consistency check: the cached value is not the verifier's type");
        return Err(Outcome::Error);
    };
    match timeout(core.config.query_timeout, future).await {
        Ok(Ok(verdict)) => Ok(verdict),
        Ok(Err(e)) => {
            tracing::debug!(key = %key, error = %e, "consistency check failed");
            Err(Outcome::Error)
        }
        Err(_) => {
            tracing::debug!(key = %key, "consistency check timed out");
            Err(Outcome::Error)
        }
    }
}
