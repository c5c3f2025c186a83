//! HikariCP's spike test, replayed on PostgreSQL: connections take 150 ms to
//! open (a delay injected by a loopback proxy), queries take 2 ms, the pool
//! is min 5 / max 50, and 50 callers arrive at once. Reported for the
//! manager and for a raw sqlx pool with the same bounds, in the same run:
//! connections open after the burst (and PostgreSQL's own count), the p99
//! and max wait for a connection, and how long the burst took.
//!
//! Run: `cargo bench -p hpdb --bench spike`

use std::{sync::Arc, time::Duration};

use futures::future::BoxFuture;
use hdrhistogram::Histogram;
use hpdb::{Manager, ManagerConfig, QueryOptions};
use sqlx::{postgres::PgPoolOptions, PgConnection, Postgres};
use tokio::{sync::Barrier, time::Instant};

const BURST: usize = 50;
const CONNECT_DELAY: Duration = Duration::from_millis(150);

fn query(conn: &mut PgConnection) -> BoxFuture<'_, Result<(), sqlx::Error>> {
    Box::pin(async move {
        sqlx::query("SELECT pg_sleep(0.002)").execute(conn).await?;
        Ok(())
    })
}

struct Row {
    name: &'static str,
    connections: u32,
    pg_backends: i64,
    wait_p99_ms: f64,
    wait_max_ms: f64,
    burst_ms: f64,
}

async fn pg_backends(app: &str) -> i64 {
    let w = testkit::pg::witness().await;
    testkit::pg::backends(&w, app).await.0
}

async fn manager_run(port: u16) -> Row {
    let app = testkit::unique("spike_manager");
    let mut c = ManagerConfig::new();
    c.pool.min_connections = 5;
    c.pool.max_connections = 50;
    let m = Manager::<Postgres>::builder(c)
        .connect_with(testkit::pg::options().port(port).application_name(&app))
        .await
        .expect("manager connects through the proxy");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let barrier = Arc::new(Barrier::new(BURST));
    let t0 = Instant::now();
    let tasks: Vec<_> = (0..BURST)
        .map(|i| {
            let (m, b) = (m.clone(), barrier.clone());
            tokio::spawn(async move {
                b.wait().await;
                m.execute_query(format!("spike{i}"), QueryOptions::uncached(), query)
                    .await
                    .unwrap();
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let burst_ms = t0.elapsed().as_secs_f64() * 1000.0;
    let s = m.status();
    // Opens still in flight land in the pool shortly; count what is there then.
    tokio::time::sleep(CONNECT_DELAY * 2).await;
    let row = Row {
        name: "hpdb manager",
        connections: m.pool().size(),
        pg_backends: pg_backends(&app).await,
        wait_p99_ms: s.acquire_wait_ms.p99,
        wait_max_ms: s.acquire_wait_ms.max,
        burst_ms,
    };
    m.close().await;
    row
}

async fn raw_run(port: u16) -> Row {
    let app = testkit::unique("spike_raw");
    let pool = PgPoolOptions::new()
        .min_connections(5)
        .max_connections(50)
        .connect_with(testkit::pg::options().port(port).application_name(&app))
        .await
        .expect("raw pool connects through the proxy");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let barrier = Arc::new(Barrier::new(BURST));
    let t0 = Instant::now();
    let tasks: Vec<_> = (0..BURST)
        .map(|_| {
            let (p, b) = (pool.clone(), barrier.clone());
            tokio::spawn(async move {
                b.wait().await;
                let w = Instant::now();
                let mut conn = p.acquire().await.unwrap();
                let waited = w.elapsed();
                query(&mut conn).await.unwrap();
                waited
            })
        })
        .collect();
    let mut h = Histogram::<u64>::new(3).unwrap();
    for t in tasks {
        h.record(t.await.unwrap().as_micros() as u64).unwrap();
    }
    let burst_ms = t0.elapsed().as_secs_f64() * 1000.0;
    tokio::time::sleep(CONNECT_DELAY * 2).await;
    let row = Row {
        name: "raw sqlx pool",
        connections: pool.size(),
        pg_backends: pg_backends(&app).await,
        wait_p99_ms: h.value_at_quantile(0.99) as f64 / 1000.0,
        wait_max_ms: h.max() as f64 / 1000.0,
        burst_ms,
    };
    pool.close().await;
    row
}

fn main() {
    // `cargo bench` passes `--bench`; test runners listing or running bench
    // targets do not, and this is a benchmark, not a test.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let proxy = testkit::Proxy::start(&testkit::pg::host_port()).await.unwrap();
        proxy.set_connect_delay(CONNECT_DELAY);
        let rows = [raw_run(proxy.port()).await, manager_run(proxy.port()).await];
        println!(
            "\nspike: {BURST} callers at once, 2 ms queries, {} ms to open a connection, min 5 / max 50\n",
            CONNECT_DELAY.as_millis()
        );
        println!(
            "{:<16} {:>12} {:>12} {:>14} {:>14} {:>10}",
            "pool", "connections", "pg backends", "wait p99 ms", "wait max ms", "burst ms"
        );
        for r in rows {
            println!(
                "{:<16} {:>12} {:>12} {:>14.1} {:>14.1} {:>10.1}",
                r.name, r.connections, r.pg_backends, r.wait_p99_ms, r.wait_max_ms, r.burst_ms
            );
        }
    });
}
