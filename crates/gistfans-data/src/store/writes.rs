//! The writes' SQL: create a post, star and unstar, follow and unfollow.
//!
//! Each runs through the manager (critical priority, never cached, never
//! coalesced). A write's expected refusals (no such actor, no such post,
//! already starred) come back from its closure as an [`Outcome`], not as
//! a database error, so the manager's breaker and error counters see only
//! real failures.

use futures::future::BoxFuture;
use hpdb::{Priority, QueryOptions};
use sqlx::{ColumnIndex, Decode, Encode, Executor, IntoArguments, Type};

use super::{Dialect, SqlStore};
use crate::{
    error::DataError,
    model::{now, Post, UserRef},
    writes::{FollowChange, NewPost, StarChange},
};

/// The writes the service makes.
pub(crate) trait WriteStore: Send + Sync {
    /// Creates a post by `author`.
    fn create_post(&self, author: i64, post: NewPost) -> BoxFuture<'_, Result<Post, DataError>>;
    /// `user` stars (`on`) or unstars `post`.
    fn set_star(
        &self,
        user: i64,
        post: i64,
        on: bool,
    ) -> BoxFuture<'_, Result<StarChange, DataError>>;
    /// `follower` follows (`on`) or unfollows `followee`.
    fn set_follow(
        &self,
        follower: i64,
        followee: i64,
        on: bool,
    ) -> BoxFuture<'_, Result<FollowChange, DataError>>;
}

fn write_options() -> QueryOptions {
    QueryOptions::uncached()
        .coalesce(false)
        .priority(Priority::CRITICAL)
}

/// How a write ended, as its closure reports it.
enum Outcome<T> {
    Done(T),
    NoActor,
    NotFound(&'static str, i64),
    Conflict(String),
}

impl<T: Send + Sync + 'static> hpdb::CacheValue for Outcome<T> {
    fn cache_size(&self) -> Result<usize, String> {
        Err("a write's outcome is never cached".into())
    }
}

fn settle<T: Clone>(actor: i64, outcome: &Outcome<T>) -> Result<T, DataError> {
    match outcome {
        Outcome::Done(v) => Ok(v.clone()),
        Outcome::NoActor => Err(DataError::Invalid(format!(
            "the acting user {actor} (X-User-Id) does not exist"
        ))),
        Outcome::NotFound(what, id) => Err(DataError::NotFound { what, id: *id }),
        Outcome::Conflict(msg) => Err(DataError::Conflict(msg.clone())),
    }
}

const USER_EXISTS: &str = "SELECT count(*) FROM users WHERE id = $1";
const USERNAME: &str = "SELECT username FROM users WHERE id = $1";
const POST_AUTHOR: &str = "SELECT user_id FROM posts WHERE id = $1";

impl<DB> WriteStore for SqlStore<DB>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    i64: Type<DB> + for<'q> Encode<'q, DB> + for<'r> Decode<'r, DB>,
    String: Type<DB> + for<'q> Encode<'q, DB> + for<'r> Decode<'r, DB>,
    usize: ColumnIndex<DB::Row>,
{
    fn create_post(&self, author: i64, post: NewPost) -> BoxFuture<'_, Result<Post, DataError>> {
        let at = now();
        let key = format!("create_post:{author}");
        let run = self
            .manager
            .execute_query(key, write_options(), move |conn| {
                Box::pin(async move {
                    let exists: i64 = sqlx::query_scalar(USER_EXISTS)
                        .bind(author)
                        .fetch_one(&mut *conn)
                        .await?;
                    if exists == 0 {
                        return Ok(Outcome::NoActor);
                    }
                    let id: i64 = sqlx::query_scalar(
                        "INSERT INTO posts (user_id, title, language, content, created_at) \
                     VALUES ($1, $2, $3, $4, $5) RETURNING id",
                    )
                    .bind(author)
                    .bind(post.title.clone())
                    .bind(post.language.clone())
                    .bind(post.content.clone())
                    .bind(at)
                    .fetch_one(&mut *conn)
                    .await?;
                    Ok(Outcome::Done(Post {
                        id,
                        user_id: author,
                        title: post.title,
                        language: post.language,
                        content: post.content,
                        created_at: at,
                    }))
                })
            });
        Box::pin(async move { settle(author, &*run.await?) })
    }

    fn set_star(
        &self,
        user: i64,
        post: i64,
        on: bool,
    ) -> BoxFuture<'_, Result<StarChange, DataError>> {
        let at = now();
        let key = format!("{}:{user}:{post}", if on { "star" } else { "unstar" });
        let run = self.manager.execute_query(key, write_options(), move |conn| {
            Box::pin(async move {
                let exists: i64 = sqlx::query_scalar(USER_EXISTS)
                    .bind(user)
                    .fetch_one(&mut *conn)
                    .await?;
                if exists == 0 {
                    return Ok(Outcome::NoActor);
                }
                let Some(author_id) = sqlx::query_scalar::<DB, i64>(POST_AUTHOR)
                    .bind(post)
                    .fetch_optional(&mut *conn)
                    .await?
                else {
                    return Ok(Outcome::NotFound("post", post));
                };
                let starred_at = if on {
                    // No row back: it was already there.
                    sqlx::query_scalar::<DB, i64>(
                        "INSERT INTO stars (user_id, post_id, created_at) VALUES ($1, $2, $3) \
                         ON CONFLICT DO NOTHING RETURNING created_at",
                    )
                    .bind(user)
                    .bind(post)
                    .bind(at)
                    .fetch_optional(&mut *conn)
                    .await?
                } else {
                    sqlx::query_scalar::<DB, i64>(
                        "DELETE FROM stars WHERE user_id = $1 AND post_id = $2 RETURNING created_at",
                    )
                    .bind(user)
                    .bind(post)
                    .fetch_optional(&mut *conn)
                    .await?
                };
                Ok(match starred_at {
                    Some(starred_at) => Outcome::Done(StarChange {
                        author_id,
                        starred_at,
                    }),
                    None if on => Outcome::Conflict(format!(
                        "user {user} has already starred post {post}"
                    )),
                    None => Outcome::Conflict(format!("user {user} has not starred post {post}")),
                })
            })
        });
        Box::pin(async move { settle(user, &*run.await?) })
    }

    fn set_follow(
        &self,
        follower: i64,
        followee: i64,
        on: bool,
    ) -> BoxFuture<'_, Result<FollowChange, DataError>> {
        let at = now();
        let key = format!("follow:{follower}:{followee}");
        let run = self
            .manager
            .execute_query(key, write_options(), move |conn| {
                Box::pin(async move {
                    let username = |id: i64| sqlx::query_scalar::<DB, String>(USERNAME).bind(id);
                    let Some(follower_name) = username(follower).fetch_optional(&mut *conn).await?
                    else {
                        return Ok(Outcome::NoActor);
                    };
                    let Some(followee_name) = username(followee).fetch_optional(&mut *conn).await?
                    else {
                        return Ok(Outcome::NotFound("user", followee));
                    };
                    let followed_at = if on {
                        sqlx::query_scalar::<DB, i64>(
                            "INSERT INTO follows (follower_id, followee_id, created_at) \
                         VALUES ($1, $2, $3) ON CONFLICT DO NOTHING RETURNING created_at",
                        )
                        .bind(follower)
                        .bind(followee)
                        .bind(at)
                        .fetch_optional(&mut *conn)
                        .await?
                    } else {
                        sqlx::query_scalar::<DB, i64>(
                            "DELETE FROM follows WHERE follower_id = $1 AND followee_id = $2 \
                         RETURNING created_at",
                        )
                        .bind(follower)
                        .bind(followee)
                        .fetch_optional(&mut *conn)
                        .await?
                    };
                    let Some(followed_at) = followed_at else {
                        return Ok(Outcome::Conflict(if on {
                            format!("user {follower} already follows user {followee}")
                        } else {
                            format!("user {follower} does not follow user {followee}")
                        }));
                    };
                    let mutual: i64 = sqlx::query_scalar(
                        "SELECT count(*) FROM follows WHERE follower_id = $1 AND followee_id = $2",
                    )
                    .bind(followee)
                    .bind(follower)
                    .fetch_one(&mut *conn)
                    .await?;
                    let user = |id, username| UserRef {
                        id,
                        username,
                        followed_at: Some(followed_at),
                    };
                    Ok(Outcome::Done(FollowChange {
                        follower: user(follower, follower_name),
                        followee: user(followee, followee_name),
                        mutual: mutual > 0,
                    }))
                })
            });
        Box::pin(async move { settle(follower, &*run.await?) })
    }
}
