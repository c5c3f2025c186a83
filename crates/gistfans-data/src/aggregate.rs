//! The whole profile in ONE SQL statement, per dialect.
//!
//! The database builds the JSON (PostgreSQL `json_build_object`/`json_agg`,
//! SQLite `json_object`/`json_group_array`), so an uncached aggregate costs a
//! single round trip. Parts left out by `Include` are `CASE WHEN … END` and
//! cost nothing. Star history comes back as (day, count) pairs for the days
//! that have stars; [`assemble`] zero-fills the 30 days.
//!
//! Parameters: $1 user id, $2 recent posts?, $3 star history?, $4 social?,
//! $5 recent post count, $6 history start (Unix seconds), $7 sample size.

use crate::model::{
    day_of, day_string, DayStars, Profile, RecentPost, Social, Stats, UserAggregate, HISTORY_DAYS,
};
use serde::Deserialize;

/// On PostgreSQL the statement lives in a function
/// (`migrations/postgres/0003_profile_function.sql`), whose plan PostgreSQL
/// keeps per connection: behind a transaction-mode pooler a statement is
/// planned again on every call, and planning costs about as much as running
/// it. It returns NULL for a missing user.
pub(crate) const POSTGRES: &str = "SELECT gistfans_profile($1, $2, $3, $4, $5, $6, $7)";

pub(crate) const SQLITE: &str = r#"
SELECT json_object(
  'profile', json_object('id', u.id, 'username', u.username, 'displayName', u.display_name,
                         'bio', u.bio, 'createdAt', u.created_at),
  'stats', json_object(
      'posts',         (SELECT count(*) FROM posts p WHERE p.user_id = u.id),
      'starsReceived', (SELECT count(*) FROM stars s JOIN posts p ON p.id = s.post_id WHERE p.user_id = u.id),
      'starsGiven',    (SELECT count(*) FROM stars s WHERE s.user_id = u.id),
      'followers',     (SELECT count(*) FROM follows f WHERE f.followee_id = u.id),
      'following',     (SELECT count(*) FROM follows f WHERE f.follower_id = u.id)),
  'recentPosts', CASE WHEN $2 THEN json((
      SELECT json_group_array(json_object('id', r.id, 'title', r.title, 'language', r.language,
                                          'createdAt', r.created_at, 'stars', r.stars)
                              ORDER BY r.created_at DESC, r.id DESC)
      FROM (SELECT p.id, p.title, p.language, p.created_at,
                   (SELECT count(*) FROM stars s WHERE s.post_id = p.id) AS stars
            FROM posts p WHERE p.user_id = u.id
            ORDER BY p.created_at DESC, p.id DESC LIMIT $5) r)) END,
  'starDays', CASE WHEN $3 THEN json((
      SELECT json_group_array(json_object('day', d.day, 'stars', d.n))
      FROM (SELECT s.created_at / 86400 AS day, count(*) AS n
            FROM stars s JOIN posts p ON p.id = s.post_id
            WHERE p.user_id = u.id AND s.created_at >= $6 GROUP BY 1) d)) END,
  'social', CASE WHEN $4 THEN json_object(
      'followers', (SELECT count(*) FROM follows f WHERE f.followee_id = u.id),
      'following', (SELECT count(*) FROM follows f WHERE f.follower_id = u.id),
      'followerSample', json((
          SELECT json_group_array(json_object('id', x.id, 'username', x.username, 'followedAt', x.at)
                                  ORDER BY x.at DESC, x.id DESC)
          FROM (SELECT v.id, v.username, f.created_at AS at FROM follows f JOIN users v ON v.id = f.follower_id
                WHERE f.followee_id = u.id ORDER BY f.created_at DESC, v.id DESC LIMIT $7) x)),
      'followingSample', json((
          SELECT json_group_array(json_object('id', x.id, 'username', x.username, 'followedAt', x.at)
                                  ORDER BY x.at DESC, x.id DESC)
          FROM (SELECT v.id, v.username, f.created_at AS at FROM follows f JOIN users v ON v.id = f.followee_id
                WHERE f.follower_id = u.id ORDER BY f.created_at DESC, v.id DESC LIMIT $7) x)),
      'mutualCount', (SELECT count(*) FROM follows a JOIN follows b
                        ON b.follower_id = a.followee_id AND b.followee_id = a.follower_id
                      WHERE a.follower_id = u.id),
      'mutualSample', json((
          SELECT json_group_array(json_object('id', m.id, 'username', m.username) ORDER BY m.id)
          FROM (SELECT v.id, v.username FROM follows a JOIN follows b
                  ON b.follower_id = a.followee_id AND b.followee_id = a.follower_id
                JOIN users v ON v.id = a.followee_id
                WHERE a.follower_id = u.id ORDER BY v.id LIMIT $7) m))) END
)
FROM users u WHERE u.id = $1
"#;

/// The first second of the star-history window ending on `today`.
pub(crate) fn history_start(today: i64) -> i64 {
    (today - (HISTORY_DAYS - 1)) * 86_400
}

#[derive(Deserialize)]
struct DayCount {
    day: i64,
    stars: i64,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Raw {
    profile: Profile,
    stats: Stats,
    recent_posts: Option<Vec<RecentPost>>,
    star_days: Option<Vec<DayCount>>,
    social: Option<Social>,
}

/// The 30 days ending `today`, oldest first, with the counts found (zero elsewhere).
pub(crate) fn zero_filled(
    today: i64,
    found: impl IntoIterator<Item = (i64, i64)>,
) -> Vec<DayStars> {
    let found: std::collections::HashMap<i64, i64> = found.into_iter().collect();
    (today - (HISTORY_DAYS - 1)..=today)
        .map(|day| DayStars {
            date: day_string(day),
            stars: found.get(&day).copied().unwrap_or(0),
        })
        .collect()
}

/// Turns the database's JSON into an aggregate.
pub fn assemble(json: &str, today: i64) -> Result<UserAggregate, serde_json::Error> {
    let raw: Raw = serde_json::from_str(json)?;
    Ok(UserAggregate {
        profile: raw.profile,
        stats: raw.stats,
        recent_posts: raw.recent_posts,
        star_history: raw
            .star_days
            .map(|days| zero_filled(today, days.into_iter().map(|d| (d.day, d.stars)))),
        social: raw.social,
    })
}

/// Today as a Unix day number.
pub fn today() -> i64 {
    day_of(crate::model::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_is_thirty_days_oldest_first_and_zero_filled() {
        let h = zero_filled(20_000, [(20_000, 3), (19_971, 1), (19_900, 9)]);
        assert_eq!(h.len(), 30);
        assert_eq!(
            h[0],
            DayStars {
                date: day_string(19_971),
                stars: 1
            }
        );
        assert_eq!(h[29].stars, 3);
        assert_eq!(
            h.iter().map(|d| d.stars).sum::<i64>(),
            4,
            "days outside the window are dropped"
        );
    }
}
