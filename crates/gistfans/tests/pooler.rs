//! The server behind PgBouncer in transaction mode, under concurrent load:
//! every route answers, on the manager's path and on the baseline's plain
//! pool alike. (Each of the API tests also runs through the pooler; this
//! one makes many clients share the pooler's few server connections at
//! once, which is what breaks prepared statements.)

mod common;

use common::*;
use reqwest::StatusCode;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_answers_under_concurrent_load_through_pgbouncer() {
    let app = std::sync::Arc::new(spawn_app(Backend::PgBouncer, None).await);
    let tasks: Vec<_> = (0..16i64)
        .map(|t| {
            let app = app.clone();
            tokio::spawn(async move {
                let mut failures = Vec::new();
                for i in 0..24i64 {
                    let id = 1 + (t * 24 + i) % 60;
                    let path = match i % 6 {
                        0 => format!("/api/users/{id}/stats"),
                        1 => format!("/api/users/{id}/posts"),
                        2 => format!("/api/users/{id}/star-history"),
                        3 => format!("/api/users/{id}/social"),
                        4 => format!("/api/users?ids={id},{}", id + 1),
                        _ => format!("/api/user/stats-optimized?userId={id}"),
                    };
                    let (s, v) = app.get(&path).await;
                    if s != StatusCode::OK {
                        failures.push(format!("{path}: {s} {v}"));
                    }
                }
                failures
            })
        })
        .collect();
    let mut failures = Vec::new();
    for t in tasks {
        failures.extend(t.await.unwrap());
    }
    assert!(
        failures.is_empty(),
        "{} failed: {failures:#?}",
        failures.len()
    );
    // The optimised path agrees with the per-component routes through the pooler.
    for id in [1, 2, 33] {
        let agg = app.profile(id).await;
        let (_, social) = app.get(&format!("/api/users/{id}/social")).await;
        assert_eq!(agg["social"], social, "user {id}");
    }
}
