//! Reads that may run on a replica ([`Manager::execute_read_then`]) and
//! the floor such a read must see (`crate::replica` is the design).

use std::{sync::Arc, time::Duration};

use sqlx::Database;
use tokio::time::Instant;

use super::{call::Call, Manager};
use crate::{
    cache::CacheValue,
    error::Error,
    options::QueryOptions,
    query::{QueryFn, QueryResult},
    shared::api::FillTicket,
};

impl<DB: Database> Manager<DB> {
    /// The position a read allowed on a replica must run at or past
    /// (`replica`); `None`: it runs on the primary.
    pub(super) async fn replica_floor(
        &self,
        call: &Call,
        ticket: &FillTicket,
    ) -> Option<(u64, Duration)> {
        let replicas = self.db.replicas.as_ref()?;
        if !call.options.replica || call.options.writes {
            return None;
        }
        let started = Instant::now();
        let floor = replicas
            .board
            .floor(&call.key, &call.tags, ticket.floor)
            .await;
        let spent = started.elapsed();
        if floor.is_none() {
            replicas.board.routing.record(spent);
        }
        let floor = floor?.max(call.options.read_after.unwrap_or(0));
        Some((floor, spent))
    }

    /// Like [`execute_query_then`](Self::execute_query_then), for a read
    /// that may run on a replica (with `DB_REPLICA_URLS`): one that has
    /// replayed every write this read must see (see the `replica` module),
    /// else the primary. If the replica fails mid-query the read runs
    /// again on the primary, which is why both closures are `Clone`.
    /// Without replicas it is `execute_query_then`.
    pub async fn execute_read_then<R, T, F, G>(
        &self,
        key: impl Into<Arc<str>>,
        options: QueryOptions,
        query: F,
        finish: G,
    ) -> Result<QueryResult<T>, Error>
    where
        R: Send + 'static,
        T: CacheValue,
        F: QueryFn<DB, R> + Clone + 'static,
        G: FnOnce(R) -> Result<T, sqlx::Error> + Clone + Send + 'static,
    {
        let key: Arc<str> = key.into();
        let Some(replicas) = self.db.replicas.as_ref() else {
            return self.execute_query_then(key, options, query, finish).await;
        };
        let mut routed = options.clone();
        routed.replica = true;
        match self
            .execute_query_then(key.clone(), routed, query.clone(), finish.clone())
            .await
        {
            Err(Error::Replica { .. }) => {
                replicas
                    .board
                    .c
                    .retried
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let mut primary = options;
                primary.replica = false;
                self.execute_query_then(key, primary, query, finish).await
            }
            other => other,
        }
    }
}
