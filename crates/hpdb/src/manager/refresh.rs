//! Background refreshes on the manager: a read that the refresh policy
//! (`crate::refresh`) finds due starts one, after it has its answer.
//!
//! Invariants:
//! - A refresh runs the reader's own closures later, in a task of its
//!   own, through the same steps as a miss (single-flight, shared level,
//!   admission at low priority, the store's invalidation check), so it
//!   stores nothing an invalidation has passed; it never counts as a
//!   request, a lookup or a latency sample.
//! - It starts only if the entry that asked for it is still the one
//!   cached when the task runs (a fill, a write's update or an
//!   invalidation since then leaves nothing to do).
//! - Its ticket (the key's mark and the concurrency permit) lives as long
//!   as the task: one refresh per key at a time, however it ends.

use std::sync::{atomic::Ordering, Arc};

use sqlx::Database;
use tokio::time::Instant;

use super::{call::Background, Manager};
use crate::{
    breaker::CircuitState,
    cache::CacheValue,
    options::{Priority, QueryOptions, Source},
    query::QueryFn,
    refresh::{Ticket, Trigger},
};

impl<DB: Database> Manager<DB> {
    /// Starts a refresh of `key` in the background if none is running and
    /// one may start (below `DB_CACHE_REFRESHES`, nobody queued at the gate,
    /// the circuit closed); `entry` is the identity of the entry read.
    pub(super) fn refresh_in_background<R, T, F, G>(
        &self,
        key: Arc<str>,
        options: QueryOptions,
        fetch: (F, G),
        trigger: Trigger,
        entry: usize,
    ) where
        R: Send + 'static,
        T: CacheValue,
        F: QueryFn<DB, R> + 'static,
        G: FnOnce(R) -> Result<T, sqlx::Error> + Send + 'static,
    {
        let core = self.core();
        let busy = || core.gate.queued() > 0 || core.breaker.state() != CircuitState::Closed;
        let Some(ticket) = core.refreshes.try_start(&key, trigger, busy) else {
            return;
        };
        let this = self.clone();
        tokio::spawn(async move { this.refresh(key, options, fetch, ticket, entry).await });
    }

    /// One background refresh: the closures run as a miss would run them,
    /// at low priority; a result that runs a query and is not kept counts
    /// as wasted.
    async fn refresh<R, T, F, G>(
        &self,
        key: Arc<str>,
        options: QueryOptions,
        fetch: (F, G),
        ticket: Ticket,
        entry: usize,
    ) where
        R: Send + 'static,
        T: CacheValue,
        F: QueryFn<DB, R> + 'static,
        G: FnOnce(R) -> Result<T, sqlx::Error> + Send + 'static,
    {
        let core = self.core();
        let still = core.cache.get(&key).await;
        if still.as_ref().map(|e| e.identity()) != Some(entry) {
            return;
        }
        let ttl = core.ttl_for(&key, &options).unwrap_or_default();
        let background = Background {
            mark: ticket.mark.clone(),
            min_ttl_left: ttl.mul_f64(core.refreshes.policy.ahead),
        };
        let options = QueryOptions {
            refresh: true,
            priority: Priority::LOW,
            timeout: None,
            ..options
        };
        let started = Instant::now();
        let deadline = started + core.config.query_timeout;
        let result = self
            .run(
                key.clone(),
                options,
                fetch,
                started,
                deadline,
                Some(background),
            )
            .await;
        let kept = match result {
            Ok(r) if r.source != Source::Database => true,
            Ok(_) => core.cache.get(&key).await.is_some_and(|e| {
                e.refreshed
                    .as_ref()
                    .is_some_and(|m| Arc::ptr_eq(m, &ticket.mark))
            }),
            Err(e) => {
                tracing::debug!(key = %key, error = %e, "background refresh failed");
                false
            }
        };
        if !kept {
            // Counted here; the cache must not count it again when it
            // drops the entry.
            ticket.mark.store(true, Ordering::Relaxed);
            core.refreshes.wasted();
        }
    }
}
