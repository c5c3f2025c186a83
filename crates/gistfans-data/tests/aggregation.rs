//! The aggregation service against real databases, seeded with small demo data.

mod common;

use std::sync::Arc;

use common::Env;
use gistfans_data::{
    baseline, AggregateOptions, DataAggregationService, Db, Include, NewPost, RenderedAggregate,
    UserAggregate,
};
use hpdb::ManagerConfig;

/// These tests count queries: the consistency monitor's sampled re-reads
/// (tests/consistency.rs) would add to them.
fn config() -> ManagerConfig {
    let mut config = ManagerConfig::new();
    config.consistency.sample_percent = 0.0;
    config
}

async fn sqlite() -> Env {
    Env::sqlite(config()).await
}

async fn postgres() -> Env {
    Env::postgres(config()).await
}

/// Integer pairs read with `sql` straight from the database, around the
/// data layer (which names no backend type to its users).
async fn pairs(env: &Env, sql: &str) -> Vec<(i64, i64)> {
    // Safe: test SQL, interpolating only integer ids.
    let sql = sqlx::AssertSqlSafe(sql);
    if env.pg.is_some() {
        let pool = sqlx::PgPool::connect(&env.url).await.unwrap();
        let rows = sqlx::query_as(sql).fetch_all(&pool).await.unwrap();
        pool.close().await;
        rows
    } else {
        let pool = sqlx::SqlitePool::connect(&env.url).await.unwrap();
        let rows = sqlx::query_as(sql).fetch_all(&pool).await.unwrap();
        pool.close().await;
        rows
    }
}

async fn fresh(s: &DataAggregationService, id: i64) -> UserAggregate {
    let opts = AggregateOptions {
        use_cache: false,
        ..AggregateOptions::default()
    };
    s.get_user_aggregated_data(id, opts)
        .await
        .unwrap()
        .expect("user exists")
        .aggregate
        .data
        .clone()
}

async fn cached(s: &DataAggregationService, id: i64) -> Arc<RenderedAggregate> {
    s.get_user_aggregated_data(id, AggregateOptions::default())
        .await
        .unwrap()
        .expect("user exists")
        .aggregate
}

async fn aggregate_equals_the_baseline(env: Env) {
    let s = &env.service;
    for id in [1, 2, 3, 17, 59] {
        let agg = fresh(s, id).await;
        let db = s.db();
        let ps = baseline::stats(db, id).await.unwrap();
        assert_eq!(agg.profile, ps.profile, "user {id}");
        assert_eq!(agg.stats, ps.stats, "user {id}");
        assert_eq!(
            agg.recent_posts.as_ref().unwrap(),
            &baseline::posts(db, id).await.unwrap(),
            "user {id}"
        );
        assert_eq!(
            agg.star_history.as_ref().unwrap(),
            &baseline::star_history(db, id).await.unwrap(),
            "user {id}"
        );
        assert_eq!(
            agg.social.as_ref().unwrap(),
            &baseline::social(db, id).await.unwrap(),
            "user {id}"
        );
        assert_eq!(agg.star_history.as_ref().unwrap().len(), 30);
    }
    // The popular user really is popular, so the comparison covered full samples.
    let top = fresh(s, 1).await;
    assert!(
        top.stats.followers > 5 && top.social.as_ref().unwrap().follower_sample.len() == 5,
        "{:?}",
        top.stats
    );
    assert!(top.recent_posts.as_ref().unwrap().len() == 10);
    // Parts left out are absent.
    let only = s
        .get_user_aggregated_data(
            1,
            AggregateOptions {
                include: Include::parse("social").unwrap(),
                use_cache: false,
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .unwrap();
    assert!(
        only.aggregate.data.recent_posts.is_none()
            && only.aggregate.data.star_history.is_none()
            && only.aggregate.data.social.is_some()
    );
    assert!(s
        .get_user_aggregated_data(999_999, AggregateOptions::default())
        .await
        .unwrap()
        .is_none());
}

/// A user who neither follows nor is followed by `b`.
async fn strangers_of(env: &Env, b: i64) -> i64 {
    let linked = pairs(
        env,
        &format!("SELECT follower_id, followee_id FROM follows WHERE follower_id = {b} OR followee_id = {b}"),
    )
    .await;
    for c in 3..60i64 {
        if !linked.iter().any(|&(x, y)| x == c || y == c) {
            return c;
        }
    }
    panic!("no stranger of user {b} in the demo data");
}

async fn writes_update_cached_aggregates_in_place(env: Env) {
    let s = &env.service;
    let (a, b, c) = (1, 2, strangers_of(&env, 2).await);
    for id in [a, b, c] {
        cached(s, id).await;
    }
    let queries = || s.db().status().database_queries;

    // A post: the author's aggregate gains it without a refetch.
    s.create_post(
        a,
        NewPost {
            title: "new".into(),
            language: "rust".into(),
            content: "fn main() {}".into(),
        },
    )
    .await
    .unwrap();
    let before = queries();
    let after = cached(s, a).await;
    assert_eq!(queries(), before, "served from the updated cache entry");
    assert_eq!(
        after.data,
        fresh(s, a).await,
        "in-place update equals a fresh computation"
    );
    let new_post = after.data.recent_posts.as_ref().unwrap()[0].id;

    // Star and unstar: author and starrer.
    for on in [true, false] {
        s.set_star(c, new_post, on).await.unwrap();
        assert_eq!(
            cached(s, a).await.data,
            fresh(s, a).await,
            "author after star={on}"
        );
        assert_eq!(
            cached(s, c).await.data,
            fresh(s, c).await,
            "starrer after star={on}"
        );
    }
    // Follow both ways (mutual), then unfollow.
    for (x, y, on) in [(b, c, true), (c, b, true), (b, c, false), (c, b, false)] {
        s.set_follow(x, y, on).await.unwrap();
        for id in [b, c] {
            assert_eq!(
                cached(s, id).await.data,
                fresh(s, id).await,
                "user {id} after {x}->{y} on={on}"
            );
        }
    }
    // Someone leaving the popular user's full follower sample: refetched, still equal.
    let top_follower = cached(s, a)
        .await
        .data
        .social
        .as_ref()
        .unwrap()
        .follower_sample[0]
        .id;
    s.set_follow(top_follower, a, false).await.unwrap();
    assert_eq!(cached(s, a).await.data, fresh(s, a).await);
    // ETags follow content.
    let e1 = cached(s, a).await.etag.clone();
    s.set_follow(top_follower, a, true).await.unwrap();
    assert_ne!(cached(s, a).await.etag, e1);
}

async fn conflicts_and_missing_rows_are_reported(env: Env) {
    use gistfans_data::DataError;
    let s = &env.service;
    let post = fresh(s, 1).await.recent_posts.unwrap()[0].id;
    // Whether the seed drew this star depends on the random generator:
    // start from "not starred".
    match s.set_star(2, post, false).await {
        Ok(_) | Err(DataError::Conflict(_)) => {}
        Err(e) => panic!("unstar {post}: {e:?}"),
    }
    s.set_star(2, post, true).await.unwrap();
    assert!(matches!(
        s.set_star(2, post, true).await,
        Err(DataError::Conflict(_))
    ));
    assert!(matches!(
        s.set_star(2, 987_654, true).await,
        Err(DataError::NotFound { what: "post", .. })
    ));
    assert!(matches!(
        s.set_follow(4, 4, true).await,
        Err(DataError::Invalid(_))
    ));
    assert!(matches!(
        s.set_follow(4, 999_999, true).await,
        Err(DataError::NotFound { what: "user", .. })
    ));
    assert!(matches!(
        s.set_follow(999_999, 4, true).await,
        Err(DataError::Invalid(_))
    ));
}

/// Regression (hardening issue, defect 2): a write whose caller gives up
/// (the client disconnects, a timeout fires) after the commit used to skip
/// its cache step, leaving the cached aggregates it touches wrong. Each
/// write here is cut off at a different point, 0 to 3.5 ms in; afterwards every
/// cached aggregate must equal a fresh computation.
async fn writes_cut_off_at_any_point_leave_caches_equal_to_sql(env: Env) {
    let s = &env.service;
    let posts = pairs(&env, "SELECT id, user_id FROM posts ORDER BY id LIMIT 60").await;
    let mut users: Vec<i64> = (1..=60).collect();
    users.extend(posts.iter().map(|(_, author)| *author));
    users.sort_unstable();
    users.dedup();
    for id in &users {
        cached(s, *id).await;
    }
    for (i, (post, _)) in posts.iter().enumerate() {
        let actor = 60 - i as i64;
        // Microsecond cuts (tokio's timers have millisecond resolution).
        let cut = std::time::Duration::from_micros(i as u64 * 60);
        let give_up = async {
            let t = std::time::Instant::now();
            while t.elapsed() < cut {
                tokio::task::yield_now().await;
            }
        };
        tokio::select! {
            _ = s.set_star(actor, *post, true) => {}
            _ = give_up => {}
        }
    }
    for id in users {
        let equal = testkit::pg::eventually(std::time::Duration::from_secs(10), || async move {
            cached(s, id).await.data == fresh(s, id).await
        })
        .await;
        assert!(equal, "user {id}: the cached aggregate differs from SQL");
    }
}

/// Many writes to one popular user at once (stars on its posts, new
/// followers, new posts): each takes its user's lock only once it holds
/// its connection, and no write's update in place may be lost or applied
/// to a value that already has it.
async fn concurrent_writes_to_one_user_leave_its_cache_equal_to_sql(env: Env) {
    let s = &env.service;
    let (popular, _) = pairs(
        &env,
        "SELECT user_id, count(*) FROM posts GROUP BY user_id ORDER BY 2 DESC, 1 LIMIT 1",
    )
    .await[0];
    let posts = pairs(
        &env,
        &format!("SELECT id, user_id FROM posts WHERE user_id = {popular} ORDER BY id LIMIT 8"),
    )
    .await;
    let strangers = pairs(
        &env,
        &format!(
            "SELECT id, id FROM users WHERE id <> {popular} AND id NOT IN \
             (SELECT follower_id FROM follows WHERE followee_id = {popular}) ORDER BY id LIMIT 12"
        ),
    )
    .await;
    let starrers = pairs(
        &env,
        &format!("SELECT id, id FROM users WHERE id <> {popular} ORDER BY id DESC LIMIT 16"),
    )
    .await;
    assert!(
        !posts.is_empty() && !strangers.is_empty() && starrers.len() == 16,
        "seeded data too small"
    );
    let mut touched: Vec<i64> = vec![popular];
    touched.extend(strangers.iter().chain(&starrers).map(|(id, _)| *id));
    touched.sort_unstable();
    touched.dedup();
    for id in &touched {
        cached(s, *id).await;
    }
    let stars = starrers.iter().enumerate().map(|(i, (user, _))| {
        let post = posts[i % posts.len()].0;
        async move { s.set_star(*user, post, true).await.map(|_| ()) }
    });
    let follows = strangers
        .iter()
        .map(|(user, _)| async move { s.set_follow(*user, popular, true).await.map(|_| ()) });
    let new_posts = (0..3).map(|i| async move {
        let post = NewPost {
            title: format!("concurrent {i}"),
            language: "rust".into(),
            content: "fn main() {}".into(),
        };
        s.create_post(popular, post).await.map(|_| ())
    });
    let (stars, follows, new_posts) = tokio::join!(
        futures::future::join_all(stars),
        futures::future::join_all(follows),
        futures::future::join_all(new_posts)
    );
    for outcome in stars.into_iter().chain(follows).chain(new_posts) {
        match outcome {
            Ok(()) | Err(gistfans_data::DataError::Conflict(_)) => {}
            Err(e) => panic!("write failed: {e}"),
        }
    }
    for id in touched {
        assert_eq!(
            cached(s, id).await.data,
            fresh(s, id).await,
            "user {id}: the cached aggregate differs from SQL after concurrent writes"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_concurrent_writes_to_one_user_leave_its_cache_equal_to_sql() {
    concurrent_writes_to_one_user_leave_its_cache_equal_to_sql(sqlite().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_concurrent_writes_to_one_user_leave_its_cache_equal_to_sql() {
    concurrent_writes_to_one_user_leave_its_cache_equal_to_sql(postgres().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_writes_cut_off_at_any_point_leave_caches_equal_to_sql() {
    writes_cut_off_at_any_point_leave_caches_equal_to_sql(sqlite().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_writes_cut_off_at_any_point_leave_caches_equal_to_sql() {
    writes_cut_off_at_any_point_leave_caches_equal_to_sql(postgres().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_aggregate_equals_the_baseline() {
    aggregate_equals_the_baseline(sqlite().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_aggregate_equals_the_baseline() {
    aggregate_equals_the_baseline(postgres().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_writes_update_cached_aggregates_in_place() {
    writes_update_cached_aggregates_in_place(sqlite().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_writes_update_cached_aggregates_in_place() {
    writes_update_cached_aggregates_in_place(postgres().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_conflicts_and_missing_rows_are_reported() {
    conflicts_and_missing_rows_are_reported(sqlite().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_conflicts_and_missing_rows_are_reported() {
    conflicts_and_missing_rows_are_reported(postgres().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_counts_one_statement_per_uncached_aggregate_and_many_for_the_baseline() {
    let env = postgres().await;
    let (s, pg) = (&env.service, env.pg.as_ref().unwrap());
    let before = pg.statement_calls("").await;
    fresh(s, 1).await;
    let one = pg.statement_calls("").await - before;
    let before = pg.statement_calls("").await;
    let db = s.db();
    baseline::stats(db, 1).await.unwrap();
    baseline::posts(db, 1).await.unwrap();
    baseline::star_history(db, 1).await.unwrap();
    baseline::social(db, 1).await.unwrap();
    let page = pg.statement_calls("").await - before;
    println!("uncached aggregate: {one} statement(s); four baseline routes: {page}");
    assert_eq!(one, 1, "one SQL statement per uncached aggregate");
    // stats 6 + posts 3 + star history 2 + social 7.
    assert_eq!(page, 18, "the baseline's statement count changed");
}

/// Regression (hardening issue, defect 7): a pool larger than PostgreSQL's
/// `max_connections` used to start and lock every other client out; now
/// start-up stops and says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_refuses_a_pool_larger_than_the_database_allows() {
    let pg = testkit::pg::TestDatabase::create().await;
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&pg.url)
        .await
        .unwrap();
    let limit: i64 = sqlx::query_scalar("SELECT current_setting('max_connections')::bigint")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    let mut config = ManagerConfig::new();
    config.pool.max_connections = limit as u32 + 50;
    let err = match Db::connect(&pg.url, config).await {
        Ok(_) => panic!(
            "a pool of {} started against max_connections {limit}",
            limit + 50
        ),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("max_connections") && err.contains("DB_POOL_MAX"),
        "{err}"
    );
}
