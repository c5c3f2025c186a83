//! Outages: the circuit opens when the database is unreachable, callers fail
//! fast or get stale cache entries, and it closes once the database is back
//! (PostgreSQL and MariaDB through a proxy that goes down, SQLite by its
//! file).

mod common;

use std::time::Duration;

use futures::future::BoxFuture;

use hpdb::{CircuitState, Error, Manager, ManagerConfig, QueryOptions, Source};
use sqlx::{Postgres, Sqlite};

fn seven_pg(conn: &mut sqlx::PgConnection) -> BoxFuture<'_, Result<i64, sqlx::Error>> {
    Box::pin(sqlx::query_scalar("SELECT CAST(7 AS BIGINT)").fetch_one(conn))
}

fn seven_sqlite(conn: &mut sqlx::SqliteConnection) -> BoxFuture<'_, Result<i64, sqlx::Error>> {
    Box::pin(sqlx::query_scalar("SELECT 7").fetch_one(conn))
}

fn outage_config() -> ManagerConfig {
    let mut c = common::config(1, 2);
    c.pool.acquire_timeout = Duration::from_millis(500);
    c.health.failure_threshold = 3;
    c.health.cooldown = Duration::from_millis(200);
    c.health.interval = Duration::from_millis(200);
    c.health.ping_timeout = Duration::from_millis(300);
    c.cache.stale_grace = Duration::from_secs(60);
    c
}

/// Fails until the circuit opens; returns the errors seen on the way.
async fn fail_until_open<F, Fut>(manager_status: impl Fn() -> CircuitState, call: F) -> Vec<Error>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<i64, Error>>,
{
    let mut errors = Vec::new();
    for _ in 0..20 {
        if manager_status() == CircuitState::Open {
            return errors;
        }
        errors.push(call().await.expect_err("the database is down"));
    }
    panic!("the circuit did not open after 20 failures: {errors:?}");
}

/// A query of one BIGINT, 7, on `DB`.
type Seven<DB> = for<'c> fn(
    &'c mut <DB as sqlx::Database>::Connection,
) -> BoxFuture<'c, Result<i64, sqlx::Error>>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_circuit_opens_when_unreachable_and_closes_when_back() {
    let proxy = testkit::Proxy::start(&testkit::pg::host_port())
        .await
        .unwrap();
    let opts = testkit::pg::options()
        .port(proxy.port())
        .application_name("hpdb_outage");
    let m = Manager::<Postgres>::builder(outage_config())
        .connect_with(opts)
        .await
        .unwrap();
    circuit_opens_when_unreachable_and_closes_when_back(m, &proxy, seven_pg).await;
}

#[cfg(feature = "mysql")]
fn seven_my(conn: &mut sqlx::MySqlConnection) -> BoxFuture<'_, Result<i64, sqlx::Error>> {
    Box::pin(sqlx::query_scalar("SELECT CAST(7 AS SIGNED)").fetch_one(conn))
}

#[cfg(feature = "mysql")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_circuit_opens_when_unreachable_and_closes_when_back() {
    let direct = common::mysql_options();
    let proxy = testkit::Proxy::start(&format!("{}:{}", direct.get_host(), direct.get_port()))
        .await
        .unwrap();
    let m = Manager::<sqlx::MySql>::builder(outage_config())
        .connect_mysql(direct.port(proxy.port()))
        .await
        .unwrap();
    circuit_opens_when_unreachable_and_closes_when_back(m, &proxy, seven_my).await;
}

/// Through `proxy`: stale-if-error, the circuit opening after failures
/// and failing fast, and closing once the database is back.
async fn circuit_opens_when_unreachable_and_closes_when_back<DB: sqlx::Database>(
    m: Manager<DB>,
    proxy: &testkit::Proxy,
    seven: Seven<DB>,
) {
    let one = || seven;
    // Stale-if-error alone: not served while revalidating (see tests/refresh.rs).
    let short_ttl = QueryOptions::default()
        .ttl(Duration::from_millis(50))
        .stale_while_revalidate(false);
    assert_eq!(
        m.execute_query_traced("cached", short_ttl.clone(), one())
            .await
            .unwrap()
            .source,
        Source::Database
    );
    tokio::time::sleep(Duration::from_millis(80)).await; // now expired, within its stale grace

    proxy.down();
    let stale = m
        .execute_query_traced("cached", short_ttl.clone(), one())
        .await
        .unwrap();
    assert_eq!(
        (*stale.value, stale.source),
        (7, Source::Stale),
        "stale-if-error"
    );

    let mc = m.clone();
    let errors = fail_until_open(
        || mc.status().circuit,
        || async {
            m.execute_query("uncached", QueryOptions::uncached(), one())
                .await
                .map(|v| *v)
        },
    )
    .await;
    assert!(errors.iter().all(Error::is_unavailable), "{errors:?}");

    let t = std::time::Instant::now();
    let err = m
        .execute_query("uncached", QueryOptions::uncached(), one())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::CircuitOpen { .. }), "{err:?}");
    assert!(
        t.elapsed() < Duration::from_millis(50),
        "fails fast, took {:?}",
        t.elapsed()
    );
    assert!(err.retry_after().is_some());
    let stale = m
        .execute_query_traced("cached", short_ttl.clone(), one())
        .await
        .unwrap();
    assert_eq!(
        stale.source,
        Source::Stale,
        "stale entries still served while open"
    );
    assert!(m.status().circuit_opens >= 1);

    proxy.up();
    let mc = m.clone();
    let closed = testkit::pg::eventually(Duration::from_secs(10), move || {
        let mc = mc.clone();
        async move { mc.status().circuit == CircuitState::Closed }
    })
    .await;
    assert!(
        closed,
        "the health monitor closed the circuit once the database was back"
    );
    assert_eq!(
        *m.execute_query("uncached", QueryOptions::uncached(), one())
            .await
            .unwrap(),
        7
    );
    assert_eq!(
        m.execute_query_traced("cached", short_ttl, one())
            .await
            .unwrap()
            .source,
        Source::Database
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_circuit_opens_when_the_file_is_missing_and_closes_when_it_is_back() {
    let dir = common::temp_dir();
    let path = dir.0.join("absent.db");
    let m = Manager::<Sqlite>::builder(outage_config())
        .background_tasks(false)
        .build_lazy(common::sqlite_file(&path, false))
        .unwrap();
    let one = || seven_sqlite;
    let mc = m.clone();
    let errors = fail_until_open(
        || mc.status().circuit,
        || async {
            m.execute_query("q", QueryOptions::uncached(), one())
                .await
                .map(|v| *v)
        },
    )
    .await;
    assert_eq!(errors.len(), 3, "opens at the threshold: {errors:?}");
    assert!(
        errors.iter().all(|e| matches!(e, Error::Connect { .. })),
        "{errors:?}"
    );
    assert!(matches!(
        m.execute_query("q", QueryOptions::uncached(), one()).await,
        Err(Error::CircuitOpen { failures: 3, .. })
    ));
    let report = m.health_check().await;
    assert!(!report.database_reachable);
    assert_eq!(report.circuit, CircuitState::Open);

    // The database comes back.
    let created = sqlx::ConnectOptions::connect(&common::sqlite_file(&path, true))
        .await
        .unwrap();
    sqlx::Connection::close(created).await.unwrap();
    tokio::time::sleep(Duration::from_millis(250)).await; // the cooldown
    let report = m.health_check().await;
    assert!(report.database_reachable, "{report:?}");
    assert_eq!(report.circuit, CircuitState::Closed);
    assert_eq!(
        *m.execute_query("q", QueryOptions::uncached(), one())
            .await
            .unwrap(),
        7
    );
    drop(dir);
}

/// Regression (hardening issue, defect 4): with nothing listening, a
/// refused connect used to be retried by sqlx until the acquire timeout
/// (10 s by default), and was never counted by the circuit breaker. Now
/// each call fails fast with a connection error, the circuit opens at the
/// threshold, and every later call is refused at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_refused_connections_fail_fast_and_open_the_circuit() {
    let closed_port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    }; // dropped: connecting to it is refused
    let mut config = outage_config();
    config.pool.acquire_timeout = Duration::from_secs(10);
    config.query_timeout = Duration::from_secs(15);
    config.health.cooldown = Duration::from_secs(30);
    let m = Manager::<Postgres>::builder(config)
        .background_tasks(false)
        .build_lazy(testkit::pg::options().port(closed_port))
        .unwrap();
    let mc = m.clone();
    let started = std::time::Instant::now();
    let errors = fail_until_open(
        || mc.status().circuit,
        || async {
            m.execute_query("q", QueryOptions::uncached(), seven_pg)
                .await
                .map(|v| *v)
        },
    )
    .await;
    assert_eq!(errors.len(), 3, "opens at the threshold: {errors:?}");
    assert!(
        errors.iter().all(|e| matches!(e, Error::Connect { .. })),
        "refused, not timed out: {errors:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "three refused calls must not wait out the 10 s acquire timeout: {:?}",
        started.elapsed()
    );
    assert!(matches!(
        m.execute_query("q", QueryOptions::uncached(), seven_pg)
            .await,
        Err(Error::CircuitOpen { failures: 3, .. })
    ));
}
