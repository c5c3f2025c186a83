//! The server and the change stream (issue 21): where the database cannot
//! stream its changes, the server starts, serves, and says so in
//! `/metrics` (writes made around it stay cached until their TTL).

mod common;

use common::{spawn_app_with, Backend};

#[tokio::test]
async fn on_sqlite_the_server_serves_and_its_metrics_say_the_stream_is_unavailable() {
    let app = spawn_app_with(Backend::Sqlite, |c| c.change_stream = true).await;
    let profile = app.profile(1).await;
    assert!(!profile.is_null());
    let status = app.db.status().changes;
    assert_eq!(status.mode, hpdb::changes::ChangeMode::Unavailable);
    assert!(status.detail.unwrap_or_default().contains("TTL"));
    let metrics = app.metrics_text().await;
    assert!(
        metrics.contains("hpdb_changes_mode{mode=\"unavailable\"} 1"),
        "{metrics}"
    );
}

/// Drops a test's slot and publication when it ends, passed or failed (a
/// slot left behind keeps WAL and its database).
fn slot_guard(c: hpdb::changes::ChangesConfig) -> testkit::Cleanup {
    testkit::Cleanup::new(move || async move {
        let _ = hpdb::changes::drop_stream(&c.url, &c.slot, &c.publication).await;
    })
}

const LEADER: &str = "hpdb_changes_mode{mode=\"leader\"}";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_killed_another_instance_consumes_and_no_write_around_them_is_lost() {
    use std::time::Duration;

    use common::instance::Instance;
    use testkit::pg::eventually;

    let db = testkit::pg::TestDatabase::create().await;
    gistfans_data::migrate(&db.url, None).await.unwrap();
    gistfans_data::seed::seed(&db.url, &gistfans_data::seed::SeedConfig::small(), false)
        .await
        .unwrap();
    let ns = testkit::unique("gfk");
    let _slot = slot_guard(hpdb::changes::ChangesConfig::new(db.url.clone(), &ns));
    let on = [("CHANGE_STREAM", "true")];
    let redis = "redis://127.0.0.1:6379";
    let first = Instance::start_with(&db.url, redis, &ns, &on).await;
    assert!(
        eventually(Duration::from_secs(15), || async {
            first.metric(LEADER).await == 1
        })
        .await,
        "the first instance consumes"
    );
    let second = Instance::start_with(&db.url, redis, &ns, &on).await;
    let followers = |v: serde_json::Value| v["stats"]["followers"].as_i64().unwrap();
    let before = followers(second.profile(2).await);
    let sql = sqlx::PgPool::connect(&db.url).await.unwrap();
    let new_follower: i64 = sqlx::query_scalar(
        "SELECT u.id FROM users u WHERE u.id <> 2 AND NOT EXISTS \
         (SELECT 1 FROM follows f WHERE f.follower_id = u.id AND f.followee_id = 2) \
         ORDER BY u.id LIMIT 1",
    )
    .fetch_one(&sql)
    .await
    .unwrap();

    // SIGKILL (Instance's drop), then a write while nobody consumes.
    drop(first);
    sqlx::query("INSERT INTO follows (follower_id, followee_id, created_at) VALUES ($1, 2, 0)")
        .bind(new_follower)
        .execute(&sql)
        .await
        .unwrap();
    assert!(
        eventually(Duration::from_secs(15), || async {
            second.metric(LEADER).await == 1
        })
        .await,
        "the second instance took over"
    );
    assert!(
        eventually(Duration::from_secs(15), || async {
            followers(second.profile(2).await) == before + 1
        })
        .await,
        "the write made while the leader was dead reached the cache"
    );
}
