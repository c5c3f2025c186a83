//! Per-user mutexes, striped: a fixed array of locks a user id hashes
//! into, so the lock table stays bounded whatever ids clients send.

use std::sync::Arc;

use tokio::sync::{Mutex, OwnedMutexGuard};

/// A fixed set of mutexes indexed by user id modulo their number.
#[derive(Clone)]
pub(super) struct Stripes(Arc<[Arc<Mutex<()>>]>);

impl Stripes {
    pub(super) fn new(n: usize) -> Self {
        Self((0..n).map(|_| Arc::new(Mutex::new(()))).collect())
    }

    /// Locks the stripes of `users`, in ascending order: two callers
    /// locking the same users never deadlock.
    pub(super) async fn lock(&self, users: &[i64]) -> Vec<OwnedMutexGuard<()>> {
        let n = self.0.len() as i64;
        let mut stripes: Vec<usize> = users.iter().map(|u| u.rem_euclid(n) as usize).collect();
        stripes.sort_unstable();
        stripes.dedup();
        let mut guards = Vec::with_capacity(stripes.len());
        for s in stripes {
            guards.push(self.0[s].clone().lock_owned().await);
        }
        guards
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn users_on_one_stripe_exclude_each_other_and_others_do_not() {
        let stripes = Stripes::new(4);
        let held = stripes.lock(&[1, 6]).await;
        assert_eq!(held.len(), 2);
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(20), stripes.lock(&[5]))
                .await
                .is_err(),
            "5 and 1 share a stripe"
        );
        assert_eq!(stripes.lock(&[3, 7]).await.len(), 1, "3 and 7 share one");
        drop(held);
        assert_eq!(stripes.lock(&[5]).await.len(), 1);
    }
}
