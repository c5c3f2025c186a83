//! Updates a cached aggregate in place after a write, instead of throwing
//! it away. Each function returns `false` when the cached value cannot be
//! brought up to date without the database (a user left a full sample and
//! someone else would take their place): the caller then drops the entry.
//!
//! The rule these functions keep: applying a write to the aggregate read
//! before the write gives exactly what a fresh computation after the write
//! gives. Samples are kept in the SQL's order, so an insert lands where the
//! query would put it and a truncation drops what the query's LIMIT drops.

use std::cmp::Reverse;

use crate::model::{day_string, RecentPost, UserAggregate, UserRef, RECENT_POSTS, SAMPLE};

/// A new post by the aggregate's user.
pub fn post_created(agg: &mut UserAggregate, post: &RecentPost) -> bool {
    agg.stats.posts += 1;
    if let Some(recent) = agg.recent_posts.as_mut() {
        let key = |p: &RecentPost| Reverse((p.created_at, p.id));
        let at = recent.partition_point(|p| key(p) < key(post));
        recent.insert(at, post.clone());
        recent.truncate(RECENT_POSTS as usize);
    }
    true
}

/// A star given (`delta` 1) or taken back (-1) on a post of the aggregate's
/// user, made at `starred_at`.
pub fn star_received(agg: &mut UserAggregate, post_id: i64, starred_at: i64, delta: i64) -> bool {
    agg.stats.stars_received += delta;
    if let Some(p) = agg
        .recent_posts
        .iter_mut()
        .flatten()
        .find(|p| p.id == post_id)
    {
        p.stars += delta;
    }
    if let Some(history) = agg.star_history.as_mut() {
        let date = day_string(crate::model::day_of(starred_at));
        if let Some(day) = history.iter_mut().find(|d| d.date == date) {
            day.stars += delta;
        }
    }
    true
}

/// A star given (1) or taken back (-1) by the aggregate's user.
pub fn star_given(agg: &mut UserAggregate, delta: i64) -> bool {
    agg.stats.stars_given += delta;
    true
}

/// Sorted insert (or removal) in a sample ordered newest follow first.
fn by_recency(sample: &mut Vec<UserRef>, other: &UserRef, delta: i64) -> bool {
    let key = |u: &UserRef| Reverse((u.followed_at.unwrap_or(0), u.id));
    update_sample(sample, other, delta, key)
}

/// Sorted insert (or removal) in a sample ordered by id.
fn by_id(sample: &mut Vec<UserRef>, other: &UserRef, delta: i64) -> bool {
    let mutual = UserRef {
        id: other.id,
        username: other.username.clone(),
        followed_at: None,
    };
    update_sample(sample, &mutual, delta, |u: &UserRef| u.id)
}

fn update_sample<K: Ord>(
    sample: &mut Vec<UserRef>,
    other: &UserRef,
    delta: i64,
    key: impl Fn(&UserRef) -> K,
) -> bool {
    if delta > 0 {
        let at = sample.partition_point(|u| key(u) < key(other));
        sample.insert(at, other.clone());
        sample.truncate(SAMPLE as usize);
        true
    } else {
        let full = sample.len() >= SAMPLE as usize;
        match sample.iter().position(|u| u.id == other.id) {
            // A full sample loses a member: only the database knows who is next.
            Some(_) if full => false,
            Some(i) => {
                sample.remove(i);
                true
            }
            None => true,
        }
    }
}

/// The aggregate's user followed (1) or unfollowed (-1) `followee`;
/// `mutual` says whether `followee` follows the user.
pub fn followed(agg: &mut UserAggregate, followee: &UserRef, mutual: bool, delta: i64) -> bool {
    agg.stats.following += delta;
    let Some(social) = agg.social.as_mut() else {
        return true;
    };
    social.following += delta;
    let mut ok = by_recency(&mut social.following_sample, followee, delta);
    if mutual {
        social.mutual_count += delta;
        ok &= by_id(&mut social.mutual_sample, followee, delta);
    }
    ok
}

/// `follower` followed (1) or unfollowed (-1) the aggregate's user;
/// `mutual` says whether the user follows `follower`.
pub fn gained_follower(
    agg: &mut UserAggregate,
    follower: &UserRef,
    mutual: bool,
    delta: i64,
) -> bool {
    agg.stats.followers += delta;
    let Some(social) = agg.social.as_mut() else {
        return true;
    };
    social.followers += delta;
    let mut ok = by_recency(&mut social.follower_sample, follower, delta);
    if mutual {
        social.mutual_count += delta;
        ok &= by_id(&mut social.mutual_sample, follower, delta);
    }
    ok
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(id: i64, at: i64) -> UserRef {
        UserRef {
            id,
            username: format!("u{id}"),
            followed_at: Some(at),
        }
    }

    #[test]
    fn a_follow_lands_where_the_query_would_put_it_and_the_sample_stays_bounded() {
        let mut s: Vec<UserRef> = (1..=5).map(|i| user(i, 100 - i)).collect();
        assert!(by_recency(&mut s, &user(9, 97), 1));
        assert_eq!(
            s.iter().map(|u| u.id).collect::<Vec<_>>(),
            vec![1, 2, 9, 3, 4]
        );
        // Same second: the higher id comes first, as ORDER BY at DESC, id DESC.
        assert!(by_recency(&mut s, &user(7, 98), 1));
        assert_eq!(
            s.iter().map(|u| u.id).collect::<Vec<_>>(),
            vec![1, 7, 2, 9, 3]
        );
    }

    #[test]
    fn leaving_a_full_sample_needs_the_database_but_a_partial_one_does_not() {
        let mut full: Vec<UserRef> = (1..=5).map(|i| user(i, 100 - i)).collect();
        assert!(!by_recency(&mut full, &user(3, 97), -1));
        let mut partial: Vec<UserRef> = (1..=3).map(|i| user(i, 100 - i)).collect();
        assert!(by_recency(&mut partial, &user(2, 98), -1));
        assert_eq!(partial.len(), 2);
        assert!(
            by_recency(&mut full, &user(42, 1), -1),
            "a non-member leaving changes no sample"
        );
    }
}
