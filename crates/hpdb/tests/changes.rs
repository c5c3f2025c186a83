//! The change-stream invalidator (`hpdb::changes`) against the real
//! PostgreSQL (wal_level = logical, see scripts/services.sh) and Redis:
//! rows written with plain SQL on another connection reach every
//! instance's cache; our own marked writes are skipped; one consumer per
//! database, another takes over; a slot dropped under the consumer is
//! recreated with every cached entry dropped; without the replication
//! privilege the manager works and says why the stream is off; a minute
//! of writes to another database leaves the idle slot under 64 MB of WAL.
//!
//! Each test uses a slot and publication of its own and drops them at the
//! end (a slot left behind keeps WAL).

mod common_shared;

use std::time::Duration;

use common_shared::{database, instance, read};
use hpdb::{
    changes::{drop_stream, own_write_sql, ChangeMode, ChangeStream, ChangesConfig, Mapping},
    Manager,
};
use sqlx::{PgPool, Postgres};
use testkit::pg::{eventually, TestDatabase};

const REDIS: &str = "redis://127.0.0.1:6379";
/// A bound on how long a test waits for something to happen (never a
/// speed assertion: the bench measures speed).
const PATIENCE: Duration = Duration::from_secs(15);

/// Drops the test's slot and publication when the test ends, passed or
/// failed (a slot left behind keeps WAL and its database).
fn slot_guard(c: &ChangesConfig) -> testkit::Cleanup {
    let c = c.clone();
    testkit::Cleanup::new(move || async move {
        // The consumer's session may take a moment to end.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let _ = drop_stream(&c.url, &c.slot, &c.publication).await;
    })
}

fn mapping() -> Mapping {
    Mapping::new().table("kv", |r| {
        r.i64("id")
            .map(|id| format!("row:{id}"))
            .into_iter()
            .collect()
    })
}

fn config(db: &TestDatabase) -> ChangesConfig {
    let mut c = ChangesConfig::new(db.url.clone(), &testkit::unique("chg"));
    c.retry = Duration::from_millis(300);
    c
}

async fn leading(stream: &ChangeStream) {
    assert!(
        eventually(PATIENCE, || async {
            stream.status().mode == ChangeMode::Leader
        })
        .await,
        "the stream leads: {:?}",
        stream.status()
    );
}

/// Waits until a read of row `id` through `m` returns `v`.
async fn reads(m: &Manager<Postgres>, id: i64, v: i64) -> bool {
    eventually(PATIENCE, || async { *read(m, id).await.value == v }).await
}

async fn set(pool: &PgPool, id: i64, v: i64) {
    sqlx::query("UPDATE kv SET v = $2 WHERE id = $1")
        .bind(id)
        .bind(v)
        .execute(pool)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_changed_with_plain_sql_reaches_every_instance_and_own_writes_are_skipped() {
    let db = database().await;
    let ns = testkit::unique("ns");
    let (a, b) = (
        instance(&db, REDIS, &ns).await,
        instance(&db, REDIS, &ns).await,
    );
    let cfg = config(&db);
    let _slot = slot_guard(&cfg);
    let stream = ChangeStream::spawn(&a.control(), cfg.clone(), mapping());
    leading(&stream).await;
    for m in [&a, &b] {
        read(m, 1).await;
        read(m, 2).await;
    }
    assert_eq!(a.peek_cached::<i64>("v:1").await.as_deref(), Some(&0));
    assert_eq!(b.peek_cached::<i64>("v:1").await.as_deref(), Some(&0));

    let outside = PgPool::connect(&db.url).await.unwrap();
    set(&outside, 1, 5).await;
    assert!(reads(&a, 1, 5).await, "instance a sees the write");
    assert!(reads(&b, 1, 5).await, "instance b sees the write");

    // A write marked as ours is skipped (its writer updates the caches).
    let marked = own_write_sql(
        "UPDATE kv SET v = 7 WHERE id = 2 RETURNING id",
        &cfg.own_prefix,
    );
    sqlx::query(sqlx::AssertSqlSafe(marked))
        .fetch_all(&outside)
        .await
        .unwrap();
    set(&outside, 3, 9).await;
    assert!(
        eventually(PATIENCE, || async { stream.status().transactions >= 3 }).await,
        "{:?}",
        stream.status()
    );
    let s = stream.status();
    assert_eq!(s.own_skipped, 1, "{s:?}");
    assert_eq!(
        a.peek_cached::<i64>("v:2").await.as_deref(),
        Some(&0),
        "the marked write's tag was not invalidated by the stream"
    );
    assert!(s.lag_bytes.is_some(), "the leader measures its lag: {s:?}");

    drop(stream);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_instance_consumes_and_another_takes_over_without_losing_a_write() {
    let db = database().await;
    let ns = testkit::unique("ns");
    let (a, b) = (
        instance(&db, REDIS, &ns).await,
        instance(&db, REDIS, &ns).await,
    );
    let cfg = config(&db);
    let _slot = slot_guard(&cfg);
    let first = ChangeStream::spawn(&a.control(), cfg.clone(), mapping());
    leading(&first).await;
    let second = ChangeStream::spawn(&b.control(), cfg.clone(), mapping());
    assert!(
        eventually(PATIENCE, || async {
            second.status().mode == ChangeMode::Standby
        })
        .await,
        "the second waits: {:?}",
        second.status()
    );
    assert_eq!(first.status().mode, ChangeMode::Leader);

    read(&b, 4).await;
    let outside = PgPool::connect(&db.url).await.unwrap();
    // The leader goes away; a write made while nobody consumes is read by
    // the next leader from the slot's confirmed position.
    drop(first);
    set(&outside, 4, 11).await;
    leading(&second).await;
    assert!(reads(&b, 4, 11).await, "the write made during the handover");
    assert!(reads(&a, 4, 11).await);

    drop(second);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_dropped_under_the_consumer_is_recreated_and_every_entry_dropped() {
    let db = database().await;
    let a = instance(&db, REDIS, &testkit::unique("ns")).await;
    let cfg = config(&db);
    let _slot = slot_guard(&cfg);
    let stream = ChangeStream::spawn(&a.control(), cfg.clone(), mapping());
    leading(&stream).await;
    let epochs = stream.status().epochs;
    read(&a, 5).await;
    assert!(a.peek_cached::<i64>("v:5").await.is_some());

    let admin = PgPool::connect(&db.url).await.unwrap();
    assert!(
        eventually(PATIENCE, || async {
            sqlx::query(
                "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots \
                 WHERE slot_name = $1 AND active_pid IS NOT NULL",
            )
            .bind(&cfg.slot)
            .execute(&admin)
            .await
            .unwrap();
            sqlx::query("SELECT pg_drop_replication_slot($1)")
                .bind(&cfg.slot)
                .execute(&admin)
                .await
                .is_ok()
        })
        .await,
        "the slot was dropped"
    );
    assert!(
        eventually(PATIENCE, || async {
            let s = stream.status();
            s.mode == ChangeMode::Leader && s.epochs > epochs
        })
        .await,
        "recreated with an epoch: {:?}",
        stream.status()
    );
    assert!(
        a.peek_cached::<i64>("v:5").await.is_none(),
        "every entry dropped"
    );
    // And the new slot streams.
    read(&a, 6).await;
    set(&admin, 6, 3).await;
    assert!(reads(&a, 6, 3).await);

    drop(stream);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_replication_privilege_the_manager_works_and_says_the_stream_is_off() {
    let db = database().await;
    let role = testkit::unique("norepl");
    let admin = PgPool::connect(&db.url).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE ROLE {role} LOGIN NOREPLICATION NOSUPERUSER; \
         GRANT ALL ON kv TO {role}"
    )))
    .execute(&admin)
    .await
    .unwrap();
    let url = db.url.replacen("postgres@", &format!("{role}@"), 1);
    let m = Manager::<Postgres>::connect(&url, hpdb::ManagerConfig::default())
        .await
        .unwrap();
    let stream = ChangeStream::spawn(&m.control(), ChangesConfig::new(url, "t"), mapping());
    assert!(
        eventually(PATIENCE, || async {
            m.status().changes.mode == ChangeMode::Unavailable
        })
        .await,
        "{:?}",
        m.status().changes
    );
    let detail = m.status().changes.detail.unwrap_or_default();
    assert!(detail.contains("REPLICATION"), "{detail}");
    assert_eq!(*read(&m, 1).await.value, 0, "reads still work");
    drop(stream);
    m.close().await;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "REVOKE ALL ON kv FROM {role}; DROP ROLE {role}"
    )))
    .execute(&admin)
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_slot_retains_under_64_mb_through_a_minute_of_writes_to_another_database() {
    let db = database().await;
    let a = instance(&db, REDIS, &testkit::unique("ns")).await;
    let cfg = config(&db);
    let _slot = slot_guard(&cfg);
    let stream = ChangeStream::spawn(&a.control(), cfg.clone(), mapping());
    leading(&stream).await;

    let admin = PgPool::connect(&db.url).await.unwrap();
    let retained = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT (pg_current_wal_lsn() - confirmed_flush_lsn)::int8 \
             FROM pg_replication_slots WHERE slot_name = $1",
        )
        .bind(&cfg.slot)
        .fetch_one(&admin)
        .await
        .unwrap()
    };
    let wal_now = || async {
        sqlx::query_scalar::<_, i64>("SELECT (pg_current_wal_lsn() - '0/0')::int8")
            .fetch_one(&admin)
            .await
            .unwrap()
    };

    // For at least a minute, and until more than the bound (64 MB) of WAL
    // was written (so that a slot confirming nothing would break it), a
    // batch of rows a second in another database; our database stays idle.
    // The slot's retained WAL is sampled after every batch.
    const BOUND: i64 = 64 << 20;
    let other = TestDatabase::create().await;
    let busy = PgPool::connect(&other.url).await.unwrap();
    sqlx::query("CREATE TABLE filler (id BIGINT, pad TEXT)")
        .execute(&busy)
        .await
        .unwrap();
    let (began, first_lsn) = (std::time::Instant::now(), wal_now().await);
    let mut worst = 0;
    let mut samples = 0;
    loop {
        let written = wal_now().await - first_lsn;
        let elapsed = began.elapsed();
        if elapsed >= Duration::from_secs(60) && written > 3 * BOUND / 2 {
            break;
        }
        assert!(
            elapsed < Duration::from_secs(240),
            "the writer could not write {} MB in 4 minutes ({} MB written)",
            (3 * BOUND / 2) >> 20,
            written >> 20
        );
        let tick = tokio::time::sleep(Duration::from_secs(1));
        sqlx::query(
            "INSERT INTO filler SELECT g, repeat('x', 200) FROM generate_series(1, 8000) g",
        )
        .execute(&busy)
        .await
        .unwrap();
        worst = worst.max(retained().await);
        samples += 1;
        tick.await;
    }
    let written = wal_now().await - first_lsn;
    eprintln!(
        "retained at worst {worst} bytes ({samples} samples over {:?}); {written} bytes \
         written to the other database",
        began.elapsed()
    );
    assert!(
        worst < BOUND,
        "the slot retained {worst} bytes at worst ({samples} samples over {:?}, \
         {written} bytes written to the other database)",
        began.elapsed()
    );
    // Once the writer stops, feedback on keepalives confirms what the
    // walsender skipped: the slot keeps (almost) nothing.
    assert!(
        eventually(PATIENCE, || async { retained().await < 2 << 20 }).await,
        "the slot retains {} bytes after the writes",
        retained().await
    );
    drop(stream);
}
