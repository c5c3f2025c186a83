//! Single-flight: concurrent callers of one key share one execution.
//!
//! Hand-written rather than taken from moka's `get_with` because it must work
//! for uncached queries too, must refuse to join a flight that started before
//! an invalidation (that would hand out pre-write data after the write), and
//! must never cache an error.
//!
//! Invariants:
//! - At most one flight per key is registered; a flight is unregistered when
//!   its leader finishes or is dropped.
//! - The leader's result (value or error) is handed to every follower; an
//!   error is shared, never cached.
//! - A leader that is cancelled (its future dropped) wakes its followers with
//!   "no result", and they retry: one of them becomes the new leader.

use std::{any::Any, collections::HashMap, sync::Arc};

use parking_lot::Mutex;
use tokio::sync::watch;

use crate::{error::Error, invalidation::Seq};

/// What a flight produces: a type-erased value or a shared error.
pub(crate) type Outcome = Result<Arc<dyn Any + Send + Sync>, Error>;

pub(crate) struct Flight {
    /// Invalidation sequence when the leader started.
    pub(crate) started: Seq,
    tx: watch::Sender<Option<Outcome>>,
}

/// The registry of flights in progress.
#[derive(Default)]
pub(crate) struct SingleFlight {
    flights: Mutex<HashMap<Arc<str>, Arc<Flight>>>,
}

/// The caller's part in a flight.
pub(crate) enum Role<'a> {
    /// Run the query and [`LeaderGuard::finish`] with its outcome.
    Leader(LeaderGuard<'a>),
    /// Wait with [`wait`].
    Follower(watch::Receiver<Option<Outcome>>),
}

/// Held by the caller that runs the query; unregisters the flight on drop.
pub(crate) struct LeaderGuard<'a> {
    registry: &'a SingleFlight,
    key: Arc<str>,
    flight: Arc<Flight>,
}

impl LeaderGuard<'_> {
    /// Hands the outcome to every follower.
    ///
    /// The flight leaves the registry first, so that a follower the
    /// outcome sends back to `join_or_lead` (an error it must not share)
    /// cannot join this finished flight again.
    pub(crate) fn finish(self, outcome: Outcome) {
        self.unregister();
        self.flight.tx.send_replace(Some(outcome));
    }

    fn unregister(&self) {
        let mut flights = self.registry.flights.lock();
        if flights
            .get(&self.key)
            .is_some_and(|f| Arc::ptr_eq(f, &self.flight))
        {
            flights.remove(&self.key);
        }
    }
}

impl Drop for LeaderGuard<'_> {
    fn drop(&mut self) {
        self.unregister();
    }
}

impl SingleFlight {
    /// Joins the flight for `key` if there is one and `joinable` accepts it;
    /// otherwise registers a new flight started at `started` and leads it.
    pub(crate) fn join_or_lead(
        &self,
        key: &Arc<str>,
        started: Seq,
        joinable: impl FnOnce(&Flight) -> bool,
    ) -> Role<'_> {
        let mut flights = self.flights.lock();
        if let Some(f) = flights.get(key) {
            if joinable(f) {
                return Role::Follower(f.tx.subscribe());
            }
        }
        let (tx, _) = watch::channel(None);
        let flight = Arc::new(Flight { started, tx });
        flights.insert(key.clone(), flight.clone());
        Role::Leader(LeaderGuard {
            registry: self,
            key: key.clone(),
            flight,
        })
    }

    /// Flights in progress.
    pub(crate) fn in_flight(&self) -> usize {
        self.flights.lock().len()
    }
}

/// Waits for the leader. `None` means the leader was cancelled: retry.
pub(crate) async fn wait(mut rx: watch::Receiver<Option<Outcome>>) -> Option<Outcome> {
    match rx.wait_for(Option::is_some).await {
        Ok(v) => v.clone(),
        Err(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn followers_get_the_leaders_outcome() {
        let sf = SingleFlight::default();
        let key: Arc<str> = "k".into();
        let Role::Leader(lead) = sf.join_or_lead(&key, 0, |_| true) else {
            panic!("first caller leads")
        };
        let Role::Follower(rx) = sf.join_or_lead(&key, 0, |_| true) else {
            panic!("second caller follows")
        };
        lead.finish(Ok(Arc::new(7u32)));
        let v = wait(rx).await.unwrap().unwrap();
        assert_eq!(*v.downcast::<u32>().unwrap(), 7);
        assert_eq!(sf.in_flight(), 0);
    }

    #[tokio::test]
    async fn a_cancelled_leader_releases_its_followers() {
        let sf = SingleFlight::default();
        let key: Arc<str> = "k".into();
        let lead = sf.join_or_lead(&key, 0, |_| true);
        let Role::Follower(rx) = sf.join_or_lead(&key, 0, |_| true) else {
            panic!()
        };
        drop(lead);
        assert!(wait(rx).await.is_none());
        assert!(matches!(
            sf.join_or_lead(&key, 0, |_| true),
            Role::Leader(_)
        ));
    }

    #[tokio::test]
    async fn an_unjoinable_flight_is_replaced() {
        let sf = SingleFlight::default();
        let key: Arc<str> = "k".into();
        let old = sf.join_or_lead(&key, 0, |_| true);
        let new = sf.join_or_lead(&key, 5, |f| f.started >= 5);
        assert!(matches!(new, Role::Leader(_)));
        // The old leader finishing does not unregister the new flight.
        drop(old);
        assert_eq!(sf.in_flight(), 1);
    }
}
