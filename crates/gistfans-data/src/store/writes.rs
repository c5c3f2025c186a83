//! The writes' SQL: create a post, star and unstar, follow and unfollow.
//!
//! Each runs through the manager (critical priority, never cached, never
//! coalesced) and awaits its caller's [`Turn`] once it holds its
//! connection, just before its statement. A write's expected refusals (no such actor, no such post,
//! already starred) come back from its closure as an [`Outcome`], not as
//! a database error, so the manager's breaker and error counters see only
//! real failures.

use std::sync::Arc;

use futures::future::BoxFuture;
use hpdb::{Priority, QueryOptions};
use sqlx::{AssertSqlSafe, ColumnIndex, Decode, Encode, Executor, IntoArguments, Type};

use super::{Dialect, SqlStore};
use crate::{
    error::DataError,
    model::{now, Post, UserRef},
    writes::{FollowChange, NewPost, StarChange, Turn},
};

/// The writes the service makes.
pub(crate) trait WriteStore: Send + Sync {
    /// Creates a post by `author`.
    fn create_post(
        &self,
        author: i64,
        post: NewPost,
        turn: Turn,
    ) -> BoxFuture<'_, Result<Post, DataError>>;
    /// `user` stars (`on`) or unstars `post`.
    fn set_star(
        &self,
        user: i64,
        post: i64,
        on: bool,
        turn: Turn,
    ) -> BoxFuture<'_, Result<StarChange, DataError>>;
    /// `follower` follows (`on`) or unfollows `followee`.
    fn set_follow(
        &self,
        follower: i64,
        followee: i64,
        on: bool,
        turn: Turn,
    ) -> BoxFuture<'_, Result<FollowChange, DataError>>;
}

/// A write's options: critical, never cached or coalesced, and marked as
/// a write (on SQLite it runs on the writer connection, whose
/// `PRAGMA data_version` then changes for other processes' commits only:
/// see `hpdb::sqlite`).
fn write_options() -> QueryOptions {
    QueryOptions::uncached()
        .coalesce(false)
        .priority(Priority::CRITICAL)
        .writes()
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

// Each write is one statement, a round trip: an INSERT or DELETE whose
// RETURNING clause also reads what the service needs (the post's author,
// the users' names, whether the follow is mutual). Only a refusal costs a
// second statement (`refusal`), to say why. Under load every round trip is
// a wait for a connection's socket and for a core, so a write's latency
// grows with its count; both backends take these statements as they are
// (SQLite allows subqueries in RETURNING since 3.35).

const CREATE_POST: &str = "INSERT INTO posts (user_id, title, language, content, created_at) \
     SELECT $1, $2, $3, $4, $5 WHERE EXISTS (SELECT 1 FROM users WHERE id = $1) \
     RETURNING id";
const STAR: &str = "INSERT INTO stars (user_id, post_id, created_at) \
     SELECT u.id, p.id, $3 FROM users u, posts p WHERE u.id = $1 AND p.id = $2 \
     ON CONFLICT DO NOTHING \
     RETURNING created_at, (SELECT user_id FROM posts WHERE id = $2)";
const UNSTAR: &str = "DELETE FROM stars WHERE user_id = $1 AND post_id = $2 \
     RETURNING created_at, (SELECT user_id FROM posts WHERE id = $2)";
const FOLLOW: &str = "INSERT INTO follows (follower_id, followee_id, created_at) \
     SELECT a.id, b.id, $3 FROM users a, users b WHERE a.id = $1 AND b.id = $2 \
     ON CONFLICT DO NOTHING \
     RETURNING created_at, (SELECT username FROM users WHERE id = $1), \
     (SELECT username FROM users WHERE id = $2), \
     (SELECT count(*) FROM follows WHERE follower_id = $2 AND followee_id = $1)";
const UNFOLLOW: &str = "DELETE FROM follows WHERE follower_id = $1 AND followee_id = $2 \
     RETURNING created_at, (SELECT username FROM users WHERE id = $1), \
     (SELECT username FROM users WHERE id = $2), \
     (SELECT count(*) FROM follows WHERE follower_id = $2 AND followee_id = $1)";
/// The writes' statements as a store runs them. On PostgreSQL each also
/// emits our own-write mark in its transaction
/// ([`hpdb::changes::own_write_sql`]): the change stream then skips what
/// the service already applied to the caches in place (issue 21). The mark
/// is emitted once per row written, so a refused write emits none.
#[derive(Debug, Clone)]
pub(crate) struct WriteSql {
    create_post: Arc<str>,
    star: Arc<str>,
    unstar: Arc<str>,
    follow: Arc<str>,
    unfollow: Arc<str>,
}

impl WriteSql {
    /// The statements as written (SQLite).
    pub(crate) fn plain() -> Self {
        Self::map(|s| s.into())
    }

    /// The statements marked as our own writes with `prefix`.
    pub(crate) fn marked(prefix: &str) -> Self {
        Self::map(|s| hpdb::changes::own_write_sql(s, prefix).into())
    }

    fn map(f: impl Fn(&'static str) -> Arc<str>) -> Self {
        Self {
            create_post: f(CREATE_POST),
            star: f(STAR),
            unstar: f(UNSTAR),
            follow: f(FOLLOW),
            unfollow: f(UNFOLLOW),
        }
    }
}

/// After a refused write: does the actor exist, does the other row (a post
/// or a user, by `$2`'s table) exist.
const REFUSAL_POST: &str = "SELECT (SELECT count(*) FROM users WHERE id = $1), \
     (SELECT count(*) FROM posts WHERE id = $2)";
const REFUSAL_USER: &str = "SELECT (SELECT count(*) FROM users WHERE id = $1), \
     (SELECT count(*) FROM users WHERE id = $2)";

impl<DB> WriteStore for SqlStore<DB>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    i64: Type<DB> + for<'q> Encode<'q, DB> + for<'r> Decode<'r, DB>,
    String: Type<DB> + for<'q> Encode<'q, DB> + for<'r> Decode<'r, DB>,
    usize: ColumnIndex<DB::Row>,
{
    fn create_post(
        &self,
        author: i64,
        post: NewPost,
        turn: Turn,
    ) -> BoxFuture<'_, Result<Post, DataError>> {
        let at = now();
        let key = format!("create_post:{author}");
        let sql = self.write_sql.create_post.clone();
        let run = self
            .manager
            .execute_query(key, write_options(), move |conn| {
                Box::pin(async move {
                    turn.await;
                    let Some(id) = sqlx::query_scalar::<DB, i64>(AssertSqlSafe(sql))
                        .bind(author)
                        .bind(post.title.clone())
                        .bind(post.language.clone())
                        .bind(post.content.clone())
                        .bind(at)
                        .fetch_optional(&mut *conn)
                        .await?
                    else {
                        return Ok(Outcome::NoActor);
                    };
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
        turn: Turn,
    ) -> BoxFuture<'_, Result<StarChange, DataError>> {
        let at = now();
        let key = format!("{}:{user}:{post}", if on { "star" } else { "unstar" });
        let w = &self.write_sql;
        let sql = if on { w.star.clone() } else { w.unstar.clone() };
        let run = self
            .manager
            .execute_query(key, write_options(), move |conn| {
                Box::pin(async move {
                    turn.await;
                    let changed = sqlx::query_as::<DB, (i64, Option<i64>)>(AssertSqlSafe(sql))
                        .bind(user)
                        .bind(post)
                        .bind(at)
                        .fetch_optional(&mut *conn)
                        .await?;
                    if let Some((starred_at, Some(author_id))) = changed {
                        return Ok(Outcome::Done(StarChange {
                            author_id,
                            starred_at,
                        }));
                    }
                    let (actor, target) = refusal(&mut *conn, REFUSAL_POST, user, post).await?;
                    Ok(if !actor {
                        Outcome::NoActor
                    } else if !target {
                        Outcome::NotFound("post", post)
                    } else if on {
                        Outcome::Conflict(format!("user {user} has already starred post {post}"))
                    } else {
                        Outcome::Conflict(format!("user {user} has not starred post {post}"))
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
        turn: Turn,
    ) -> BoxFuture<'_, Result<FollowChange, DataError>> {
        let at = now();
        let key = format!("follow:{follower}:{followee}");
        let w = &self.write_sql;
        let sql = if on {
            w.follow.clone()
        } else {
            w.unfollow.clone()
        };
        let run = self
            .manager
            .execute_query(key, write_options(), move |conn| {
                Box::pin(async move {
                    turn.await;
                    let changed = sqlx::query_as::<DB, (i64, Option<String>, Option<String>, i64)>(
                        AssertSqlSafe(sql),
                    )
                    .bind(follower)
                    .bind(followee)
                    .bind(at)
                    .fetch_optional(&mut *conn)
                    .await?;
                    if let Some((followed_at, Some(follower_name), Some(followee_name), mutual)) =
                        changed
                    {
                        let user = |id, username| UserRef {
                            id,
                            username,
                            followed_at: Some(followed_at),
                        };
                        return Ok(Outcome::Done(FollowChange {
                            follower: user(follower, follower_name),
                            followee: user(followee, followee_name),
                            mutual: mutual > 0,
                        }));
                    }
                    let (actor, target) =
                        refusal(&mut *conn, REFUSAL_USER, follower, followee).await?;
                    Ok(if !actor {
                        Outcome::NoActor
                    } else if !target {
                        Outcome::NotFound("user", followee)
                    } else if on {
                        Outcome::Conflict(format!(
                            "user {follower} already follows user {followee}"
                        ))
                    } else {
                        Outcome::Conflict(format!(
                            "user {follower} does not follow user {followee}"
                        ))
                    })
                })
            });
        Box::pin(async move { settle(follower, &*run.await?) })
    }
}

/// Why a write changed nothing: whether its actor (`$1`) and its target
/// (`$2`) exist, by `sql` ([`REFUSAL_POST`] or [`REFUSAL_USER`]).
async fn refusal<DB>(
    conn: &mut DB::Connection,
    sql: &'static str,
    actor: i64,
    target: i64,
) -> Result<(bool, bool), sqlx::Error>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    i64: Type<DB> + for<'q> Encode<'q, DB> + for<'r> Decode<'r, DB>,
    usize: ColumnIndex<DB::Row>,
{
    let (a, t): (i64, i64) = sqlx::query_as(sql)
        .bind(actor)
        .bind(target)
        .fetch_one(conn)
        .await?;
    Ok((a > 0, t > 0))
}
