//! Priority admission: who gets the next free connection slot.
//!
//! Hand-written because no pool we know of orders its waiters by priority
//! (sqlx, deadpool and bb8 are FIFO at best; sqlx #453 is about newcomers
//! jumping even that queue). The gate is a counting semaphore whose queue is a
//! `BTreeMap` ordered by *rank*:
//!
//! ```text
//! rank = enqueue_time - priority * aging_step
//! ```
//!
//! A smaller rank is served first. This is linear aging expressed as a static
//! key: waiting `aging_step` is worth one priority level, so a waiter of
//! priority `p` can only be overtaken by a waiter of priority `q > p` that
//! arrived less than `(q - p) * aging_step` after it. Within one priority the
//! rank is the arrival time, hence FIFO. Ties break on a sequence number.
//!
//! Invariants:
//! - `in_use <= limit` except transiently after [`Gate::set_limit`] shrinks the
//!   limit; excess permits are retired as they come back.
//! - A newcomer takes a free slot only if nobody is queued (no queue jumping).
//! - A queued waiter holds no slot. A slot granted to a waiter that has gone
//!   away (dropped future) comes straight back: the [`Permit`] travels inside
//!   the oneshot, and dropping an undelivered permit releases it.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use parking_lot::Mutex;
use tokio::{sync::oneshot, time::Instant};

use crate::options::Priority;

/// Position of a waiter in the queue: rank in microseconds, then arrival order.
type QueueKey = (i64, u64);

struct State {
    limit: usize,
    in_use: usize,
    next_seq: u64,
    waiters: BTreeMap<QueueKey, oneshot::Sender<Permit>>,
    /// Most slots in use, and most waiters, since [`Gate::take_peaks`].
    peak_in_use: usize,
    peak_queued: usize,
}

/// A counting semaphore with a priority queue in front of it.
pub(crate) struct Gate {
    state: Mutex<State>,
    epoch: Instant,
    aging_step: Duration,
}

/// The right to hold one connection. Dropping it frees the slot.
pub(crate) struct Permit {
    gate: Option<Arc<Gate>>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some(gate) = self.gate.take() {
            gate.release();
        }
    }
}

/// Removes a waiter from the queue if its future is dropped while queued.
struct QueuedGuard<'a> {
    gate: &'a Gate,
    key: QueueKey,
}

impl Drop for QueuedGuard<'_> {
    fn drop(&mut self) {
        self.gate.state.lock().waiters.remove(&self.key);
    }
}

impl Gate {
    pub(crate) fn new(limit: usize, aging_step: Duration) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State {
                limit,
                in_use: 0,
                next_seq: 0,
                waiters: BTreeMap::new(),
                peak_in_use: 0,
                peak_queued: 0,
            }),
            epoch: Instant::now(),
            aging_step,
        })
    }

    fn rank(&self, priority: Priority) -> i64 {
        let waited = Instant::now()
            .saturating_duration_since(self.epoch)
            .as_micros() as i64;
        waited - i64::from(priority.0) * self.aging_step.as_micros() as i64
    }

    /// Waits for a slot. Cancel-safe: dropping the future leaves the queue and
    /// never keeps a slot.
    pub(crate) async fn acquire(self: &Arc<Self>, priority: Priority) -> Permit {
        let (key, rx) = {
            let mut st = self.state.lock();
            if st.waiters.is_empty() && st.in_use < st.limit {
                st.in_use += 1;
                st.peak_in_use = st.peak_in_use.max(st.in_use);
                return Permit {
                    gate: Some(self.clone()),
                };
            }
            let key = (self.rank(priority), st.next_seq);
            st.next_seq += 1;
            let (tx, rx) = oneshot::channel();
            st.waiters.insert(key, tx);
            st.peak_queued = st.peak_queued.max(st.waiters.len());
            (key, rx)
        };
        let _queued = QueuedGuard { gate: self, key };
        // The gate removes a waiter's sender only to send it a permit, and the
        // gate outlives this call (we hold an Arc), so the channel cannot close.
        rx.await
            .expect("the gate never drops a queued waiter without a permit")
    }

    /// Takes a slot only if one is free and nobody is queued.
    pub(crate) fn try_acquire(self: &Arc<Self>) -> Option<Permit> {
        let mut st = self.state.lock();
        if st.waiters.is_empty() && st.in_use < st.limit {
            st.in_use += 1;
            st.peak_in_use = st.peak_in_use.max(st.in_use);
            Some(Permit {
                gate: Some(self.clone()),
            })
        } else {
            None
        }
    }

    fn release(self: &Arc<Self>) {
        let mut st = self.state.lock();
        st.in_use -= 1;
        self.grant(&mut st);
    }

    /// Hands free slots to the best-ranked waiters still listening.
    fn grant(self: &Arc<Self>, st: &mut State) {
        while st.in_use < st.limit {
            let Some((_, tx)) = st.waiters.pop_first() else {
                return;
            };
            st.in_use += 1;
            st.peak_in_use = st.peak_in_use.max(st.in_use);
            let permit = Permit {
                gate: Some(self.clone()),
            };
            if let Err(mut undelivered) = tx.send(permit) {
                // The waiter left between queueing and now: take the slot back
                // without re-entering `release` (we hold the lock).
                undelivered.gate = None;
                st.in_use -= 1;
            }
        }
    }

    /// Changes the number of slots. Growing admits waiters at once; shrinking
    /// takes effect as permits come back.
    pub(crate) fn set_limit(self: &Arc<Self>, limit: usize) {
        let mut st = self.state.lock();
        st.limit = limit;
        self.grant(&mut st);
    }

    pub(crate) fn limit(&self) -> usize {
        self.state.lock().limit
    }

    pub(crate) fn in_use(&self) -> usize {
        self.state.lock().in_use
    }

    pub(crate) fn queued(&self) -> usize {
        self.state.lock().waiters.len()
    }

    /// The most slots in use and the most waiters since the last call,
    /// then starts over from the current figures.
    pub(crate) fn take_peaks(&self) -> (usize, usize) {
        let mut st = self.state.lock();
        let peaks = (st.peak_in_use, st.peak_queued);
        st.peak_in_use = st.in_use;
        st.peak_queued = st.waiters.len();
        peaks
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::sync::Mutex as StdMutex;

    /// Queues `arrivals` (delay before arriving, priority) behind a saturated
    /// gate of one slot, then frees it and records the order of service.
    async fn service_order(arrivals: Vec<(u64, u8)>, aging_step: Duration) -> Vec<usize> {
        let gate = Gate::new(1, aging_step);
        let holder = gate.acquire(Priority(0)).await;
        let served = Arc::new(StdMutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for (i, (delay_ms, prio)) in arrivals.into_iter().enumerate() {
            tokio::time::sleep(Duration::from_millis(delay_ms)).await;
            let (g, served) = (gate.clone(), served.clone());
            tasks.push(tokio::spawn(async move {
                let _p = g.acquire(Priority(prio)).await;
                served.lock().unwrap().push(i);
            }));
            // Let the task enqueue itself before the next arrives.
            while gate.queued() < tasks.len() {
                tokio::task::yield_now().await;
            }
        }
        drop(holder);
        for t in tasks {
            t.await.unwrap();
        }
        Arc::try_unwrap(served).unwrap().into_inner().unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn higher_priority_is_served_first_and_fifo_within_a_priority() {
        let order = service_order(
            vec![(0, 1), (1, 1), (1, 3), (1, 2), (1, 3)],
            Duration::from_secs(10),
        )
        .await;
        assert_eq!(order, vec![2, 4, 3, 0, 1]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_long_wait_outranks_a_later_higher_priority() {
        // Priority 0 waits 3 s; a priority 2 newcomer is worth 2 s of waiting.
        let order = service_order(vec![(0, 0), (3000, 2)], Duration::from_secs(1)).await;
        assert_eq!(order, vec![0, 1]);
        // Within the bound, priority wins.
        let order = service_order(vec![(0, 0), (1500, 2)], Duration::from_secs(1)).await;
        assert_eq!(order, vec![1, 0]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_newcomer_does_not_jump_the_queue() {
        let gate = Gate::new(1, Duration::from_secs(1));
        let held = gate.acquire(Priority(0)).await;
        let g = gate.clone();
        let waiter = tokio::spawn(async move { g.acquire(Priority(0)).await });
        while gate.queued() == 0 {
            tokio::task::yield_now().await;
        }
        drop(held);
        // The slot went to the queued waiter, so a newcomer finds none free.
        assert!(gate.try_acquire().is_none());
        drop(waiter.await.unwrap());
        assert!(gate.try_acquire().is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn a_dropped_waiter_leaves_the_queue_and_keeps_no_slot() {
        let gate = Gate::new(1, Duration::from_secs(1));
        let held = gate.acquire(Priority(0)).await;
        let g = gate.clone();
        let timed_out = tokio::time::timeout(Duration::from_millis(50), async move {
            g.acquire(Priority(5)).await
        })
        .await;
        assert!(timed_out.is_err());
        assert_eq!(gate.queued(), 0);
        drop(held);
        assert_eq!(gate.in_use(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_permit_granted_to_a_vanished_waiter_comes_back() {
        let gate = Gate::new(1, Duration::from_secs(1));
        let held = gate.acquire(Priority(0)).await;
        let g = gate.clone();
        let waiter = tokio::spawn(async move { g.acquire(Priority(0)).await });
        while gate.queued() == 0 {
            tokio::task::yield_now().await;
        }
        // Grant, then abort the task before it can observe the permit.
        drop(held);
        waiter.abort();
        let _ = waiter.await;
        assert_eq!(gate.in_use(), 0);
        assert!(gate.try_acquire().is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn shrinking_retires_permits_as_they_return() {
        let gate = Gate::new(2, Duration::from_secs(1));
        let a = gate.acquire(Priority(0)).await;
        let b = gate.acquire(Priority(0)).await;
        gate.set_limit(1);
        drop(a);
        assert!(gate.try_acquire().is_none());
        drop(b);
        assert!(gate.try_acquire().is_some());
    }

    proptest! {
        /// The order of service matches a model: sort by
        /// (arrival - priority * step, arrival order).
        #[test]
        fn service_order_matches_the_rank_model(
            arrivals in proptest::collection::vec((0u64..400, 0u8..4), 1..12)
        ) {
            let step = Duration::from_millis(250);
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_time().start_paused(true).build().unwrap();
            let order = rt.block_on(service_order(arrivals.clone(), step));
            let mut t = 0i64;
            let mut model: Vec<(i64, usize)> = arrivals.iter().enumerate().map(|(i, (d, p))| {
                t += *d as i64 * 1000;
                (t - i64::from(*p) * step.as_micros() as i64, i)
            }).collect();
            model.sort();
            let expected: Vec<usize> = model.into_iter().map(|(_, i)| i).collect();
            prop_assert_eq!(order, expected);
        }
    }
}
