//! The optimised reads, through hpdb: the aggregate, the hottest users, a
//! post's author, user cards; and the readiness probe and shutdown.

use std::{collections::HashMap, sync::Arc, time::Duration};

use futures::future::BoxFuture;
use hpdb::{BatchLoader, Manager, Priority, QueryOptions, QueryResult};
use sqlx::{ColumnIndex, Decode, Encode, Executor, IntoArguments, Pool, Type};

use super::{Dialect, SqlStore, WriteSql};
use crate::{
    aggregate::{history_start, today},
    model::{Include, RECENT_POSTS, SAMPLE},
    rendered::{render, CachedAggregate},
    users::UserCard,
};

/// The reads the service and the user directory make.
pub(crate) trait ReadStore: Send + Sync {
    /// The aggregate of `user_id` under `key`: fetched in one statement,
    /// rendered after the connection is released.
    fn aggregate(
        &self,
        key: String,
        options: QueryOptions,
        user_id: i64,
        include: Include,
    ) -> BoxFuture<'_, Result<QueryResult<CachedAggregate>, hpdb::Error>>;

    /// The `n` most-followed users, most followed first.
    fn hottest_users(&self, n: i64) -> BoxFuture<'_, Result<Arc<Vec<i64>>, hpdb::Error>>;

    /// The author of `post` (cached: a post's author never changes), at a
    /// write's priority.
    fn post_author(&self, post: i64) -> BoxFuture<'_, Result<Arc<Option<i64>>, hpdb::Error>>;

    /// The cards of `ids`, in order, through the keyed batch loader.
    fn user_cards<'a>(
        &'a self,
        ids: &'a [i64],
    ) -> BoxFuture<'a, Result<Vec<Option<Arc<UserCard>>>, hpdb::Error>>;

    /// A trivial statement through the manager at critical priority.
    fn ping(&self, timeout: Duration) -> BoxFuture<'_, Result<(), hpdb::Error>>;

    /// Closes the manager and the baseline pool.
    fn close(&self) -> BoxFuture<'_, ()>;
}

impl<DB> SqlStore<DB>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    i64: Type<DB> + for<'q> Encode<'q, DB> + for<'r> Decode<'r, DB>,
    String: Type<DB> + for<'q> Encode<'q, DB> + for<'r> Decode<'r, DB>,
    for<'s> &'s str: ColumnIndex<DB::Row>,
{
    /// A store over `manager` and the baseline pool (which reaches the
    /// database through a transaction-mode pooler if `behind_pooler`).
    pub(crate) fn new(
        manager: Manager<DB>,
        baseline: Pool<DB>,
        behind_pooler: bool,
        write_sql: WriteSql,
    ) -> Self {
        let cards = BatchLoader::new(&manager, "user_cards", |conn, ids: Vec<i64>| {
            Box::pin(async move {
                let ids = serde_json::to_string(&ids).expect("ids serialise");
                let rows = sqlx::query_as::<DB, UserCard>(DB::CARDS_BY_IDS)
                    .bind(ids)
                    .fetch_all(conn)
                    .await?;
                Ok(rows
                    .into_iter()
                    .map(|c| (c.id, c))
                    .collect::<HashMap<_, _>>())
            })
        });
        Self {
            manager,
            baseline,
            baseline_behind_pooler: behind_pooler,
            cards,
            write_sql,
        }
    }
}

impl<DB> ReadStore for SqlStore<DB>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    i64: Type<DB> + for<'q> Encode<'q, DB> + for<'r> Decode<'r, DB>,
    String: Type<DB> + for<'q> Encode<'q, DB> + for<'r> Decode<'r, DB>,
    bool: Type<DB> + for<'q> Encode<'q, DB>,
    usize: ColumnIndex<DB::Row>,
{
    fn aggregate(
        &self,
        key: String,
        options: QueryOptions,
        user_id: i64,
        include: Include,
    ) -> BoxFuture<'_, Result<QueryResult<CachedAggregate>, hpdb::Error>> {
        let day = today();
        // A replica may answer (`DB_REPLICA_URLS`) once it has replayed
        // every write to this user this read must see.
        Box::pin(self.manager.execute_read_then(
            key,
            options,
            move |conn| {
                Box::pin(async move {
                    // No row (SQLite) or NULL (PostgreSQL's function): no such user.
                    sqlx::query_scalar::<DB, Option<String>>(DB::AGGREGATE)
                        .bind(user_id)
                        .bind(include.recent_posts)
                        .bind(include.star_history)
                        .bind(include.social)
                        .bind(RECENT_POSTS)
                        .bind(history_start(day))
                        .bind(SAMPLE)
                        .fetch_optional(conn)
                        .await
                        .map(Option::flatten)
                })
            },
            // Off the connection: parse, serialise once, hash.
            move |json| render(json, day),
        ))
    }

    fn hottest_users(&self, n: i64) -> BoxFuture<'_, Result<Arc<Vec<i64>>, hpdb::Error>> {
        let options = QueryOptions::uncached().priority(Priority::LOW);
        Box::pin(
            self.manager
                .execute_query("hottest_users", options, move |conn| {
                    Box::pin(async move {
                        sqlx::query_scalar::<DB, i64>(
                            "SELECT followee_id FROM follows GROUP BY followee_id \
                     ORDER BY count(*) DESC, followee_id LIMIT $1",
                        )
                        .bind(n)
                        .fetch_all(conn)
                        .await
                    })
                }),
        )
    }

    fn post_author(&self, post: i64) -> BoxFuture<'_, Result<Arc<Option<i64>>, hpdb::Error>> {
        // A write waits on it (a star locks and snapshots the author first):
        // at a write's priority, not behind every page's reads.
        let options = QueryOptions::default()
            .ttl(Duration::from_secs(3600))
            .priority(Priority::CRITICAL);
        let key = format!("post_author:{post}");
        Box::pin(self.manager.execute_query(key, options, move |conn| {
            Box::pin(async move {
                sqlx::query_scalar::<DB, i64>("SELECT user_id FROM posts WHERE id = $1")
                    .bind(post)
                    .fetch_optional(conn)
                    .await
            })
        }))
    }

    fn user_cards<'a>(
        &'a self,
        ids: &'a [i64],
    ) -> BoxFuture<'a, Result<Vec<Option<Arc<UserCard>>>, hpdb::Error>> {
        Box::pin(self.cards.load_many(ids))
    }

    fn ping(&self, timeout: Duration) -> BoxFuture<'_, Result<(), hpdb::Error>> {
        let options = QueryOptions::uncached()
            .priority(Priority::CRITICAL)
            .timeout(timeout);
        Box::pin(async move {
            self.manager
                .execute_query("readyz", options, |conn| {
                    Box::pin(async move {
                        sqlx::query_scalar::<DB, i64>("SELECT CAST(1 AS BIGINT)")
                            .fetch_one(conn)
                            .await
                    })
                })
                .await
                .map(drop)
        })
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            self.manager.close().await;
            self.baseline.close().await;
        })
    }
}
