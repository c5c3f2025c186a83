//! SQLite and writers around the service (issue 21): a commit made on
//! another connection to the same file (as another process's, or the
//! `sqlite3` shell's, would be) reaches the cached aggregate through the
//! manager's `PRAGMA data_version` watch; the service's own writes run on
//! the writer connection and never drop the cache. Real SQLite files.

use std::time::Duration;

use gistfans_data::{
    migrate,
    seed::{seed, SeedConfig},
    AggregateOptions, DataAggregationService, Db, Preload,
};
use hpdb::{changes::ChangeMode, ManagerConfig, Source};
use sqlx::{sqlite::SqliteConnectOptions, ConnectOptions, Connection, SqliteConnection};
use testkit::pg::eventually;

/// A bound on waiting for the watch (never a speed assertion).
const PATIENCE: Duration = Duration::from_secs(20);

struct Fixture {
    service: DataAggregationService,
    db: Db,
    url: String,
    dir: std::path::PathBuf,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A seeded SQLite file and the service over it, with the default watch.
async fn fixture() -> Fixture {
    let dir = std::env::temp_dir().join(testkit::unique("gf_sqlite_watch"));
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite://{}/gf.db", dir.display());
    migrate(&url, None).await.unwrap();
    seed(&url, &SeedConfig::small(), false).await.unwrap();
    let db = Db::connect(&url, ManagerConfig::new()).await.unwrap();
    assert!(db.watch_changes(&url).is_none(), "no stream to start");
    let service = DataAggregationService::new(db.clone()).with_preload(Preload::Off);
    Fixture {
        service,
        db,
        url,
        dir,
    }
}

impl Fixture {
    async fn read(&self, id: i64) -> (i64, Source) {
        let served = self
            .service
            .get_user_aggregated_data(id, AggregateOptions::default())
            .await
            .unwrap()
            .expect("the user exists");
        (served.aggregate.data.stats.followers, served.source)
    }

    /// A connection of its own to the same file.
    async fn other(&self) -> SqliteConnection {
        self.url
            .parse::<SqliteConnectOptions>()
            .unwrap()
            .busy_timeout(Duration::from_secs(5))
            .connect()
            .await
            .unwrap()
    }
}

/// A user who does not follow `id`, nor is it.
async fn stranger(conn: &mut SqliteConnection, id: i64) -> i64 {
    sqlx::query_scalar(
        "SELECT u.id FROM users u WHERE u.id <> ?1 AND NOT EXISTS \
         (SELECT 1 FROM follows f WHERE f.follower_id = u.id AND f.followee_id = ?1) \
         ORDER BY u.id LIMIT 1",
    )
    .bind(id)
    .fetch_one(conn)
    .await
    .unwrap()
}

#[tokio::test]
async fn on_sqlite_a_follow_inserted_by_another_connection_reaches_the_cached_profile() {
    let f = fixture().await;
    let status = f.db.status().changes;
    assert_eq!(status.mode, ChangeMode::DataVersion, "{status:?}");
    assert!(status.detail.unwrap().contains("data_version"));
    let (followers, _) = f.read(2).await;
    assert_eq!(f.read(2).await, (followers, Source::Cache));
    let mut other = f.other().await;
    let follower = stranger(&mut other, 2).await;
    sqlx::query("INSERT INTO follows (follower_id, followee_id, created_at) VALUES (?, 2, 0)")
        .bind(follower)
        .execute(&mut other)
        .await
        .unwrap();
    assert!(
        eventually(PATIENCE, || async { f.read(2).await.0 == followers + 1 }).await,
        "the other connection's follow never reached the cached profile: {:?}",
        f.db.status().changes
    );
    assert!(f.db.status().changes.foreign_commits >= 1);
    other.close().await.unwrap();
}

#[tokio::test]
async fn on_sqlite_the_services_own_writes_keep_the_cache() {
    let f = fixture().await;
    let (bystander, _) = f.read(3).await;
    let (followers, _) = f.read(2).await;
    let before = f.db.status();
    let mut other = f.other().await;
    let follower = stranger(&mut other, 2).await;
    other.close().await.unwrap();
    for on in [true, false].repeat(10) {
        f.service.set_follow(follower, 2, on).await.unwrap();
    }
    // The watch has looked after the last write, several times.
    let polls = f.db.status().changes.polls;
    assert!(
        eventually(PATIENCE, || async {
            f.db.status().changes.polls >= polls + 3
        })
        .await
    );
    let after = f.db.status();
    assert_eq!(
        after.changes.foreign_commits, before.changes.foreign_commits,
        "{:?}",
        after.changes
    );
    assert_eq!(after.changes.epochs, before.changes.epochs);
    assert_eq!(f.read(3).await, (bystander, Source::Cache), "kept");
    // (An unfollow's aggregate is fetched again: the sample it drops from
    // only the database can refill.)
    assert_eq!(f.read(2).await.0, followers, "the writes landed");
}
