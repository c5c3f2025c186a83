//! Several instances: three `gistfans serve` processes (the real binary)
//! sharing one PostgreSQL database and one Redis, single node and Cluster.
//! Writes go through one instance and reads through the others: the writer
//! never reads what preceded its write, and no other instance does once the
//! bus has delivered the write's invalidations. With Redis killed, every
//! request still succeeds.

mod common;

use std::time::Duration;

use common::instance::Instance;
use gistfans_data::seed::SeedConfig;
use testkit::{pg::TestDatabase, redis::RedisServer};

/// A seeded database; the id of a post of user 1, and users (not 1) who
/// have not starred it.
async fn seeded() -> (TestDatabase, i64, Vec<i64>) {
    let db = TestDatabase::create().await;
    gistfans_data::migrate(&db.url, None).await.unwrap();
    gistfans_data::seed::seed(&db.url, &SeedConfig::small(), false)
        .await
        .unwrap();
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    let post: i64 = sqlx::query_scalar("SELECT min(id) FROM posts WHERE user_id = 1")
        .fetch_one(&pool)
        .await
        .unwrap();
    let starrers: Vec<i64> = sqlx::query_scalar(
        "SELECT id FROM users WHERE id <> 1 AND id NOT IN \
         (SELECT user_id FROM stars WHERE post_id = $1) ORDER BY id LIMIT 12",
    )
    .bind(post)
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        starrers.len(),
        12,
        "enough users who have not starred the post"
    );
    pool.close().await;
    (db, post, starrers)
}

async fn writes_through_one_reads_through_the_others(redis_url: &str) {
    let (db, post, starrers) = seeded().await;
    let ns = testkit::unique("gf");
    let mut instances = Vec::new();
    for _ in 0..3 {
        instances.push(Instance::start(&db.url, redis_url, &ns).await);
    }
    let mut expected = instances[0].stars(1).await;
    for i in &instances {
        assert_eq!(i.stars(1).await, expected, "cached everywhere");
    }
    let mut stale_after_delivery = 0;
    for (round, by) in starrers.into_iter().enumerate() {
        let writer = &instances[round % 3];
        let mut received = Vec::new();
        for i in &instances {
            received.push(i.metric("hpdb_shared_received_total").await);
        }
        // Each star is new, so each adds one.
        writer.star(post, by, true).await;
        expected += 1;
        assert_eq!(writer.stars(1).await, expected, "the writer, round {round}");
        for (n, other) in instances.iter().enumerate() {
            if std::ptr::eq(other, writer) {
                continue;
            }
            // Two invalidations: the author's tag and the starrer's.
            let delivered = testkit::pg::eventually(Duration::from_secs(5), || async {
                other.metric("hpdb_shared_received_total").await >= received[n] + 2
            })
            .await;
            assert!(
                delivered,
                "round {round}: instance {n} got the bus messages"
            );
            if other.stars(1).await != expected {
                stale_after_delivery += 1;
            }
        }
    }
    assert_eq!(stale_after_delivery, 0, "stale reads after delivery");
    for i in &instances {
        assert!(i.metric("hpdb_shared_delivery_lag_seconds_count").await > 0);
    }

    // "Clear cache" on one instance empties every instance's cache.
    for i in &instances {
        assert!(i.metric("hpdb_cache_entries").await > 0, "something cached");
    }
    instances[0].clear_cache().await;
    for (n, i) in instances.iter().enumerate() {
        assert!(
            testkit::pg::eventually(Duration::from_secs(5), || async {
                i.metric("hpdb_cache_entries").await == 0
            })
            .await,
            "instance {n} emptied by another's clear"
        );
    }
    assert!(instances[1].metric("hpdb_shared_flushes_total").await >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_node_three_instances_writes_through_one_reads_through_the_others() {
    let redis = RedisServer::start();
    writes_through_one_reads_through_the_others(&redis.url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_three_instances_writes_through_one_reads_through_the_others() {
    testkit::redis::require_cluster();
    writes_through_one_reads_through_the_others(&testkit::redis::cluster_url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_under_three_instances_every_request_succeeds() {
    let mut redis = RedisServer::start();
    let (db, post, starrers) = seeded().await;
    let by = starrers[0];
    let ns = testkit::unique("gf");
    let mut instances = Vec::new();
    for _ in 0..3 {
        instances.push(Instance::start(&db.url, &redis.url(), &ns).await);
    }
    let before = instances[0].stars(1).await;
    for i in &instances {
        i.stars(1).await;
    }
    redis.kill();
    // Writes and reads on every instance: `profile` and `star` assert success.
    instances[1].star(post, by, true).await;
    assert_eq!(
        instances[1].stars(1).await,
        before + 1,
        "the writer, Redis down"
    );
    let lease = Duration::from_secs(1) + Duration::from_millis(400);
    tokio::time::sleep(lease).await;
    for _ in 0..20 {
        for i in &instances {
            assert_eq!(i.stars(1).await, before + 1, "past the lease, Redis down");
        }
    }
    redis.restart();
    for i in &instances {
        assert!(
            testkit::pg::eventually(Duration::from_secs(10), || async {
                i.metric("hpdb_shared_bus_current").await == 1
                    && i.metric("hpdb_shared_pending_invalidations").await == 0
            })
            .await,
            "recovered"
        );
    }
    instances[2].star(post, by, false).await;
    for i in &instances {
        assert!(
            testkit::pg::eventually(Duration::from_secs(5), || async {
                i.stars(1).await == before
            })
            .await,
            "the bus works again"
        );
    }
}
