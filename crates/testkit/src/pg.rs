//! PostgreSQL for tests: where to connect, and what the server itself counts.

use std::{str::FromStr, time::Duration};

use sqlx::{
    postgres::{PgConnectOptions, PgPoolOptions},
    PgPool,
};

/// The test database URL: `HPDB_TEST_DATABASE_URL`, else the local `test`
/// database on 127.0.0.1:5432 as `postgres`.
pub fn url() -> String {
    std::env::var("HPDB_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string())
}

/// The test database through our PgBouncer (transaction mode, started by
/// `scripts/services.sh`): `HPDB_TEST_POOLER_URL`, else the `test`
/// database on 127.0.0.1:6432 as `postgres`.
pub fn pooler_url() -> String {
    std::env::var("HPDB_TEST_POOLER_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:6432/test".to_string())
}

/// `url`'s database through our PgBouncer, in pooler-safe mode
/// (`?pgbouncer=true`): [`pooler_url`]'s address, `url`'s database name.
pub fn via_pooler(url: &str) -> String {
    let base = pooler_url();
    let (server, _) = base.rsplit_once('/').expect("a database URL has a path");
    let name = url.rsplit_once('/').expect("a database URL has a path").1;
    let name = name.split('?').next().unwrap_or(name);
    format!("{server}/{name}?pgbouncer=true")
}

/// `host:port` of the test database (for the proxy).
pub fn host_port() -> String {
    let o = options();
    format!("{}:{}", o.get_host(), o.get_port())
}

/// Connect options of the test database.
pub fn options() -> PgConnectOptions {
    PgConnectOptions::from_str(&url()).expect("HPDB_TEST_DATABASE_URL is not a valid postgres URL")
}

/// A small pool for the test's own bookkeeping (the witness), outside any
/// manager under test. Panics with a clear message if PostgreSQL is down.
pub async fn witness() -> PgPool {
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(options().application_name("hpdb_witness"))
        .await
        .unwrap_or_else(|e| {
            panic!(
                "PostgreSQL tests need a server at {} ({e}). Start it (see .ci/run) or set \
                 HPDB_TEST_DATABASE_URL; these tests never skip.",
                url()
            )
        });
    let has: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_stat_statements')",
    )
    .fetch_one(&pool)
    .await
    .expect("query pg_extension");
    assert!(
        has,
        "pg_stat_statements is not installed in the test database: run .ci/run once, or \
         `CREATE EXTENSION pg_stat_statements` after adding it to shared_preload_libraries"
    );
    pool
}

/// Executions PostgreSQL counted for statements whose text contains `marker`.
pub async fn statement_calls(witness: &PgPool, marker: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT COALESCE(sum(calls), 0)::bigint FROM pg_stat_statements \
         WHERE query LIKE '%' || $1 || '%' AND query NOT LIKE '%pg_stat_statements%'",
    )
    .bind(marker)
    .fetch_one(witness)
    .await
    .expect("query pg_stat_statements")
}

/// Backends PostgreSQL has for `application_name`: (all, active).
pub async fn backends(witness: &PgPool, application_name: &str) -> (i64, i64) {
    sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE state = 'active') FROM pg_stat_activity \
         WHERE application_name = $1",
    )
    .bind(application_name)
    .fetch_one(witness)
    .await
    .expect("query pg_stat_activity")
}

/// Polls `check` until it returns true or `within` passes; returns the last answer.
pub async fn eventually<F, Fut>(within: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A PostgreSQL database of its own for one test, dropped (with its
/// connections) when this value is dropped. `pg_stat_statements` can be
/// filtered to it by [`TestDatabase::statement_calls`].
pub struct TestDatabase {
    /// The database name.
    pub name: String,
    /// A URL that connects to it.
    pub url: String,
    witness: PgPool,
}

impl TestDatabase {
    /// Creates an empty database with a unique name.
    pub async fn create() -> TestDatabase {
        let witness = witness().await;
        let name = crate::unique("gf_t");
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&witness)
            .await
            .expect("CREATE DATABASE");
        let o = options();
        let url = format!(
            "postgres://{}@{}:{}/{name}",
            o.get_username(),
            o.get_host(),
            o.get_port()
        );
        TestDatabase { name, url, witness }
    }

    /// Executions PostgreSQL counted in this database, for statements whose
    /// text contains `marker` (all statements for `""`).
    pub async fn statement_calls(&self, marker: &str) -> i64 {
        sqlx::query_scalar(
            "SELECT COALESCE(sum(s.calls), 0)::bigint FROM pg_stat_statements s \
             JOIN pg_database d ON d.oid = s.dbid \
             WHERE d.datname = $1 AND s.query LIKE '%' || $2 || '%'",
        )
        .bind(&self.name)
        .bind(marker)
        .fetch_one(&self.witness)
        .await
        .expect("query pg_stat_statements")
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let (name, opts) = (self.name.clone(), options());
        // Drop runs outside any async context we can rely on: use a thread
        // with its own small runtime, and wait for it.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            if let Ok(rt) = rt {
                rt.block_on(async move {
                    use sqlx::ConnectOptions;
                    if let Ok(mut c) = opts.connect().await {
                        let _ =
                            sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                                .execute(&mut c)
                                .await;
                    }
                });
            }
        })
        .join();
    }
}
