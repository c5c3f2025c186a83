//! Shared by the tests of the shared level: instances (managers) over one
//! PostgreSQL database and one Redis, and the reads and writes they make.

#![allow(dead_code)]

use std::time::Duration;

use hpdb::{Invalidation, Manager, ManagerConfig, QueryOptions, QueryResult, SharedStatus};
use sqlx::Postgres;
use testkit::pg::TestDatabase;

/// One instance: a manager on `db` sharing `redis` under `ns`.
pub async fn instance(db: &TestDatabase, redis: &str, ns: &str) -> Manager<Postgres> {
    instance_with(db, redis, ns, ManagerConfig::default()).await
}

/// [`instance`] with settings of its own.
pub async fn instance_with(
    db: &TestDatabase,
    redis: &str,
    ns: &str,
    mut c: ManagerConfig,
) -> Manager<Postgres> {
    c.shared.url = Some(redis.to_string());
    c.shared.namespace = ns.to_string();
    let m = Manager::<Postgres>::connect(&db.url, c).await.unwrap();
    assert!(
        testkit::pg::eventually(Duration::from_secs(10), || async { shared(&m).bus_current }).await,
        "the bus of a new instance became current: {:?}",
        shared(&m)
    );
    m
}

pub fn shared(m: &Manager<Postgres>) -> SharedStatus {
    m.status().shared.expect("a shared level is configured")
}

pub async fn database() -> TestDatabase {
    let db = TestDatabase::create().await;
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    sqlx::query("CREATE TABLE kv (id BIGINT PRIMARY KEY, v BIGINT NOT NULL)")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("INSERT INTO kv SELECT g, 0 FROM generate_series(1, 10) g")
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    db
}

pub fn options(id: i64) -> QueryOptions {
    QueryOptions::default().tag(format!("row:{id}"))
}

/// Reads row `id` through `m` (cached under `v:<id>`, tagged `row:<id>`).
pub async fn read(m: &Manager<Postgres>, id: i64) -> QueryResult<i64> {
    m.execute_query_traced(format!("v:{id}"), options(id), move |c| {
        Box::pin(
            sqlx::query_scalar("SELECT v FROM kv WHERE id = $1 /* hpdb_shared_probe */")
                .bind(id)
                .fetch_one(c),
        )
    })
    .await
    .expect("a read succeeds")
}

/// Writes row `id` and invalidates it, as an application would.
pub async fn write(m: &Manager<Postgres>, id: i64, v: i64) -> Invalidation {
    sqlx::query("UPDATE kv SET v = $2 WHERE id = $1")
        .bind(id)
        .bind(v)
        .execute(m.pool())
        .await
        .unwrap();
    m.invalidate_tag(&format!("row:{id}")).await
}

/// Waits until `m` has applied `n` invalidations from other instances.
pub async fn delivered(m: &Manager<Postgres>, n: u64) {
    assert!(
        testkit::pg::eventually(Duration::from_secs(5), || async { shared(m).received >= n }).await,
        "delivered: {:?}",
        shared(m)
    );
}

/// A fresh database and two instances over it sharing `redis` under a
/// namespace of their own.
pub async fn two_instances(redis: &str) -> (TestDatabase, Manager<Postgres>, Manager<Postgres>) {
    let db = database().await;
    let ns = testkit::unique("ns");
    let a = instance(&db, redis, &ns).await;
    let b = instance(&db, redis, &ns).await;
    (db, a, b)
}
