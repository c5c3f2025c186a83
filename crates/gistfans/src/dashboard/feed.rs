//! The dashboard's feed: one task reads the manager's status once a period
//! and shares the sample with every open stream.
//!
//! Why one task: a dashboard asks for a figure every second, and several
//! may be open; reading the status per client would make N dashboards cost
//! N status reads (and N serialisations) per second. Here the ticker reads
//! and serialises once, publishes through a `watch` (a slow client skips to
//! the newest sample instead of queueing old ones), and keeps a short
//! backlog for clients that connect later.
//!
//! Invariants:
//! - while nobody watches, the ticker reads nothing (it only wakes up);
//! - at most [`StreamLimits::max_streams`] subscriptions exist at once: each
//!   holds a permit of a semaphore, taken without waiting;
//! - no subscription outlives [`StreamLimits::max_lifetime`] or
//!   [`Feed::close`] (called when the server starts shutting down), so a
//!   stream never holds a slot for ever nor delays the graceful drain;
//! - the ticker ends within one period of the feed being closed or dropped,
//!   and then holds nothing of the manager.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex, Weak},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use hpdb::{Advice, Control, Status};
use serde::Serialize;
use tokio::{
    sync::{watch, OwnedSemaphorePermit, Semaphore},
    time::{Instant, MissedTickBehavior},
};

/// The bounds of the status stream.
#[derive(Debug, Clone)]
pub struct StreamLimits {
    /// Most streams open at once (default 16); beyond, 503. A dashboard is
    /// one stream, so this is the number of people watching.
    pub max_streams: usize,
    /// Longest a stream stays open (default 10 min); the page reconnects,
    /// so this only bounds what a forgotten client can hold.
    pub max_lifetime: Duration,
    /// Samples sent to a client as it connects (default 60).
    pub backlog: usize,
    /// Time between samples (default 1 s).
    pub period: Duration,
}

impl Default for StreamLimits {
    fn default() -> Self {
        Self {
            max_streams: 16,
            max_lifetime: Duration::from_secs(600),
            backlog: 60,
            period: Duration::from_secs(1),
        }
    }
}

/// Why a stream could not be opened (mapped to HTTP in `error.rs`).
#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    /// Every stream slot is taken.
    #[error("{0} dashboard streams are open already, the most allowed; close one or retry later")]
    Full(usize),
    /// The server is shutting down.
    #[error("the server is shutting down")]
    Closed,
}

/// One status sample, serialised once for every client.
#[derive(Debug)]
pub struct Sample {
    /// Increasing from 1 over the feed's life; a client drops what it has seen.
    pub seq: u64,
    /// The sample as JSON (`{seq, atMs, status, alerts, recommendations}`).
    pub json: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SampleBody<'a> {
    seq: u64,
    at_ms: u64,
    status: &'a Status,
    alerts: Vec<&'a Advice>,
    recommendations: Vec<&'a Advice>,
}

impl Sample {
    /// Reads the manager's status and advice.
    fn read(control: &Control, seq: u64) -> Sample {
        let status = control.status();
        let advice = control.advice();
        let (alerts, recommendations) = advice.iter().partition(|a| a.is_alert());
        let at_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let body = SampleBody {
            seq,
            at_ms,
            status: &status,
            alerts,
            recommendations,
        };
        let json = serde_json::to_string(&body).expect("a status serialises");
        Sample { seq, json }
    }
}

/// The shared feed; cheap to clone.
#[derive(Clone)]
pub struct Feed(Arc<Inner>);

struct Inner {
    limits: StreamLimits,
    latest: watch::Sender<Option<Arc<Sample>>>,
    backlog: Mutex<VecDeque<Arc<Sample>>>,
    slots: Arc<Semaphore>,
    closed: watch::Sender<bool>,
}

impl Feed {
    /// A feed over `control`, its ticker started (needs a tokio runtime).
    pub fn start(control: Control, limits: StreamLimits) -> Feed {
        let inner = Arc::new(Inner {
            slots: Arc::new(Semaphore::new(limits.max_streams)),
            latest: watch::Sender::new(None),
            backlog: Mutex::new(VecDeque::with_capacity(limits.backlog)),
            closed: watch::Sender::new(false),
            limits,
        });
        tokio::spawn(tick(Arc::downgrade(&inner), control));
        Feed(inner)
    }

    /// Ends every stream and the ticker; new subscriptions are refused.
    pub fn close(&self) {
        self.0.closed.send_replace(true);
    }

    /// The bounds in force.
    pub fn limits(&self) -> &StreamLimits {
        &self.0.limits
    }

    /// A new subscription: the backlog, then each new sample until the
    /// lifetime ends or the feed closes.
    pub fn subscribe(&self) -> Result<Subscription, FeedError> {
        let inner = &self.0;
        if *inner.closed.borrow() {
            return Err(FeedError::Closed);
        }
        let permit = inner
            .slots
            .clone()
            .try_acquire_owned()
            .map_err(|_| FeedError::Full(inner.limits.max_streams))?;
        // Under the backlog's lock, so no sample is both in the backlog and
        // unseen in the receiver, and none falls between the two.
        let backlog = inner.backlog.lock().expect("backlog lock");
        let mut latest = inner.latest.subscribe();
        latest.mark_unchanged();
        Ok(Subscription {
            backlog: backlog.iter().cloned().collect(),
            latest,
            closed: inner.closed.subscribe(),
            deadline: Instant::now() + inner.limits.max_lifetime,
            _permit: permit,
        })
    }

    fn publish(inner: &Inner, sample: Sample) {
        let sample = Arc::new(sample);
        let mut backlog = inner.backlog.lock().expect("backlog lock");
        if backlog.len() >= inner.limits.backlog {
            backlog.pop_front();
        }
        if inner.limits.backlog > 0 {
            backlog.push_back(sample.clone());
        }
        inner.latest.send_replace(Some(sample));
    }
}

/// The one task that reads the status: once a period, only while someone
/// watches; it ends when the feed is closed or dropped.
async fn tick(feed: Weak<Inner>, control: Control) {
    let period = match feed.upgrade() {
        Some(inner) => inner.limits.period,
        None => return,
    };
    let mut interval = tokio::time::interval(period);
    interval.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut seq = 0;
    loop {
        interval.tick().await;
        let Some(inner) = feed.upgrade() else { break };
        if *inner.closed.borrow() {
            break;
        }
        if inner.latest.receiver_count() == 0 {
            continue;
        }
        seq += 1;
        Feed::publish(&inner, Sample::read(&control, seq));
    }
}

/// One client's view of the feed; holds a stream slot until dropped.
pub struct Subscription {
    /// Samples published before the client connected, oldest first.
    pub backlog: Vec<Arc<Sample>>,
    latest: watch::Receiver<Option<Arc<Sample>>>,
    closed: watch::Receiver<bool>,
    deadline: Instant,
    _permit: OwnedSemaphorePermit,
}

impl Subscription {
    /// The next new sample; `None` once the lifetime is over or the feed closed.
    pub async fn next(&mut self) -> Option<Arc<Sample>> {
        loop {
            tokio::select! {
                biased;
                _ = self.closed.wait_for(|c| *c) => return None,
                _ = tokio::time::sleep_until(self.deadline) => return None,
                changed = self.latest.changed() => {
                    changed.ok()?;
                    if let Some(s) = self.latest.borrow_and_update().clone() {
                        return Some(s);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max_streams: usize) -> StreamLimits {
        StreamLimits {
            max_streams,
            max_lifetime: Duration::from_millis(100),
            backlog: 2,
            period: Duration::from_secs(1),
        }
    }

    fn inner(max_streams: usize) -> Feed {
        // A feed without a ticker: the tests publish by hand.
        Feed(Arc::new(Inner {
            slots: Arc::new(Semaphore::new(max_streams)),
            latest: watch::Sender::new(None),
            backlog: Mutex::new(VecDeque::new()),
            closed: watch::Sender::new(false),
            limits: limits(max_streams),
        }))
    }

    fn sample(seq: u64) -> Sample {
        Sample {
            seq,
            json: format!("{{\"seq\":{seq}}}"),
        }
    }

    #[tokio::test]
    async fn the_cap_is_a_number_of_live_subscriptions() {
        let feed = inner(2);
        let a = feed.subscribe().unwrap();
        let _b = feed.subscribe().unwrap();
        assert!(matches!(feed.subscribe(), Err(FeedError::Full(2))));
        drop(a);
        assert!(feed.subscribe().is_ok());
    }

    #[tokio::test]
    async fn a_subscriber_gets_the_backlog_then_only_new_samples() {
        let feed = inner(4);
        for seq in 1..=3 {
            Feed::publish(&feed.0, sample(seq));
        }
        let mut sub = feed.subscribe().unwrap();
        let seen: Vec<u64> = sub.backlog.iter().map(|s| s.seq).collect();
        assert_eq!(seen, [2, 3], "the backlog keeps the newest two");
        Feed::publish(&feed.0, sample(4));
        assert_eq!(sub.next().await.unwrap().seq, 4);
    }

    #[tokio::test]
    async fn a_subscription_ends_at_its_lifetime_and_on_close() {
        let feed = inner(4);
        let mut old = feed.subscribe().unwrap();
        assert!(old.next().await.is_none(), "ends at the deadline");
        let mut sub = feed.subscribe().unwrap();
        feed.close();
        assert!(sub.next().await.is_none());
        assert!(matches!(feed.subscribe(), Err(FeedError::Closed)));
    }
}
