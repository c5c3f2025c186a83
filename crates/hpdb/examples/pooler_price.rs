//! The price of pooler-safe mode, round trip by round trip (issue 22).
//!
//! Sequential `SELECT $1::bigint` on one connection, each variant `N`
//! times, through PgBouncer (transaction mode) and directly: what each part
//! of the transaction that pooler-safe mode wraps around a query costs.
//! A measurement, not a test.
//!
//! ```sh
//! cargo run --release -p hpdb --example pooler_price -- \
//!     postgres://postgres@127.0.0.1:6432/postgres postgres://postgres@127.0.0.1:5432/postgres 3000
//! ```

use std::{str::FromStr, time::Instant};

use sqlx::{postgres::PgConnectOptions, ConnectOptions, Connection, PgConnection};

async fn connect(url: &str, cache: usize) -> PgConnection {
    PgConnectOptions::from_str(url)
        .expect("a PostgreSQL URL")
        .statement_cache_capacity(cache)
        .connect()
        .await
        .expect("connects")
}

async fn select(conn: &mut PgConnection, i: i64, persistent: bool) {
    let v: i64 = sqlx::query_scalar("SELECT $1::bigint")
        .bind(i)
        .persistent(persistent)
        .fetch_one(conn)
        .await
        .expect("selects");
    assert_eq!(v, i);
}

/// Mean µs of `n` runs of `f`.
async fn time<F>(n: usize, mut f: F) -> f64
where
    F: AsyncFnMut(i64),
{
    for i in 0..(n / 10) as i64 {
        f(i).await;
    }
    let t = Instant::now();
    for i in 0..n as i64 {
        f(i).await;
    }
    t.elapsed().as_secs_f64() * 1e6 / n as f64
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let pooler = args.get(1).expect("pooler URL");
    let direct = args.get(2).expect("direct URL");
    let n: usize = args.get(3).map_or(2000, |s| s.parse().expect("a count"));
    let rounds: usize = args.get(4).map_or(2, |s| s.parse().expect("a count"));
    let mut d = connect(direct, 100).await;
    let mut p = connect(pooler, 0).await;
    println!("{n} sequential queries per variant, mean µs per query, {rounds} rounds:");
    for round in 1..=rounds {
        println!("round {round}");
        measure(&mut d, &mut p, n).await;
    }
}

async fn measure(d: &mut PgConnection, p: &mut PgConnection, n: usize) {
    let mut rows = Vec::new();
    rows.push((
        "direct, statement cache on: the query (1 round trip)",
        time(n, async |i| select(d, i, true).await).await,
    ));
    rows.push((
        "pooler: `SELECT 1` as one simple query (1 round trip)",
        time(n, async |_| {
            sqlx::raw_sql("SELECT 1").execute(&mut *p).await.unwrap();
        })
        .await,
    ));
    for (name, begin, persistent) in [
        (
            "pooler: BEGIN; SET LOCAL; DEALLOCATE ALL + query + COMMIT (before)",
            "BEGIN; SET LOCAL statement_timeout = 15000; DEALLOCATE ALL",
            true,
        ),
        (
            "pooler: BEGIN; SET LOCAL + query + COMMIT",
            "BEGIN; SET LOCAL statement_timeout = 15000",
            true,
        ),
        ("pooler: BEGIN + query + COMMIT", "BEGIN", true),
        (
            "pooler: BEGIN; SET LOCAL + unnamed query + COMMIT",
            "BEGIN; SET LOCAL statement_timeout = 15000",
            false,
        ),
    ] {
        let mean = time(n, async |i| {
            let mut tx = p
                .begin_with(sqlx::AssertSqlSafe(begin.to_string()))
                .await
                .unwrap();
            select(&mut tx, i, persistent).await;
            tx.commit().await.unwrap();
        })
        .await;
        rows.push((name, mean));
        // Leave no named statement behind for the next variant.
        sqlx::raw_sql("DEALLOCATE ALL")
            .execute(&mut *p)
            .await
            .unwrap();
    }
    for (name, us) in rows {
        println!("  {us:>8.1}  {name}");
    }
}
