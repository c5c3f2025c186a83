//! The manager's promises, proven against real databases: every test runs
//! once on SQLite, once on PostgreSQL (where PostgreSQL's own
//! `pg_stat_statements` and `pg_stat_activity` are asked to agree) and once
//! on MariaDB (with its statement deadline on), each suite when its
//! feature is on.

mod common;

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use hpdb::{AdviceKind, Error, Priority, QueryOptions, Source, TimeoutPhase};
use tokio::sync::{Barrier, Notify};

/// Waits until `cond` holds, for at most 5 s.
async fn until(mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not reached within 5 s"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

macro_rules! backend_suite {
    ($module:ident, $db:ty, $harness:path, $one:expr) => {
        mod $module {
            use super::*;
            use crate::common::{config, Harness};

            type DB = $db;

            /// A query of one BIGINT, 1, in this backend's SQL.
            const ONE: &str = $one;

            async fn harness(min: u32, max: u32) -> Harness<DB> {
                $harness(config(min, max)).await
            }

            /// Runs `sql` (one integer back) after holding the connection for
            /// `hold`, counting executions.
            fn scalar(
                sql: String,
                runs: &Arc<AtomicUsize>,
                hold: Duration,
            ) -> impl for<'c> FnOnce(
                &'c mut <DB as sqlx::Database>::Connection,
            ) -> futures::future::BoxFuture<'c, Result<i64, sqlx::Error>>
                   + Send
                   + 'static {
                let runs = runs.clone();
                move |conn| {
                    Box::pin(async move {
                        runs.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(hold).await;
                        // Safe: test SQL around a table name the harness generated.
                        sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql))
                            .fetch_one(conn)
                            .await
                    })
                }
            }

            /// `SELECT count(*) FROM table`, counting executions.
            fn count_rows(
                table: &str,
                runs: &Arc<AtomicUsize>,
                hold: Duration,
            ) -> impl for<'c> FnOnce(
                &'c mut <DB as sqlx::Database>::Connection,
            ) -> futures::future::BoxFuture<'c, Result<i64, sqlx::Error>>
                   + Send
                   + 'static {
                scalar(format!("SELECT count(*) FROM {table}"), runs, hold)
            }

            /// Takes one connection and keeps it until `release` is notified.
            async fn hold_a_connection(
                h: &Harness<DB>,
                release: &Arc<Notify>,
            ) -> tokio::task::JoinHandle<Result<Arc<i64>, Error>> {
                let (m, r) = (h.manager.clone(), release.clone());
                let holder = tokio::spawn(async move {
                    m.execute_query("hold", QueryOptions::uncached(), move |conn| {
                        Box::pin(async move {
                            r.notified().await;
                            sqlx::query_scalar::<_, i64>(ONE).fetch_one(conn).await
                        })
                    })
                    .await
                });
                until(|| h.manager.admitted() == 1).await;
                holder
            }

            /// Where a query's closure ran: the name of its thread.
            async fn thread_of_query(h: &Harness<DB>) -> Option<String> {
                let value = h
                    .manager
                    .execute_query("where_it_runs", QueryOptions::uncached(), move |conn| {
                        Box::pin(async move {
                            let here = std::thread::current().name().map(str::to_owned);
                            sqlx::query_scalar::<_, i64>(ONE)
                                .fetch_one(conn)
                                .await
                                .map(|_| here)
                        })
                    })
                    .await
                    .unwrap();
                (*value).clone()
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn queries_run_on_the_io_threads_unless_told_otherwise() {
                let h = harness(1, 2).await;
                assert_eq!(thread_of_query(&h).await.as_deref(), Some("hpdb-io"));
                let mut off = config(1, 2);
                off.pool.io_threads = false;
                let h = $harness(off).await;
                assert_ne!(thread_of_query(&h).await.as_deref(), Some("hpdb-io"));
                assert_eq!(h.manager.status().database_queries, 1);
            }

            /// Every call's future is as big as its largest state: the miss
            /// path (admission, the connection's task) must stay out of
            /// it, or each call, hits included, moves tens of kilobytes
            /// (it was 25 KB on PostgreSQL, a hit's time doubled).
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_calls_future_is_small() {
                let h = harness(1, 2).await;
                let runs = Arc::new(AtomicUsize::new(0));
                let call = h.manager.execute_query(
                    "future_size",
                    QueryOptions::default(),
                    count_rows(&h.table, &runs, Duration::ZERO),
                );
                let size = std::mem::size_of_val(&call);
                assert!(size <= 4096, "a call's future is {size} bytes");
                assert!(*call.await.unwrap() >= 0);
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn one_execution_for_1000_concurrent_callers() {
                let h = harness(2, 10).await;
                let runs = Arc::new(AtomicUsize::new(0));
                let barrier = Arc::new(Barrier::new(1000));
                let calls_before = h.pg_calls().await;
                let tasks: Vec<_> = (0..1000)
                    .map(|_| {
                        let (m, b, q) = (
                            h.manager.clone(),
                            barrier.clone(),
                            count_rows(&h.table, &runs, Duration::from_millis(200)),
                        );
                        tokio::spawn(async move {
                            b.wait().await;
                            m.execute_query_traced("count_all", QueryOptions::uncached(), q)
                                .await
                        })
                    })
                    .collect();
                let mut sources = std::collections::HashMap::new();
                for t in tasks {
                    let r = t.await.unwrap().unwrap();
                    assert_eq!(*r.value, 100);
                    *sources.entry(format!("{:?}", r.source)).or_insert(0) += 1;
                }
                assert_eq!(runs.load(Ordering::SeqCst), 1, "sources: {sources:?}");
                assert_eq!(sources.get("Database"), Some(&1));
                assert_eq!(sources.get("Joined"), Some(&999));
                let s = h.manager.status();
                assert_eq!(
                    (s.database_queries, s.single_flight_joins, s.total_queries),
                    (1, 999, 1000)
                );
                if let (Some(before), Some(after)) = (calls_before, h.pg_calls().await) {
                    assert_eq!(
                        after - before,
                        1,
                        "pg_stat_statements counted the executions"
                    );
                }
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_value_read_before_an_invalidation_of_its_tag_is_not_cached() {
                let h = harness(1, 2).await;
                let opts = QueryOptions::default().tag("card:7");
                // Read, then its tag invalidated, then stored: refused.
                let before = h.manager.read_mark();
                h.manager.invalidate_tag("card:7").await;
                h.manager
                    .put_cached_read_at(before, "c:7", &opts, Arc::new(70_i64))
                    .await;
                assert_eq!(h.manager.peek_cached::<i64>("c:7").await, None);
                // Read after the invalidation: stored.
                let after = h.manager.read_mark();
                h.manager
                    .put_cached_read_at(after, "c:7", &opts, Arc::new(71_i64))
                    .await;
                assert_eq!(
                    h.manager.peek_cached::<i64>("c:7").await.as_deref(),
                    Some(&71)
                );
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn saturated_pool_serves_by_priority_then_fifo() {
                let h = harness(1, 1).await;
                let release = Arc::new(Notify::new());
                let order = Arc::new(parking_lot::Mutex::new(Vec::new()));
                let holder = hold_a_connection(&h, &release).await;
                let priorities = [
                    Priority::LOW,
                    Priority::HIGH,
                    Priority::NORMAL,
                    Priority::HIGH,
                    Priority::LOW,
                    Priority::CRITICAL,
                ];
                let mut waiters = Vec::new();
                for (i, p) in priorities.into_iter().enumerate() {
                    let (m, o) = (h.manager.clone(), order.clone());
                    waiters.push(tokio::spawn(async move {
                        m.execute_query(
                            format!("q{i}"),
                            QueryOptions::uncached().priority(p),
                            move |conn| {
                                Box::pin(async move {
                                    o.lock().push(i);
                                    sqlx::query_scalar::<_, i64>(ONE).fetch_one(conn).await
                                })
                            },
                        )
                        .await
                    }));
                    until(|| h.manager.status().pending_requests == i as u64 + 1).await;
                }
                assert!(h
                    .manager
                    .advice()
                    .iter()
                    .any(|a| a.kind == AdviceKind::PoolExhausted));
                release.notify_one();
                holder.await.unwrap().unwrap();
                for w in waiters {
                    w.await.unwrap().unwrap();
                }
                assert_eq!(*order.lock(), vec![5, 1, 3, 2, 0, 4]);
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn timeouts_and_dropped_futures_release_everything() {
                let h = harness(1, 2).await;
                let runs = Arc::new(AtomicUsize::new(0));
                let mut timed = Vec::new();
                for i in 0..4 {
                    let (m, q) = (
                        h.manager.clone(),
                        count_rows(&h.table, &runs, Duration::from_secs(2)),
                    );
                    timed.push(tokio::spawn(async move {
                        m.execute_query(
                            format!("slow{i}"),
                            QueryOptions::uncached().timeout(Duration::from_millis(150)),
                            q,
                        )
                        .await
                    }));
                }
                let mut dropped = Vec::new();
                for i in 0..4 {
                    let (m, q) = (
                        h.manager.clone(),
                        count_rows(&h.table, &runs, Duration::from_secs(2)),
                    );
                    dropped.push(tokio::spawn(async move {
                        m.execute_query(format!("gone{i}"), QueryOptions::uncached(), q)
                            .await
                    }));
                }
                // An outer timeout really ends the wait, too.
                let outer = tokio::time::timeout(
                    Duration::from_millis(100),
                    h.manager.execute_query(
                        "outer",
                        QueryOptions::uncached(),
                        count_rows(&h.table, &runs, Duration::from_secs(2)),
                    ),
                )
                .await;
                assert!(outer.is_err());
                for t in &dropped {
                    t.abort();
                }
                let mut phases = Vec::new();
                for t in timed {
                    match t.await.unwrap() {
                        Err(Error::Timeout { phase, .. }) => phases.push(phase),
                        other => panic!("expected a timeout, got {other:?}"),
                    }
                }
                // Queued behind the slow ones, or admitted but out of time before
                // the returning connection was handed over, or mid-query.
                assert!(
                    phases.iter().all(|p| *p != TimeoutPhase::Joined),
                    "{phases:?}"
                );
                assert!(phases.contains(&TimeoutPhase::Execute), "{phases:?}");
                for t in dropped {
                    assert!(t.await.unwrap_err().is_cancelled());
                }
                until(|| h.manager.admitted() == 0).await;
                let m = h.manager.clone();
                until(move || {
                    let s = m.status();
                    s.pending_requests == 0 && s.active_connections == 0
                })
                .await;
                if let Some(w) = &h.witness {
                    let app = h.app.clone();
                    let settled = testkit::pg::eventually(Duration::from_secs(5), || {
                        let (w, app) = (w.clone(), app.clone());
                        async move {
                            let (_, active) = testkit::pg::backends(&w, &app).await;
                            active == 0
                        }
                    })
                    .await;
                    assert!(settled, "pg_stat_activity still shows active backends");
                    let (all, _) = h.pg_backends().await.unwrap();
                    assert!(all <= 2, "{all} backends for a pool of 2");
                    let s = h.manager.status();
                    assert_eq!(
                        all,
                        i64::from(s.active_connections + s.idle_connections),
                        "status agrees with pg_stat_activity"
                    );
                }
                // The pool still works.
                let n = h
                    .manager
                    .execute_query(
                        "after",
                        QueryOptions::uncached(),
                        count_rows(&h.table, &runs, Duration::ZERO),
                    )
                    .await
                    .unwrap();
                assert_eq!(*n, 100);
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_cached_value_is_served_until_its_ttl_or_an_invalidation() {
                let h = harness(1, 2).await;
                let runs = Arc::new(AtomicUsize::new(0));
                // The TTL alone: no entry served past it while it is
                // refreshed (that is tests/refresh.rs).
                let opts = QueryOptions::default()
                    .ttl(Duration::from_millis(300))
                    .refresh_ahead(false)
                    .stale_while_revalidate(false);
                let get = || {
                    h.manager.execute_query_traced(
                        "rows",
                        opts.clone(),
                        count_rows(&h.table, &runs, Duration::ZERO),
                    )
                };
                assert_eq!(get().await.unwrap().source, Source::Database);
                assert_eq!(get().await.unwrap().source, Source::Cache);
                assert_eq!(runs.load(Ordering::SeqCst), 1);
                tokio::time::sleep(Duration::from_millis(350)).await;
                assert_eq!(
                    get().await.unwrap().source,
                    Source::Database,
                    "fetched again after the TTL"
                );
                assert_eq!(get().await.unwrap().source, Source::Cache);
                h.manager.invalidate("rows").await;
                assert_eq!(
                    get().await.unwrap().source,
                    Source::Database,
                    "fetched again after invalidation"
                );
                assert_eq!(runs.load(Ordering::SeqCst), 3);
                let s = h.manager.status();
                assert_eq!((s.cache_hits, s.cache_misses), (2, 3));
                assert_eq!(s.cache_hit_rate, 40.0);
                if let Some(calls) = h.pg_calls().await {
                    assert_eq!(calls, 3);
                }
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_refresh_stores_without_counting_a_miss() {
                let h = harness(1, 2).await;
                let runs = Arc::new(AtomicUsize::new(0));
                let warm = h
                    .manager
                    .execute_query_traced(
                        "warm",
                        QueryOptions::default().refresh(),
                        count_rows(&h.table, &runs, Duration::ZERO),
                    )
                    .await
                    .unwrap();
                assert_eq!(warm.source, Source::Database);
                let s = h.manager.status();
                assert_eq!(
                    (s.cache_hits, s.cache_misses),
                    (0, 0),
                    "warming is not demand"
                );
                let hit = h
                    .manager
                    .execute_query_traced(
                        "warm",
                        QueryOptions::default(),
                        count_rows(&h.table, &runs, Duration::ZERO),
                    )
                    .await
                    .unwrap();
                assert_eq!(hit.source, Source::Cache);
                assert_eq!(h.manager.status().cache_hit_rate, 100.0);
                assert_eq!(runs.load(Ordering::SeqCst), 1);
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn tag_invalidation_drops_every_tagged_entry_and_no_other() {
                let h = harness(1, 2).await;
                let runs = Arc::new(AtomicUsize::new(0));
                let tagged = QueryOptions::default().tag("user:7");
                for key in ["profile:7", "posts:7", "other"] {
                    let opts = if key == "other" {
                        QueryOptions::default().tag("user:8")
                    } else {
                        tagged.clone()
                    };
                    h.manager
                        .execute_query(key, opts, count_rows(&h.table, &runs, Duration::ZERO))
                        .await
                        .unwrap();
                }
                assert_eq!(runs.load(Ordering::SeqCst), 3);
                h.manager.invalidate_tag("user:7").await;
                for (key, expect) in [
                    ("profile:7", Source::Database),
                    ("posts:7", Source::Database),
                    ("other", Source::Cache),
                ] {
                    let opts = if key == "other" {
                        QueryOptions::default().tag("user:8")
                    } else {
                        tagged.clone()
                    };
                    let r = h
                        .manager
                        .execute_query_traced(
                            key,
                            opts,
                            count_rows(&h.table, &runs, Duration::ZERO),
                        )
                        .await
                        .unwrap();
                    assert_eq!(r.source, expect, "{key}");
                }
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn no_stale_read_after_an_invalidation_during_a_fetch() {
                let h = harness(1, 3).await;
                let read = format!("SELECT v FROM {} WHERE id = 1", h.table);
                let opts = QueryOptions::default().tag("row:1");
                let (fetched, resume) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
                let slow = {
                    let (m, sql, o, f, r) = (
                        h.manager.clone(),
                        read.clone(),
                        opts.clone(),
                        fetched.clone(),
                        resume.clone(),
                    );
                    tokio::spawn(async move {
                        m.execute_query("row1", o, move |conn| {
                            Box::pin(async move {
                                // Safe: test SQL around a generated table name.
                                let v = sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql))
                                    .fetch_one(conn)
                                    .await;
                                f.notify_one();
                                r.notified().await;
                                v
                            })
                        })
                        .await
                    })
                };
                fetched.notified().await;
                // The write, then its invalidation, while the old read is in flight.
                // Safe: test SQL around a generated table name.
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "UPDATE {} SET v = 999 WHERE id = 1",
                    h.table
                )))
                .execute(h.manager.pool())
                .await
                .unwrap();
                h.manager.invalidate_tag("row:1").await;
                let runs = Arc::new(AtomicUsize::new(0));
                let fresh = |sql: String| scalar(sql, &runs, Duration::ZERO);
                let after = h
                    .manager
                    .execute_query_traced("row1", opts.clone(), fresh(read.clone()))
                    .await
                    .unwrap();
                assert_eq!(
                    (*after.value, after.source),
                    (999, Source::Database),
                    "did not join the pre-write flight"
                );
                resume.notify_one();
                assert_eq!(
                    *slow.await.unwrap().unwrap(),
                    10,
                    "the overlapping call may see the old value"
                );
                let later = h
                    .manager
                    .execute_query_traced("row1", opts, fresh(read))
                    .await
                    .unwrap();
                assert_eq!(
                    (*later.value, later.source),
                    (999, Source::Cache),
                    "the pre-write result was not cached"
                );
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn errors_are_shared_with_joiners_but_never_cached() {
                let h = harness(1, 2).await;
                let runs = Arc::new(AtomicUsize::new(0));
                let bad = |runs: Arc<AtomicUsize>| {
                    scalar("SELEC 1".into(), &runs, Duration::from_millis(100))
                };
                let tasks: Vec<_> = (0..50)
                    .map(|_| {
                        let (m, q) = (h.manager.clone(), bad(runs.clone()));
                        tokio::spawn(async move {
                            m.execute_query("broken", QueryOptions::default(), q).await
                        })
                    })
                    .collect();
                for t in tasks {
                    assert!(matches!(t.await.unwrap(), Err(Error::Query { .. })));
                }
                assert_eq!(runs.load(Ordering::SeqCst), 1);
                assert!(h
                    .manager
                    .execute_query("broken", QueryOptions::default(), bad(runs.clone()))
                    .await
                    .is_err());
                assert_eq!(runs.load(Ordering::SeqCst), 2, "the error was not cached");
                assert_eq!(
                    h.manager.status().circuit,
                    hpdb::CircuitState::Closed,
                    "a bad query is not an outage"
                );
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn finishing_runs_off_the_connection_and_its_errors_are_not_cached() {
                let h = harness(1, 1).await;
                let runs = Arc::new(AtomicUsize::new(0));
                let m = h.manager.clone();
                let r = h
                    .manager
                    .execute_query_then(
                        "finished",
                        QueryOptions::default(),
                        count_rows(&h.table, &runs, Duration::ZERO),
                        move |n| {
                            // The connection has been given back (sqlx
                            // files it as idle in a task of its own) and
                            // the one admission slot handed on.
                            assert_eq!(m.admitted(), 0, "the slot is still held");
                            Ok(format!("{n} rows"))
                        },
                    )
                    .await
                    .unwrap();
                assert_eq!((r.value.as_str(), r.source), ("100 rows", Source::Database));
                let again = h
                    .manager
                    .execute_query_then(
                        "finished",
                        QueryOptions::default(),
                        count_rows(&h.table, &runs, Duration::ZERO),
                        |_| -> Result<String, sqlx::Error> {
                            unreachable!("a hit finishes nothing")
                        },
                    )
                    .await
                    .unwrap();
                assert_eq!(again.source, Source::Cache, "the finished value was cached");
                for _ in 0..2 {
                    let err = h
                        .manager
                        .execute_query_then(
                            "unfinished",
                            QueryOptions::default(),
                            count_rows(&h.table, &runs, Duration::ZERO),
                            |_| Err::<String, _>(sqlx::Error::Protocol("cannot finish".into())),
                        )
                        .await;
                    assert!(matches!(err, Err(Error::Query { .. })));
                }
                assert_eq!(
                    runs.load(Ordering::SeqCst),
                    3,
                    "the hit ran nothing; the failed finish was not cached"
                );
            }

            fn loader(h: &Harness<DB>, runs: &Arc<AtomicUsize>) -> hpdb::BatchLoader<DB, i64, i64> {
                let (table, runs) = (h.table.clone(), runs.clone());
                hpdb::BatchLoader::new(&h.manager, "rows_by_id", move |conn, ids: Vec<i64>| {
                    let sql = format!(
                        "SELECT id, v FROM {table} WHERE id IN ({})",
                        ids.iter().map(i64::to_string).collect::<Vec<_>>().join(",")
                    );
                    runs.fetch_add(1, Ordering::SeqCst);
                    Box::pin(async move {
                        // Safe: a generated table name and integer ids.
                        let rows: Vec<(i64, i64)> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
                            .fetch_all(conn)
                            .await?;
                        Ok(rows.into_iter().collect())
                    })
                })
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn the_keyed_loader_runs_one_query_for_many_keys() {
                let h = harness(1, 2).await;
                let runs = Arc::new(AtomicUsize::new(0));
                let l = loader(&h, &runs);
                let mut keys: Vec<i64> = (1..=40).collect();
                keys.push(4242);
                let rows = l.load_many(&keys).await.unwrap();
                assert_eq!(runs.load(Ordering::SeqCst), 1);
                assert_eq!(rows[0].as_deref(), Some(&10));
                assert_eq!(rows[39].as_deref(), Some(&400));
                assert_eq!(rows[40], None, "a missing key is `not found`, not an error");
                let s = h.manager.status();
                assert_eq!((s.batches, s.batched_keys), (1, 41));
                if let Some(calls) = h.pg_calls().await {
                    assert_eq!(calls, 1, "pg_stat_statements saw one IN query");
                }
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn concurrent_loads_gather_into_one_batch_while_the_pool_is_busy() {
                let mut c = config(1, 1);
                c.batch.window = Duration::from_secs(5);
                let h = $harness(c).await;
                let runs = Arc::new(AtomicUsize::new(0));
                let l = loader(&h, &runs);
                let release = Arc::new(Notify::new());
                let holder = hold_a_connection(&h, &release).await;
                let callers: Vec<_> = (1..=40i64)
                    .map(|k| {
                        let l = l.clone();
                        tokio::spawn(async move { l.load(k).await })
                    })
                    .collect();
                until(|| h.manager.status().pending_requests == 1).await;
                tokio::time::sleep(Duration::from_millis(100)).await;
                release.notify_one();
                holder.await.unwrap().unwrap();
                for (k, c) in (1..=40i64).zip(callers) {
                    assert_eq!(c.await.unwrap().unwrap().as_deref(), Some(&(k * 10)));
                }
                assert_eq!(runs.load(Ordering::SeqCst), 1);
                let s = h.manager.status();
                assert_eq!((s.batches, s.batched_keys), (1, 40));
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn the_leak_detector_reports_the_key_holding_a_connection() {
                let mut c = config(1, 2);
                c.leak.threshold = Duration::from_millis(100);
                let h = $harness(c).await;
                let runs = Arc::new(AtomicUsize::new(0));
                let m = h.manager.clone();
                let q = count_rows(&h.table, &runs, Duration::from_millis(600));
                let slow = tokio::spawn(async move {
                    m.execute_query("monthly_report", QueryOptions::uncached(), q)
                        .await
                });
                let m = h.manager.clone();
                until(move || m.status().leaks_detected == 1).await;
                let s = h.manager.status();
                assert_eq!(s.suspected_leaks.len(), 1);
                assert_eq!(s.suspected_leaks[0].key, "monthly_report");
                assert!(h
                    .manager
                    .advice()
                    .iter()
                    .any(|a| a.kind == AdviceKind::ConnectionLeak
                        && a.message.contains("monthly_report")));
                slow.await.unwrap().unwrap();
                let s = h.manager.status();
                assert!(s.suspected_leaks.is_empty());
                assert_eq!(s.leaks_detected, 1, "reported once");
                // A quick query is never reported.
                h.manager
                    .execute_query(
                        "quick",
                        QueryOptions::uncached(),
                        count_rows(&h.table, &runs, Duration::ZERO),
                    )
                    .await
                    .unwrap();
                tokio::time::sleep(Duration::from_millis(200)).await;
                assert_eq!(h.manager.status().leaks_detected, 1);
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn health_check_keeps_the_minimum_open_and_resize_bounds_admission() {
                let h = harness(2, 4).await;
                let r = h.manager.health_check().await;
                assert!(r.database_reachable);
                assert_eq!(r.broken_closed, 0);
                assert!(r.pool_size >= 2, "{r:?}");
                if let Some((all, _)) = h.pg_backends().await {
                    assert_eq!(
                        all,
                        i64::from(r.pool_size),
                        "pg_stat_activity agrees with the pool size"
                    );
                }
                h.manager.resize(2).unwrap();
                assert_eq!(h.manager.status().max_connections, 2);
                assert!(h.manager.resize(5).is_err(), "above the ceiling");
                assert!(h.manager.resize(1).is_err(), "below the minimum");
                let runs = Arc::new(AtomicUsize::new(0));
                let tasks: Vec<_> = (0..6)
                    .map(|i| {
                        let (m, q) = (
                            h.manager.clone(),
                            count_rows(&h.table, &runs, Duration::from_millis(50)),
                        );
                        tokio::spawn(async move {
                            m.execute_query(format!("k{i}"), QueryOptions::uncached(), q)
                                .await
                        })
                    })
                    .collect();
                let mut peak = 0;
                while !tasks.iter().all(|t| t.is_finished()) {
                    peak = peak.max(h.manager.admitted());
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                assert!(peak <= 2, "admitted {peak} with a limit of 2");
                assert_eq!(runs.load(Ordering::SeqCst), 6);
            }
        }
    };
}

#[cfg(feature = "sqlite")]
backend_suite!(
    sqlite,
    sqlx::Sqlite,
    common::sqlite,
    "SELECT CAST(1 AS BIGINT)"
);
#[cfg(feature = "postgres")]
backend_suite!(
    postgres,
    sqlx::Postgres,
    common::postgres,
    "SELECT CAST(1 AS BIGINT)"
);
// MySQL and MariaDB cast to BIGINT as SIGNED.
#[cfg(feature = "mysql")]
backend_suite!(
    mariadb,
    sqlx::MySql,
    common::mariadb,
    "SELECT CAST(1 AS SIGNED)"
);
