//! Which cached aggregates a row changed by *another* writer touches
//! (issue 21): the [`Mapping`] hpdb's change stream uses, and starting the
//! stream for a [`Db`].
//!
//! A profile aggregate is tagged `user:{id}` and built from `users`,
//! `posts`, `stars` and `follows`:
//!
//! | table | tags of a changed row |
//! | --- | --- |
//! | `users` | `user:{id}` |
//! | `posts` | `user:{user_id}` (its author) |
//! | `follows` | `user:{follower_id}`, `user:{followee_id}` |
//! | `stars` | `user:{user_id}` (stars given) and the post's author (stars received), looked up by `post_id` |
//!
//! A post's author never changes, which is what lets the lookup be cached.
//! Deletes carry these columns because the tables' replica identity is
//! FULL (migration 0002). What is not covered: a username changed around
//! the server also appears in the follower and mutual samples of the
//! user's neighbours, whose aggregates keep the old name until their TTL.

use std::sync::Arc;

use hpdb::changes::{ChangeStream, ChangesConfig, Mapping, Row};
use sqlx::{postgres::PgPoolOptions, PgPool};

use crate::{Backend, Db};

fn user_tags(row: &Row, columns: &[&str]) -> Vec<String> {
    columns
        .iter()
        .filter_map(|c| row.i64(c).map(|id| format!("user:{id}")))
        .collect()
}

/// The mapping of GistFans's tables to aggregate tags; `lookups` answers
/// "who wrote post N" for stars (a small pool of its own).
pub fn mapping(lookups: PgPool) -> Mapping {
    Mapping::new()
        .table("users", |r| user_tags(r, &["id"]))
        .table("posts", |r| user_tags(r, &["user_id"]))
        .table("follows", |r| user_tags(r, &["follower_id", "followee_id"]))
        .table("stars", |r| user_tags(r, &["user_id"]))
        .lookup(
            "stars",
            |r| r.get("post_id").map(str::to_string),
            Arc::new(move |post: String| {
                let pool = lookups.clone();
                Box::pin(async move {
                    let id: i64 = post.parse().map_err(|e| format!("post id {post}: {e}"))?;
                    let author: Option<i64> =
                        sqlx::query_scalar("SELECT user_id FROM posts WHERE id = $1")
                            .bind(id)
                            .fetch_optional(&pool)
                            .await
                            .map_err(|e| e.to_string())?;
                    // A post gone: its own delete (in the same transaction,
                    // a cascade) names its author.
                    Ok(author.map(|a| format!("user:{a}")).into_iter().collect())
                })
            }),
        )
}

impl Db {
    /// Starts invalidating from the database's change stream, consumed
    /// over `direct_url` (`DIRECT_URL`, else `DATABASE_URL`: a replication
    /// session cannot go through a transaction-mode pooler). SQLite has
    /// none, and `None` is returned: its manager watches `PRAGMA
    /// data_version` itself from its start (`hpdb::sqlite`; off with
    /// `DB_DATA_VERSION_POLL=0`), and its status says which.
    pub fn watch_changes(&self, direct_url: &str) -> Option<ChangeStream> {
        match self.backend() {
            Backend::Sqlite => None,
            Backend::Postgres => {
                let namespace = &self.control().config().shared.namespace;
                let config = ChangesConfig::new(direct_url, namespace);
                let lookups = PgPoolOptions::new()
                    .max_connections(2)
                    .min_connections(0)
                    .connect_lazy(direct_url)
                    .ok()?;
                Some(ChangeStream::spawn(
                    self.control(),
                    config,
                    mapping(lookups),
                ))
            }
        }
    }
}
