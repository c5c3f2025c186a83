//! The circuit breaker on a busy machine: it counts only what says the
//! database is unreachable (refused, reset, DNS, TLS, authentication),
//! never a slow open or a database at its connection limit. Both cores are
//! kept busy by spinning threads while connections open.

mod common;

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use futures::future::BoxFuture;
use hpdb::{CircuitState, Manager, QueryOptions};
use sqlx::{postgres::PgConnectOptions, Postgres};

/// Threads that keep every core busy until dropped.
struct BusyCores {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl BusyCores {
    fn start() -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let threads = (0..cores * 2)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut x: u64 = 1;
                    while !stop.load(Ordering::Relaxed) {
                        x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                        std::hint::black_box(x);
                    }
                })
            })
            .collect();
        Self { stop, threads }
    }
}

impl Drop for BusyCores {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn uncached() -> QueryOptions {
    QueryOptions::uncached().coalesce(false)
}

type Query = for<'c> fn(&'c mut sqlx::PgConnection) -> BoxFuture<'c, Result<i64, sqlx::Error>>;

fn tiny_query(conn: &mut sqlx::PgConnection) -> BoxFuture<'_, Result<i64, sqlx::Error>> {
    Box::pin(sqlx::query_scalar("SELECT CAST(1 AS BIGINT) FROM pg_sleep(0.002)").fetch_one(conn))
}

fn slow_query(conn: &mut sqlx::PgConnection) -> BoxFuture<'_, Result<i64, sqlx::Error>> {
    Box::pin(sqlx::query_scalar("SELECT CAST(1 AS BIGINT) FROM pg_sleep(0.1)").fetch_one(conn))
}

/// `tasks` callers running `query` for `for_how_long`; the errors they met.
async fn load(
    m: &Manager<Postgres>,
    tasks: usize,
    for_how_long: Duration,
    query: Query,
) -> Vec<String> {
    let until = tokio::time::Instant::now() + for_how_long;
    let callers = (0..tasks).map(|i| {
        let m = m.clone();
        async move {
            let mut errors = Vec::new();
            while tokio::time::Instant::now() < until {
                if let Err(e) = m.execute_query(format!("q{i}"), uncached(), query).await {
                    errors.push(e.to_string());
                }
            }
            errors
        }
    });
    futures::future::join_all(callers)
        .await
        .into_iter()
        .flatten()
        .collect()
}

/// Every connection takes 150 ms to open (past the 100 ms after which a
/// direct attempt checks for a refusal) and lives 300 ms, so connections
/// open all the time, with both cores spinning: no circuit opens, no call
/// fails. Then the database goes away under the same load, and the circuit
/// does open: the breaker still works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_opens_on_a_saturated_machine_never_open_the_circuit() {
    let proxy = testkit::Proxy::start(&testkit::pg::host_port())
        .await
        .unwrap();
    proxy.set_connect_delay(Duration::from_millis(150));
    let mut config = common::config(0, 10);
    config.pool.max_lifetime = Some(Duration::from_millis(300));
    config.health.interval = Duration::from_millis(200);
    let opts: PgConnectOptions = testkit::pg::options()
        .port(proxy.port())
        .application_name("hpdb_saturation");
    let m = Manager::<Postgres>::builder(config)
        .connect_with(opts)
        .await
        .unwrap();
    let busy = BusyCores::start();
    let errors = load(&m, 32, Duration::from_secs(5), tiny_query).await;
    let s = m.status();
    assert!(
        proxy.accepted() >= 10,
        "connections kept opening: {}",
        proxy.accepted()
    );
    assert_eq!(s.circuit_opens, 0, "{s:?}");
    assert!(
        errors.is_empty(),
        "{} failed: {:?}",
        errors.len(),
        &errors[..errors.len().min(3)]
    );

    proxy.down();
    let opened = testkit::pg::eventually(Duration::from_secs(5), || {
        let m = m.clone();
        async move {
            let _ = m.execute_query("down", uncached(), tiny_query).await;
            m.status().circuit == CircuitState::Open
        }
    })
    .await;
    drop(busy);
    assert!(
        opened,
        "a refused database opens the circuit: {:?}",
        m.status()
    );
}

/// A database at its connection limit (SQLSTATE 53300) is full, not away:
/// the calls that could not get a connection fail (and the tuning loop
/// hears an overload), but the circuit stays closed for the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_at_its_connection_limit_is_full_not_away() {
    // A role of its own, limited to two connections (limits do not bind
    // superusers, which the tests' usual role is).
    let role = testkit::unique("hpdb_limited");
    let witness = testkit::pg::witness().await;
    // Safe: the name comes from `unique`, never outside input.
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "CREATE ROLE {role} LOGIN CONNECTION LIMIT 2"
    )))
    .execute(&witness)
    .await
    .unwrap();
    let opts: PgConnectOptions = testkit::pg::options()
        .username(&role)
        .database("postgres")
        .application_name("hpdb_limited");
    let mut config = common::config(0, 10);
    config.health.interval = Duration::from_millis(200);
    // Two failures in a row would open it, if refusals counted: a sharper
    // test of "they never count" than the default five.
    config.health.failure_threshold = 2;
    let m = Manager::<Postgres>::builder(config)
        .connect_with(opts)
        .await
        .unwrap();
    let busy = BusyCores::start();
    // Slow queries on the two connections it has: the refusals of the
    // others come in runs, as they would on a busy database.
    let errors = load(&m, 16, Duration::from_secs(3), slow_query).await;
    drop(busy);
    let s = m.status();
    m.close().await;
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP ROLE {role}")))
        .execute(&witness)
        .await
        .unwrap();
    assert!(
        s.connection_limit_refusals > 0,
        "the limit was met ({} errors): {s:?}",
        errors.len()
    );

    assert_eq!(s.circuit_opens, 0, "{s:?}");
    assert_eq!(s.circuit, CircuitState::Closed);
}
