//! Reads on the real streaming replica through three `gistfans serve`
//! processes over one database and one Redis (`scripts/replica.sh`'s hot
//! standby on 127.0.0.1:5433): a star written through one instance and the
//! author's profile read right after through another never shows the
//! profile from before the star, while the replica's replay delay switches
//! between 0 and 2 s. The instances cache for a millisecond, so every read
//! is routed (replica or primary) rather than served from the cache.
//! 100,000 write → read pairs (`REPLICA_PAIRS` to change it): about ten
//! minutes of both cores, so it runs with the pressure test, after the rest
//! of the suite and one at a time (`scripts/test.sh`, `.config/nextest.toml`).

mod common;

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use common::instance::Instance;
use gistfans_data::seed::SeedConfig;
use testkit::{pg::TestDatabase, redis::RedisServer};

/// Per worker: a post, its author, and a user who has not starred it.
async fn seeded(workers: usize) -> (TestDatabase, Vec<(i64, i64, i64)>) {
    let db = TestDatabase::create().await;
    gistfans_data::migrate(&db.url, None).await.unwrap();
    gistfans_data::seed::seed(&db.url, &SeedConfig::small(), false)
        .await
        .unwrap();
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    let rows: Vec<(i64, i64, i64)> = sqlx::query_as(
        "SELECT DISTINCT ON (p.user_id) p.id, p.user_id, \
           (SELECT u.id FROM users u WHERE u.id <> p.user_id AND NOT EXISTS \
              (SELECT 1 FROM stars s WHERE s.post_id = p.id AND s.user_id = u.id) ORDER BY u.id LIMIT 1) \
         FROM posts p ORDER BY p.user_id, p.id LIMIT $1",
    )
    .bind(workers as i64)
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        rows.len(),
        workers,
        "a post by a distinct author per worker"
    );
    pool.close().await;
    (db, rows)
}

/// Waits until the replica has replayed the seeded database.
async fn replayed(db_url: &str) {
    let url = testkit::replica::url(5433, db_url);
    let ok = testkit::pg::eventually(Duration::from_secs(30), || async {
        let Ok(pool) = sqlx::PgPool::connect(&url).await else {
            return false;
        };
        let n: Result<i64, _> = sqlx::query_scalar("SELECT count(*) FROM stars")
            .fetch_one(&pool)
            .await;
        pool.close().await;
        n.is_ok_and(|n| n > 0)
    })
    .await;
    assert!(ok, "the replica has the test database");
}

/// The sum of a labelled counter's series in `/metrics`.
async fn metric_sum(i: &Instance, name: &str) -> u64 {
    let text = i
        .http
        .get(format!("{}/metrics", i.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pressure_replica_writes_through_one_instance_are_seen_by_reads_through_the_others() {
    const WORKERS: usize = 16;
    let pairs: u64 = std::env::var("REPLICA_PAIRS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let (db, work) = seeded(WORKERS).await;
    replayed(&db.url).await;
    let redis = RedisServer::start();
    let ns = testkit::unique("gfr");
    let replica = testkit::replica::url(5433, &db.url);
    let env = [
        ("DB_REPLICA_URLS", replica.as_str()),
        // Exact at any lag: the delayed replica stays in the rotation.
        ("DB_REPLICA_MAX_LAG", "60000"),
        ("DB_CACHE_TTL", "1"),
        ("DB_CACHE_REVALIDATE_GRACE", "0"),
        ("DB_CACHE_REFRESH_AHEAD", "0"),
    ];
    let mut instances = Vec::new();
    for _ in 0..3 {
        instances.push(Arc::new(
            Instance::start_with(&db.url, &redis.url(), &ns, &env).await,
        ));
    }
    let _reset = testkit::replica::DelayReset(5433);
    let done = Arc::new(AtomicBool::new(false));
    let switcher = {
        let done = done.clone();
        tokio::spawn(async move {
            let mut delayed = false;
            while !done.load(Ordering::Relaxed) {
                delayed = !delayed;
                let d = if delayed {
                    Duration::from_secs(2)
                } else {
                    Duration::ZERO
                };
                testkit::replica::set_delay(5433, d).await;
                tokio::time::sleep(Duration::from_millis(800)).await;
            }
        })
    };
    let next = Arc::new(AtomicU64::new(0));
    let violations = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = work
        .into_iter()
        .map(|(post, author, starrer)| {
            let (instances, next, violations) =
                (instances.clone(), next.clone(), violations.clone());
            tokio::spawn(async move {
                let mut expected = instances[0].stars(author).await;
                let mut on = false;
                let mut round = 0usize;
                while next.fetch_add(1, Ordering::Relaxed) < pairs {
                    on = !on;
                    instances[round % 3].star(post, starrer, on).await;
                    expected += if on { 1 } else { -1 };
                    let seen = instances[(round + 1) % 3].stars(author).await;
                    if seen != expected {
                        violations.fetch_add(1, Ordering::Relaxed);
                        eprintln!("author {author}: expected {expected} stars, read {seen}");
                    }
                    round += 1;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    done.store(true, Ordering::Relaxed);
    switcher.await.unwrap();
    let mut routed = 0;
    let mut behind = 0;
    for i in instances.iter() {
        routed += metric_sum(i, "hpdb_replica_reads_total").await;
        behind += metric_sum(i, "hpdb_replica_fallbacks_total").await;
    }
    eprintln!("{pairs} pairs: {routed} reads on the replica, {behind} on the primary instead");
    assert_eq!(
        violations.load(Ordering::Relaxed),
        0,
        "read-your-writes violated"
    );
    assert!(routed > 0, "no read ran on the replica");
    assert!(
        behind > 0,
        "the delayed replica never sent a read to the primary"
    );
    drop(instances);
}
