//! SQLite's watch for other connections' commits (`hpdb::sqlite`, issue
//! 21), on real database files: another connection's commit drops the
//! cache and the next read is fresh; our own writes, on the writer
//! connection, never drop it; a write not marked as one is, correctly,
//! someone else's; an update in place whose snapshot predates a drop is
//! refused.

use std::{sync::Arc, time::Duration};

use hpdb::{changes::ChangeMode, Manager, ManagerConfig, QueryOptions, Source};
use sqlx::{
    sqlite::{SqliteConnectOptions, SqliteJournalMode},
    ConnectOptions, Connection, Sqlite, SqliteConnection,
};
use testkit::TempDir;

/// How long a test waits for what must happen within a poll interval: far
/// more than the interval, so that only a watch that never fires fails.
const PATIENCE: Duration = Duration::from_secs(20);

struct Db {
    manager: Manager<Sqlite>,
    options: SqliteConnectOptions,
    _dir: TempDir,
}

/// A fresh file with `t (id, v)`, rows 1..=3 with v = id * 10, and a
/// manager watching it (poll 50 ms).
async fn database() -> Db {
    let dir = std::env::temp_dir().join(testkit::unique("hpdb_data_version"));
    std::fs::create_dir_all(&dir).unwrap();
    let options = SqliteConnectOptions::new()
        .filename(dir.join("test.db"))
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .busy_timeout(Duration::from_secs(5));
    let mut setup = options.connect().await.unwrap();
    sqlx::query("CREATE TABLE t (id INTEGER PRIMARY KEY, v INTEGER NOT NULL)")
        .execute(&mut setup)
        .await
        .unwrap();
    sqlx::query("INSERT INTO t (id, v) VALUES (1, 10), (2, 20), (3, 30)")
        .execute(&mut setup)
        .await
        .unwrap();
    setup.close().await.unwrap();
    let mut config = ManagerConfig::new();
    config.pool.min_connections = 2;
    config.pool.max_connections = 4;
    config.data_version_poll = Duration::from_millis(50);
    let manager = Manager::<Sqlite>::builder(config)
        .connect_sqlite(options.clone())
        .await
        .unwrap();
    Db {
        manager,
        options,
        _dir: TempDir(dir),
    }
}

impl Db {
    /// `v` of row `id`, through the cache (key `row:{id}`).
    async fn read(&self, id: i64) -> (i64, Source) {
        let r = self
            .manager
            .execute_query_traced(format!("row:{id}"), QueryOptions::default(), move |conn| {
                Box::pin(async move {
                    sqlx::query_scalar::<_, i64>("SELECT v FROM t WHERE id = ?")
                        .bind(id)
                        .fetch_one(conn)
                        .await
                })
            })
            .await
            .unwrap();
        (*r.value, r.source)
    }

    /// Adds 1 to row `id`'s `v` through the manager, with `options`.
    async fn bump(&self, id: i64, options: QueryOptions) {
        let key = format!("bump:{id}:{}", testkit::unique("w"));
        self.manager
            .execute_query(key, options.use_cache(false).coalesce(false), move |conn| {
                Box::pin(async move {
                    sqlx::query("UPDATE t SET v = v + 1 WHERE id = ?")
                        .bind(id)
                        .execute(conn)
                        .await
                        .map(|r| r.rows_affected())
                })
            })
            .await
            .unwrap();
    }

    /// Waits until the watch has made `n` more checks than now (so that
    /// everything committed before this call has been looked at).
    async fn checks(&self, n: u64) {
        let polls = self.manager.status().changes.polls;
        assert!(
            testkit::pg::eventually(PATIENCE, || async {
                self.manager.status().changes.polls >= polls + n
            })
            .await,
            "the watch stopped checking: {:?}",
            self.manager.status().changes
        );
    }
}

#[tokio::test]
async fn another_connections_commit_drops_the_cache_and_the_next_read_is_fresh() {
    let db = database().await;
    let status = db.manager.status().changes;
    assert_eq!(status.mode, ChangeMode::DataVersion, "{status:?}");
    assert_eq!(db.read(1).await, (10, Source::Database));
    assert_eq!(db.read(1).await, (10, Source::Cache));
    // Another writer: a connection of its own, as another process's would be.
    let mut other = SqliteConnection::connect_with(&db.options).await.unwrap();
    sqlx::query("UPDATE t SET v = 11 WHERE id = 1")
        .execute(&mut other)
        .await
        .unwrap();
    assert!(
        testkit::pg::eventually(PATIENCE, || async { db.read(1).await.0 == 11 }).await,
        "the other connection's commit never reached the cache: {:?}",
        db.manager.status().changes
    );
    let status = db.manager.status().changes;
    assert!(status.foreign_commits >= 1, "{status:?}");
    assert!(status.epochs >= 2, "the start and the commit: {status:?}");
    other.close().await.unwrap();
}

#[tokio::test]
async fn our_own_writes_never_drop_the_cache() {
    let db = database().await;
    assert_eq!(db.read(1).await.1, Source::Database);
    let before = db.manager.status().changes;
    for _ in 0..20 {
        db.bump(2, QueryOptions::default().writes()).await;
        db.checks(1).await;
    }
    db.checks(3).await;
    let after = db.manager.status().changes;
    assert_eq!(after.foreign_commits, before.foreign_commits, "{after:?}");
    assert_eq!(after.epochs, before.epochs, "{after:?}");
    assert_eq!(db.read(1).await, (10, Source::Cache), "row 1 stayed cached");
    assert_eq!(
        db.read(2).await,
        (40, Source::Database),
        "the writes landed"
    );
}

#[tokio::test]
async fn a_write_not_marked_as_one_is_someone_elses_and_drops_the_cache() {
    let db = database().await;
    assert_eq!(db.read(1).await.1, Source::Database);
    let before = db.manager.status().changes;
    // On a pooled connection: to the writer's connection, another's commit.
    db.bump(2, QueryOptions::default()).await;
    assert!(
        testkit::pg::eventually(PATIENCE, || async {
            db.manager.status().changes.foreign_commits > before.foreign_commits
        })
        .await,
        "{:?}",
        db.manager.status().changes
    );
    assert_eq!(
        db.read(1).await.1,
        Source::Database,
        "the cache was dropped"
    );
}

#[tokio::test]
async fn an_update_in_place_whose_snapshot_predates_a_drop_is_refused() {
    let db = database().await;
    assert_eq!(db.read(1).await.1, Source::Database);
    let control = db.manager.control();
    let before = control.peek_versioned::<i64>("row:1").await.unwrap();
    // A drop after the snapshot: it may stand for a commit the snapshot missed.
    control.clear_cache().await;
    let options = QueryOptions::default();
    let done = control
        .update_tag(
            "row",
            &options,
            vec![("row:1".into(), before, Arc::new(11))],
        )
        .await;
    assert_eq!(done.refused(), [Arc::<str>::from("row:1")]);
    assert!(control.peek_cached::<i64>("row:1").await.is_none());
    // Without a drop in between, the update is stored.
    assert_eq!(db.read(1).await.1, Source::Database);
    let before = control.peek_versioned::<i64>("row:1").await.unwrap();
    let done = control
        .update_tag(
            "row",
            &options,
            vec![("row:1".into(), before, Arc::new(11))],
        )
        .await;
    assert!(done.refused().is_empty());
    assert_eq!(
        control.peek_cached::<i64>("row:1").await.as_deref(),
        Some(&11)
    );
}

#[tokio::test]
async fn with_the_poll_at_zero_there_is_no_watch_and_the_status_says_why() {
    let dir = TempDir(std::env::temp_dir().join(testkit::unique("hpdb_data_version")));
    std::fs::create_dir_all(&dir.0).unwrap();
    let mut config = ManagerConfig::new();
    config.data_version_poll = Duration::ZERO;
    let options = SqliteConnectOptions::new()
        .filename(dir.0.join("test.db"))
        .create_if_missing(true);
    let manager = Manager::<Sqlite>::builder(config)
        .connect_sqlite(options)
        .await
        .unwrap();
    let status = manager.status().changes;
    assert_eq!(status.mode, ChangeMode::Unavailable);
    assert!(status.detail.unwrap().contains("TTL"));
    assert_eq!(status.polls, 0);
}

#[tokio::test]
async fn a_write_after_the_manager_closed_fails_like_a_read_and_commits_nothing() {
    let db = database().await;
    db.bump(1, QueryOptions::default().writes()).await;
    db.manager.close().await;
    let write = db
        .manager
        .execute_query(
            "bump:after-close",
            QueryOptions::default().writes().use_cache(false),
            |conn| {
                Box::pin(async move {
                    sqlx::query("UPDATE t SET v = v + 100 WHERE id = 1")
                        .execute(conn)
                        .await
                        .map(|r| r.rows_affected())
                })
            },
        )
        .await;
    assert!(
        matches!(write, Err(hpdb::Error::Closed)),
        "a write after close: {write:?}"
    );
    let mut outside = db.options.connect().await.unwrap();
    let v: i64 = sqlx::query_scalar("SELECT v FROM t WHERE id = 1")
        .fetch_one(&mut outside)
        .await
        .unwrap();
    assert_eq!(v, 11, "only the write before close committed");
}
