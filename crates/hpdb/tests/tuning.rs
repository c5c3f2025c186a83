//! Self-tuning against real databases: the automatic pool limit on
//! PostgreSQL (through the fault proxy, which can slow every answer down),
//! and adaptive TTLs on SQLite.

mod common;

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use hpdb::{Manager, QueryOptions, Source};
use sqlx::Postgres;

/// A manager sizing its own pool within [2, 24], on PostgreSQL behind `proxy`.
async fn auto_manager(proxy: &testkit::Proxy) -> Manager<Postgres> {
    let mut config = common::config(2, 24);
    config.pool.auto_size = true;
    Manager::<Postgres>::builder(config)
        .connect_with(testkit::pg::options().host("127.0.0.1").port(proxy.port()))
        .await
        .unwrap()
}

/// `clients` tasks running a 2 ms query back to back, uncached and
/// uncoalesced, until `stop` or their first failure (a failing call can
/// return at once, and a loop of those would never yield); each returns
/// its failures.
fn load(
    m: &Manager<Postgres>,
    clients: usize,
    stop: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<u64>> {
    load_of(m, clients, stop, "SELECT 1 FROM pg_sleep(0.002)")
}

/// [`load`] with queries of `sql`.
fn load_of(
    m: &Manager<Postgres>,
    clients: usize,
    stop: &Arc<AtomicBool>,
    sql: &'static str,
) -> Vec<tokio::task::JoinHandle<u64>> {
    (0..clients)
        .map(|_| {
            let (m, stop) = (m.clone(), stop.clone());
            tokio::spawn(async move {
                let mut failed = 0;
                while !stop.load(Ordering::Relaxed) {
                    let r = m
                        .execute_query::<i32, _>(
                            "sleep",
                            QueryOptions::uncached().coalesce(false),
                            move |c| {
                                Box::pin(async move {
                                    // Safe: a constant of this file.
                                    sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                                        .fetch_one(c)
                                        .await
                                })
                            },
                        )
                        .await;
                    if r.is_err() {
                        failed += 1;
                        break;
                    }
                }
                failed
            })
        })
        .collect()
}

fn limit(m: &Manager<Postgres>) -> usize {
    m.status().tuning.pool.expect("auto sizing is on").limit
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_automatic_limit_grows_with_demand_and_backs_off_when_latency_is_injected() {
    let proxy = testkit::Proxy::start(&testkit::pg::host_port())
        .await
        .unwrap();
    let m = auto_manager(&proxy).await;
    assert_eq!(limit(&m), 2, "it starts at the minimum");
    let refused = m.resize(10).unwrap_err().to_string();
    assert!(refused.contains("DB_POOL_AUTO"), "{refused}");
    let stop = Arc::new(AtomicBool::new(false));
    let tasks = load(&m, 48, &stop);
    // pg_sleep does not saturate the database: concurrency pays, the
    // limit grows while callers queue.
    let grew = testkit::pg::eventually(Duration::from_secs(15), || {
        let l = limit(&m);
        async move { l >= 12 }
    })
    .await;
    assert!(grew, "the limit did not grow: {}", limit(&m));
    let before = limit(&m);
    // Every answer now comes 20 ms later: latency far above the baseline.
    proxy.set_latency(Duration::from_millis(20));
    let backed_off = testkit::pg::eventually(Duration::from_secs(6), || {
        let l = limit(&m);
        async move { l + 4 <= before }
    })
    .await;
    let status = m.status().tuning;
    assert!(
        backed_off,
        "the limit stayed at {} (was {before})",
        limit(&m)
    );
    let reasons: Vec<&str> = status.events.iter().map(|e| e.reason.as_str()).collect();
    assert!(
        reasons.iter().any(|r| r.contains("latency rose")),
        "{reasons:?}"
    );
    assert!(status.events.iter().all(|e| e.knob == "DB_POOL_MAX"));
    // Through it all the gate admitted no more than the limit allowed.
    let admitted_bound = status
        .events
        .iter()
        .filter_map(|e| e.to.parse::<usize>().ok())
        .max();
    assert!(admitted_bound.unwrap() <= 24);
    stop.store(true, Ordering::Relaxed);
    proxy.set_latency(Duration::ZERO);
    for t in tasks {
        assert_eq!(t.await.unwrap(), 0, "a query failed");
    }
    let p = m.status().tuning.pool.unwrap();
    assert!((2..=24).contains(&p.limit), "{p:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_automatic_limit_falls_back_when_the_load_goes_away() {
    let proxy = testkit::Proxy::start(&testkit::pg::host_port())
        .await
        .unwrap();
    let m = auto_manager(&proxy).await;
    let stop = Arc::new(AtomicBool::new(false));
    // 20 ms queries: their service time is the sleep, so other tests
    // loading the same two cores (a few ms of scheduling delay) cannot read
    // as the database slowing down and hold the limit back. What this test
    // checks is the fall, from wherever the demand took the limit.
    let tasks = load_of(&m, 48, &stop, "SELECT 1 FROM pg_sleep(0.02)");
    let grew = testkit::pg::eventually(Duration::from_secs(30), || {
        let l = limit(&m);
        async move { l >= 12 }
    })
    .await;
    assert!(grew, "the limit did not grow: {:?}", m.status().tuning);
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        assert_eq!(t.await.unwrap(), 0);
    }
    // One client: it never needs more than one slot, so the limit decays.
    let stop = Arc::new(AtomicBool::new(false));
    let tasks = load(&m, 1, &stop);
    let fell = testkit::pg::eventually(Duration::from_secs(15), || {
        let l = limit(&m);
        async move { l <= 3 }
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    assert!(fell, "the limit stayed at {}", limit(&m));
    let events = m.status().tuning.events;
    assert!(
        events.iter().any(|e| e.reason.contains("load fell")),
        "{events:?}"
    );
}

/// Reads row 1 of the harness's table under `key` with `options`; where
/// the result came from.
async fn read_row(h: &common::Harness<sqlx::Sqlite>, key: &str, options: QueryOptions) -> Source {
    let table = h.table.clone();
    h.manager
        .execute_query_traced::<i64, _>(key.to_string(), options, move |c| {
            Box::pin(async move {
                // Safe: a table name the harness generated.
                let sql = sqlx::AssertSqlSafe(format!("SELECT v FROM {table} WHERE id = 1"));
                sqlx::query_scalar(sql).fetch_one(c).await
            })
        })
        .await
        .unwrap()
        .source
}

#[tokio::test]
async fn adaptive_ttls_lengthen_read_mostly_classes_and_stop_caching_churning_ones() {
    let mut config = common::config(1, 2);
    config.cache.adaptive_ttl = true;
    config.cache.ttl = Duration::from_secs(60);
    let h = common::sqlite(config).await;
    let m = &h.manager;
    let read = |key: &'static str| read_row(&h, key, QueryOptions::default());
    // "hot": read a hundred times, never written.
    for _ in 0..100 {
        read("hot:1").await;
    }
    // "churn": each read followed by a write of the same key.
    for _ in 0..40 {
        read("churn:1").await;
        m.invalidate("churn:1").await;
    }
    let classes = m.status().tuning.ttl_classes.unwrap();
    let ttl = |name: &str| classes.iter().find(|c| c.class == name).unwrap().ttl_ms;
    assert_eq!(
        ttl("hot"),
        Some(3_600_000),
        "read-mostly: up to DB_CACHE_MAX_TTL"
    );
    assert_eq!(ttl("churn"), None, "written as often as read: not cached");
    // Not cached means what it says: two reads in a row both reach the database.
    assert_eq!(read("churn:2").await, Source::Database);
    assert_eq!(read("churn:2").await, Source::Database);
    // A new hot key is cached (with the class's TTL).
    read("hot:2").await;
    assert_eq!(read("hot:2").await, Source::Cache);
    // The monitor's log says what moved, and why.
    let logged = testkit::pg::eventually(Duration::from_secs(5), || {
        let events = m.status().tuning.events;
        async move {
            events
                .iter()
                .any(|e| e.knob == "DB_CACHE_TTL:churn" && e.to == "not cached")
                && events
                    .iter()
                    .any(|e| e.knob == "DB_CACHE_TTL:hot" && e.to == "3600000 ms")
        }
    })
    .await;
    assert!(logged, "{:?}", m.status().tuning.events);
}

#[tokio::test]
async fn a_class_bypassed_for_its_tag_writes_stays_bypassed_while_they_go_on() {
    let mut config = common::config(1, 2);
    config.cache.adaptive_ttl = true;
    let h = common::sqlite(config).await;
    let m = &h.manager;
    let read = || read_row(&h, "tagged:1", QueryOptions::default().tag("t:1"));
    // Each read followed by a write of its tag: bypassed once judged...
    for _ in 0..30 {
        read().await;
        m.invalidate_tag("t:1").await;
    }
    let ttl = |m: &Manager<sqlx::Sqlite>| {
        let classes = m.status().tuning.ttl_classes.unwrap();
        classes.iter().find(|c| c.class == "tagged").unwrap().ttl_ms
    };
    assert_eq!(ttl(m), None);
    // ...and still while the writes go on, though nothing of the class is
    // cached for them to drop any more.
    for _ in 0..120 {
        assert_eq!(read().await, Source::Database);
        m.invalidate_tag("t:1").await;
    }
    let classes = m.status().tuning.ttl_classes.unwrap();
    let c = classes.iter().find(|c| c.class == "tagged").unwrap();
    assert_eq!(c.ttl_ms, None, "{classes:?}");
    // Every write counted, not only those that found an entry to drop
    // (else the class would hover at the threshold, cached every other time).
    assert!(c.writes > 0.95 * c.reads, "{classes:?}");
}
