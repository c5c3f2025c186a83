//! The shared level when Redis fails: killed and restarted empty, frozen
//! (`SIGSTOP`), paused (`CLIENT PAUSE`), its connections killed, a Cluster
//! master failed over. Every call still succeeds (in-process cache and the
//! database), and no instance serves a value older than a write for longer
//! than the bus lease after the write was acknowledged.

mod common_shared;

use std::time::Duration;

use common_shared::{database, instance_with, read, shared, two_instances, write};
use hpdb::{Manager, ManagerConfig};
use sqlx::Postgres;
use testkit::redis::RedisServer;
use tokio::time::Instant;

/// Scheduling slack on top of the bus lease (two cores, shared with
/// PostgreSQL and Redis).
const SLACK: Duration = Duration::from_millis(400);

/// For `span`: reads row `id` through `a` every 10 ms and writes it once
/// through `b` a third of the way in, while `fault` runs. Every call must
/// succeed; the writer must read its own write at once; `a` must not read
/// the old value later than the lease after the write's acknowledgement.
async fn reads_stay_within_the_lease(
    a: &Manager<Postgres>,
    b: &Manager<Postgres>,
    id: i64,
    span: Duration,
    fault: impl std::future::Future<Output = ()>,
) -> usize {
    let lease = a.config().shared.bus_lease;
    let new = rand_value();
    let traffic = async {
        let start = Instant::now();
        let mut acked: Option<Instant> = None;
        let mut late_stale = Vec::new();
        let mut reads = 0;
        while start.elapsed() < span {
            if acked.is_none() && start.elapsed() >= span / 3 {
                write(b, id, new).await;
                acked = Some(Instant::now());
                assert_eq!(*read(b, id).await.value, new, "the writer reads its write");
            }
            let began = Instant::now();
            let v = *read(a, id).await.value;
            reads += 1;
            if let Some(w) = acked {
                if began > w + lease + SLACK && v != new {
                    late_stale.push(began - w);
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(
            late_stale.is_empty(),
            "stale reads later than the lease after the write: {late_stale:?}"
        );
        reads
    };
    let (reads, ()) = tokio::join!(traffic, fault);
    reads
}

fn rand_value() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as i64
        + 1
}

/// Both instances current again, nothing left to publish.
async fn recovered(ms: &[&Manager<Postgres>]) {
    for m in ms {
        assert!(
            testkit::pg::eventually(Duration::from_secs(10), || async {
                let s = shared(m);
                s.bus_current && s.pending == 0
            })
            .await,
            "recovered: {:?}",
            shared(m)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_then_restarted_empty() {
    let mut redis = RedisServer::start();
    let (_db, a, b) = two_instances(&redis.url()).await;
    read(&a, 1).await;
    read(&b, 1).await;
    redis.kill();
    let reads = reads_stay_within_the_lease(&a, &b, 1, Duration::from_secs(3), async {}).await;
    assert!(reads > 20, "{reads} reads");
    assert!(
        shared(&b).pending > 0,
        "the write's invalidation waits: {:?}",
        shared(&b)
    );
    let flushes = shared(&a).flushes;
    redis.restart();
    recovered(&[&a, &b]).await;
    assert!(
        shared(&a).flushes > flushes,
        "a new epoch empties the cache: {:?}",
        shared(&a)
    );
    assert!(shared(&a).reconnects >= 1, "{:?}", shared(&a));
    // And the bus works again.
    write(&b, 1, 7).await;
    assert!(
        testkit::pg::eventually(Duration::from_secs(5), || async {
            *read(&a, 1).await.value == 7
        })
        .await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_frozen() {
    let redis = RedisServer::start();
    let (_db, a, b) = two_instances(&redis.url()).await;
    read(&a, 2).await;
    redis.freeze();
    let frozen_for = Duration::from_secs(3);
    reads_stay_within_the_lease(&a, &b, 2, frozen_for, async {
        tokio::time::sleep(frozen_for).await;
    })
    .await;
    redis.thaw();
    recovered(&[&a, &b]).await;
    assert!(shared(&a).redis_failures > 0, "{:?}", shared(&a));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_paused_by_client_pause() {
    let redis = RedisServer::start();
    let (_db, a, b) = two_instances(&redis.url()).await;
    read(&a, 3).await;
    assert_eq!(redis.cli(&["client", "pause", "2500", "ALL"]).trim(), "OK");
    reads_stay_within_the_lease(&a, &b, 3, Duration::from_secs(3), async {}).await;
    recovered(&[&a, &b]).await;
}

/// A Redis slower than a reader's budget but answering within the ceiling
/// (what a saturated machine looks like from here) is slow, not away: the
/// reader goes on to the database, its call finishes in the background and
/// counts as slow; nothing counts as a timeout or a failure, and the
/// breaker stays closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_slower_than_a_readers_budget_is_slow_not_away() {
    let redis = RedisServer::start();
    let db = database().await;
    let ns = testkit::unique("ns");
    let mut config = ManagerConfig::default();
    // Readers wait 200 ms at first; every call may take 800 ms.
    config.shared.call_timeout = Duration::from_millis(200);
    let a = instance_with(&db, &redis.url(), &ns, config.clone()).await;
    for id in 1..=5 {
        read(&a, id).await;
    }
    let b = instance_with(&db, &redis.url(), &ns, config).await;
    let before = shared(&b);
    // Every client waits 400 ms for its next command.
    assert_eq!(redis.cli(&["client", "pause", "400", "ALL"]).trim(), "OK");
    for id in 1..=5 {
        assert_eq!(*read(&b, id).await.value, 0, "every read is answered");
    }
    assert!(
        testkit::pg::eventually(Duration::from_secs(5), || async {
            shared(&b).redis_slow > before.redis_slow
        })
        .await,
        "a reader went on without Redis: {:?}",
        shared(&b)
    );
    // The background calls have settled (answered, or run out the ceiling).
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = shared(&b);
    assert_eq!(after.redis_timeouts, before.redis_timeouts, "{after:?}");
    assert_eq!(after.redis_failures, before.redis_failures, "{after:?}");
    assert!(after.bus_current, "{after:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_went_on_without_redis_leaves_no_fill_lease_behind() {
    let redis = RedisServer::start();
    let db = database().await;
    let ns = testkit::unique("ns");
    let mut config = ManagerConfig::default();
    config.shared.call_timeout = Duration::from_millis(200);
    // A lease left behind would make other instances' readers of its key
    // wait this long: far longer than this test looks.
    config.shared.fill_lease = Duration::from_secs(30);
    config.query_timeout = Duration::from_secs(60);
    let b = instance_with(&db, &redis.url(), &ns, config).await;
    let before = shared(&b);
    // Misses (nothing cached anywhere) whose lookup, lease included, lands
    // after the reader went on to the database.
    assert_eq!(redis.cli(&["client", "pause", "400", "ALL"]).trim(), "OK");
    for id in 1..=3 {
        assert_eq!(*read(&b, id).await.value, 0, "every read is answered");
    }
    assert!(
        shared(&b).redis_slow > before.redis_slow,
        "the readers went on without Redis: {:?}",
        shared(&b)
    );
    let leases = || redis.cli(&["--scan", "--pattern", &format!("{ns}:l:*")]);
    assert!(
        testkit::pg::eventually(Duration::from_secs(5), || async {
            leases().trim().is_empty()
        })
        .await,
        "fill leases left behind: {}",
        leases()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_connections_killed() {
    let redis = RedisServer::start();
    let (_db, a, b) = two_instances(&redis.url()).await;
    read(&a, 4).await;
    let kill = async {
        let mut killed = 0;
        for _ in 0..5 {
            tokio::time::sleep(Duration::from_millis(300)).await;
            // RESP3 carries pub/sub on the command connection: a subscribed
            // client of ours is a "normal" one, so kill both kinds.
            for kind in ["pubsub", "normal"] {
                let out = redis.cli(&["client", "kill", "type", kind]);
                killed += out.trim().parse::<u64>().unwrap_or(0);
            }
        }
        assert!(killed > 0, "killed some connections");
    };
    reads_stay_within_the_lease(&a, &b, 4, Duration::from_secs(3), kill).await;
    recovered(&[&a, &b]).await;
    write(&b, 4, 9).await;
    assert!(
        testkit::pg::eventually(Duration::from_secs(5), || async {
            *read(&a, 4).await.value == 9
        })
        .await,
        "{:?}",
        shared(&a)
    );
}

/// The port of a replica in the local cluster.
fn a_replica() -> u16 {
    let nodes = testkit::redis::cli(7000, &["cluster", "nodes"]);
    nodes
        .lines()
        .find(|l| l.contains(" slave ") && !l.contains("fail"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|addr| addr.split('@').next()?.rsplit(':').next()?.parse().ok())
        .expect("the cluster has a replica")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_failover() {
    testkit::redis::require_cluster();
    let url = testkit::redis::cluster_url();
    let (_db, a, b) = two_instances(&url).await;
    read(&a, 5).await;
    let replica = a_replica();
    let failover = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let out = testkit::redis::cli(replica, &["cluster", "failover"]);
        assert_eq!(out.trim(), "OK", "CLUSTER FAILOVER on {replica}");
        assert!(
            testkit::pg::eventually(Duration::from_secs(10), || async {
                testkit::redis::cli(replica, &["role"]).starts_with("master")
            })
            .await,
            "{replica} became a master"
        );
    };
    reads_stay_within_the_lease(&a, &b, 5, Duration::from_secs(4), failover).await;
    testkit::redis::require_cluster();
    recovered(&[&a, &b]).await;
}
