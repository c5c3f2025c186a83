//! Reads on the real streaming replica (`scripts/replica.sh`: a hot
//! standby of the test PostgreSQL on 127.0.0.1:5433, a second on 5434):
//! a read after a write never runs on a replica that has not replayed it,
//! while the replica's replay delay switches between 0 and 2 s; reads of
//! rows nobody wrote lately run there (counted by the replica's own
//! `pg_stat_statements`); a replica stopped under reads fails none of them,
//! nor a read of the same key that joined a flight failing there.
//! These tests never skip: an unreachable replica fails them. They run one
//! at a time (`.config/nextest.toml`): they change the replicas' delay and
//! stop one.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use hpdb::{postgres::PgTarget, Manager, ManagerConfig, QueryOptions, Source};
use sqlx::{Connection, PgConnection, Postgres};

const PRIMARY_PORT_DB: &str = "test";

fn config(replica_ports: &[u16]) -> ManagerConfig {
    let mut c = ManagerConfig::new();
    c.pool.min_connections = 1;
    c.pool.max_connections = 8;
    c.replica.urls = replica_ports
        .iter()
        .map(|p| testkit::replica::url(*p, &testkit::pg::url()))
        .collect();
    // Reads with a floor are exact at any lag: keep the delayed replica in
    // the rotation, so that the floors (not the lag bound) are what the
    // first test checks.
    c.replica.max_lag = Duration::from_secs(60);
    c
}

async fn manager(config: ManagerConfig) -> Manager<Postgres> {
    let target = PgTarget::from_url(&testkit::pg::url(), &config).unwrap();
    Manager::builder(config)
        .connect_target(&target)
        .await
        .expect("the primary answers")
}

/// A table of `rows` rows (id, v = 0), fresh.
async fn table(name: &str, rows: i64) {
    let mut c = PgConnection::connect(&testkit::pg::url()).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP TABLE IF EXISTS {name}; CREATE TABLE {name} (id bigint PRIMARY KEY, v bigint NOT NULL); \
         INSERT INTO {name} SELECT g, 0 FROM generate_series(1, {rows}) g"
    )))
    .execute(&mut c)
    .await
    .unwrap();
}

async fn drop_table(name: &str) {
    let mut c = PgConnection::connect(&testkit::pg::url()).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP TABLE IF EXISTS {name}")))
        .execute(&mut c)
        .await
        .unwrap();
}

/// Waits until the replica on `port` has the table with `rows` rows.
async fn replayed(port: u16, name: &str, rows: i64) {
    let url = testkit::replica::url(port, &testkit::pg::url());
    for _ in 0..500 {
        if let Ok(mut c) = PgConnection::connect(&url).await {
            let n: Result<i64, _> =
                sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {name}")))
                    .fetch_one(&mut c)
                    .await;
            if n.ok() == Some(rows) {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the replica on {port} did not replay {name}");
}

/// The value of row `id`, read where the manager routes it.
async fn read(
    m: &Manager<Postgres>,
    table: &'static str,
    id: i64,
    options: QueryOptions,
) -> Result<(i64, Source), hpdb::Error> {
    let sql = format!("SELECT v /* replica-read */ FROM {table} WHERE id = $1");
    let r = m
        .execute_read_then(
            format!("{table}:{id}"),
            options.tag(format!("{table}:{id}")),
            move |conn| {
                Box::pin(async move {
                    sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql))
                        .bind(id)
                        .fetch_one(conn)
                        .await
                })
            },
            Ok,
        )
        .await?;
    Ok((*r.value, r.source))
}

/// Sets row `id` to `v` on the primary and invalidates its tag: a write
/// as the application makes one.
async fn write(m: &Manager<Postgres>, table: &'static str, id: i64, v: i64) {
    let sql = format!("UPDATE {table} SET v = $2 WHERE id = $1");
    m.execute_query(
        format!("w:{table}:{id}:{v}"),
        QueryOptions::uncached().writes(),
        move |conn| {
            Box::pin(async move {
                sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(id)
                    .bind(v)
                    .execute(conn)
                    .await
                    .map(|r| r.rows_affected() as i64)
            })
        },
    )
    .await
    .expect("the write");
    m.invalidate_tag(&format!("{table}:{id}")).await;
}

/// Waits (up to a second) until the manager's poller has read the
/// replica's position once: until then no read is routed there.
async fn position_read(m: &Manager<Postgres>) {
    for _ in 0..100 {
        if m.status().replicas.unwrap().replicas[0].replay_lsn > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Calls of the test's read on the replica, by its own statistics.
async fn replica_calls(port: u16) -> i64 {
    let url = testkit::replica::url(port, &testkit::pg::url());
    let mut c = PgConnection::connect(&url).await.unwrap();
    sqlx::query_scalar(
        "SELECT COALESCE(sum(calls), 0)::int8 FROM pg_stat_statements WHERE query LIKE '%replica-read%' \
         AND query NOT LIKE '%pg_stat_statements%'",
    )
    .fetch_one(&mut c)
    .await
    .unwrap()
}

/// Six readers of `table`'s rows (uncached, each read routed), counting
/// reads and failures, until stopped.
struct Readers {
    reads: Arc<AtomicU64>,
    failures: Arc<AtomicU64>,
    done: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Readers {
    fn start(m: &Manager<Postgres>, table: &'static str, rows: i64) -> Readers {
        let reads = Arc::new(AtomicU64::new(0));
        let failures = Arc::new(AtomicU64::new(0));
        let done = Arc::new(AtomicBool::new(false));
        let tasks = (0..6)
            .map(|w| {
                let (m, reads, failures, done) =
                    (m.clone(), reads.clone(), failures.clone(), done.clone());
                tokio::spawn(async move {
                    let mut id = w;
                    while !done.load(Ordering::Relaxed) {
                        id = id % rows + 1;
                        match read(&m, table, id, QueryOptions::uncached()).await {
                            Ok((0, _)) => {}
                            Ok((v, _)) => panic!("row {id} read as {v}"),
                            Err(e) => {
                                eprintln!("read failed: {e}");
                                failures.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        reads.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        Readers {
            reads,
            failures,
            done,
            tasks,
        }
    }

    /// Reads done so far.
    fn reads(&self) -> u64 {
        self.reads.load(Ordering::Relaxed)
    }

    /// Stops them once their reads in flight end: (reads, failures).
    async fn stop(self) -> (u64, u64) {
        self.done.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.unwrap();
        }
        (
            self.reads.load(Ordering::Relaxed),
            self.failures.load(Ordering::Relaxed),
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_a_read_after_a_write_never_runs_where_the_write_is_not_replayed() {
    const TABLE: &str = "replica_ryw";
    const KEYS: i64 = 8;
    const ROUNDS: i64 = 400;
    let _ = PRIMARY_PORT_DB;
    table(TABLE, KEYS).await;
    replayed(5433, TABLE, KEYS).await;
    let m = manager(config(&[5433])).await;
    let _reset = testkit::replica::DelayReset(5433);
    let done = Arc::new(AtomicBool::new(false));
    // The replay delay switches between 0 and 2 s while the pairs run.
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
                tokio::time::sleep(Duration::from_millis(700)).await;
            }
        })
    };
    let violations = Arc::new(AtomicU64::new(0));
    let pairs = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (1..=KEYS)
        .map(|id| {
            let (m, violations, pairs) = (m.clone(), violations.clone(), pairs.clone());
            tokio::spawn(async move {
                for round in 1..=ROUNDS {
                    write(&m, TABLE, id, round).await;
                    let (seen, _) = read(&m, TABLE, id, QueryOptions::default()).await.unwrap();
                    if seen != round {
                        violations.fetch_add(1, Ordering::Relaxed);
                        eprintln!("row {id}: wrote {round}, read {seen}");
                    }
                    pairs.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for w in workers {
        w.await.unwrap();
    }
    done.store(true, Ordering::Relaxed);
    switcher.await.unwrap();
    let status = m.status().replicas.expect("replicas configured");
    eprintln!("{status:#?}");
    assert_eq!(pairs.load(Ordering::Relaxed), (KEYS * ROUNDS) as u64);
    assert_eq!(
        violations.load(Ordering::Relaxed),
        0,
        "read-your-writes violated"
    );
    let replica = &status.replicas[0];
    assert!(replica.routed > 0, "no read ran on the replica: {status:?}");
    assert!(
        status.fallbacks_behind > 0,
        "the delayed replica never sent a read to the primary: {status:?}"
    );
    assert!(status.floors_recorded >= (KEYS * ROUNDS) as u64);
    m.close().await;
    drop_table(TABLE).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_reads_of_rows_nobody_wrote_lately_run_on_the_replica() {
    const TABLE: &str = "replica_share";
    const ROWS: i64 = 1_000;
    table(TABLE, ROWS).await;
    replayed(5433, TABLE, ROWS).await;
    testkit::replica::set_delay(5433, Duration::ZERO).await;
    let m = manager(config(&[5433])).await;
    position_read(&m).await;
    let before = replica_calls(5433).await;
    for id in 1..=ROWS {
        let (v, source) = read(&m, TABLE, id, QueryOptions::default()).await.unwrap();
        assert_eq!((v, source), (0, Source::Database));
    }
    let on_replica = replica_calls(5433).await - before;
    let status = m.status().replicas.unwrap();
    eprintln!("{on_replica} of {ROWS} reads on the replica; {status:#?}");
    assert!(
        on_replica * 100 >= ROWS * 90,
        "only {on_replica} of {ROWS} uncached reads ran on the replica"
    );
    assert_eq!(
        status.replicas[0].routed as i64, on_replica,
        "our count agrees with the replica's"
    );
    m.close().await;
    drop_table(TABLE).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_stopped_under_reads_fails_none_of_them() {
    const TABLE: &str = "replica_stop";
    const ROWS: i64 = 50;
    testkit::replica::run(&["up", "5434"]);
    table(TABLE, ROWS).await;
    replayed(5434, TABLE, ROWS).await;
    let m = manager(config(&[5434])).await;
    let readers = Readers::start(&m, TABLE, ROWS);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let routed_before = m.status().replicas.unwrap().replicas[0].routed;
    tokio::task::spawn_blocking(|| testkit::replica::run(&["stop", "5434"]))
        .await
        .unwrap();
    let reads_at_stop = readers.reads();
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let (reads, failures) = readers.stop().await;
    let status = m.status().replicas.unwrap();
    eprintln!("{reads} reads, {reads_at_stop} before the stop; {status:#?}");
    assert!(
        routed_before > 0,
        "no read ran on the replica before it stopped"
    );
    assert!(reads > reads_at_stop, "reads went on after the stop");
    assert_eq!(failures, 0, "a read failed while the replica stopped");
    assert!(
        !status.replicas[0].circuit.eq(&hpdb::CircuitState::Closed)
            || status.replicas[0].replay_lsn == 0
    );
    m.close().await;
    drop_table(TABLE).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_a_session_floor_holds_for_reads_whose_tags_were_not_written() {
    const TABLE: &str = "replica_session";
    table(TABLE, 2).await;
    replayed(5433, TABLE, 2).await;
    let m = manager(config(&[5433])).await;
    let _reset = testkit::replica::DelayReset(5433);
    testkit::replica::set_delay(5433, Duration::from_secs(2)).await;
    // Row 1 is written and its tag invalidated; the session then reads
    // row 2's key, whose tags say nothing of the write, after its floor.
    write(&m, TABLE, 1, 7).await;
    let floor = m.invalidate_tag(&format!("{TABLE}:1")).await.floor();
    let floor = floor.expect("a floor recorded with replicas");
    let sql = format!("SELECT v FROM {TABLE} WHERE id = 1");
    let seen = m
        .execute_read_then(
            "unrelated-key",
            QueryOptions::uncached().read_after(floor),
            move |conn| {
                Box::pin(async move {
                    sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql))
                        .fetch_one(conn)
                        .await
                })
            },
            Ok,
        )
        .await
        .unwrap();
    assert_eq!(
        *seen.value, 7,
        "the session's own write, not the delayed replica's view"
    );
    let status = m.status().replicas.unwrap();
    assert_eq!(status.fallbacks_behind, 1, "{status:?}");
    m.close().await;
    drop_table(TABLE).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_that_stops_answering_mid_query_fails_no_read() {
    const TABLE: &str = "replica_hang";
    const ROWS: i64 = 50;
    table(TABLE, ROWS).await;
    replayed(5433, TABLE, ROWS).await;
    testkit::replica::set_delay(5433, Duration::ZERO).await;
    // The replica behind a proxy that can stop passing its answers on,
    // connections left open: a partition, not a refusal.
    let proxy = testkit::Proxy::start("127.0.0.1:5433").await.unwrap();
    let mut c = config(&[]);
    c.replica.urls = vec![format!(
        "postgres://postgres@127.0.0.1:{}/{}",
        proxy.port(),
        testkit::pg::url().rsplit_once('/').unwrap().1
    )];
    let m = manager(c).await;
    let readers = Readers::start(&m, TABLE, ROWS);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let routed_before = m.status().replicas.unwrap().replicas[0].routed;
    proxy.set_latency(Duration::from_secs(120));
    proxy.set_connect_delay(Duration::from_secs(120));
    let reads_at_hang = readers.reads();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (reads, failures) = readers.stop().await;
    let status = m.status().replicas.unwrap();
    eprintln!("{reads} reads, {reads_at_hang} before the hang; {status:#?}");
    assert!(
        routed_before > 0,
        "no read ran on the replica before it hung"
    );
    assert!(
        reads > reads_at_hang + 100,
        "reads went on, on the primary, while the replica hung"
    );
    assert_eq!(failures, 0, "a read failed while the replica hung");
    assert!(
        status.retried_on_primary > 0,
        "the reads caught on the replica ran again on the primary: {status:?}"
    );
    m.close().await;
    drop(proxy);
    drop_table(TABLE).await;
}

/// A read of `table`'s row 1 under the key `table:1` that takes `seconds`
/// (marked `replica-join` in the server's activity).
fn slow_read(
    table: &'static str,
    seconds: f64,
) -> impl Fn(&mut sqlx::PgConnection) -> futures::future::BoxFuture<'_, Result<i64, sqlx::Error>>
       + Clone
       + Send
       + Sync
       + 'static {
    move |conn| {
        let sql = format!(
            "SELECT v /* replica-join */ FROM {table} WHERE id = 1 AND pg_sleep({seconds}) IS NOT NULL"
        );
        Box::pin(async move {
            sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql))
                .fetch_one(conn)
                .await
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_a_primary_read_joined_to_a_read_that_fails_on_the_replica_still_gets_an_answer() {
    const TABLE: &str = "replica_join";
    table(TABLE, 1).await;
    replayed(5433, TABLE, 1).await;
    testkit::replica::set_delay(5433, Duration::ZERO).await;
    let m = manager(config(&[5433])).await;
    position_read(&m).await;
    let key = format!("{TABLE}:1");
    // A routed read that sleeps on the replica, leading the key's flight.
    let leader = {
        let (m, key) = (m.clone(), key.clone());
        tokio::spawn(async move {
            m.execute_read_then(
                key.clone(),
                QueryOptions::uncached().tag(key),
                slow_read(TABLE, 2.0),
                Ok,
            )
            .await
        })
    };
    let replica_url = testkit::replica::url(5433, &testkit::pg::url());
    let mut replica = PgConnection::connect(&replica_url).await.unwrap();
    let sleeping = "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%replica-join */%' \
                    AND pid <> pg_backend_pid()";
    let mut on_replica = 0i64;
    for _ in 0..500 {
        on_replica = sqlx::query_scalar(sleeping)
            .fetch_one(&mut replica)
            .await
            .unwrap();
        if on_replica > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(on_replica, 1, "the routed read did not run on the replica");
    // A plain read of the same key (the primary's) joins that flight.
    let joins = m.status().single_flight_joins;
    let follower = {
        let (m, key) = (m.clone(), key.clone());
        tokio::spawn(async move {
            m.execute_query(
                key.clone(),
                QueryOptions::uncached().tag(key),
                slow_read(TABLE, 0.0),
            )
            .await
        })
    };
    for _ in 0..500 {
        if m.status().single_flight_joins > joins {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        m.status().single_flight_joins > joins,
        "the plain read did not join"
    );
    // The replica ends the routed read's connection.
    sqlx::query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE '%replica-join */%' \
         AND pid <> pg_backend_pid()",
    )
    .execute(&mut replica)
    .await
    .unwrap();
    let joined = tokio::time::timeout(Duration::from_secs(10), follower)
        .await
        .expect("the joined read answers")
        .unwrap();
    assert_eq!(
        *joined.expect("the joined read never sees the replica's failure"),
        0
    );
    // The routed read itself ran again on the primary.
    let led = leader
        .await
        .unwrap()
        .expect("the routed read, retried on the primary");
    assert_eq!(*led.value, 0);
    let status = m.status().replicas.unwrap();
    assert!(status.replicas[0].failed >= 1, "{status:#?}");
    assert_eq!(status.retried_on_primary, 1, "{status:#?}");
    m.close().await;
    drop_table(TABLE).await;
}
