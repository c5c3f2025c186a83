//! The consistency monitor, on SQLite and PostgreSQL: an entry refilled
//! after an invalidation is found fresh; a wrong value written around the
//! cache on purpose (`put_cached` of the value from before a write) is
//! found stale, logged and counted, at both delays, and left alone; a
//! key without a verifier is never checked. Nothing here is timed: the
//! tests wait for the counters with a generous deadline.

mod common;

use std::{sync::Arc, time::Duration};

use hpdb::{ConsistencyStatus, ManagerConfig, QueryOptions, Verdict};

/// Waits until `cond` holds on the monitor's figures, for at most 30 s.
async fn until(status: impl Fn() -> ConsistencyStatus, cond: impl Fn(&ConsistencyStatus) -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let s = status();
        if cond(&s) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not reached within 30 s: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every touched key checked, at 100 ms and 300 ms.
fn config() -> ManagerConfig {
    let mut c = common::config(1, 4);
    c.consistency.sample_percent = 100.0;
    c.consistency.first_delay = Duration::from_millis(100);
    c.consistency.second_delay = Some(Duration::from_millis(300));
    c
}

macro_rules! backend_suite {
    ($module:ident, $db:ty, $harness:path) => {
        mod $module {
            use super::*;
            use crate::common::Harness;

            type DB = $db;

            /// Row `id`'s `v`, cached under `row:{id}`, tagged `t`.
            async fn read(h: &Harness<DB>, id: i64) -> i64 {
                let sql = format!("SELECT v FROM {} WHERE id = {id}", h.table);
                let v = h
                    .manager
                    .execute_query(
                        format!("row:{id}"),
                        QueryOptions::default().tag("t"),
                        move |conn| {
                            // Safe: test SQL around a table name the harness generated.
                            Box::pin(
                                sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql))
                                    .fetch_one(conn),
                            )
                        },
                    )
                    .await
                    .unwrap();
                *v
            }

            /// The verifier of `row:` keys: the row's `v` read again,
            /// uncached, at low priority.
            fn watch(h: &Harness<DB>) {
                let (manager, table) = (h.manager.clone(), h.table.clone());
                // The manager held weakly: the verifier lives in it.
                let weak = manager.downgrade();
                h.manager
                    .verify_prefix("row:", move |key, cached: Arc<i64>| {
                        let (weak, table) = (weak.clone(), table.clone());
                        Box::pin(async move {
                            let manager = weak.upgrade().ok_or("the manager is gone")?;
                            let id: i64 = key.trim_start_matches("row:").parse()?;
                            let sql = format!("SELECT v FROM {table} WHERE id = {id}");
                            let options = QueryOptions::uncached().priority(hpdb::Priority::LOW);
                            let now = manager
                                .execute_query(format!("verify:{key}"), options, move |conn| {
                                    Box::pin(
                                        sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql))
                                            .fetch_one(conn),
                                    )
                                })
                                .await?;
                            Ok(if *now == *cached {
                                Verdict::Fresh
                            } else {
                                Verdict::Stale(format!("v: cached {cached}, database {now}"))
                            })
                        })
                    });
            }

            async fn set(h: &Harness<DB>, id: i64, v: i64) {
                let sql = format!("UPDATE {} SET v = {v} WHERE id = {id}", h.table);
                sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                    .execute(h.manager.pool())
                    .await
                    .unwrap();
            }

            #[tokio::test]
            async fn an_entry_refilled_after_a_write_is_found_fresh_at_both_delays() {
                let h = $harness(config()).await;
                watch(&h);
                assert_eq!(read(&h, 1).await, 10);
                set(&h, 1, 11).await;
                h.manager.invalidate_tag("t").await;
                assert_eq!(read(&h, 1).await, 11);
                let status = || h.manager.status().consistency;
                until(status, |s| s.within.iter().all(|w| w.checked >= 1)).await;
                let s = status();
                assert_eq!(s.sampled, 1);
                for w in &s.within {
                    assert_eq!((w.checked, w.stale, w.errors), (1, 0, 0), "{w:?}");
                    assert_eq!((w.nines, w.nines_at_least), (Some(0.0), true));
                }
                assert_eq!(s.last_stale, None);
            }

            #[tokio::test]
            async fn a_value_written_around_the_cache_is_found_stale_and_left_alone() {
                let h = $harness(config()).await;
                watch(&h);
                let before = read(&h, 2).await;
                set(&h, 2, 21).await;
                h.manager.invalidate("row:2").await;
                // Planted: the value from before the write, put back.
                h.manager
                    .put_cached("row:2", &QueryOptions::default().tag("t"), Arc::new(before))
                    .await;
                let status = || h.manager.status().consistency;
                until(status, |s| s.within.iter().all(|w| w.stale >= 1)).await;
                let s = status();
                for w in &s.within {
                    assert_eq!((w.checked, w.stale), (1, 1), "{w:?}");
                    assert_eq!((w.nines, w.nines_at_least), (Some(0.0), false));
                }
                assert_eq!(s.last_stale.as_deref(), Some("row:2"));
                assert_eq!(
                    h.manager.peek_cached::<i64>("row:2").await.as_deref(),
                    Some(&20),
                    "the monitor reports, it does not repair"
                );
            }

            #[tokio::test]
            async fn a_check_due_while_a_query_waits_at_the_gate_is_skipped_not_run() {
                let mut c = config();
                c.pool.min_connections = 1;
                c.pool.max_connections = 1;
                c.consistency.second_delay = None;
                let h = $harness(c).await;
                watch(&h);
                read(&h, 4).await;
                // The only connection held, and a second query queued behind it.
                let (held, release) = (
                    Arc::new(tokio::sync::Notify::new()),
                    Arc::new(tokio::sync::Semaphore::new(0)),
                );
                let (in_query, gate) = (held.clone(), release.clone());
                let holder = h.manager.clone();
                let hold = tokio::spawn(async move {
                    holder
                        .execute_query("hold", QueryOptions::uncached(), move |_conn| {
                            Box::pin(async move {
                                in_query.notify_one();
                                gate.acquire().await.unwrap().forget();
                                Ok::<_, sqlx::Error>(0i64)
                            })
                        })
                        .await
                });
                held.notified().await;
                let queued = tokio::spawn({
                    let m = h.manager.clone();
                    async move {
                        m.execute_query("queued", QueryOptions::uncached(), |_conn| {
                            Box::pin(async { Ok::<_, sqlx::Error>(1i64) })
                        })
                        .await
                    }
                });
                while h.manager.pending_requests() == 0 {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                h.manager.invalidate("row:4").await;
                let status = || h.manager.status().consistency;
                until(status, |s| s.within[0].skipped >= 1).await;
                release.add_permits(1);
                hold.await.unwrap().unwrap();
                queued.await.unwrap().unwrap();
                let s = status();
                assert_eq!((s.within[0].checked, s.within[0].skipped), (0, 1), "{s:?}");
            }

            #[tokio::test]
            async fn a_key_without_a_verifier_or_with_the_monitor_off_queues_no_check() {
                let mut off = config();
                off.consistency.sample_percent = 0.0;
                for (c, verified) in [(config(), false), (off, true)] {
                    let h = $harness(c).await;
                    if verified {
                        watch(&h);
                    }
                    read(&h, 3).await;
                    // Sampling happens at the event: nothing queued now
                    // means nothing is ever checked for it.
                    h.manager.invalidate_tag("t").await;
                    let s = h.manager.status().consistency;
                    assert_eq!((s.sampled, s.dropped, s.pending), (0, 0, 0), "{s:?}");
                }
            }
        }
    };
}

#[cfg(feature = "sqlite")]
backend_suite!(sqlite, sqlx::Sqlite, common::sqlite);
#[cfg(feature = "postgres")]
backend_suite!(postgres, sqlx::Postgres, common::postgres);
