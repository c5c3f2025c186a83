//! The keyed batch loader (DataLoader-style): many callers each ask for one
//! key; one `WHERE id IN (…)` query answers them all.
//!
//! A batch opens with its first key and at once asks the priority gate for a
//! connection. Keys keep joining the open batch until the first of:
//! - the batch gets its connection (nothing waits on a timer while a
//!   connection is free; a single scheduler yield lets keys requested in the
//!   same instant join);
//! - `max_batch_size` keys have joined;
//! - the batch `window` has passed (it keeps its place in the queue).
//!
//! So under light load a key costs one query of its own with no added delay,
//! and under saturation keys pile into batches while they would have queued
//! anyway. The batch runs in its own task, so a caller that goes away does
//! not strand the others.

use std::{collections::HashMap, hash::Hash, sync::Arc, time::Duration};

use futures::future::BoxFuture;
use parking_lot::Mutex;
use sqlx::Database;
use tokio::{
    sync::watch,
    time::{sleep, timeout_at, Instant},
};

use crate::{
    error::{Error, TimeoutPhase},
    manager::Manager,
    options::Priority,
};

type Loaded<K, V> = Result<Arc<HashMap<K, Arc<V>>>, Error>;

/// The loader's query: gets the keys of one batch, returns the rows found.
pub type BatchFn<DB, K, V> = dyn for<'c> Fn(
        &'c mut <DB as Database>::Connection,
        Vec<K>,
    ) -> BoxFuture<'c, Result<HashMap<K, V>, sqlx::Error>>
    + Send
    + Sync;

struct Keys<K> {
    keys: Vec<K>,
    closed: bool,
}

struct Batch<K, V> {
    keys: Mutex<Keys<K>>,
    tx: watch::Sender<Option<Loaded<K, V>>>,
}

impl<K: Eq + Clone, V> Batch<K, V> {
    /// Adds keys unless the batch is closed or would overflow.
    fn try_add(&self, new: &[K], max: usize) -> bool {
        let mut k = self.keys.lock();
        if k.closed || k.keys.len() + new.len() > max {
            return false;
        }
        for key in new {
            if !k.keys.contains(key) {
                k.keys.push(key.clone());
            }
        }
        if k.keys.len() >= max {
            k.closed = true;
        }
        true
    }

    fn close(&self) -> Vec<K> {
        let mut k = self.keys.lock();
        k.closed = true;
        k.keys.clone()
    }
}

struct Loader<DB: Database, K, V> {
    manager: Manager<DB>,
    name: Arc<str>,
    fetch: Box<BatchFn<DB, K, V>>,
    priority: Priority,
    max_batch_size: usize,
    window: Duration,
    open: Mutex<Option<Arc<Batch<K, V>>>>,
}

/// Loads rows by key, many keys per query. Cheap to clone.
pub struct BatchLoader<DB: Database, K, V> {
    inner: Arc<Loader<DB, K, V>>,
}

impl<DB: Database, K, V> Clone for BatchLoader<DB, K, V> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<DB, K, V> BatchLoader<DB, K, V>
where
    DB: Database,
    K: Eq + Hash + Clone + Send + Sync + 'static,
    V: Send + Sync + 'static,
{
    /// A loader named `name` (the key its queries are tracked under), running
    /// `fetch` for each batch, with the manager's batch size and window.
    pub fn new<F>(manager: &Manager<DB>, name: impl Into<Arc<str>>, fetch: F) -> Self
    where
        F: for<'c> Fn(
                &'c mut DB::Connection,
                Vec<K>,
            ) -> BoxFuture<'c, Result<HashMap<K, V>, sqlx::Error>>
            + Send
            + Sync
            + 'static,
    {
        let cfg = &manager.config().batch;
        Self {
            inner: Arc::new(Loader {
                manager: manager.clone(),
                name: name.into(),
                fetch: Box::new(fetch),
                priority: Priority::NORMAL,
                max_batch_size: cfg.max_batch_size,
                window: cfg.window,
                open: Mutex::new(None),
            }),
        }
    }

    /// Sets the admission priority of this loader's batches.
    pub fn with_priority(self, priority: Priority) -> Self {
        let mut inner = Arc::try_unwrap(self.inner)
            .unwrap_or_else(|_| panic!("with_priority must be called before the loader is cloned"));
        inner.priority = priority;
        Self {
            inner: Arc::new(inner),
        }
    }

    /// The row for `key`, or `None` if the query did not return it.
    pub async fn load(&self, key: K) -> Result<Option<Arc<V>>, Error> {
        let mut found = self.load_many(std::slice::from_ref(&key)).await?;
        Ok(found.pop().flatten())
    }

    /// The rows for `keys`, in order, loaded in as few batches as fit.
    pub async fn load_many(&self, keys: &[K]) -> Result<Vec<Option<Arc<V>>>, Error> {
        let l = &self.inner;
        l.manager.check_circuit()?;
        let started = Instant::now();
        let deadline = started + l.manager.config().query_timeout;
        let receivers: Vec<_> = keys
            .chunks(l.max_batch_size)
            .map(|chunk| self.enqueue(chunk).subscribe())
            .collect();
        let mut out = Vec::with_capacity(keys.len());
        for (chunk, mut rx) in keys.chunks(l.max_batch_size).zip(receivers) {
            let loaded = match timeout_at(deadline, rx.wait_for(Option::is_some)).await {
                Err(_) => {
                    return Err(Error::Timeout {
                        key: l.name.clone(),
                        phase: TimeoutPhase::Joined,
                        elapsed: started.elapsed(),
                    })
                }
                Ok(Err(_)) => {
                    return Err(Error::BatchAborted {
                        key: l.name.clone(),
                    })
                }
                Ok(Ok(v)) => v.clone().expect("waited for Some"),
            }?;
            out.extend(chunk.iter().map(|k| loaded.get(k).cloned()));
        }
        Ok(out)
    }

    /// Puts `keys` (at most one batch's worth) into the open batch, or opens one.
    fn enqueue(&self, keys: &[K]) -> watch::Sender<Option<Loaded<K, V>>> {
        let l = &self.inner;
        let mut open = l.open.lock();
        if let Some(batch) = open.as_ref() {
            if batch.try_add(keys, l.max_batch_size) {
                return batch.tx.clone();
            }
        }
        let (tx, _) = watch::channel(None);
        let batch = Arc::new(Batch {
            keys: Mutex::new(Keys {
                keys: Vec::new(),
                closed: false,
            }),
            tx: tx.clone(),
        });
        batch.try_add(keys, l.max_batch_size);
        *open = Some(batch.clone());
        tokio::spawn(self.clone().drive(batch));
        tx
    }

    /// Gets the batch a connection, closes it, runs it, publishes the rows.
    async fn drive(self, batch: Arc<Batch<K, V>>) {
        let l = &self.inner;
        let started = Instant::now();
        let deadline = started + l.manager.config().query_timeout;
        // Keys requested in the same instant join before we ask for a slot.
        tokio::task::yield_now().await;
        let acquire = l.manager.wait_for_slot(l.priority);
        tokio::pin!(acquire);
        let permit = tokio::select! {
            p = &mut acquire => Some(p),
            _ = sleep(l.window) => {
                batch.close();
                timeout_at(deadline, acquire).await.ok()
            }
            _ = sleep_until_deadline(deadline) => None,
        };
        let keys = batch.close();
        {
            let mut open = l.open.lock();
            if open.as_ref().is_some_and(|b| Arc::ptr_eq(b, &batch)) {
                *open = None;
            }
        }
        let result = match permit {
            None => Err(Error::Timeout {
                key: l.name.clone(),
                phase: TimeoutPhase::Queued,
                elapsed: started.elapsed(),
            }),
            Some(permit) => {
                let loader = self.clone();
                l.manager
                    .run_batch(
                        permit,
                        &l.name,
                        keys.len(),
                        started,
                        deadline,
                        move |conn| (loader.inner.fetch)(conn, keys),
                    )
                    .await
                    .map(|rows| Arc::new(rows.into_iter().map(|(k, v)| (k, Arc::new(v))).collect()))
            }
        };
        batch.tx.send_replace(Some(result));
    }
}

async fn sleep_until_deadline(deadline: Instant) {
    tokio::time::sleep_until(deadline).await
}
