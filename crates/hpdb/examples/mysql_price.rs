//! The price of MySQL's and MariaDB's server-side deadline: the
//! `SET SESSION max_statement_time` (or `max_execution_time`) the manager
//! sends before each query when built with `connect_mysql`.
//!
//! Sequential uncached `SELECT ?` through a manager of one connection, with
//! and without the server deadline, in alternating rounds; mean µs per
//! query. A measurement, not a test.
//!
//! ```sh
//! cargo run --release -p hpdb --example mysql_price -- mysql://root@127.0.0.1:3306/test 3000
//! ```

use std::time::Instant;

use hpdb::{Manager, ManagerConfig, QueryOptions};
use sqlx::{mysql::MySqlConnectOptions, MySql};

/// Mean µs per query of `n` sequential uncached queries through `m`.
async fn time(m: &Manager<MySql>, n: usize) -> f64 {
    let run = |i: i64| {
        m.execute_query(format!("q{i}"), QueryOptions::uncached(), move |conn| {
            Box::pin(async move {
                sqlx::query_scalar::<_, i64>("SELECT CAST(? AS SIGNED)")
                    .bind(i)
                    .fetch_one(conn)
                    .await
            })
        })
    };
    for i in 0..(n / 10) as i64 {
        run(i).await.expect("queries");
    }
    let t = Instant::now();
    for i in 0..n as i64 {
        assert_eq!(*run(i).await.expect("queries"), i);
    }
    t.elapsed().as_secs_f64() * 1e6 / n as f64
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let url = args.get(1).expect("a mysql:// URL");
    let n: usize = args.get(2).map_or(2000, |s| s.parse().expect("a count"));
    let rounds: usize = args.get(3).map_or(3, |s| s.parse().expect("a count"));
    let options: MySqlConnectOptions = url.parse().expect("a MySQL URL");
    let mut config = ManagerConfig::default();
    config.pool.min_connections = 1;
    config.pool.max_connections = 1;
    let plain = Manager::<MySql>::builder(config.clone())
        .connect_with(options.clone())
        .await
        .expect("connects");
    let limited = Manager::<MySql>::builder(config)
        .connect_mysql(options)
        .await
        .expect("connects");
    println!("{n} sequential queries per variant, mean µs per query, {rounds} rounds:");
    for round in 1..=rounds {
        let a = time(&plain, n).await;
        let b = time(&limited, n).await;
        println!(
            "round {round}: without the server deadline {a:.1}, with it {b:.1} (+{:.1})",
            b - a
        );
    }
}
