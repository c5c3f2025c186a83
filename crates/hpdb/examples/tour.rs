//! A tour of hpdb on an embedded SQLite file: cached and coalesced queries,
//! priorities, the keyed batch loader, invalidation, status and advice.
//!
//! Run: `cargo run -p hpdb --example tour`

use std::{collections::HashMap, sync::Arc};

use hpdb::{BatchLoader, Manager, ManagerConfig, Priority, QueryOptions};
use sqlx::{sqlite::SqliteConnectOptions, AssertSqlSafe, Sqlite};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    std::fs::create_dir_all("data")?;
    let opts = SqliteConnectOptions::new()
        .filename("data/tour.db")
        .create_if_missing(true);
    let db = Manager::<Sqlite>::builder(ManagerConfig::from_env()?)
        .connect_with(opts)
        .await?;
    sqlx::raw_sql(
        "CREATE TABLE IF NOT EXISTS users (id INTEGER PRIMARY KEY, name TEXT NOT NULL);
         INSERT OR IGNORE INTO users (id, name) VALUES (1, 'ada'), (2, 'grace'), (3, 'linus');",
    )
    .execute(db.pool())
    .await?;

    // 100 concurrent callers of one key: one query, the rest join or hit the cache.
    let calls = (0..100).map(|_| {
        db.execute_query(
            "user_count",
            QueryOptions::default()
                .tag("users")
                .priority(Priority::HIGH),
            |conn| {
                Box::pin(async move {
                    sqlx::query_scalar::<_, i64>("SELECT count(*) FROM users")
                        .fetch_one(conn)
                        .await
                })
            },
        )
    });
    let counts = futures::future::try_join_all(calls).await?;
    println!(
        "100 callers saw {} users; database queries run: {}",
        counts[0],
        db.status().database_queries
    );

    // Many single-key loads, one IN (...) query.
    let names = BatchLoader::new(&db, "user_by_id", |conn, ids: Vec<i64>| {
        let sql = format!(
            "SELECT id, name FROM users WHERE id IN ({})",
            ids.iter().map(i64::to_string).collect::<Vec<_>>().join(",")
        );
        Box::pin(async move {
            // Safe: the only interpolation is integer ids, never client text.
            let rows: Vec<(i64, String)> =
                sqlx::query_as(AssertSqlSafe(sql)).fetch_all(conn).await?;
            Ok(rows.into_iter().collect::<HashMap<_, _>>())
        })
    });
    let found: Vec<Option<Arc<String>>> = names.load_many(&[1, 2, 3, 4]).await?;
    println!("loaded by id in one batch: {found:?}");

    // A write invalidates by tag; the next read sees it.
    sqlx::query("INSERT OR IGNORE INTO users (id, name) VALUES (4, 'barbara')")
        .execute(db.pool())
        .await?;
    db.invalidate_tag("users").await;
    let n = db
        .execute_query("user_count", QueryOptions::default().tag("users"), |conn| {
            Box::pin(async move {
                sqlx::query_scalar::<_, i64>("SELECT count(*) FROM users")
                    .fetch_one(conn)
                    .await
            })
        })
        .await?;
    println!("after the write: {n} users");

    println!("status: {}", serde_json::to_string_pretty(&db.status())?);
    for advice in db.advice() {
        println!("advice: {}", advice.message);
    }
    Ok(())
}
