//! Per-backend harnesses: a fresh table and a manager for each test, and the
//! database's own witnesses where it has them (PostgreSQL; MariaDB's
//! process list). A harness that cannot reach its database panics: these
//! tests never skip.

#![allow(dead_code)]

#[cfg(feature = "sqlite")]
use std::str::FromStr;
use std::time::Duration;

use hpdb::{Manager, ManagerConfig};
#[cfg(feature = "postgres")]
use sqlx::postgres::Postgres;
#[cfg(feature = "mysql")]
use sqlx::{mysql::MySqlConnectOptions, MySql, MySqlPool};
#[cfg(feature = "sqlite")]
use sqlx::{sqlite::SqliteConnectOptions, Sqlite};
// testkit's witnesses are PostgreSQL's, whatever hpdb's features.
use sqlx::PgPool;

/// A test configuration: small, fast timers.
pub fn config(min: u32, max: u32) -> ManagerConfig {
    let mut c = ManagerConfig::new();
    c.pool.min_connections = min;
    c.pool.max_connections = max;
    c.pool.acquire_timeout = Duration::from_secs(5);
    c.query_timeout = Duration::from_secs(10);
    c
}

pub struct Harness<DB: sqlx::Database> {
    pub manager: Manager<DB>,
    /// A table `(id INTEGER PRIMARY KEY, v INTEGER)` with rows 1..=100, v = id * 10.
    pub table: String,
    /// The application name the manager's connections carry (PostgreSQL).
    pub app: String,
    pub witness: Option<PgPool>,
    /// A pool of its own on MariaDB (table set-up and clean-up, the
    /// process list), outside the manager under test.
    #[cfg(feature = "mysql")]
    pub my_witness: Option<MySqlPool>,
    _dir: Option<TempDir>,
}

pub use testkit::TempDir;

pub fn temp_dir() -> TempDir {
    TempDir::new("hpdb_test")
}

const FILL: &str = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100) \
                    INSERT INTO {t} (id, v) SELECT i, i * 10 FROM n";

#[cfg(feature = "sqlite")]
pub async fn sqlite(config: ManagerConfig) -> Harness<Sqlite> {
    let dir = temp_dir();
    let opts = SqliteConnectOptions::new()
        .filename(dir.0.join("test.db"))
        .create_if_missing(true)
        .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
        .busy_timeout(Duration::from_secs(5));
    let table = testkit::unique("t");
    let manager = Manager::<Sqlite>::builder(config)
        .connect_with(opts)
        .await
        .unwrap();
    setup_table(manager.pool(), table_sql(&table)).await;
    Harness {
        manager,
        table,
        app: String::new(),
        witness: None,
        #[cfg(feature = "mysql")]
        my_witness: None,
        _dir: Some(dir),
    }
}

#[cfg(feature = "postgres")]
pub async fn postgres(config: ManagerConfig) -> Harness<Postgres> {
    let witness = testkit::pg::witness().await;
    let table = testkit::unique("t");
    let app = testkit::unique("hpdb");
    let manager = Manager::<Postgres>::builder(config)
        .connect_with(testkit::pg::options().application_name(&app))
        .await
        .unwrap();
    setup_table(&witness, table_sql(&table)).await;
    Harness {
        manager,
        table,
        app,
        witness: Some(witness),
        #[cfg(feature = "mysql")]
        my_witness: None,
        _dir: None,
    }
}

/// The MariaDB test database: `HPDB_TEST_MYSQL_URL`, else the local `test`
/// database on 127.0.0.1:3306 as `root` (`scripts/services.sh` starts it).
#[cfg(feature = "mysql")]
pub fn mysql_url() -> String {
    std::env::var("HPDB_TEST_MYSQL_URL")
        .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".to_string())
}

/// Connect options of the MariaDB test database.
#[cfg(feature = "mysql")]
pub fn mysql_options() -> MySqlConnectOptions {
    mysql_url()
        .parse()
        .expect("HPDB_TEST_MYSQL_URL is not a valid mysql URL")
}

/// A small pool on MariaDB outside any manager under test. Panics with a
/// clear message if MariaDB is down.
#[cfg(feature = "mysql")]
pub async fn mysql_witness() -> MySqlPool {
    sqlx::mysql::MySqlPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(mysql_options())
        .await
        .unwrap_or_else(|e| {
            panic!(
                "MariaDB tests need a server at {} ({e}). Start it (scripts/services.sh) or \
                 set HPDB_TEST_MYSQL_URL; these tests never skip.",
                mysql_url()
            )
        })
}

/// A manager on MariaDB with its server-side deadline
/// (`connect_mysql`), and a fresh table.
#[cfg(feature = "mysql")]
pub async fn mariadb(config: ManagerConfig) -> Harness<MySql> {
    let witness = mysql_witness().await;
    let table = testkit::unique("t");
    let manager = Manager::<MySql>::builder(config)
        .connect_mysql(mysql_options())
        .await
        .unwrap();
    // MySQL has no `INSERT … WITH RECURSIVE`: the rows as a list.
    let rows: Vec<String> = (1..=100).map(|i| format!("({i}, {})", i * 10)).collect();
    for sql in [
        format!("CREATE TABLE {table} (id BIGINT PRIMARY KEY, v BIGINT NOT NULL)"),
        format!("INSERT INTO {table} (id, v) VALUES {}", rows.join(", ")),
    ] {
        setup_table(&witness, sql).await;
    }
    Harness {
        manager,
        table,
        app: String::new(),
        witness: None,
        my_witness: Some(witness),
        _dir: None,
    }
}

/// The statements that create and fill a test table.
fn table_sql(table: &str) -> String {
    format!(
        "CREATE TABLE {table} (id BIGINT PRIMARY KEY, v BIGINT NOT NULL); {}",
        FILL.replace("{t}", table)
    )
}

async fn setup_table<'e, E: sqlx::Executor<'e>>(exec: E, sql: String) {
    // Safe: `table_sql` around a table name the harness generated.
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
        .execute(exec)
        .await
        .unwrap();
}

impl<DB: sqlx::Database> Harness<DB> {
    /// Executions PostgreSQL counted for statements reading this test's table.
    pub async fn pg_calls(&self) -> Option<i64> {
        match &self.witness {
            Some(w) => Some(testkit::pg::statement_calls(w, &format!("FROM {}", self.table)).await),
            None => None,
        }
    }

    /// (all, active) backends PostgreSQL has for this manager.
    pub async fn pg_backends(&self) -> Option<(i64, i64)> {
        match &self.witness {
            Some(w) => Some(testkit::pg::backends(w, &self.app).await),
            None => None,
        }
    }
}

impl<DB: sqlx::Database> Drop for Harness<DB> {
    fn drop(&mut self) {
        #[cfg(feature = "mysql")]
        if let Some(w) = self.my_witness.take() {
            let table = self.table.clone();
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                handle.spawn(async move {
                    // Safe: a table name the harness generated.
                    let _ =
                        sqlx::query(sqlx::AssertSqlSafe(format!("DROP TABLE IF EXISTS {table}")))
                            .execute(&w)
                            .await;
                });
            }
        }
        if let Some(w) = self.witness.take() {
            let table = self.table.clone();
            // Best effort: tables are unique per test, so a leftover harms nothing.
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                handle.spawn(async move {
                    // Safe: a table name the harness generated.
                    let _ =
                        sqlx::query(sqlx::AssertSqlSafe(format!("DROP TABLE IF EXISTS {table}")))
                            .execute(&w)
                            .await;
                });
            }
        }
    }
}

/// Sqlite file options for a database that may not exist yet.
#[cfg(feature = "sqlite")]
pub fn sqlite_file(path: &std::path::Path, create: bool) -> SqliteConnectOptions {
    SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))
        .unwrap()
        .create_if_missing(create)
}
