//! The consistency monitor over cached aggregates (issue 21), on SQLite and
//! PostgreSQL, with no change stream: writes through the service leave
//! aggregates the monitor finds fresh; a follow inserted with plain SQL
//! around the cache, then a write through the service that updates the
//! aggregate in place from its now wrong base, leaves one it finds stale
//! (the key named, the figures counting it). Nothing is timed: the tests
//! wait for the monitor's counters with a generous deadline.

mod common;

use std::time::Duration;

use common::Env;
use gistfans_data::AggregateOptions;
use hpdb::{ConsistencyStatus, ManagerConfig};

/// Every touched aggregate checked, 100 ms and 400 ms after its event.
/// SQLite's data-version watch is off: it would drop the cache at the
/// plain-SQL write and leave the monitor nothing stale to find (the watch
/// has its own tests, `sqlite_other_processes.rs`).
fn config() -> ManagerConfig {
    let mut c = ManagerConfig::new();
    c.data_version_poll = Duration::ZERO;
    c.consistency.sample_percent = 100.0;
    c.consistency.first_delay = Duration::from_millis(100);
    c.consistency.second_delay = Some(Duration::from_millis(400));
    c
}

async fn sqlite() -> Env {
    Env::sqlite(config()).await
}

async fn postgres() -> Env {
    Env::postgres(config()).await
}

/// Runs `sql` around the service, on a connection of its own.
async fn around(env: &Env, sql: &str) {
    // Safe: test SQL, interpolating only integer ids.
    let sql = sqlx::AssertSqlSafe(sql.to_string());
    if env.pg.is_some() {
        let pool = sqlx::PgPool::connect(&env.url).await.unwrap();
        sqlx::raw_sql(sql).execute(&pool).await.unwrap();
        pool.close().await;
    } else {
        let pool = sqlx::SqlitePool::connect(&env.url).await.unwrap();
        sqlx::raw_sql(sql).execute(&pool).await.unwrap();
        pool.close().await;
    }
}

/// Two users who do not follow `id`, read around the service.
async fn strangers(env: &Env, id: i64) -> (i64, i64) {
    let sql = format!("SELECT follower_id FROM follows WHERE followee_id = {id}");
    // Safe: test SQL, interpolating only an integer id.
    let sql = sqlx::AssertSqlSafe(sql);
    let followers: Vec<i64> = if env.pg.is_some() {
        let pool = sqlx::PgPool::connect(&env.url).await.unwrap();
        sqlx::query_scalar(sql).fetch_all(&pool).await.unwrap()
    } else {
        let pool = sqlx::SqlitePool::connect(&env.url).await.unwrap();
        sqlx::query_scalar(sql).fetch_all(&pool).await.unwrap()
    };
    let mut found = (2..60i64).filter(|c| *c != id && !followers.contains(c));
    (found.next().unwrap(), found.next().unwrap())
}

/// Waits until `cond` holds on the monitor's figures, for at most 30 s.
async fn until(env: &Env, cond: impl Fn(&ConsistencyStatus) -> bool) -> ConsistencyStatus {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let s = env.service.db().status().consistency;
        if cond(&s) {
            return s;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not reached within 30 s: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn writes_through_the_service_leave_aggregates_found_fresh(env: Env) {
    let s = &env.service;
    let b = 7;
    let (x, _) = strangers(&env, b).await;
    s.get_user_aggregated_data(b, AggregateOptions::default())
        .await
        .unwrap();
    s.set_follow(x, b, true).await.unwrap();
    let st = until(&env, |st| st.within.iter().all(|w| w.checked >= 1)).await;
    assert!(st.families.contains(&"agg:".to_string()), "{st:?}");
    for w in &st.within {
        assert_eq!((w.stale, w.errors), (0, 0), "{w:?}");
    }
    assert_eq!(st.last_stale, None);
}

async fn an_aggregate_updated_from_a_base_written_around_the_cache_is_found_stale(env: Env) {
    let s = &env.service;
    let b = 7;
    let (x, y) = strangers(&env, b).await;
    s.get_user_aggregated_data(b, AggregateOptions::default())
        .await
        .unwrap();
    // Around the cache (no change stream): the cached aggregate misses it.
    around(
        &env,
        &format!("INSERT INTO follows (follower_id, followee_id, created_at) VALUES ({x}, {b}, 1)"),
    )
    .await;
    // Through the service: updated in place, one follower short.
    s.set_follow(y, b, true).await.unwrap();
    let st = until(&env, |st| st.within.iter().all(|w| w.stale >= 1)).await;
    assert_eq!(
        st.last_stale.as_deref(),
        Some(format!("agg:{b}:7").as_str())
    );
    for w in &st.within {
        // Every check of it found it stale: no nine.
        assert_eq!((w.checked, w.nines), (w.stale, Some(0.0)), "{w:?}");
    }
}

#[tokio::test]
async fn sqlite_writes_through_the_service_leave_aggregates_found_fresh() {
    writes_through_the_service_leave_aggregates_found_fresh(sqlite().await).await;
}

#[tokio::test]
async fn postgres_writes_through_the_service_leave_aggregates_found_fresh() {
    writes_through_the_service_leave_aggregates_found_fresh(postgres().await).await;
}

#[tokio::test]
async fn sqlite_an_aggregate_updated_from_a_base_written_around_the_cache_is_found_stale() {
    an_aggregate_updated_from_a_base_written_around_the_cache_is_found_stale(sqlite().await).await;
}

#[tokio::test]
async fn postgres_an_aggregate_updated_from_a_base_written_around_the_cache_is_found_stale() {
    an_aggregate_updated_from_a_base_written_around_the_cache_is_found_stale(postgres().await)
        .await;
}
