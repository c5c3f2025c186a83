//! Writes made around the service (plain SQL on another connection, as
//! `psql` or a cron job would) reach the cached aggregates through
//! PostgreSQL's change stream (issue 21), on every instance; the service's
//! own writes are skipped by the stream. Real PostgreSQL and Redis; each
//! test drops its slot at the end.

use std::time::Duration;

use gistfans_data::{
    migrate,
    seed::{seed, SeedConfig},
    AggregateOptions, DataAggregationService, Db, Preload,
};
use hpdb::{
    changes::{drop_stream, ChangeMode, ChangeStream, ChangesConfig},
    ManagerConfig,
};
use model_stats::Stats;
use sqlx::PgPool;
use testkit::pg::{eventually, TestDatabase};

mod model_stats {
    pub use gistfans_data::model::Stats;
}

/// A bound on waiting for the stream (never a speed assertion).
const PATIENCE: Duration = Duration::from_secs(15);

async fn database() -> TestDatabase {
    let pg = TestDatabase::create().await;
    migrate(&pg.url, None).await.unwrap();
    seed(&pg.url, &SeedConfig::small(), false).await.unwrap();
    pg
}

/// An instance of the service over `pg`, sharing Redis under `ns`.
async fn instance(pg: &TestDatabase, ns: &str) -> DataAggregationService {
    let mut c = ManagerConfig::new();
    c.shared.url = Some("redis://127.0.0.1:6379".into());
    c.shared.namespace = ns.into();
    let db = Db::connect(&pg.url, c).await.unwrap();
    DataAggregationService::new(db).with_preload(Preload::Off)
}

async fn stats(s: &DataAggregationService, id: i64) -> Stats {
    let served = s
        .get_user_aggregated_data(id, AggregateOptions::default())
        .await
        .unwrap()
        .expect("the user exists");
    served.aggregate.data.stats.clone()
}

/// Polls reads of `id` through `s` until `check` holds.
async fn eventually_reads(
    s: &DataAggregationService,
    id: i64,
    check: impl Fn(&Stats) -> bool,
) -> bool {
    eventually(PATIENCE, || async { check(&stats(s, id).await) }).await
}

async fn leading(stream: &ChangeStream) {
    assert!(
        eventually(PATIENCE, || async {
            stream.status().mode == ChangeMode::Leader
        })
        .await,
        "{:?}",
        stream.status()
    );
}

/// A user who does not follow `id`.
async fn stranger(pool: &PgPool, id: i64) -> i64 {
    sqlx::query_scalar(
        "SELECT u.id FROM users u WHERE u.id <> $1 AND NOT EXISTS \
         (SELECT 1 FROM follows f WHERE f.follower_id = u.id AND f.followee_id = $1) \
         ORDER BY u.id LIMIT 1",
    )
    .bind(id)
    .fetch_one(pool)
    .await
    .unwrap()
}

/// Drops the test's slot and publication when the test ends, passed or
/// failed (a slot left behind keeps WAL and its database).
fn guard(pg: &TestDatabase, ns: &str) -> testkit::Cleanup {
    let c = ChangesConfig::new(pg.url.clone(), ns);
    testkit::Cleanup::new(move || async move {
        // The consumer's session may take a moment to end.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let _ = drop_stream(&c.url, &c.slot, &c.publication).await;
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follows_stars_and_posts_written_with_plain_sql_reach_the_cached_aggregate() {
    let pg = database().await;
    let ns = testkit::unique("gfc");
    let _slot = guard(&pg, &ns);
    let s = instance(&pg, &ns).await;
    let stream = s.db().watch_changes(&pg.url).expect("PostgreSQL streams");
    leading(&stream).await;
    let sql = PgPool::connect(&pg.url).await.unwrap();

    // A follow inserted around the service.
    let before = stats(&s, 2).await;
    let c = stranger(&sql, 2).await;
    sqlx::query("INSERT INTO follows (follower_id, followee_id, created_at) VALUES ($1, 2, 0)")
        .bind(c)
        .execute(&sql)
        .await
        .unwrap();
    assert!(
        eventually_reads(&s, 2, |st| st.followers == before.followers + 1).await,
        "the new follower is counted: {:?}",
        stats(&s, 2).await
    );

    // A star on user 1's post by user c: the author's count is found
    // through the post (the mapping's lookup).
    let post: i64 = sqlx::query_scalar(
        "SELECT p.id FROM posts p WHERE p.user_id = 1 AND NOT EXISTS \
         (SELECT 1 FROM stars s WHERE s.post_id = p.id AND s.user_id = $1) LIMIT 1",
    )
    .bind(c)
    .fetch_one(&sql)
    .await
    .unwrap();
    let author = stats(&s, 1).await;
    let starrer = stats(&s, c).await;
    sqlx::query("INSERT INTO stars (user_id, post_id, created_at) VALUES ($1, $2, 0)")
        .bind(c)
        .bind(post)
        .execute(&sql)
        .await
        .unwrap();
    assert!(eventually_reads(&s, 1, |st| st.stars_received == author.stars_received + 1).await);
    assert!(eventually_reads(&s, c, |st| st.stars_given == starrer.stars_given + 1).await);

    // The post deleted: its stars go by cascade; both aggregates follow.
    sqlx::query("DELETE FROM posts WHERE id = $1")
        .bind(post)
        .execute(&sql)
        .await
        .unwrap();
    assert!(eventually_reads(&s, 1, |st| st.posts == author.posts - 1).await);
    assert!(eventually_reads(&s, c, |st| st.stars_given == starrer.stars_given).await);

    // The service's own write is skipped by the stream (counted), and its
    // in-place update is what the next read sees.
    let skipped = stream.status().own_skipped;
    let d = stranger(&sql, 3).await;
    s.set_follow(d, 3, true).await.unwrap();
    assert!(
        eventually(PATIENCE, || async { stream.status().own_skipped > skipped }).await,
        "{:?}",
        stream.status()
    );
    drop(stream);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_around_the_service_reaches_both_instances() {
    let pg = database().await;
    let ns = testkit::unique("gfc");
    let _slot = guard(&pg, &ns);
    let (a, b) = (instance(&pg, &ns).await, instance(&pg, &ns).await);
    let stream = a.db().watch_changes(&pg.url).expect("PostgreSQL streams");
    leading(&stream).await;
    let sql = PgPool::connect(&pg.url).await.unwrap();
    let before = stats(&a, 2).await;
    assert_eq!(stats(&b, 2).await, before);
    let c = stranger(&sql, 2).await;
    sqlx::query("INSERT INTO follows (follower_id, followee_id, created_at) VALUES ($1, 2, 0)")
        .bind(c)
        .execute(&sql)
        .await
        .unwrap();
    for s in [&a, &b] {
        assert!(
            eventually_reads(s, 2, |st| st.followers == before.followers + 1).await,
            "every instance sees it"
        );
    }
    drop(stream);
}
