//! The checks waiting for their time: one first-in first-out queue per
//! delay, bounded all together.
//!
//! Invariants:
//! - At most `capacity` checks wait, every delay together; a key that
//!   does not fit at all of its delays is refused whole (the caller
//!   counts it as dropped), so a queued key is always checked at each
//!   delay, never at one only.
//! - Within one delay, checks fall due in the order they were queued (the
//!   same delay added to a clock that does not go back), so each queue's
//!   front is its earliest and the next due check is the earliest front:
//!   no heap, no scan.

use std::{collections::VecDeque, sync::Arc, time::Duration};

use tokio::time::Instant;

/// The waiting checks of every delay.
pub(crate) struct Queue {
    delays: Vec<Duration>,
    fifos: Vec<VecDeque<(Instant, Arc<str>)>>,
    capacity: usize,
    len: usize,
}

impl Queue {
    /// Empty queues for `delays`, at most `capacity` checks in all.
    pub(crate) fn new(delays: Vec<Duration>, capacity: usize) -> Self {
        Self {
            fifos: delays.iter().map(|_| VecDeque::new()).collect(),
            delays,
            capacity,
            len: 0,
        }
    }

    /// Queues a check of `key` at each delay after `now`; false (nothing
    /// queued) if that would pass the bound.
    pub(crate) fn push(&mut self, key: Arc<str>, now: Instant) -> bool {
        if self.len + self.delays.len() > self.capacity {
            return false;
        }
        for (fifo, delay) in self.fifos.iter_mut().zip(&self.delays) {
            fifo.push_back((now + *delay, key.clone()));
        }
        self.len += self.delays.len();
        true
    }

    /// When the next check falls due, if any waits.
    pub(crate) fn next_due(&self) -> Option<Instant> {
        self.fifos
            .iter()
            .filter_map(|f| f.front())
            .map(|(at, _)| *at)
            .min()
    }

    /// The earliest check due at `now` (its delay's index and its key).
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<(usize, Arc<str>)> {
        let (index, _) = self
            .fifos
            .iter()
            .enumerate()
            .filter_map(|(i, f)| f.front().map(|(at, _)| (i, *at)))
            .filter(|(_, at)| *at <= now)
            .min_by_key(|(_, at)| *at)?;
        let (_, key) = self.fifos[index].pop_front()?;
        self.len -= 1;
        Some((index, key))
    }

    /// Checks waiting.
    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[tokio::test(start_paused = true)]
    async fn checks_fall_due_at_each_delay_in_time_order() {
        let mut q = Queue::new(vec![ms(100), ms(1000)], 10);
        let t0 = Instant::now();
        assert!(q.push("a".into(), t0));
        assert!(q.push("b".into(), t0 + ms(50)));
        assert_eq!(q.len(), 4);
        assert_eq!(q.next_due(), Some(t0 + ms(100)));
        assert_eq!(q.pop_due(t0 + ms(99)), None, "nothing due yet");
        let mut at = |n| q.pop_due(t0 + ms(n)).map(|(i, k)| (i, k.to_string()));
        assert_eq!(at(2000), Some((0, "a".into())));
        assert_eq!(at(2000), Some((0, "b".into())));
        assert_eq!(at(2000), Some((1, "a".into())));
        assert_eq!(at(2000), Some((1, "b".into())));
        assert_eq!(at(2000), None);
        assert_eq!(q.len(), 0);
        assert_eq!(q.next_due(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_queue_refuses_a_key_whole_and_takes_one_again_once_drained() {
        let mut q = Queue::new(vec![ms(10), ms(20)], 5);
        let t0 = Instant::now();
        assert!(q.push("a".into(), t0));
        assert!(q.push("b".into(), t0));
        assert!(
            !q.push("c".into(), t0),
            "4 + 2 > 5: refused, not half queued"
        );
        assert_eq!(q.len(), 4);
        assert!(q.pop_due(t0 + ms(10)).is_some());
        assert!(q.pop_due(t0 + ms(10)).is_some());
        assert!(q.push("c".into(), t0 + ms(10)));
        let keys: Vec<_> = std::iter::from_fn(|| q.pop_due(t0 + ms(100)))
            .map(|(_, k)| k.to_string())
            .collect();
        // c's first (due at 20, queued first at its delay), then a and b's
        // second (also 20), then c's second (30).
        assert_eq!(keys, ["c", "a", "b", "c"]);
    }
}
