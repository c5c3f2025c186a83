//! Delivery across instances, as the writer waits for it: an acknowledged
//! write is seen by the very next read on every instance (no polling), an
//! update in place reaches the others' process caches, a peer that never
//! confirms bounds the wait, a closed instance is not waited for, and
//! writes to one tag through several instances take turns. Real Redis
//! (single node and Cluster), real PostgreSQL.

mod common_shared;

use std::{sync::Arc, time::Duration};

use common_shared::{database, instance_with, options, read, shared, two_instances, write};
use hpdb::{ManagerConfig, Source};
use testkit::redis::RedisServer;

async fn an_acknowledged_write_is_seen_by_the_next_read_everywhere(redis: &str) {
    let db = database().await;
    let ns = testkit::unique("ns");
    // A wait longer than the default, so that two busy cores shared with
    // other tests cannot make a confirmation late: what is tested is that
    // a delivered write is seen, not how fast this machine is.
    let mut config = ManagerConfig::default();
    config.shared.delivery_wait = Duration::from_secs(10);
    let (a, b, c) = (
        instance_with(&db, redis, &ns, config.clone()).await,
        instance_with(&db, redis, &ns, config.clone()).await,
        instance_with(&db, redis, &ns, config).await,
    );
    for m in [&a, &b, &c] {
        assert!(
            testkit::pg::eventually(Duration::from_secs(5), || async { shared(m).peers == 2 })
                .await,
            "every instance sees the two others: {:?}",
            shared(m)
        );
        assert_eq!(*read(m, 1).await.value, 0);
    }
    for round in 1..=20 {
        let writer = [&a, &b, &c][round as usize % 3];
        let done = write(writer, 1, round).await;
        assert!(done.delivered(), "round {round}: {:?}", shared(writer));
        // No waiting, no polling: the first read after the write's return.
        for m in [&a, &b, &c] {
            assert_eq!(*read(m, 1).await.value, round, "round {round}");
        }
    }
    assert_eq!(shared(&a).delivery_timeouts, 0, "{:?}", shared(&a));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_node_an_acknowledged_write_is_seen_by_the_next_read_everywhere() {
    let redis = RedisServer::start();
    an_acknowledged_write_is_seen_by_the_next_read_everywhere(&redis.url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_an_acknowledged_write_is_seen_by_the_next_read_everywhere() {
    testkit::redis::require_cluster();
    an_acknowledged_write_is_seen_by_the_next_read_everywhere(&testkit::redis::cluster_url()).await;
}

/// A write's updated value (stored in the shared level by the writer)
/// replaces the entry in the other instance's process cache, so its next
/// read is a hit in process with the new value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_in_place_replaces_the_entry_on_other_instances() {
    let redis = RedisServer::start();
    let (_db, a, b) = two_instances(&redis.url()).await;
    for m in [&a, &b] {
        assert_eq!(*read(m, 4).await.value, 0);
        assert_eq!(read(m, 4).await.source, Source::Cache);
    }
    assert!(
        testkit::pg::eventually(Duration::from_secs(5), || async {
            shared(&a).peers == 1 && shared(&a).stores >= 1
        })
        .await,
        "{:?}",
        shared(&a)
    );
    let _locks = a.lock_tags(&["row:4"]).await;
    let before = a.peek_versioned::<i64>("v:4").await.expect("cached on A");
    sqlx::query("UPDATE kv SET v = 7 WHERE id = 4")
        .execute(a.pool())
        .await
        .unwrap();
    let done = a
        .update_tag(
            "row:4",
            &options(4),
            vec![(Arc::from("v:4"), before, Arc::new(7))],
        )
        .await;
    assert!(done.delivered() && done.refused().is_empty(), "{done:?}");
    let queries = b.status().database_queries;
    let r = read(&b, 4).await;
    assert_eq!((*r.value, r.source), (7, Source::Cache), "{:?}", shared(&b));
    assert_eq!(shared(&b).replaced, 1);
    assert_eq!(b.status().database_queries, queries, "no query on B");
    let r = read(&a, 4).await;
    assert_eq!((*r.value, r.source), (7, Source::Cache));
}

/// An instance listed as live that never confirms holds a write for the
/// delivery wait (1 s by default), not longer, and the write says it was
/// not delivered; once it is gone, writes are delivered again. A closed
/// instance leaves the list at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wait_for_a_silent_instance_is_bounded_and_a_closed_one_is_not_waited_for() {
    let redis = RedisServer::start();
    let (_db, a, b) = two_instances(&redis.url()).await;
    let ns = a.config().shared.namespace.clone();
    let registry = format!("{ns}:instances");
    // A silent instance, "live" for a minute by Redis's clock.
    let now_ms: u64 = {
        let t = redis.cli(&["time"]);
        let mut parts = t.split_whitespace();
        let s: u64 = parts.next().unwrap().parse().unwrap();
        let us: u64 = parts.next().unwrap().parse().unwrap();
        s * 1000 + us / 1000
    };
    redis.cli(&["zadd", &registry, &(now_ms + 60_000).to_string(), "12345"]);
    assert!(
        testkit::pg::eventually(Duration::from_secs(5), || async { shared(&a).peers == 2 }).await,
        "{:?}",
        shared(&a)
    );
    let started = std::time::Instant::now();
    let done = write(&a, 5, 1).await;
    let waited = started.elapsed();
    assert!(!done.delivered(), "the silent instance did not confirm");
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(5),
        "waited {waited:?}"
    );
    assert_eq!(shared(&a).delivery_timeouts, 1);
    assert_eq!(*read(&b, 5).await.value, 1, "B applied it all the same");

    redis.cli(&["zrem", &registry, "12345"]);
    assert!(
        testkit::pg::eventually(Duration::from_secs(5), || async { shared(&a).peers == 1 }).await
    );
    assert!(write(&a, 5, 2).await.delivered());
    b.close().await;
    assert!(
        testkit::pg::eventually(Duration::from_secs(5), || async { shared(&a).peers == 0 }).await,
        "a closed instance leaves the list: {:?}",
        shared(&a)
    );
    let started = std::time::Instant::now();
    assert!(write(&a, 5, 3).await.delivered(), "nobody left to wait for");
    assert!(started.elapsed() < Duration::from_millis(900));
}

/// Two instances locking one tag take turns: the second gets it only once
/// the first lets go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_to_one_tag_through_two_instances_take_turns() {
    let redis = RedisServer::start();
    let (_db, a, b) = two_instances(&redis.url()).await;
    for m in [&a, &b] {
        assert!(
            testkit::pg::eventually(Duration::from_secs(5), || async { shared(m).peers == 1 })
                .await
        );
    }
    let first = a.lock_tags(&["row:6", "row:7"]).await;
    assert_eq!(first.held(), 2);
    let second = tokio::spawn(async move {
        let locks = b.lock_tags(&["row:7"]).await;
        (locks.held(), b)
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!second.is_finished(), "B waits while A holds the tag");
    drop(first);
    let (held, b) = tokio::time::timeout(Duration::from_secs(2), second)
        .await
        .expect("B gets the lock once A lets go")
        .unwrap();
    assert_eq!(held, 1);
    assert!(shared(&b).lock_waits > 0);
}

/// Redis's clock, in ms since the Unix epoch.
fn redis_now_ms(redis: &RedisServer) -> u64 {
    let t = redis.cli(&["time"]);
    let mut parts = t.split_whitespace();
    let s: u64 = parts.next().unwrap().parse().unwrap();
    let us: u64 = parts.next().unwrap().parse().unwrap();
    s * 1000 + us / 1000
}

/// A writer reads the registry after publishing, not the list its last
/// heartbeat saw: an instance that registered since is waited for. Here the
/// writer's heartbeat runs every 800 ms (a 4 s lease), so it has almost
/// surely not seen the new instance (one that never confirms) when it
/// writes a moment later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_registered_since_the_writers_last_heartbeat_is_waited_for() {
    let redis = RedisServer::start();
    let db = database().await;
    let ns = testkit::unique("ns");
    let mut config = ManagerConfig::default();
    config.shared.bus_lease = Duration::from_secs(4);
    config.shared.delivery_wait = Duration::from_secs(4);
    let a = instance_with(&db, &redis.url(), &ns, config).await;
    assert_eq!(shared(&a).peers, 0);
    redis.cli(&[
        "zadd",
        &format!("{ns}:instances"),
        &redis_now_ms(&redis).to_string(),
        "777",
    ]);
    let started = std::time::Instant::now();
    let done = write(&a, 2, 1).await;
    assert!(
        !done.delivered(),
        "the new instance never confirmed: {done:?}"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(3_900),
        "the writer waited for it ({:?})",
        started.elapsed()
    );
}

/// An instance whose registration is older than the bus lease but within
/// the grace (lapsed: perhaps stalled, perhaps gone) cannot be waited for:
/// a write answers at once, not confirmed. One older than the grace is gone
/// and ignored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lapsed_instance_makes_a_write_unconfirmed_without_a_wait() {
    let redis = RedisServer::start();
    let (_db, a, _b) = two_instances(&redis.url()).await;
    let ns = a.config().shared.namespace.clone();
    let registry = format!("{ns}:instances");
    let lapsed = redis_now_ms(&redis) - 2_000;
    redis.cli(&["zadd", &registry, &lapsed.to_string(), "888"]);
    let started = std::time::Instant::now();
    let done = write(&a, 3, 1).await;
    assert!(!done.delivered(), "{done:?}");
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "no wait for a lapsed instance ({:?})",
        started.elapsed()
    );
    let gone = redis_now_ms(&redis) - 6_000;
    redis.cli(&["zadd", &registry, &gone.to_string(), "888"]);
    assert!(
        write(&a, 3, 2).await.delivered(),
        "a gone instance is ignored"
    );
}

/// An instance cut off from Redis (here by a proxy; a stalled process is
/// the same to the others) stops serving its in-process cache before
/// writers take it for gone: a write confirmed without it is still seen by
/// its next read, even one of an entry it fetched just before the write.
/// Back in touch, it registers, empties its cache once, and serves from it
/// again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_cut_off_from_redis_serves_nothing_older_than_a_confirmed_write() {
    let redis = RedisServer::start();
    let db = database().await;
    let ns = testkit::unique("ns");
    let port = redis.url().rsplit(':').next().unwrap().to_string();
    let proxy = testkit::Proxy::start(&format!("127.0.0.1:{port}"))
        .await
        .unwrap();
    let a = instance_with(&db, &redis.url(), &ns, ManagerConfig::default()).await;
    let b = instance_with(
        &db,
        &format!("redis://127.0.0.1:{}", proxy.port()),
        &ns,
        ManagerConfig::default(),
    )
    .await;
    assert_eq!(*read(&b, 8).await.value, 0);
    assert_eq!(read(&b, 8).await.source, Source::Cache);

    proxy.down();
    let cut = std::time::Instant::now();
    assert!(
        testkit::pg::eventually(Duration::from_secs(10), || async { shared(&b).excluded }).await,
        "B takes itself out: {:?}",
        shared(&b)
    );
    // Three quarters of the grace (5 bus leases): before writers may take it for gone.
    assert!(
        cut.elapsed() < Duration::from_millis(4_500),
        "{:?}",
        cut.elapsed()
    );
    assert_ne!(
        read(&b, 8).await.source,
        Source::Cache,
        "nothing served from its cache"
    );
    // B fetches the row again just before the writes below.
    tokio::time::sleep(Duration::from_millis(4_800).saturating_sub(cut.elapsed())).await;
    assert_eq!(*read(&b, 8).await.value, 0);
    // Once B is gone for A (past the grace), A's writes are confirmed again.
    let mut v = 0;
    let confirmed = loop {
        v += 1;
        if write(&a, 8, v).await.delivered() {
            break true;
        }
        if cut.elapsed() > Duration::from_secs(15) {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(confirmed, "B went out of A's registry: {:?}", shared(&a));
    assert_eq!(*read(&b, 8).await.value, v, "B's next read sees the write");

    proxy.up();
    assert!(
        testkit::pg::eventually(Duration::from_secs(10), || async {
            !shared(&b).excluded && shared(&b).bus_current
        })
        .await,
        "B registers again: {:?}",
        shared(&b)
    );
    assert!(shared(&b).flushes >= 1, "and emptied its cache once");
    assert_eq!(*read(&b, 8).await.value, v);
    assert_eq!(
        read(&b, 8).await.source,
        Source::Cache,
        "then serves from it"
    );
}
