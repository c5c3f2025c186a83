//! The manager's cost on the query path, against the raw sqlx pool.
//!
//! - `raw_pool`: `sqlx::query(..).fetch_one(&pool)` on a pool with the
//!   manager's options (no ping before each acquire): the baseline.
//! - `raw_pool_sqlx_defaults`: the same on a pool with sqlx's defaults, which
//!   ping every connection before handing it out.
//! - `manager_uncached`: the same query through `execute_query` with the
//!   cache off (admission, single-flight, metrics, leak tracking all on),
//!   its connection work on hpdb's I/O threads (the default).
//! - `manager_uncached_caller_runtime`: the same with `DB_IO_THREADS=false`
//!   (everything on the caller's runtime): the price of the hop, idle.
//! - `manager_cache_hit`: a cached result.
//!
//! Run: `cargo bench -p hpdb --bench overhead` (PostgreSQL from
//! `HPDB_TEST_DATABASE_URL`, default the local `test` database).

#![allow(missing_docs)] // criterion_group! generates an undocumented pub fn

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use futures::future::BoxFuture;
use hpdb::{Manager, ManagerConfig, QueryOptions};
use sqlx::{Database, PgConnection, Pool, Postgres, Sqlite, SqliteConnection};

const LOOKUP: &str = "SELECT v FROM bench_rows WHERE id = 42";

fn pg_lookup(conn: &mut PgConnection) -> BoxFuture<'_, Result<i64, sqlx::Error>> {
    Box::pin(sqlx::query_scalar(LOOKUP).fetch_one(conn))
}

fn sqlite_lookup(conn: &mut SqliteConnection) -> BoxFuture<'_, Result<i64, sqlx::Error>> {
    Box::pin(sqlx::query_scalar(LOOKUP).fetch_one(conn))
}

const SETUP: &str = "DROP TABLE IF EXISTS bench_rows; \
    CREATE TABLE bench_rows (id BIGINT PRIMARY KEY, v BIGINT NOT NULL); \
    INSERT INTO bench_rows (id, v) VALUES (41, 410), (42, 420), (43, 430);";

fn config() -> ManagerConfig {
    let mut c = ManagerConfig::new();
    c.pool.min_connections = 2;
    c.pool.max_connections = 4;
    c
}

/// [`config`] with the connection work on the caller's runtime.
fn config_on_caller() -> ManagerConfig {
    let mut c = config();
    c.pool.io_threads = false;
    c
}

#[allow(clippy::too_many_arguments)]
fn bench_backend<DB: Database>(
    c: &mut Criterion,
    name: &str,
    rt: &tokio::runtime::Runtime,
    manager: Manager<DB>,
    on_caller: Manager<DB>,
    raw: Pool<DB>,
    raw_defaults: Pool<DB>,
    lookup: fn(&mut DB::Connection) -> BoxFuture<'_, Result<i64, sqlx::Error>>,
) where
    for<'c> &'c Pool<DB>: sqlx::Executor<'c, Database = DB>,
    <DB as Database>::Arguments: sqlx::IntoArguments<DB>,
    i64: sqlx::Type<DB> + for<'r> sqlx::Decode<'r, DB>,
    usize: sqlx::ColumnIndex<DB::Row>,
{
    let mut g = c.benchmark_group(name);
    g.measurement_time(Duration::from_secs(4));
    g.bench_function(BenchmarkId::new("query", "raw_pool"), |b| {
        b.to_async(rt).iter(|| async {
            sqlx::query_scalar::<_, i64>(LOOKUP)
                .fetch_one(&raw)
                .await
                .unwrap()
        })
    });
    g.bench_function(BenchmarkId::new("query", "raw_pool_sqlx_defaults"), |b| {
        b.to_async(rt).iter(|| async {
            sqlx::query_scalar::<_, i64>(LOOKUP)
                .fetch_one(&raw_defaults)
                .await
                .unwrap()
        })
    });
    g.bench_function(BenchmarkId::new("query", "manager_uncached"), |b| {
        b.to_async(rt).iter(|| async {
            manager
                .execute_query("lookup42", QueryOptions::uncached(), lookup)
                .await
                .unwrap()
        })
    });
    g.bench_function(
        BenchmarkId::new("query", "manager_uncached_caller_runtime"),
        |b| {
            b.to_async(rt).iter(|| async {
                on_caller
                    .execute_query("lookup42", QueryOptions::uncached(), lookup)
                    .await
                    .unwrap()
            })
        },
    );
    g.bench_function(BenchmarkId::new("query", "manager_cache_hit"), |b| {
        b.to_async(rt).iter(|| async {
            manager
                .execute_query("lookup42_cached", QueryOptions::default(), lookup)
                .await
                .unwrap()
        })
    });
    g.finish();
}

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();

    let dir = std::env::temp_dir().join(format!("hpdb_bench_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sqlite_opts = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(dir.join("bench.db"))
        .create_if_missing(true)
        .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal);
    let (m, on_caller, raw, defaults) = rt.block_on(async {
        let m = Manager::<Sqlite>::builder(config())
            .connect_with(sqlite_opts.clone())
            .await
            .unwrap();
        let on_caller = Manager::<Sqlite>::builder(config_on_caller())
            .connect_with(sqlite_opts.clone())
            .await
            .unwrap();
        sqlx::raw_sql(SETUP).execute(m.pool()).await.unwrap();
        let raw = sqlx::sqlite::SqlitePoolOptions::new()
            .max_connections(4)
            .test_before_acquire(false)
            .connect_with(sqlite_opts.clone())
            .await
            .unwrap();
        let defaults = sqlx::sqlite::SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(sqlite_opts)
            .await
            .unwrap();
        (m, on_caller, raw, defaults)
    });
    bench_backend::<Sqlite>(c, "sqlite", &rt, m, on_caller, raw, defaults, sqlite_lookup);

    let (m, on_caller, raw, defaults) = rt.block_on(async {
        let opts = testkit::pg::options();
        let m = Manager::<Postgres>::builder(config())
            .connect_with(opts.clone())
            .await
            .unwrap();
        let on_caller = Manager::<Postgres>::builder(config_on_caller())
            .connect_with(opts.clone())
            .await
            .unwrap();
        sqlx::raw_sql(SETUP).execute(m.pool()).await.unwrap();
        let raw = sqlx::postgres::PgPoolOptions::new()
            .max_connections(4)
            .test_before_acquire(false)
            .connect_with(opts.clone())
            .await
            .unwrap();
        let defaults = sqlx::postgres::PgPoolOptions::new()
            .max_connections(4)
            .connect_with(opts)
            .await
            .unwrap();
        (m, on_caller, raw, defaults)
    });
    bench_backend::<Postgres>(c, "postgres", &rt, m, on_caller, raw, defaults, pg_lookup);
    let _ = std::fs::remove_dir_all(dir);
}

criterion_group!(overhead, benches);
criterion_main!(overhead);
