//! What a profile page shows, as the API returns it (camelCase JSON).
//! Timestamps are Unix seconds (UTC); days are `YYYY-MM-DD` (UTC).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// How many recent posts an aggregate carries.
pub const RECENT_POSTS: i64 = 10;
/// How many users a follower, following or mutual sample carries.
pub const SAMPLE: i64 = 5;
/// Days of star history, today included.
pub const HISTORY_DAYS: i64 = 30;

/// A user's public profile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Profile {
    /// User id.
    pub id: i64,
    /// Unique handle.
    pub username: String,
    /// Display name.
    pub display_name: String,
    /// Short biography.
    pub bio: String,
    /// Sign-up time, Unix seconds.
    pub created_at: i64,
}

/// A user's counters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Stats {
    /// Posts written.
    pub posts: i64,
    /// Stars received on the user's posts.
    pub stars_received: i64,
    /// Stars the user gave.
    pub stars_given: i64,
    /// Users following this user.
    pub followers: i64,
    /// Users this user follows.
    pub following: i64,
}

/// One of a user's newest posts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RecentPost {
    /// Post id.
    pub id: i64,
    /// Title.
    pub title: String,
    /// Programming language.
    pub language: String,
    /// Creation time, Unix seconds.
    pub created_at: i64,
    /// Stars the post has.
    pub stars: i64,
}

/// Stars received on one day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DayStars {
    /// The day, `YYYY-MM-DD` (UTC).
    pub date: String,
    /// Stars received that day.
    pub stars: i64,
}

/// A user in a sample.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserRef {
    /// User id.
    pub id: i64,
    /// Handle.
    pub username: String,
    /// When the follow was made (follower and following samples), Unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub followed_at: Option<i64>,
}

/// Who follows whom.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Social {
    /// Users following this user.
    pub followers: i64,
    /// Users this user follows.
    pub following: i64,
    /// Newest followers first.
    pub follower_sample: Vec<UserRef>,
    /// Newest followees first.
    pub following_sample: Vec<UserRef>,
    /// Users who follow this user and are followed back.
    pub mutual_count: i64,
    /// Mutual follows, lowest id first.
    pub mutual_sample: Vec<UserRef>,
}

/// Everything a profile page needs, in one value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserAggregate {
    /// The profile.
    pub profile: Profile,
    /// The counters.
    pub stats: Stats,
    /// Newest posts first (with `include=recentPosts`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recent_posts: Option<Vec<RecentPost>>,
    /// Stars received per day, last 30 days, oldest first (with `include=starHistory`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub star_history: Option<Vec<DayStars>>,
    /// Followers, following, mutual follows (with `include=social`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub social: Option<Social>,
}

/// Which optional parts an aggregate carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Include {
    /// Newest posts with their star counts.
    pub recent_posts: bool,
    /// Stars per day.
    pub star_history: bool,
    /// Social data.
    pub social: bool,
}

impl Default for Include {
    fn default() -> Self {
        Self::ALL
    }
}

impl Include {
    /// Every part.
    pub const ALL: Include = Include {
        recent_posts: true,
        star_history: true,
        social: true,
    };
    /// Profile and stats only.
    pub const NONE: Include = Include {
        recent_posts: false,
        star_history: false,
        social: false,
    };
    /// The names accepted in `include=`.
    pub const NAMES: [&'static str; 3] = ["recentPosts", "starHistory", "social"];

    /// Parses a comma-separated list of part names; `Err` names the unknown one.
    pub fn parse(list: &str) -> Result<Include, String> {
        let mut inc = Include::NONE;
        for name in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            match name {
                "recentPosts" => inc.recent_posts = true,
                "starHistory" => inc.star_history = true,
                "social" => inc.social = true,
                other => return Err(other.to_string()),
            }
        }
        Ok(inc)
    }

    /// A small number naming this combination (for cache keys).
    pub fn mask(self) -> u8 {
        u8::from(self.recent_posts) | u8::from(self.star_history) << 1 | u8::from(self.social) << 2
    }

    /// Every combination.
    pub fn all_combinations() -> impl Iterator<Item = Include> {
        (0u8..8).map(|m| Include {
            recent_posts: m & 1 != 0,
            star_history: m & 2 != 0,
            social: m & 4 != 0,
        })
    }
}

/// A post as created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Post {
    /// Post id.
    pub id: i64,
    /// Author.
    pub user_id: i64,
    /// Title.
    pub title: String,
    /// Programming language.
    pub language: String,
    /// The snippet.
    pub content: String,
    /// Creation time, Unix seconds.
    pub created_at: i64,
}

/// The day (`YYYY-MM-DD`, UTC) of a Unix day number.
pub fn day_string(day: i64) -> String {
    chrono::DateTime::from_timestamp(day * 86_400, 0)
        .map(|t| t.format("%Y-%m-%d").to_string())
        .unwrap_or_default()
}

/// The Unix day number of a Unix time.
pub fn day_of(unix_seconds: i64) -> i64 {
    unix_seconds.div_euclid(86_400)
}

/// Now, in Unix seconds.
pub fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn include_parses_names_and_rejects_unknown_ones() {
        assert_eq!(
            Include::parse("recentPosts,social").unwrap(),
            Include {
                recent_posts: true,
                star_history: false,
                social: true
            }
        );
        assert_eq!(Include::parse("").unwrap(), Include::NONE);
        assert_eq!(Include::parse("social,bogus").unwrap_err(), "bogus");
        assert_eq!(
            Include::all_combinations()
                .map(Include::mask)
                .collect::<Vec<_>>(),
            (0..8).collect::<Vec<_>>()
        );
    }

    #[test]
    fn days_format_in_utc() {
        assert_eq!(day_string(0), "1970-01-01");
        assert_eq!(day_of(86_399), 0);
        assert_eq!(day_of(-1), -1);
    }
}
