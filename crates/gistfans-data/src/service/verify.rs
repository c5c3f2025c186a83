//! The consistency monitor's verifier for cached aggregates (hpdb's
//! `Control::verify_prefix` on `agg:` keys): the aggregate is read again
//! from the database (the same one statement, bypassing the cache, at low
//! priority, never joined with a reader's flight) and compared with the
//! cached one, part by part.
//!
//! What is compared is everything a profile claims: the profile, the
//! counters (posts, stars received and given, followers, following), the
//! recent posts with their stars, the social part (counts and samples).
//! The star history is compared only when both cover the same 30 days: it
//! is a window that moves at midnight (UTC), and an entry cached before
//! midnight is not wrong for showing yesterday's window.
//!
//! The verifier holds the store weakly: it lives in the manager, which
//! the store holds.

use std::sync::{Arc, Weak};

use hpdb::{Priority, QueryOptions, Verdict, VerifyError};

use super::{parse_key, KEY_PREFIX};
use crate::{model::UserAggregate, rendered::CachedAggregate, store::Store, Db};

/// Registers the verifier of `db`'s cached aggregates (again: replaces it).
pub(super) fn register(db: &Db) {
    let store = db.store_weak();
    db.control()
        .verify_prefix(KEY_PREFIX, move |key, cached: Arc<CachedAggregate>| {
            Box::pin(verify(store.clone(), key, cached))
        });
}

/// The database's verdict on the aggregate cached under `key`.
async fn verify(
    store: Weak<dyn Store>,
    key: Arc<str>,
    cached: Arc<CachedAggregate>,
) -> Result<Verdict, VerifyError> {
    let store = store.upgrade().ok_or("the data layer is closed")?;
    let (user, include) = parse_key(&key).ok_or("not an aggregate's key")?;
    let options = QueryOptions::uncached()
        .priority(Priority::LOW)
        .coalesce(false);
    let now = store
        .aggregate(format!("verify:{key}"), options, user, include)
        .await?;
    let cached = cached.0.as_ref().map(|r| &r.data);
    let now = now.value.0.as_ref().map(|r| &r.data);
    Ok(match (cached, now) {
        (Some(c), Some(n)) => match difference(c, n) {
            Some(what) => Verdict::Stale(what),
            None => Verdict::Fresh,
        },
        (None, None) => Verdict::Fresh,
        (Some(_), None) => Verdict::Stale("the user no longer exists".into()),
        (None, Some(_)) => Verdict::Stale("cached as missing, the user exists".into()),
    })
}

/// The first part in which `cached` and `now` differ, said for the log;
/// `None` if they agree on everything but a moved star-history window.
fn difference(cached: &UserAggregate, now: &UserAggregate) -> Option<String> {
    fn differ<T: PartialEq + std::fmt::Debug>(part: &str, c: &T, n: &T) -> Option<String> {
        (c != n).then(|| format!("{part}: cached {c:?}, database {n:?}"))
    }
    let same_window = match (&cached.star_history, &now.star_history) {
        (Some(c), Some(n)) => c.first().map(|d| &d.date) == n.first().map(|d| &d.date),
        _ => true,
    };
    differ("profile", &cached.profile, &now.profile)
        .or_else(|| differ("stats", &cached.stats, &now.stats))
        .or_else(|| differ("recentPosts", &cached.recent_posts, &now.recent_posts))
        .or_else(|| differ("social", &cached.social, &now.social))
        .or_else(|| {
            same_window
                .then(|| differ("starHistory", &cached.star_history, &now.star_history))
                .flatten()
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{DayStars, Profile, Stats};

    fn aggregate(followers: i64, first_day: &str) -> UserAggregate {
        UserAggregate {
            profile: Profile {
                id: 7,
                username: "u7".into(),
                display_name: "U 7".into(),
                bio: String::new(),
                created_at: 1,
            },
            stats: Stats {
                posts: 1,
                stars_received: 2,
                stars_given: 3,
                followers,
                following: 5,
            },
            recent_posts: None,
            star_history: Some(vec![DayStars {
                date: first_day.into(),
                stars: 0,
            }]),
            social: None,
        }
    }

    #[test]
    fn a_changed_counter_is_a_difference_named_by_its_part() {
        let what = difference(&aggregate(3, "2026-11-08"), &aggregate(4, "2026-11-08")).unwrap();
        assert!(what.starts_with("stats: cached"), "{what}");
        assert!(
            what.contains("followers: 3") && what.contains("followers: 4"),
            "{what}"
        );
        assert_eq!(
            difference(&aggregate(3, "2026-11-08"), &aggregate(3, "2026-11-08")),
            None
        );
    }

    #[test]
    fn a_star_history_window_moved_by_midnight_is_no_difference() {
        let mut moved = aggregate(3, "2026-11-09");
        assert_eq!(difference(&aggregate(3, "2026-11-08"), &moved), None);
        moved.star_history.as_mut().unwrap()[0].stars = 1;
        let same_day = aggregate(3, "2026-11-09");
        assert!(difference(&same_day, &moved)
            .unwrap()
            .starts_with("starHistory"));
    }
}
