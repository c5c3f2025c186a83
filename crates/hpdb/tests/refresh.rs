//! A TTL never puts a query in a reader's path: refresh-ahead and
//! stale-while-revalidate, on SQLite, PostgreSQL and MariaDB (where PostgreSQL's
//! own `pg_stat_statements` counts the statements). Nothing here is timed
//! for speed: the tests count who ran a query and what each reader was
//! served.

mod common;

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use hpdb::{ManagerConfig, QueryOptions, Source};
use tokio::sync::{Barrier, Notify, Semaphore};

/// The entries' TTL in these tests: long enough that a refreshed entry is
/// still fresh at the next read on a saturated machine (100 ms was not:
/// a reader scheduled late found it expired again).
const TTL: Duration = Duration::from_secs(1);
/// A wait after which an entry stored before it has expired.
const PAST_TTL: Duration = Duration::from_millis(1_050);

/// Waits until `cond` holds, for at most 10 s.
async fn until(mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not reached within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// The test configuration with the refresh knobs given.
fn config(ahead_percent: u32, grace: Duration) -> ManagerConfig {
    let mut c = common::config(1, 4);
    c.cache.refresh_ahead_percent = ahead_percent;
    c.cache.revalidate_grace = grace;
    c
}

macro_rules! backend_suite {
    ($module:ident, $db:ty, $harness:path) => {
        mod $module {
            use super::*;
            use crate::common::Harness;

            type DB = $db;

            /// Reads row 1's `v`, counting executions; each execution
            /// takes a permit of `gate` first (closed: the query waits)
            /// after reading, so a held query has already read its value.
            fn read_v(
                h: &Harness<DB>,
                runs: &Arc<AtomicUsize>,
                gate: Option<(Arc<Semaphore>, Arc<Notify>)>,
            ) -> impl for<'c> FnOnce(
                &'c mut <DB as sqlx::Database>::Connection,
            ) -> futures::future::BoxFuture<'c, Result<i64, sqlx::Error>>
                   + Send
                   + 'static {
                read_v_of(&h.table, runs, gate)
            }

            /// [`read_v`] of a table by name (for a task that cannot
            /// borrow the harness).
            fn read_v_of(
                table: &str,
                runs: &Arc<AtomicUsize>,
                gate: Option<(Arc<Semaphore>, Arc<Notify>)>,
            ) -> impl for<'c> FnOnce(
                &'c mut <DB as sqlx::Database>::Connection,
            ) -> futures::future::BoxFuture<'c, Result<i64, sqlx::Error>>
                   + Send
                   + 'static {
                let runs = runs.clone();
                let sql = format!("SELECT v FROM {table} WHERE id = 1");
                move |conn| {
                    Box::pin(async move {
                        runs.fetch_add(1, Ordering::SeqCst);
                        // Safe: test SQL around a table name the harness generated.
                        let v = sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql))
                            .fetch_one(conn)
                            .await?;
                        if let Some((gate, reached)) = gate {
                            reached.notify_one();
                            gate.acquire().await.unwrap().forget();
                        }
                        Ok(v)
                    })
                }
            }

            /// Sets row 1's `v` behind the manager's back (no invalidation:
            /// only the TTL can bring it in).
            async fn set_v(h: &Harness<DB>, v: i64) {
                let sql = format!("UPDATE {} SET v = {v} WHERE id = 1", h.table);
                // Safe: test SQL around a table name the harness generated.
                sqlx::query(sqlx::AssertSqlSafe(sql))
                    .execute(h.manager.pool())
                    .await
                    .unwrap();
            }

            /// Over many TTLs, four readers read one hot key without pause:
            /// none is ever answered by the database after the first fill.
            /// The key is refreshed behind them, once per TTL or so (not
            /// once per reader), mostly before it expires.
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn an_expiring_hot_key_is_refreshed_before_any_reader_misses() {
                let h = $harness(config(50, Duration::from_secs(30))).await;
                let ttl = Duration::from_millis(400);
                let opts = QueryOptions::default().ttl(ttl).tag("row:1");
                let runs = Arc::new(AtomicUsize::new(0));
                let calls_before = h.pg_calls().await;
                let first = h
                    .manager
                    .execute_query_traced("hot", opts.clone(), read_v(&h, &runs, None))
                    .await
                    .unwrap();
                assert_eq!(first.source, Source::Database);
                let started = tokio::time::Instant::now();
                let periods = 8;
                let until_time = started + ttl * periods;
                let reader = || async {
                    let mut sources = Vec::new();
                    while tokio::time::Instant::now() < until_time {
                        let r = h
                            .manager
                            .execute_query_traced("hot", opts.clone(), read_v(&h, &runs, None))
                            .await;
                        sources.push(r.unwrap().source);
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                    sources
                };
                let readers: Vec<_> = (0..4).map(|_| reader()).collect();
                let sources: Vec<Source> = futures::future::join_all(readers)
                    .await
                    .into_iter()
                    .flatten()
                    .collect();
                let database = sources.iter().filter(|s| **s == Source::Database).count();
                assert_eq!(database, 0, "a reader waited for a query: {sources:?}");
                assert!(sources.len() > 100, "{} reads", sources.len());
                // Let a refresh still running finish.
                until(|| h.manager.status().refresh.running == 0).await;
                let s = h.manager.status();
                let refreshes = runs.load(Ordering::SeqCst) - 1;
                assert_eq!(
                    (s.refresh.ahead + s.refresh.revalidations) as usize,
                    refreshes,
                    "{:?}",
                    s.refresh
                );
                assert!(
                    refreshes >= (periods as usize) / 2 && refreshes <= 2 * periods as usize + 1,
                    "{refreshes} refreshes over {periods} TTLs: {:?}",
                    s.refresh
                );
                assert!(s.refresh.ahead >= 1, "{:?}", s.refresh);
                if let (Some(before), Some(after)) = (calls_before, h.pg_calls().await) {
                    assert_eq!(
                        (after - before) as usize,
                        refreshes + 1,
                        "PostgreSQL counts one statement per refresh, none per reader"
                    );
                }
            }

            /// A write to an entry past its TTL but within the grace updates
            /// it in place, as it would a fresh one: the next read is
            /// served the written value from the cache (while one refresh
            /// runs behind it), not sent to the database because the write
            /// dropped an entry it could not update.
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_write_updates_an_entry_within_the_grace_in_place() {
                // No refresh-ahead, and refreshes held at the gate: the
                // read below must be the cache's.
                let h = $harness(config(0, Duration::from_secs(30))).await;
                let opts = QueryOptions::default().ttl(TTL).tag("row:1");
                let runs = Arc::new(AtomicUsize::new(0));
                let v = h
                    .manager
                    .execute_query("row", opts.clone(), read_v(&h, &runs, None))
                    .await
                    .unwrap();
                assert_eq!(*v, 10);
                tokio::time::sleep(PAST_TTL).await;
                let before = h
                    .manager
                    .peek_versioned::<i64>("row")
                    .await
                    .expect("an entry within the grace can be updated");
                assert_eq!(before.ttl_left, Duration::ZERO);
                set_v(&h, 11).await;
                h.manager
                    .update_tag(
                        "row:1",
                        &opts,
                        vec![(Arc::from("row"), before, Arc::new(11))],
                    )
                    .await;
                let (gate, reached) = (Arc::new(Semaphore::new(0)), Arc::new(Notify::new()));
                let r = h
                    .manager
                    .execute_query_traced(
                        "row",
                        opts.clone(),
                        read_v(&h, &runs, Some((gate.clone(), reached.clone()))),
                    )
                    .await
                    .unwrap();
                assert_eq!((*r.value, r.source), (11, Source::Revalidating));
                // The refresh counts its run when it starts, maybe before
                // this line: wait for it to reach its gate, then count.
                reached.notified().await;
                assert_eq!(
                    runs.load(Ordering::SeqCst),
                    2,
                    "no query in the reader's path (the fill and the held refresh)"
                );
                gate.add_permits(1);
                until(|| h.manager.status().refresh.running == 0).await;
            }

            /// Past its TTL, 100 readers at once are answered with the
            /// entry at once while ONE refresh runs (held here until they
            /// are all answered); afterwards they read the refreshed value.
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn reads_after_expiry_are_served_while_one_refresh_runs() {
                let h = $harness(config(0, Duration::from_secs(30))).await;
                let opts = QueryOptions::default().ttl(TTL).tag("row:1");
                let runs = Arc::new(AtomicUsize::new(0));
                let calls_before = h.pg_calls().await;
                let v = h
                    .manager
                    .execute_query("row", opts.clone(), read_v(&h, &runs, None))
                    .await
                    .unwrap();
                assert_eq!(*v, 10);
                set_v(&h, 11).await;
                tokio::time::sleep(PAST_TTL).await;
                let (gate, reached) = (Arc::new(Semaphore::new(0)), Arc::new(Notify::new()));
                let barrier = Arc::new(Barrier::new(100));
                let readers: Vec<_> = (0..100)
                    .map(|_| {
                        let (m, o, b) = (h.manager.clone(), opts.clone(), barrier.clone());
                        let q = read_v(&h, &runs, Some((gate.clone(), reached.clone())));
                        tokio::spawn(async move {
                            b.wait().await;
                            m.execute_query_traced("row", o, q).await.unwrap()
                        })
                    })
                    .collect();
                for r in futures::future::join_all(readers).await {
                    let r = r.unwrap();
                    assert_eq!((*r.value, r.source), (10, Source::Revalidating));
                }
                reached.notified().await;
                let s = h.manager.status();
                assert_eq!(
                    runs.load(Ordering::SeqCst),
                    2,
                    "one refresh for 100 readers"
                );
                assert_eq!(s.refresh.running, 1);
                assert_eq!(s.refresh.revalidations, 1);
                assert_eq!(s.refresh.served_while_refreshing, 100);
                gate.add_permits(1);
                until(|| h.manager.status().refresh.running == 0).await;
                let r = h
                    .manager
                    .execute_query_traced("row", opts.clone(), read_v(&h, &runs, None))
                    .await
                    .unwrap();
                assert_eq!(
                    (*r.value, r.source),
                    (11, Source::Cache),
                    "the refreshed value"
                );
                assert_eq!(runs.load(Ordering::SeqCst), 2);
                assert_eq!(h.manager.status().refresh.wasted, 0);
                if let (Some(before), Some(after)) = (calls_before, h.pg_calls().await) {
                    assert_eq!(
                        after - before,
                        2,
                        "PostgreSQL counts the fill and one refresh"
                    );
                }
            }

            /// An entry an invalidation has passed is never served within
            /// the grace: neither one invalidated after it expired, nor one
            /// invalidated while its refresh runs (whose result, fetched
            /// before the write, is then discarded and counted as wasted).
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn an_invalidated_entry_is_never_served_while_revalidating() {
                let h = $harness(config(0, Duration::from_secs(30))).await;
                let opts = QueryOptions::default().ttl(TTL).tag("row:1");
                let runs = Arc::new(AtomicUsize::new(0));
                let read = |gate| {
                    h.manager
                        .execute_query_traced("row", opts.clone(), read_v(&h, &runs, gate))
                };
                assert_eq!(*read(None).await.unwrap().value, 10);
                // Expired, then written and invalidated: a miss, the new value.
                tokio::time::sleep(PAST_TTL).await;
                set_v(&h, 20).await;
                h.manager.invalidate_tag("row:1").await;
                let r = read(None).await.unwrap();
                assert_eq!((*r.value, r.source), (20, Source::Database));
                // Expired again; a read starts a refresh, which reads the
                // row and is held before it returns.
                tokio::time::sleep(PAST_TTL).await;
                let (gate, reached) = (Arc::new(Semaphore::new(0)), Arc::new(Notify::new()));
                let r = read(Some((gate.clone(), reached.clone()))).await.unwrap();
                assert_eq!((*r.value, r.source), (20, Source::Revalidating));
                reached.notified().await;
                // The write lands while the refresh holds its old read.
                set_v(&h, 30).await;
                h.manager.invalidate_tag("row:1").await;
                let r = read(None).await.unwrap();
                assert_eq!(
                    (*r.value, r.source),
                    (30, Source::Database),
                    "nothing invalidated is served within the grace"
                );
                gate.add_permits(1);
                until(|| h.manager.status().refresh.running == 0).await;
                let r = read(None).await.unwrap();
                assert_eq!(
                    (*r.value, r.source),
                    (30, Source::Cache),
                    "the refresh's older result was not stored"
                );
                let s = h.manager.status();
                assert_eq!(
                    (s.refresh.revalidations, s.refresh.wasted),
                    (1, 1),
                    "{:?}",
                    s.refresh
                );
                assert_eq!(runs.load(Ordering::SeqCst), 4);
            }

            /// With every connection taken and a query waiting at the gate,
            /// an expired entry is still served, and no refresh starts
            /// (counted as skipped); a later read refreshes it.
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn no_refresh_starts_while_the_pool_is_saturated() {
                let mut c = config(0, Duration::from_secs(30));
                c.pool.max_connections = 1;
                let h = $harness(c).await;
                let opts = QueryOptions::default().ttl(TTL);
                let runs = Arc::new(AtomicUsize::new(0));
                h.manager
                    .execute_query("row", opts.clone(), read_v(&h, &runs, None))
                    .await
                    .unwrap();
                tokio::time::sleep(PAST_TTL).await;
                let (gate, reached) = (Arc::new(Semaphore::new(0)), Arc::new(Notify::new()));
                let holder = {
                    let (m, q) = (
                        h.manager.clone(),
                        read_v(&h, &runs, Some((gate.clone(), reached.clone()))),
                    );
                    tokio::spawn(async move {
                        m.execute_query("hold", QueryOptions::uncached(), q).await
                    })
                };
                reached.notified().await;
                let queued = {
                    let (m, q) = (h.manager.clone(), read_v(&h, &runs, None));
                    tokio::spawn(async move {
                        m.execute_query("queued", QueryOptions::uncached(), q).await
                    })
                };
                until(|| h.manager.pending_requests() == 1).await;
                let r = h
                    .manager
                    .execute_query_traced("row", opts.clone(), read_v(&h, &runs, None))
                    .await
                    .unwrap();
                assert_eq!(r.source, Source::Revalidating);
                let s = h.manager.status();
                assert_eq!(
                    (s.refresh.revalidations, s.refresh.skipped),
                    (0, 1),
                    "{:?}",
                    s.refresh
                );
                gate.add_permits(1);
                holder.await.unwrap().unwrap();
                queued.await.unwrap().unwrap();
                let r = h
                    .manager
                    .execute_query_traced("row", opts.clone(), read_v(&h, &runs, None))
                    .await
                    .unwrap();
                assert_eq!(r.source, Source::Revalidating);
                until(|| h.manager.status().refresh.running == 0).await;
                assert_eq!(h.manager.status().refresh.revalidations, 1);
                let r = h
                    .manager
                    .execute_query_traced("row", opts, read_v(&h, &runs, None))
                    .await
                    .unwrap();
                assert_eq!(r.source, Source::Cache);
                assert_eq!(
                    runs.load(Ordering::SeqCst),
                    4,
                    "fill, holder, queued, one refresh"
                );
            }

            /// A read that opts out of stale-while-revalidate waits for the
            /// query past the TTL, as before.
            /// A write's update in place leaves no gap for readers: four
            /// readers read a hot key without pause on both cores while 300
            /// writes update it in place; every read is the cache's (the
            /// value before a write or after it, never older than one
            /// already seen), none goes to the database after the first
            /// fill. (Dropping the tag's entries and then storing the
            /// updated ones sent a reader in between to the database on a
            /// good share of a hot user's writes.)
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn readers_of_a_key_updated_in_place_never_miss() {
                let h = $harness(config(0, Duration::ZERO)).await;
                let opts = QueryOptions::default()
                    .ttl(Duration::from_secs(600))
                    .tag("row:1");
                let runs = Arc::new(AtomicUsize::new(0));
                let first = h
                    .manager
                    .execute_query("hot", opts.clone(), read_v(&h, &runs, None))
                    .await
                    .unwrap();
                assert_eq!(*first, 10);
                let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
                let readers: Vec<_> = (0..4)
                    .map(|_| {
                        let (m, o, stop) = (h.manager.clone(), opts.clone(), stop.clone());
                        let runs = runs.clone();
                        let table = h.table.clone();
                        tokio::spawn(async move {
                            let (mut reads, mut last) = (0u64, 10i64);
                            while !stop.load(Ordering::SeqCst) {
                                let r = m
                                    .execute_query_traced(
                                        "hot",
                                        o.clone(),
                                        read_v_of(&table, &runs, None),
                                    )
                                    .await
                                    .unwrap();
                                assert_eq!(
                                    r.source,
                                    Source::Cache,
                                    "read {reads}, value {} after {last}",
                                    r.value
                                );
                                assert!(*r.value >= last, "{} after {last}", r.value);
                                last = *r.value;
                                reads += 1;
                                tokio::task::yield_now().await;
                            }
                            reads
                        })
                    })
                    .collect();
                for v in 11..=310 {
                    set_v(&h, v).await;
                    let before = h
                        .manager
                        .peek_versioned::<i64>("hot")
                        .await
                        .expect("the hot key stays cached");
                    h.manager
                        .update_tag(
                            "row:1",
                            &opts,
                            vec![(Arc::from("hot"), before, Arc::new(v))],
                        )
                        .await;
                }
                stop.store(true, Ordering::SeqCst);
                let mut reads = 0;
                for r in readers {
                    reads += r.await.unwrap();
                }
                assert!(reads >= 300, "the readers ran throughout ({reads} reads)");
                assert_eq!(
                    runs.load(Ordering::SeqCst),
                    1,
                    "only the first fill ran a query"
                );
                let last = h
                    .manager
                    .execute_query("hot", opts, read_v(&h, &runs, None))
                    .await
                    .unwrap();
                assert_eq!(*last, 310);
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_read_that_opts_out_is_never_served_past_the_ttl() {
                let h = $harness(config(20, Duration::from_secs(30))).await;
                let opts = QueryOptions::default()
                    .ttl(TTL)
                    .stale_while_revalidate(false);
                let runs = Arc::new(AtomicUsize::new(0));
                h.manager
                    .execute_query("row", opts.clone(), read_v(&h, &runs, None))
                    .await
                    .unwrap();
                tokio::time::sleep(PAST_TTL).await;
                let r = h
                    .manager
                    .execute_query_traced("row", opts, read_v(&h, &runs, None))
                    .await
                    .unwrap();
                assert_eq!(r.source, Source::Database);
                assert_eq!(h.manager.status().refresh.served_while_refreshing, 0);
            }
        }
    };
}

#[cfg(feature = "sqlite")]
backend_suite!(sqlite, sqlx::Sqlite, common::sqlite);
#[cfg(feature = "postgres")]
backend_suite!(postgres, sqlx::Postgres, common::postgres);
#[cfg(feature = "mysql")]
backend_suite!(mariadb, sqlx::MySql, common::mariadb);
