//! Writes: create a post, star and unstar, follow and unfollow.
//!
//! Each runs through the manager (admitted at high priority, never cached,
//! never coalesced) and reports what it changed, so the aggregation service
//! can update cached aggregates in place.

use std::sync::Arc;

use hpdb::{Priority, QueryOptions};

use crate::{
    error::DataError,
    model::{now, Post, UserRef},
    on_manager, Db,
};

fn write_options() -> QueryOptions {
    QueryOptions::uncached()
        .coalesce(false)
        .priority(Priority::CRITICAL)
}

/// A post to create.
#[derive(Debug, Clone)]
pub struct NewPost {
    /// Title, 1 to 200 characters.
    pub title: String,
    /// Language, 1 to 40 characters.
    pub language: String,
    /// The snippet.
    pub content: String,
}

/// What a star or unstar changed.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StarChange {
    /// The post's author, whose aggregate gains or loses a star.
    pub author_id: i64,
    /// When the star was made (for the history bucket).
    pub starred_at: i64,
}

/// What a follow or unfollow changed.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FollowChange {
    /// The follower, as the followee's samples show them.
    pub follower: UserRef,
    /// The followee, as the follower's samples show them.
    pub followee: UserRef,
    /// Whether the followee follows the follower (the follow is mutual).
    pub mutual: bool,
}

enum Outcome<T> {
    Done(T),
    NoActor,
    NotFound(&'static str, i64),
    Conflict(String),
}

fn settle<T>(actor: i64, outcome: Arc<Outcome<T>>) -> Result<T, DataError>
where
    T: Clone,
{
    match &*outcome {
        Outcome::Done(v) => Ok(v.clone()),
        Outcome::NoActor => Err(DataError::Invalid(format!(
            "the acting user {actor} (X-User-Id) does not exist"
        ))),
        Outcome::NotFound(what, id) => Err(DataError::NotFound { what, id: *id }),
        Outcome::Conflict(msg) => Err(DataError::Conflict(msg.clone())),
    }
}

impl<T> serde::Serialize for Outcome<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // Writes are never cached; this only satisfies the manager's bound.
        s.serialize_unit()
    }
}

const USER_EXISTS: &str = "SELECT count(*) FROM users WHERE id = $1";
const USERNAME: &str = "SELECT username FROM users WHERE id = $1";

impl NewPost {
    /// Refuses text that not every backend can store: PostgreSQL's text
    /// type has no NUL character (SQLite would store it), so a NUL is a 400
    /// on both rather than a 201 on one and a database error on the other.
    pub fn validate(&self) -> Result<(), DataError> {
        for (field, value) in [
            ("title", &self.title),
            ("language", &self.language),
            ("content", &self.content),
        ] {
            if value.contains('\0') {
                return Err(DataError::Invalid(format!(
                    "{field} must not contain a NUL character (U+0000)"
                )));
            }
        }
        Ok(())
    }
}

/// Creates a post by `author`.
pub async fn create_post(db: &Db, author: i64, post: NewPost) -> Result<Post, DataError> {
    post.validate()?;
    let at = now();
    let outcome = on_manager!(db, m => {
        let p = post.clone();
        m.execute_query(format!("create_post:{author}"), write_options(), move |conn| Box::pin(async move {
            if sqlx::query_scalar::<_, i64>(USER_EXISTS).bind(author).fetch_one(&mut *conn).await? == 0 {
                return Ok(Outcome::NoActor);
            }
            let id: i64 = sqlx::query_scalar(
                "INSERT INTO posts (user_id, title, language, content, created_at) VALUES ($1, $2, $3, $4, $5) RETURNING id",
            )
            .bind(author).bind(&p.title).bind(&p.language).bind(&p.content).bind(at)
            .fetch_one(&mut *conn)
            .await?;
            Ok(Outcome::Done(Post { id, user_id: author, title: p.title, language: p.language, content: p.content, created_at: at }))
        })).await?
    });
    settle(author, outcome)
}

/// `user` stars `post`.
pub async fn star(db: &Db, user: i64, post: i64) -> Result<StarChange, DataError> {
    let at = now();
    let outcome = on_manager!(db, m => m.execute_query(format!("star:{user}:{post}"), write_options(), move |conn| Box::pin(async move {
        if sqlx::query_scalar::<_, i64>(USER_EXISTS).bind(user).fetch_one(&mut *conn).await? == 0 {
            return Ok(Outcome::NoActor);
        }
        let Some(author_id) = sqlx::query_scalar::<_, i64>("SELECT user_id FROM posts WHERE id = $1")
            .bind(post).fetch_optional(&mut *conn).await? else {
            return Ok(Outcome::NotFound("post", post));
        };
        let inserted = sqlx::query("INSERT INTO stars (user_id, post_id, created_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
            .bind(user).bind(post).bind(at).execute(&mut *conn).await?;
        Ok(if inserted.rows_affected() == 0 {
            Outcome::Conflict(format!("user {user} has already starred post {post}"))
        } else {
            Outcome::Done(StarChange { author_id, starred_at: at })
        })
    })).await?);
    settle(user, outcome)
}

/// `user` takes back their star on `post`.
pub async fn unstar(db: &Db, user: i64, post: i64) -> Result<StarChange, DataError> {
    let outcome = on_manager!(db, m => m.execute_query(format!("unstar:{user}:{post}"), write_options(), move |conn| Box::pin(async move {
        if sqlx::query_scalar::<_, i64>(USER_EXISTS).bind(user).fetch_one(&mut *conn).await? == 0 {
            return Ok(Outcome::NoActor);
        }
        let Some(author_id) = sqlx::query_scalar::<_, i64>("SELECT user_id FROM posts WHERE id = $1")
            .bind(post).fetch_optional(&mut *conn).await? else {
            return Ok(Outcome::NotFound("post", post));
        };
        let removed = sqlx::query_scalar::<_, i64>("DELETE FROM stars WHERE user_id = $1 AND post_id = $2 RETURNING created_at")
            .bind(user).bind(post).fetch_optional(&mut *conn).await?;
        Ok(match removed {
            None => Outcome::Conflict(format!("user {user} has not starred post {post}")),
            Some(starred_at) => Outcome::Done(StarChange { author_id, starred_at }),
        })
    })).await?);
    settle(user, outcome)
}

async fn follow_change(
    db: &Db,
    follower: i64,
    followee: i64,
    delta: i64,
) -> Result<FollowChange, DataError> {
    if follower == followee {
        return Err(DataError::Invalid("a user cannot follow themselves".into()));
    }
    let at = now();
    let outcome = on_manager!(db, m => m.execute_query(format!("follow:{follower}:{followee}"), write_options(), move |conn| Box::pin(async move {
        let Some(follower_name) = sqlx::query_scalar::<_, String>(USERNAME).bind(follower).fetch_optional(&mut *conn).await? else {
            return Ok(Outcome::NoActor);
        };
        let Some(followee_name) = sqlx::query_scalar::<_, String>(USERNAME).bind(followee).fetch_optional(&mut *conn).await? else {
            return Ok(Outcome::NotFound("user", followee));
        };
        let followed_at = if delta > 0 {
            let r = sqlx::query("INSERT INTO follows (follower_id, followee_id, created_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
                .bind(follower).bind(followee).bind(at).execute(&mut *conn).await?;
            if r.rows_affected() == 0 {
                return Ok(Outcome::Conflict(format!("user {follower} already follows user {followee}")));
            }
            at
        } else {
            match sqlx::query_scalar::<_, i64>("DELETE FROM follows WHERE follower_id = $1 AND followee_id = $2 RETURNING created_at")
                .bind(follower).bind(followee).fetch_optional(&mut *conn).await? {
                None => return Ok(Outcome::Conflict(format!("user {follower} does not follow user {followee}"))),
                Some(t) => t,
            }
        };
        let mutual = sqlx::query_scalar::<_, i64>("SELECT count(*) FROM follows WHERE follower_id = $1 AND followee_id = $2")
            .bind(followee).bind(follower).fetch_one(&mut *conn).await? > 0;
        Ok(Outcome::Done(FollowChange {
            follower: UserRef { id: follower, username: follower_name, followed_at: Some(followed_at) },
            followee: UserRef { id: followee, username: followee_name, followed_at: Some(followed_at) },
            mutual,
        }))
    })).await?);
    settle(follower, outcome)
}

/// `follower` follows `followee`.
pub async fn follow(db: &Db, follower: i64, followee: i64) -> Result<FollowChange, DataError> {
    follow_change(db, follower, followee, 1).await
}

/// `follower` stops following `followee`.
pub async fn unfollow(db: &Db, follower: i64, followee: i64) -> Result<FollowChange, DataError> {
    follow_change(db, follower, followee, -1).await
}
