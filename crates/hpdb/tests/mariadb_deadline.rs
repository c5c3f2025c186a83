//! On MariaDB the manager's deadline stops the statement on the server too
//! (`max_statement_time`, set by `connect_mysql` before each query), not
//! only the caller's wait: MariaDB's own process list is the witness.

mod common;

use std::time::Duration;

use hpdb::{Error, QueryOptions, TimeoutPhase};
use sqlx::{AssertSqlSafe, MySqlPool};
use tokio::time::Instant;

/// Statements other than the asker's own whose text contains `marker`.
async fn running(w: &MySqlPool, marker: &str) -> i64 {
    // Safe: the marker is a name the test generated.
    sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT CAST(COUNT(*) AS SIGNED) FROM information_schema.PROCESSLIST \
         WHERE INFO LIKE '%{marker}%' AND ID <> CONNECTION_ID()"
    )))
    .fetch_one(w)
    .await
    .unwrap()
}

/// Polls until `marker`'s statement is (`present`) or is not running, for
/// at most `within`; whether it got there.
async fn until_running(w: &MySqlPool, marker: &str, present: bool, within: Duration) -> bool {
    let until = Instant::now() + within;
    loop {
        if (running(w, marker).await > 0) == present {
            return true;
        }
        if Instant::now() >= until {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// `SELECT SLEEP(secs)`, marked so the process list can find it.
fn sleeper(
    marker: &str,
    secs: f64,
) -> impl for<'c> FnOnce(
    &'c mut sqlx::MySqlConnection,
) -> futures::future::BoxFuture<'c, Result<i64, sqlx::Error>>
       + Send
       + 'static {
    let sql = format!("SELECT CAST(SLEEP({secs}) AS SIGNED) AS {marker}");
    move |conn| {
        Box::pin(async move {
            // Safe: a generated marker and a number.
            sqlx::query_scalar::<_, i64>(AssertSqlSafe(sql))
                .fetch_one(conn)
                .await
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_past_its_deadline_is_gone_from_the_process_list_within_a_second() {
    let h = common::mariadb(common::config(1, 2)).await;
    let w = h.my_witness.clone().unwrap();
    let marker = testkit::unique("sleeper");
    let call = {
        let (m, q) = (h.manager.clone(), sleeper(&marker, 5.0));
        tokio::spawn(async move {
            m.execute_query(
                "sleep",
                QueryOptions::uncached().timeout(Duration::from_millis(300)),
                q,
            )
            .await
        })
    };
    // The statement reached the server (else its absence would prove nothing).
    assert!(
        until_running(&w, &marker, true, Duration::from_secs(5)).await,
        "the query never showed in the process list"
    );
    match call.await.unwrap() {
        Err(Error::Timeout {
            phase: TimeoutPhase::Execute,
            ..
        }) => {}
        other => panic!("expected the execute deadline, got {other:?}"),
    }
    // The bound the server must keep: gone within a second of the timeout
    // (without the server's own limit it would run its whole 5 s).
    assert!(
        until_running(&w, &marker, false, Duration::from_secs(1)).await,
        "the query still runs on MariaDB a second after its deadline"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_query_gets_its_own_time_left_not_the_last_ones() {
    // One connection: the second query runs where the first one's short
    // limit was set.
    let h = common::mariadb(common::config(1, 1)).await;
    let short = testkit::unique("short");
    let err = h
        .manager
        .execute_query(
            "short",
            QueryOptions::uncached().timeout(Duration::from_millis(200)),
            sleeper(&short, 5.0),
        )
        .await;
    assert!(
        matches!(err, Err(Error::Timeout { .. })),
        "expected a timeout, got {err:?}"
    );
    // Longer than the first query's limit, well inside its own deadline.
    let long = testkit::unique("long");
    let slept = h
        .manager
        .execute_query(
            "long",
            QueryOptions::uncached().timeout(Duration::from_secs(10)),
            sleeper(&long, 0.5),
        )
        .await
        .unwrap();
    assert_eq!(*slept, 0, "SLEEP ran to its end (1 would be interrupted)");
}
