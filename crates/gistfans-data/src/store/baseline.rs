//! The baseline's SQL: one endpoint per UI component, each running its own
//! statements on the plain pool, one per figure, the way per-component code
//! written against an ORM does. No admission, no cache, no coalescing.

use std::collections::HashMap;

use futures::future::BoxFuture;
use sqlx::{AssertSqlSafe, ColumnIndex, Decode, Encode, Executor, IntoArguments, Type};

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
        let pool = &self.baseline;
        // One counter: one statement.
        let count = move |sql: &'static str| async move {
            sqlx::query_scalar::<DB, i64>(sql)
                .bind(id)
                .fetch_one(pool)
                .await
                .map_err(db_err)
        };
        Box::pin(async move {
            let profile: Option<(i64, String, String, String, i64)> = sqlx::query_as(
                "SELECT id, username, display_name, bio, created_at FROM users WHERE id = $1",
            )
            .bind(id)
            .fetch_optional(pool)
            .await
            .map_err(db_err)?;
            let (id, username, display_name, bio, created_at) =
                profile.ok_or_else(|| not_found(id))?;
            Ok(ProfileStats {
                profile: Profile {
                    id,
                    username,
                    display_name,
                    bio,
                    created_at,
                },
                stats: Stats {
                    posts: count(COUNT_POSTS).await?,
                    stars_received: count(COUNT_STARS_RECEIVED).await?,
                    stars_given: count(COUNT_STARS_GIVEN).await?,
                    followers: count(COUNT_FOLLOWERS).await?,
                    following: count(COUNT_FOLLOWING).await?,
                },
            })
        })
    }

    fn posts(&self, id: i64) -> BoxFuture<'_, Result<Vec<RecentPost>, DataError>> {
        let pool = &self.baseline;
        // One counter: one statement.
        let count = move |sql: &'static str| async move {
            sqlx::query_scalar::<DB, i64>(sql)
                .bind(id)
                .fetch_one(pool)
                .await
                .map_err(db_err)
        };
        Box::pin(async move {
            if count(EXISTS).await? == 0 {
                return Err(not_found(id));
            }
            let rows: Vec<(i64, String, String, i64)> = sqlx::query_as(
                "SELECT id, title, language, created_at FROM posts WHERE user_id = $1 \
                 ORDER BY created_at DESC, id DESC LIMIT $2",
            )
            .bind(id)
            .bind(RECENT_POSTS)
            .fetch_all(pool)
            .await
            .map_err(db_err)?;
            let mut stars = HashMap::new();
            if !rows.is_empty() {
                // Ids from the database, not from the client.
                let ids = rows.iter().map(|r| r.0.to_string()).collect::<Vec<_>>();
                // Safe: the only interpolation is integers (`i64`s the
                // database just returned), never client text.
                let counts: Vec<(i64, i64)> = sqlx::query_as(AssertSqlSafe(format!(
                    "SELECT post_id, count(*) FROM stars WHERE post_id IN ({}) GROUP BY post_id",
                    ids.join(",")
                )))
                .fetch_all(pool)
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
    }

    fn star_history(&self, id: i64) -> BoxFuture<'_, Result<Vec<DayStars>, DataError>> {
        let pool = &self.baseline;
        let today = today();
        let count = move |sql: &'static str| async move {
            sqlx::query_scalar::<DB, i64>(sql)
                .bind(id)
                .fetch_one(pool)
                .await
                .map_err(db_err)
        };
        Box::pin(async move {
            if count(EXISTS).await? == 0 {
                return Err(not_found(id));
            }
            let days: Vec<(i64, i64)> = sqlx::query_as(
                "SELECT s.created_at / 86400, count(*) FROM stars s JOIN posts p ON p.id = s.post_id \
                 WHERE p.user_id = $1 AND s.created_at >= $2 GROUP BY 1",
            )
            .bind(id)
            .bind(history_start(today))
            .fetch_all(pool)
            .await
            .map_err(db_err)?;
            Ok(zero_filled(today, days))
        })
    }

    fn social(&self, id: i64) -> BoxFuture<'_, Result<Social, DataError>> {
        let pool = &self.baseline;
        // One counter: one statement.
        let count = move |sql: &'static str| async move {
            sqlx::query_scalar::<DB, i64>(sql)
                .bind(id)
                .fetch_one(pool)
                .await
                .map_err(db_err)
        };
        Box::pin(async move {
            if count(EXISTS).await? == 0 {
                return Err(not_found(id));
            }
            let sample = |sql: &'static str| async move {
                let rows: Vec<(i64, String, i64)> = sqlx::query_as(sql)
                    .bind(id)
                    .bind(SAMPLE)
                    .fetch_all(pool)
                    .await
                    .map_err(db_err)?;
                Ok::<_, DataError>(
                    rows.into_iter()
                        .map(|(id, username, at)| UserRef {
                            id,
                            username,
                            followed_at: Some(at),
                        })
                        .collect(),
                )
            };
            let follower_sample = sample(FOLLOWER_SAMPLE).await?;
            let following_sample = sample(FOLLOWING_SAMPLE).await?;
            let mutual: Vec<(i64, String)> = sqlx::query_as(MUTUAL_SAMPLE)
                .bind(id)
                .bind(SAMPLE)
                .fetch_all(pool)
                .await
                .map_err(db_err)?;
            Ok(Social {
                followers: count(COUNT_FOLLOWERS).await?,
                following: count(COUNT_FOLLOWING).await?,
                follower_sample,
                following_sample,
                mutual_count: count(COUNT_MUTUALS).await?,
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
    }
}
