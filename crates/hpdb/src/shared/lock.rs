//! Write locks on tags across instances: a short-lived key per tag in Redis
//! (`SET NX PX` with a token, given back by compare-and-delete), so that
//! writes to one tag through several instances take turns. Each then finds
//! the previous write's updated values in the shared level, and its own
//! update in place follows directly and is stored, instead of being
//! refused and fetched again. Correctness never rests on it (the
//! generations carry that): a lock not had within its wait, a lapsed one,
//! or Redis away only cost refused updates.
//!
//! [`TagLocks`] itself names no Redis type (it exists without the `redis`
//! feature, holding nothing); what gives the locks back is the shared
//! level's own guard inside it.

use std::any::Any;
#[cfg(feature = "redis")]
use std::{
    sync::{Arc, LazyLock},
    time::Duration,
};

#[cfg(feature = "redis")]
use redis::Script;
#[cfg(feature = "redis")]
use tokio::time::Instant;

#[cfg(feature = "redis")]
use super::{
    budget::Patience,
    state::{inc, Shared},
};

/// Locks held on tags; given back when dropped.
#[must_use = "the locks are given back when this is dropped"]
pub struct TagLocks {
    held: usize,
    /// Gives the locks back when dropped (the shared level's guard).
    _release: Option<Box<dyn Any + Send + Sync>>,
}

impl std::fmt::Debug for TagLocks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TagLocks")
            .field("held", &self.held)
            .finish()
    }
}

impl TagLocks {
    /// No locks (no shared level).
    pub(crate) fn none() -> Self {
        Self {
            held: 0,
            _release: None,
        }
    }

    /// How many of the tags asked for are held (the others were not had
    /// within the wait, or Redis did not answer).
    pub fn held(&self) -> usize {
        self.held
    }
}

/// The locks held in Redis, given back (compare-and-delete) when dropped.
#[cfg(feature = "redis")]
struct Held {
    shared: Arc<Shared>,
    held: Vec<(String, u64)>,
}

#[cfg(feature = "redis")]
impl Drop for Held {
    fn drop(&mut self) {
        let held = std::mem::take(&mut self.held);
        if held.is_empty() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return; // No runtime: the locks lapse.
        };
        let shared = self.shared.clone();
        runtime.spawn(async move {
            static RELEASE: LazyLock<Script> = LazyLock::new(|| {
                Script::new(
                    r"if redis.call('GET', KEYS[1]) == ARGV[1] then
                return redis.call('DEL', KEYS[1]) end
              return 0",
                )
            });
            for (name, token) in held {
                let mut invocation = RELEASE.key(&name);
                invocation.arg(token.to_string());
                let _ = shared
                    .redis
                    .run_script::<i64>(Patience::Patient, &invocation)
                    .await;
            }
        });
    }
}

#[cfg(feature = "redis")]
impl Shared {
    /// Takes the write locks of `tags` (in a fixed order, so that two
    /// writers never wait for each other in a cycle), each waited for at
    /// most the fill lease and held at most that long. None while no other
    /// instance is live: this one's own lock orders its writes.
    pub(crate) async fn lock_tags(self: &Arc<Self>, tags: &[&str]) -> TagLocks {
        if !self.delivery.has_peers() {
            return TagLocks::none();
        }
        let mut names: Vec<String> = tags.iter().map(|t| self.names.lock(t)).collect();
        names.sort_unstable();
        names.dedup();
        let lease = self.config.fill_lease;
        let until = Instant::now() + lease;
        let mut locks = Held {
            shared: self.clone(),
            held: Vec::with_capacity(names.len()),
        };
        for name in names {
            let token = rand::random::<u64>();
            let mut pause = Duration::from_millis(1);
            loop {
                let mut c = redis::cmd("SET");
                c.arg(&name)
                    .arg(token.to_string())
                    .arg("NX")
                    .arg("PX")
                    .arg(lease.as_millis().max(1) as u64);
                match self
                    .redis
                    .query::<Option<String>>(Patience::Patient, &c)
                    .await
                {
                    Ok(Some(_)) => {
                        locks.held.push((name, token));
                        break;
                    }
                    Ok(None) if Instant::now() + pause < until => {
                        inc(&self.c.lock_waits);
                        tokio::time::sleep(pause).await;
                        pause = (pause * 3 / 2).min(Duration::from_millis(10));
                    }
                    // Not had in time, or Redis away: go on without it.
                    _ => break,
                }
            }
        }
        TagLocks {
            held: locks.held.len(),
            _release: Some(Box::new(locks)),
        }
    }
}
