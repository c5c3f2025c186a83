//! PostgreSQL in its production shapes, through `hpdb::postgres`: a query
//! past its deadline stops on the server too, on a direct connection and
//! through PgBouncer in transaction mode (`scripts/services.sh` starts ours
//! on 127.0.0.1:6432); behind the pooler, concurrent prepared statements
//! work in pooler-safe mode and, without it, fail with the fix named.
//! These tests never skip: an unreachable PostgreSQL or PgBouncer fails them.

use std::{str::FromStr, time::Duration};

use hpdb::{postgres::PgTarget, Error, Manager, ManagerConfig, QueryOptions, TimeoutPhase};
use sqlx::{postgres::PgConnectOptions, PgPool, Postgres};

/// Up to 20 connections (PgBouncer has 10 server connections per database).
fn config(query_timeout: Duration) -> ManagerConfig {
    let mut c = ManagerConfig::new();
    c.pool.min_connections = 1;
    c.pool.max_connections = 20;
    c.pool.acquire_timeout = Duration::from_secs(10);
    c.query_timeout = query_timeout;
    c
}

fn with_param(url: &str, param: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{param}")
}

fn pgbouncer_url() -> String {
    with_param(&testkit::pg::pooler_url(), "pgbouncer=true")
}

/// A manager for `url` built the way hpdb::postgres says, its connections
/// named `app`.
async fn connect(url: &str, config: ManagerConfig, app: &str) -> Manager<Postgres> {
    let target = PgTarget::from_url(url, &config)
        .unwrap()
        .map_options(|o| o.application_name(app));
    Manager::builder(config)
        .connect_target(&target)
        .await
        .unwrap_or_else(|e| panic!("{e} (scripts/services.sh starts it; these tests never skip)"))
}

/// A manager for `options` as plain sqlx would connect: no pooler-safe
/// mode, no statement deadline.
async fn connect_plain(options: PgConnectOptions, config: ManagerConfig) -> Manager<Postgres> {
    Manager::builder(config)
        .connect_with(options)
        .await
        .unwrap_or_else(|e| panic!("{e} (scripts/services.sh starts it; these tests never skip)"))
}

/// Backends of `app` that PostgreSQL shows running a `pg_sleep`.
async fn sleeping(witness: &PgPool, app: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 \
         AND state = 'active' AND query LIKE '%pg_sleep%'",
    )
    .bind(app)
    .fetch_one(witness)
    .await
    .expect("query pg_stat_activity")
}

/// Runs `SELECT pg_sleep(secs)` through `db` with `options`.
async fn sleep(db: &Manager<Postgres>, options: QueryOptions, secs: f64) -> Result<i32, Error> {
    let key = testkit::unique("sleep");
    let v = db
        .execute_query(key, options, move |conn| {
            Box::pin(async move {
                sqlx::query_scalar::<_, i32>("SELECT 1 FROM pg_sleep($1)")
                    .bind(secs)
                    .fetch_one(conn)
                    .await
            })
        })
        .await?;
    Ok(*v)
}

/// Starts a 5 s sleep under a 300 ms deadline, waits until the witness sees
/// it running, and returns the caller's outcome.
async fn sleep_past_the_deadline(db: &Manager<Postgres>, witness: &PgPool, app: &str) -> Error {
    let query = tokio::spawn({
        let db = db.clone();
        async move { sleep(&db, QueryOptions::uncached(), 5.0).await }
    });
    let seen = testkit::pg::eventually(Duration::from_secs(2), || async {
        sleeping(witness, app).await == 1
    })
    .await;
    let err = query.await.unwrap().unwrap_err();
    assert!(seen, "the witness never saw the statement run");
    assert!(
        matches!(
            err,
            Error::Timeout {
                phase: TimeoutPhase::Execute,
                ..
            }
        ),
        "{err}"
    );
    err
}

/// The caller hears hpdb's timeout, and PostgreSQL stops the statement
/// (within 1 s of the deadline, where the sleep had 4.7 s to go).
async fn a_query_past_its_deadline_stops_on_the_server(url: &str) {
    let witness = testkit::pg::witness().await;
    let app = testkit::unique("hpdb_deadline");
    let db = connect(url, config(Duration::from_millis(300)), &app).await;
    sleep_past_the_deadline(&db, &witness, &app).await;
    let stopped = testkit::pg::eventually(Duration::from_secs(1), || async {
        sleeping(&witness, &app).await == 0
    })
    .await;
    assert!(
        stopped,
        "PostgreSQL still runs the statement after its deadline"
    );
    // The connection is usable again.
    assert_eq!(sleep(&db, QueryOptions::uncached(), 0.0).await.unwrap(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_a_query_past_its_deadline_stops_on_the_server() {
    a_query_past_its_deadline_stops_on_the_server(&testkit::pg::url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbouncer_a_query_past_its_deadline_stops_on_the_server() {
    a_query_past_its_deadline_stops_on_the_server(&pgbouncer_url()).await;
}

/// What the two tests above fix: without a statement deadline the caller
/// stops waiting and PostgreSQL runs the statement on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_without_a_statement_deadline_the_server_runs_on() {
    let witness = testkit::pg::witness().await;
    let app = testkit::unique("hpdb_no_deadline");
    let options = testkit::pg::options().application_name(&app);
    let db = connect_plain(options, config(Duration::from_millis(300))).await;
    sleep_past_the_deadline(&db, &witness, &app).await;
    assert_eq!(sleeping(&witness, &app).await, 1, "the statement runs on");
}

/// On a direct connection the session's `statement_timeout` is the
/// manager's query timeout; a query given a longer deadline of its own is
/// not cut short by it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_a_longer_deadline_of_its_own_raises_the_session_timeout() {
    let app = testkit::unique("hpdb_longer");
    let db = connect(
        &testkit::pg::url(),
        config(Duration::from_millis(300)),
        &app,
    )
    .await;
    let longer = QueryOptions::uncached().timeout(Duration::from_secs(5));
    assert_eq!(sleep(&db, longer, 0.8).await.unwrap(), 1);
}

/// 200 queries from 20 tasks at once, over five statement texts with one
/// parameter each. Each outcome with the answer it should have had.
async fn many_concurrent_statements(db: &Manager<Postgres>) -> Vec<(i64, Result<i64, Error>)> {
    let tasks: Vec<_> = (0..20i64)
        .map(|t| {
            let db = db.clone();
            tokio::spawn(async move {
                let mut outcomes = Vec::new();
                for i in 0..10i64 {
                    let (n, k) = (t * 100 + i, i % 5);
                    let sql = format!("SELECT $1::bigint * 10 + {k}");
                    let key = testkit::unique("stmt");
                    let got = db
                        .execute_query(key, QueryOptions::uncached(), move |conn| {
                            Box::pin(async move {
                                // Safe: the only interpolation is a small integer.
                                sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql))
                                    .bind(n)
                                    .fetch_one(conn)
                                    .await
                            })
                        })
                        .await
                        .map(|v| *v);
                    outcomes.push((n * 10 + k, got));
                }
                outcomes
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all
}

/// Pooler-safe mode, by the URL flag or by `DB_STATEMENT_CACHE=0`: every
/// query succeeds with its own answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbouncer_pooler_safe_mode_runs_concurrent_prepared_statements() {
    let mut cache_off = config(Duration::from_secs(10));
    cache_off.pool.statement_cache_capacity = 0;
    for (url, config) in [
        (pgbouncer_url(), config(Duration::from_secs(10))),
        (testkit::pg::pooler_url(), cache_off),
    ] {
        let db = connect(&url, config, &testkit::unique("hpdb_safe")).await;
        let outcomes = many_concurrent_statements(&db).await;
        assert_eq!(outcomes.len(), 200);
        for (want, got) in outcomes {
            match got {
                Ok(v) => assert_eq!(v, want, "{url}: a wrong answer"),
                Err(e) => panic!("{url}: {e}"),
            }
        }
    }
}

/// The errors a pooler the manager was not told about causes, and that
/// each names the fix.
fn assert_prepared_statement_errors_name_the_fix(outcomes: &[(i64, Result<i64, Error>)]) {
    let errors: Vec<String> = outcomes
        .iter()
        .filter_map(|(_, r)| r.as_ref().err().map(ToString::to_string))
        .collect();
    let wrong = outcomes
        .iter()
        .filter(|(want, r)| matches!(r, Ok(v) if v != want))
        .count();
    eprintln!(
        "{} errors, {wrong} wrong answers of {}",
        errors.len(),
        outcomes.len()
    );
    let prepared: Vec<&String> = errors
        .iter()
        .filter(|e| e.contains("prepared statement"))
        .collect();
    assert!(
        !prepared.is_empty(),
        "no prepared-statement error: {errors:?}"
    );
    for e in prepared {
        assert!(
            e.contains("?pgbouncer=true") && e.contains("DB_STATEMENT_CACHE=0"),
            "{e}"
        );
    }
}

/// sqlx #67: with sqlx's statement cache on (its default), named prepared
/// statements do not survive transaction pooling.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbouncer_with_the_statement_cache_on_the_error_names_the_fix() {
    let options = PgConnectOptions::from_str(&testkit::pg::pooler_url()).unwrap();
    let db = connect_plain(options, config(Duration::from_secs(10))).await;
    assert_prepared_statement_errors_name_the_fix(&many_concurrent_statements(&db).await);
}

/// sqlx #2473: with the cache off, sqlx 0.8 still names every statement
/// (and never closes it), so turning the cache off alone is not enough;
/// pooler-safe mode also drops a server connection's statements at the
/// start of each query's transaction. If this starts passing without
/// errors, sqlx has changed and `DEALLOCATE ALL` may be unnecessary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbouncer_sqlx_2473_the_cache_off_alone_is_not_enough() {
    let options = PgConnectOptions::from_str(&testkit::pg::pooler_url())
        .unwrap()
        .statement_cache_capacity(0);
    let db = connect_plain(options, config(Duration::from_secs(10))).await;
    assert_prepared_statement_errors_name_the_fix(&many_concurrent_statements(&db).await);
}

/// A direct-connection target pointed at PgBouncer: its start-up
/// `statement_timeout` is refused, and the error says what to set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbouncer_a_target_not_told_about_the_pooler_is_refused_with_the_fix_named() {
    let config = config(Duration::from_secs(10));
    let target = PgTarget::from_url(&testkit::pg::pooler_url(), &config).unwrap();
    let err = Manager::builder(config)
        .connect_target(&target)
        .await
        .err()
        .expect("PgBouncer 1.18 refuses the start-up options parameter")
        .to_string();
    assert!(err.contains("unsupported startup parameter"), "{err}");
    assert!(err.contains("?pgbouncer=true"), "{err}");
}

/// A connection failure at start-up names where, without the password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_start_names_the_url_without_its_password() {
    let mut config = config(Duration::from_secs(10));
    config.pool.acquire_timeout = Duration::from_millis(500);
    let url = "postgres://postgres:s3cret@127.0.0.1:1/test";
    let target = PgTarget::from_url(url, &config).unwrap();
    let err = Manager::builder(config)
        .connect_target(&target)
        .await
        .err()
        .expect("nothing listens on port 1")
        .to_string();
    assert!(
        err.contains("postgres://postgres:***@127.0.0.1:1/test"),
        "{err}"
    );
    assert!(!err.contains("s3cret"), "{err}");
}
