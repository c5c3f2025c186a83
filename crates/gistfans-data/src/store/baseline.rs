//! The baseline's SQL: one endpoint per UI component, each running its own
//! statements on a connection of the plain pool, one per figure, the way
//! per-component code written against an ORM does. No admission, no cache,
//! no coalescing.
//!
//! Behind a transaction-mode pooler (PgBouncer) a route's statements run in
//! one transaction (which pins one server connection for them) as unnamed
//! statements: sqlx prepares a statement in one round trip and runs it in
//! the next, and names even the statements it does not cache (sqlx #2473),
//! so without both the pooler hands the two halves, or a name, to different
//! server connections. That is what per-component code behind PgBouncer has
//! to do too.

use std::collections::HashMap;

use futures::future::BoxFuture;
use sqlx::{AssertSqlSafe, ColumnIndex, Connection, Decode, Encode, Executor, IntoArguments, Type};

use super::{Dialect, SqlStore};
use crate::{
    aggregate::{history_start, today, zero_filled},
    baseline::ProfileStats,
    error::DataError,
    model::{DayStars, Profile, RecentPost, Social, Stats, UserRef, RECENT_POSTS, SAMPLE},
};

/// The per-component routes' queries.
pub(crate) trait BaselineStore: Send + Sync {
    /// Profile and counters.
    fn stats(&self, id: i64) -> BoxFuture<'_, Result<ProfileStats, DataError>>;
    /// Newest posts with their star counts.
    fn posts(&self, id: i64) -> BoxFuture<'_, Result<Vec<RecentPost>, DataError>>;
    /// Stars received per day, 30 days.
    fn star_history(&self, id: i64) -> BoxFuture<'_, Result<Vec<DayStars>, DataError>>;
    /// Followers, following, mutuals.
    fn social(&self, id: i64) -> BoxFuture<'_, Result<Social, DataError>>;
}

fn not_found(id: i64) -> DataError {
    DataError::NotFound { what: "user", id }
}

fn db_err(e: sqlx::Error) -> DataError {
    DataError::Db(hpdb::Error::Query {
        key: "baseline".into(),
        source: std::sync::Arc::new(e),
    })
}

const COUNT_POSTS: &str = "SELECT count(*) FROM posts WHERE user_id = $1";
const COUNT_STARS_RECEIVED: &str =
    "SELECT count(*) FROM stars s JOIN posts p ON p.id = s.post_id WHERE p.user_id = $1";
const COUNT_STARS_GIVEN: &str = "SELECT count(*) FROM stars WHERE user_id = $1";
const COUNT_FOLLOWERS: &str = "SELECT count(*) FROM follows WHERE followee_id = $1";
const COUNT_FOLLOWING: &str = "SELECT count(*) FROM follows WHERE follower_id = $1";
const COUNT_MUTUALS: &str = "SELECT count(*) FROM follows a JOIN follows b \
     ON b.follower_id = a.followee_id AND b.followee_id = a.follower_id WHERE a.follower_id = $1";
const EXISTS: &str = "SELECT count(*) FROM users WHERE id = $1";
const FOLLOWER_SAMPLE: &str = "SELECT v.id, v.username, f.created_at FROM follows f \
     JOIN users v ON v.id = f.follower_id \
     WHERE f.followee_id = $1 ORDER BY f.created_at DESC, v.id DESC LIMIT $2";
const FOLLOWING_SAMPLE: &str = "SELECT v.id, v.username, f.created_at FROM follows f \
     JOIN users v ON v.id = f.followee_id \
     WHERE f.follower_id = $1 ORDER BY f.created_at DESC, v.id DESC LIMIT $2";
const MUTUAL_SAMPLE: &str = "SELECT v.id, v.username FROM follows a JOIN follows b \
     ON b.follower_id = a.followee_id AND b.followee_id = a.follower_id \
     JOIN users v ON v.id = a.followee_id WHERE a.follower_id = $1 ORDER BY v.id LIMIT $2";

/// One route's statements on one connection; the flag says whether they
/// may be named (prepared once per connection and cached by sqlx).
type RouteFn<'a, DB, T> = Box<
    dyn for<'c> FnOnce(
            &'c mut <DB as sqlx::Database>::Connection,
            bool,
        ) -> BoxFuture<'c, Result<T, DataError>>
        + Send
        + 'a,
>;

impl<DB> SqlStore<DB>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    i64: Type<DB> + for<'q> Encode<'q, DB> + for<'r> Decode<'r, DB>,
    String: Type<DB> + for<'q> Encode<'q, DB> + for<'r> Decode<'r, DB>,
    usize: ColumnIndex<DB::Row>,
{
    /// Runs a route on a connection of the baseline pool, in a transaction
    /// of unnamed statements behind a pooler (see the module's doc).
    async fn on_route<T>(&self, route: RouteFn<'_, DB, T>) -> Result<T, DataError> {
        let mut conn = self.baseline.acquire().await.map_err(db_err)?;
        if !self.baseline_behind_pooler {
            return route(&mut conn, true).await;
        }
        let mut tx = Connection::begin(&mut *conn).await.map_err(db_err)?;
        let out = route(&mut tx, false).await?;
        tx.commit().await.map_err(db_err)?;
        Ok(out)
    }
}

impl<DB> BaselineStore for SqlStore<DB>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    i64: Type<DB> + for<'q> Encode<'q, DB> + for<'r> Decode<'r, DB>,
    String: Type<DB> + for<'q> Encode<'q, DB> + for<'r> Decode<'r, DB>,
    usize: ColumnIndex<DB::Row>,
{
    fn stats(&self, id: i64) -> BoxFuture<'_, Result<ProfileStats, DataError>> {
        Box::pin(self.on_route(Box::new(move |c, named| {
            Box::pin(async move {
                let profile: Option<(i64, String, String, String, i64)> = sqlx::query_as(
                    "SELECT id, username, display_name, bio, created_at FROM users WHERE id = $1",
                )
                .bind(id)
                .persistent(named)
                .fetch_optional(&mut *c)
                .await
                .map_err(db_err)?;
                let (id, username, display_name, bio, created_at) =
                    profile.ok_or_else(|| not_found(id))?;
                let mut stats = [0i64; 5];
                for (n, sql) in [
                    COUNT_POSTS,
                    COUNT_STARS_RECEIVED,
                    COUNT_STARS_GIVEN,
                    COUNT_FOLLOWERS,
                    COUNT_FOLLOWING,
                ]
                .into_iter()
                .enumerate()
                {
                    stats[n] = count(sql, id, named)
                        .fetch_one(&mut *c)
                        .await
                        .map_err(db_err)?;
                }
                let [posts, stars_received, stars_given, followers, following] = stats;
                Ok(ProfileStats {
                    profile: Profile {
                        id,
                        username,
                        display_name,
                        bio,
                        created_at,
                    },
                    stats: Stats {
                        posts,
                        stars_received,
                        stars_given,
                        followers,
                        following,
                    },
                })
            })
        })))
    }

    fn posts(&self, id: i64) -> BoxFuture<'_, Result<Vec<RecentPost>, DataError>> {
        Box::pin(self.on_route(Box::new(move |c, named| {
            Box::pin(async move {
                exists(c, id, named).await?;
                let rows: Vec<(i64, String, String, i64)> = sqlx::query_as(
                    "SELECT id, title, language, created_at FROM posts WHERE user_id = $1 \
                     ORDER BY created_at DESC, id DESC LIMIT $2",
                )
                .bind(id)
                .bind(RECENT_POSTS)
                .persistent(named)
                .fetch_all(&mut *c)
                .await
                .map_err(db_err)?;
                let mut stars = HashMap::new();
                if !rows.is_empty() {
                    let ids = rows.iter().map(|r| r.0.to_string()).collect::<Vec<_>>();
                    // Safe: the only interpolation is integers (`i64`s the
                    // database just returned), never client text.
                    let counts: Vec<(i64, i64)> = sqlx::query_as(AssertSqlSafe(format!(
                        "SELECT post_id, count(*) FROM stars WHERE post_id IN ({}) GROUP BY post_id",
                        ids.join(",")
                    )))
                    .persistent(named)
                    .fetch_all(&mut *c)
                    .await
                    .map_err(db_err)?;
                    stars.extend(counts);
                }
                Ok(rows
                    .into_iter()
                    .map(|(id, title, language, created_at)| RecentPost {
                        stars: stars.get(&id).copied().unwrap_or(0),
                        id,
                        title,
                        language,
                        created_at,
                    })
                    .collect())
            })
        })))
    }

    fn star_history(&self, id: i64) -> BoxFuture<'_, Result<Vec<DayStars>, DataError>> {
        let today = today();
        Box::pin(self.on_route(Box::new(move |c, named| {
            Box::pin(async move {
                exists(c, id, named).await?;
                let days: Vec<(i64, i64)> = sqlx::query_as(
                    "SELECT s.created_at / 86400, count(*) FROM stars s JOIN posts p ON p.id = s.post_id \
                     WHERE p.user_id = $1 AND s.created_at >= $2 GROUP BY 1",
                )
                .bind(id)
                .bind(history_start(today))
                .persistent(named)
                .fetch_all(&mut *c)
                .await
                .map_err(db_err)?;
                Ok(zero_filled(today, days))
            })
        })))
    }

    fn social(&self, id: i64) -> BoxFuture<'_, Result<Social, DataError>> {
        Box::pin(self.on_route(Box::new(move |c, named| {
            Box::pin(async move {
                exists(c, id, named).await?;
                let mut samples = Vec::with_capacity(2);
                for sql in [FOLLOWER_SAMPLE, FOLLOWING_SAMPLE] {
                    let rows: Vec<(i64, String, i64)> = sqlx::query_as(sql)
                        .bind(id)
                        .bind(SAMPLE)
                        .persistent(named)
                        .fetch_all(&mut *c)
                        .await
                        .map_err(db_err)?;
                    samples.push(
                        rows.into_iter()
                            .map(|(id, username, at)| UserRef {
                                id,
                                username,
                                followed_at: Some(at),
                            })
                            .collect(),
                    );
                }
                let following_sample = samples.pop().unwrap_or_default();
                let follower_sample = samples.pop().unwrap_or_default();
                let mutual: Vec<(i64, String)> = sqlx::query_as(MUTUAL_SAMPLE)
                    .bind(id)
                    .bind(SAMPLE)
                    .persistent(named)
                    .fetch_all(&mut *c)
                    .await
                    .map_err(db_err)?;
                let mut counts = [0i64; 3];
                for (n, sql) in [COUNT_FOLLOWERS, COUNT_FOLLOWING, COUNT_MUTUALS]
                    .into_iter()
                    .enumerate()
                {
                    counts[n] = count(sql, id, named)
                        .fetch_one(&mut *c)
                        .await
                        .map_err(db_err)?;
                }
                let [followers, following, mutual_count] = counts;
                Ok(Social {
                    followers,
                    following,
                    follower_sample,
                    following_sample,
                    mutual_count,
                    mutual_sample: mutual
                        .into_iter()
                        .map(|(id, username)| UserRef {
                            id,
                            username,
                            followed_at: None,
                        })
                        .collect(),
                })
            })
        })))
    }
}

/// One counter of `id`: one statement.
fn count<DB>(
    sql: &'static str,
    id: i64,
    named: bool,
) -> sqlx::query::QueryScalar<'static, DB, i64, <DB as sqlx::Database>::Arguments>
where
    DB: sqlx::Database + sqlx::database::HasStatementCache,
    i64: Type<DB> + for<'q> Encode<'q, DB> + for<'r> Decode<'r, DB>,
    usize: ColumnIndex<DB::Row>,
{
    sqlx::query_scalar::<DB, i64>(sql)
        .bind(id)
        .persistent(named)
}

/// `NotFound` unless the user exists (one statement: the per-component
/// routes each check on their own).
async fn exists<DB>(c: &mut DB::Connection, id: i64, named: bool) -> Result<(), DataError>
where
    DB: sqlx::Database + sqlx::database::HasStatementCache,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    i64: Type<DB> + for<'q> Encode<'q, DB> + for<'r> Decode<'r, DB>,
    String: Type<DB> + for<'q> Encode<'q, DB> + for<'r> Decode<'r, DB>,
    usize: ColumnIndex<DB::Row>,
{
    match count::<DB>(EXISTS, id, named)
        .fetch_one(c)
        .await
        .map_err(db_err)?
    {
        0 => Err(not_found(id)),
        _ => Ok(()),
    }
}
