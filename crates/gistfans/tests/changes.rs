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
