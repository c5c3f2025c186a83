//! Writes: create a post, star and unstar, follow and unfollow.
//!
//! Each runs through the manager (admitted at critical priority, never
//! cached, never coalesced; the SQL is in `store::writes`) and reports what
//! it changed, so the aggregation service can update cached aggregates in
//! place.

use crate::{
    error::DataError,
    model::{Post, UserRef},
    Db,
};

/// A write's result, and how far its cache step reached the other
/// instances when it was answered (see [`hpdb::Delivery`]).
#[derive(Debug, Clone)]
pub struct Written<T> {
    /// What the write changed.
    pub value: T,
    /// `Confirmed`: the next read on any instance sees it. `Unconfirmed`:
    /// some instance may show the value from before it for at most the bus
    /// lease. `Local`: one instance, no shared level.
    pub delivery: hpdb::Delivery,
}

impl<T> std::ops::Deref for Written<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
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

/// What a write awaits once it holds its connection, just before its
/// statement: its caller's turn (the service takes its users' locks and
/// reads their cached aggregates there). Taken only then, a write holds
/// its locks for its statement's round trip, never while it waits for a
/// connection behind the readers; the one holding a lock already has its
/// connection, so writers waiting for a lock never starve its holder.
pub type Turn = futures::future::BoxFuture<'static, ()>;

/// Creates a post by `author`.
pub async fn create_post(
    db: &Db,
    author: i64,
    post: NewPost,
    turn: Turn,
) -> Result<Post, DataError> {
    post.validate()?;
    db.store().create_post(author, post, turn).await
}

/// `user` stars `post`.
pub async fn star(db: &Db, user: i64, post: i64, turn: Turn) -> Result<StarChange, DataError> {
    db.store().set_star(user, post, true, turn).await
}

/// `user` takes back their star on `post`.
pub async fn unstar(db: &Db, user: i64, post: i64, turn: Turn) -> Result<StarChange, DataError> {
    db.store().set_star(user, post, false, turn).await
}

fn not_yourself(follower: i64, followee: i64) -> Result<(), DataError> {
    if follower == followee {
        return Err(DataError::Invalid("a user cannot follow themselves".into()));
    }
    Ok(())
}

/// `follower` follows `followee`.
pub async fn follow(
    db: &Db,
    follower: i64,
    followee: i64,
    turn: Turn,
) -> Result<FollowChange, DataError> {
    not_yourself(follower, followee)?;
    db.store().set_follow(follower, followee, true, turn).await
}

/// `follower` stops following `followee`.
pub async fn unfollow(
    db: &Db,
    follower: i64,
    followee: i64,
    turn: Turn,
) -> Result<FollowChange, DataError> {
    not_yourself(follower, followee)?;
    db.store().set_follow(follower, followee, false, turn).await
}
