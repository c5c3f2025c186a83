//! [`Control`]: a handle on a manager that does not name the database type.
//!
//! Everything done to a manager that runs no query of the caller's (status,
//! advice, configuration, invalidation, reading and replacing cached values,
//! resizing, metrics, health checks, closing) is the same for every
//! database. Code that only does those (an admin API, a cache maintainer, a
//! metrics exporter) holds a `Control` and stays free of sqlx's type
//! parameters; queries still go through [`Manager`].

use std::{any::Any, sync::Arc, time::Duration};

use futures::future::BoxFuture;
use sqlx::Database;

use crate::{
    advisor::Advice,
    cache::{weigh, CacheValue},
    config::{ConfigError, ManagerConfig},
    manager::{decoder, Decode, HealthReport, Invalidation, Manager, Update, Versioned},
    metrics::Status,
    options::QueryOptions,
    shared::TagLocks,
};

/// A type-erased handle on a [`Manager`]. Cheap to clone.
#[derive(Clone)]
pub struct Control {
    manager: Arc<dyn Controls>,
}

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Control").finish_non_exhaustive()
    }
}

/// What [`Control`] needs of a manager, object-safe.
trait Controls: Send + Sync {
    fn status(&self) -> Status;
    fn advice(&self) -> Vec<Advice>;
    fn config(&self) -> &ManagerConfig;
    fn pending_requests(&self) -> usize;
    fn invalidate<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Invalidation>;
    fn invalidate_tag<'a>(&'a self, tag: &'a str) -> BoxFuture<'a, Invalidation>;
    fn clear_cache(&self) -> BoxFuture<'_, Invalidation>;
    fn peek_versioned<'a>(
        &'a self,
        key: &'a str,
        decode: Decode,
    ) -> BoxFuture<'a, Option<Versioned<dyn Any + Send + Sync>>>;
    fn update_tag<'a>(
        &'a self,
        tag: &'a str,
        options: &'a QueryOptions,
        updates: Vec<Update>,
    ) -> BoxFuture<'a, Invalidation>;
    fn warm<'a>(&'a self, prefix: &'a str, limit: usize, decode: Decode) -> BoxFuture<'a, usize>;
    fn lock_tags<'a>(&'a self, tags: &'a [&'a str]) -> BoxFuture<'a, TagLocks>;
    fn peek<'a>(
        &'a self,
        key: &'a str,
    ) -> BoxFuture<'a, Option<(Arc<dyn Any + Send + Sync>, Duration)>>;
    fn put<'a>(
        &'a self,
        key: Arc<str>,
        options: &'a QueryOptions,
        value: Arc<dyn Any + Send + Sync>,
        size: u32,
    ) -> BoxFuture<'a, ()>;
    fn resize(&self, max_connections: u32) -> Result<(), ConfigError>;
    fn reset_metrics(&self);
    fn set_connection_budget(&self, budget: u32);
    fn health_check(&self) -> BoxFuture<'_, HealthReport>;
    fn close(&self) -> BoxFuture<'_, ()>;
}

impl<DB: Database> Controls for Manager<DB> {
    fn status(&self) -> Status {
        Manager::status(self)
    }
    fn advice(&self) -> Vec<Advice> {
        Manager::advice(self)
    }
    fn config(&self) -> &ManagerConfig {
        Manager::config(self)
    }
    fn pending_requests(&self) -> usize {
        Manager::pending_requests(self)
    }
    fn invalidate<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Invalidation> {
        Box::pin(Manager::invalidate(self, key))
    }
    fn invalidate_tag<'a>(&'a self, tag: &'a str) -> BoxFuture<'a, Invalidation> {
        Box::pin(Manager::invalidate_tag(self, tag))
    }
    fn clear_cache(&self) -> BoxFuture<'_, Invalidation> {
        Box::pin(Manager::clear_cache(self))
    }
    fn peek_versioned<'a>(
        &'a self,
        key: &'a str,
        decode: Decode,
    ) -> BoxFuture<'a, Option<Versioned<dyn Any + Send + Sync>>> {
        Box::pin(self.peek_versioned_erased(key, decode))
    }
    fn update_tag<'a>(
        &'a self,
        tag: &'a str,
        options: &'a QueryOptions,
        updates: Vec<Update>,
    ) -> BoxFuture<'a, Invalidation> {
        Box::pin(self.update_tag_erased(tag, options, updates))
    }
    fn warm<'a>(&'a self, prefix: &'a str, limit: usize, decode: Decode) -> BoxFuture<'a, usize> {
        Box::pin(self.warm_erased(prefix, limit, decode))
    }
    fn lock_tags<'a>(&'a self, tags: &'a [&'a str]) -> BoxFuture<'a, TagLocks> {
        Box::pin(Manager::lock_tags(self, tags))
    }
    fn peek<'a>(
        &'a self,
        key: &'a str,
    ) -> BoxFuture<'a, Option<(Arc<dyn Any + Send + Sync>, Duration)>> {
        Box::pin(self.peek_erased(key))
    }
    fn put<'a>(
        &'a self,
        key: Arc<str>,
        options: &'a QueryOptions,
        value: Arc<dyn Any + Send + Sync>,
        size: u32,
    ) -> BoxFuture<'a, ()> {
        Box::pin(self.put_erased(key, options, value, size))
    }
    fn resize(&self, max_connections: u32) -> Result<(), ConfigError> {
        Manager::resize(self, max_connections)
    }
    fn reset_metrics(&self) {
        Manager::reset_metrics(self)
    }
    fn set_connection_budget(&self, budget: u32) {
        Manager::set_connection_budget(self, budget)
    }
    fn health_check(&self) -> BoxFuture<'_, HealthReport> {
        Box::pin(Manager::health_check(self))
    }
    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(Manager::close(self))
    }
}

impl<DB: Database> Manager<DB> {
    /// A handle on this manager that does not name the database type.
    pub fn control(&self) -> Control {
        Control {
            manager: Arc::new(self.clone()),
        }
    }
}

impl Control {
    /// See [`Manager::status`].
    pub fn status(&self) -> Status {
        self.manager.status()
    }

    /// See [`Manager::advice`].
    pub fn advice(&self) -> Vec<Advice> {
        self.manager.advice()
    }

    /// See [`Manager::config`].
    pub fn config(&self) -> &ManagerConfig {
        self.manager.config()
    }

    /// See [`Manager::pending_requests`].
    pub fn pending_requests(&self) -> usize {
        self.manager.pending_requests()
    }

    /// See [`Manager::invalidate`].
    pub async fn invalidate(&self, key: &str) -> Invalidation {
        self.manager.invalidate(key).await
    }

    /// See [`Manager::invalidate_tag`].
    pub async fn invalidate_tag(&self, tag: &str) -> Invalidation {
        self.manager.invalidate_tag(tag).await
    }

    /// See [`Manager::clear_cache`].
    pub async fn clear_cache(&self) -> Invalidation {
        self.manager.clear_cache().await
    }

    /// See [`Manager::peek_versioned`].
    pub async fn peek_versioned<T: CacheValue>(&self, key: &str) -> Option<Versioned<T>> {
        self.manager
            .peek_versioned(key, decoder::<T>)
            .await?
            .downcast()
    }

    /// See [`Manager::update_tag`].
    pub async fn update_tag<T: CacheValue>(
        &self,
        tag: &str,
        options: &QueryOptions,
        updates: Vec<(Arc<str>, Versioned<T>, Arc<T>)>,
    ) -> Invalidation {
        let updates = Update::erase(self.config().shared.url.is_some(), updates);
        self.manager.update_tag(tag, options, updates).await
    }

    /// See [`Manager::lock_tags`].
    pub async fn lock_tags(&self, tags: &[&str]) -> TagLocks {
        self.manager.lock_tags(tags).await
    }

    /// See [`Manager::warm_from_shared`].
    pub async fn warm_from_shared<T: CacheValue>(&self, prefix: &str, limit: usize) -> usize {
        self.manager.warm(prefix, limit, decoder::<T>).await
    }

    /// See [`Manager::peek_cached`].
    pub async fn peek_cached<T: Send + Sync + 'static>(&self, key: &str) -> Option<Arc<T>> {
        self.peek_cached_with_ttl(key).await.map(|(value, _)| value)
    }

    /// See [`Manager::peek_cached_with_ttl`].
    pub async fn peek_cached_with_ttl<T: Send + Sync + 'static>(
        &self,
        key: &str,
    ) -> Option<(Arc<T>, Duration)> {
        let (value, left) = self.manager.peek(key).await?;
        Some((value.downcast::<T>().ok()?, left))
    }

    /// See [`Manager::put_cached`].
    pub async fn put_cached<T: CacheValue>(
        &self,
        key: impl Into<Arc<str>>,
        options: &QueryOptions,
        value: Arc<T>,
    ) {
        let key = key.into();
        if let Some(size) = weigh(&key, &*value) {
            self.manager.put(key, options, value, size).await
        }
    }

    /// See [`Manager::resize`].
    pub fn resize(&self, max_connections: u32) -> Result<(), ConfigError> {
        self.manager.resize(max_connections)
    }

    /// See [`Manager::reset_metrics`].
    pub fn reset_metrics(&self) {
        self.manager.reset_metrics()
    }

    /// See [`Manager::set_connection_budget`].
    pub fn set_connection_budget(&self, budget: u32) {
        self.manager.set_connection_budget(budget)
    }

    /// See [`Manager::health_check`].
    pub async fn health_check(&self) -> HealthReport {
        self.manager.health_check().await
    }

    /// See [`Manager::close`].
    pub async fn close(&self) {
        self.manager.close().await
    }
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use sqlx::{sqlite::SqliteConnectOptions, Sqlite};

    use super::*;

    #[tokio::test]
    async fn a_control_acts_on_the_same_manager() {
        let m = Manager::<Sqlite>::builder(ManagerConfig::default())
            .background_tasks(false)
            .build_lazy(SqliteConnectOptions::from_str("sqlite::memory:").unwrap())
            .unwrap();
        let c = m.control();
        let v = m
            .execute_query("k", QueryOptions::default().tag("t"), |conn| {
                Box::pin(sqlx::query_scalar::<_, i64>("SELECT 7").fetch_one(conn))
            })
            .await
            .unwrap();
        assert_eq!(*v, 7);
        assert_eq!(c.peek_cached::<i64>("k").await.as_deref(), Some(&7));
        assert!(c.peek_cached::<String>("k").await.is_none(), "wrong type");
        c.invalidate_tag("t").await;
        assert!(m.peek_cached::<i64>("k").await.is_none());
        c.put_cached("k", &QueryOptions::default(), Arc::new(8i64))
            .await;
        assert_eq!(m.peek_cached::<i64>("k").await.as_deref(), Some(&8));
        assert_eq!(c.status().total_queries, m.status().total_queries);
        c.resize(5).unwrap();
        assert_eq!(m.status().max_connections, 5);
        c.clear_cache().await;
        assert!(m.peek_cached::<i64>("k").await.is_none());
    }
}
