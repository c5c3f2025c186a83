//! The seed's "before": one endpoint per UI component, each running its own
//! queries on the plain pool, the way per-component code written against an
//! ORM does (one statement per figure). No admission, no cache, no
//! coalescing. It stays correct, so the benchmark compares like with like,
//! and the server tests check the aggregate against it field by field.

use crate::{
    aggregate::{history_start, today, zero_filled},
    error::DataError,
    model::{Profile, RecentPost, Social, Stats, UserRef, RECENT_POSTS, SAMPLE},
    on_baseline, Db,
};

/// Profile and counters of a user (the stats component).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProfileStats {
    /// The profile.
    pub profile: Profile,
    /// The counters.
    pub stats: Stats,
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
const EXISTS: &str = "SELECT count(*) FROM users WHERE id = $1";

macro_rules! count {
    ($pool:expr, $sql:expr, $id:expr) => {
        sqlx::query_scalar::<_, i64>($sql)
            .bind($id)
            .fetch_one($pool)
            .await
            .map_err(db_err)?
    };
}

/// `GET /api/users/{id}/stats`.
pub async fn stats(db: &Db, id: i64) -> Result<ProfileStats, DataError> {
    on_baseline!(db, pool => {
        let profile: Option<(i64, String, String, String, i64)> = sqlx::query_as(
            "SELECT id, username, display_name, bio, created_at FROM users WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(pool)
        .await
        .map_err(db_err)?;
        let (id, username, display_name, bio, created_at) = profile.ok_or_else(|| not_found(id))?;
        Ok(ProfileStats {
            profile: Profile { id, username, display_name, bio, created_at },
            stats: Stats {
                posts: count!(pool, COUNT_POSTS, id),
                stars_received: count!(pool, COUNT_STARS_RECEIVED, id),
                stars_given: count!(pool, COUNT_STARS_GIVEN, id),
                followers: count!(pool, COUNT_FOLLOWERS, id),
                following: count!(pool, COUNT_FOLLOWING, id),
            },
        })
    })
}

/// `GET /api/users/{id}/posts`: newest posts with their star counts.
pub async fn posts(db: &Db, id: i64) -> Result<Vec<RecentPost>, DataError> {
    on_baseline!(db, pool => {
        if count!(pool, EXISTS, id) == 0 {
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
        let mut stars = std::collections::HashMap::new();
        if !rows.is_empty() {
            let ids = rows.iter().map(|r| r.0.to_string()).collect::<Vec<_>>().join(",");
            let counts: Vec<(i64, i64)> = sqlx::query_as(&format!(
                "SELECT post_id, count(*) FROM stars WHERE post_id IN ({ids}) GROUP BY post_id"
            ))
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

/// `GET /api/users/{id}/star-history`: stars received per day, 30 days.
pub async fn star_history(db: &Db, id: i64) -> Result<Vec<crate::model::DayStars>, DataError> {
    let today = today();
    on_baseline!(db, pool => {
        if count!(pool, EXISTS, id) == 0 {
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

/// `GET /api/users/{id}/social`.
pub async fn social(db: &Db, id: i64) -> Result<Social, DataError> {
    on_baseline!(db, pool => {
        if count!(pool, EXISTS, id) == 0 {
            return Err(not_found(id));
        }
        let sample = |sql: &'static str| sqlx::query_as::<_, (i64, String, i64)>(sql).bind(id).bind(SAMPLE).fetch_all(pool);
        let refs = |rows: Vec<(i64, String, i64)>| rows.into_iter().map(|(id, username, at)| UserRef { id, username, followed_at: Some(at) }).collect();
        let follower_sample = refs(sample(
            "SELECT v.id, v.username, f.created_at FROM follows f JOIN users v ON v.id = f.follower_id \
             WHERE f.followee_id = $1 ORDER BY f.created_at DESC, v.id DESC LIMIT $2",
        ).await.map_err(db_err)?);
        let following_sample = refs(sample(
            "SELECT v.id, v.username, f.created_at FROM follows f JOIN users v ON v.id = f.followee_id \
             WHERE f.follower_id = $1 ORDER BY f.created_at DESC, v.id DESC LIMIT $2",
        ).await.map_err(db_err)?);
        let mutual: Vec<(i64, String)> = sqlx::query_as(
            "SELECT v.id, v.username FROM follows a JOIN follows b \
               ON b.follower_id = a.followee_id AND b.followee_id = a.follower_id \
             JOIN users v ON v.id = a.followee_id WHERE a.follower_id = $1 ORDER BY v.id LIMIT $2",
        )
        .bind(id)
        .bind(SAMPLE)
        .fetch_all(pool)
        .await
        .map_err(db_err)?;
        Ok(Social {
            followers: count!(pool, COUNT_FOLLOWERS, id),
            following: count!(pool, COUNT_FOLLOWING, id),
            follower_sample,
            following_sample,
            mutual_count: count!(pool,
                "SELECT count(*) FROM follows a JOIN follows b \
                   ON b.follower_id = a.followee_id AND b.followee_id = a.follower_id WHERE a.follower_id = $1",
                id),
            mutual_sample: mutual.into_iter().map(|(id, username)| UserRef { id, username, followed_at: None }).collect(),
        })
    })
}
