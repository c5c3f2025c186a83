//! The fault suite: PostgreSQL taken away under load, and clients that hang
//! up in the middle of writes. Bounded in time; everything stays on
//! loopback.

mod common;

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use common::*;
use gistfans_data::{AggregateOptions, DataAggregationService};
use reqwest::StatusCode;

/// One request of the load: which user, how long, what status, when.
struct Sample {
    user: i64,
    at: Instant,
    took: Duration,
    status: StatusCode,
}

/// Closed-loop clients until `stop`: users 1..=10 (cached beforehand), and
/// once `wide` is set, users 1..=60 (most of them never cached).
fn load(
    app: &App,
    clients: usize,
    wide: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<Vec<Sample>>> {
    (0..clients)
        .map(|c| {
            let http = reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap();
            let base = app.base.clone();
            let stop = stop.clone();
            let wide = wide.clone();
            tokio::spawn(async move {
                let mut out = Vec::new();
                let mut i = c as i64;
                while !stop.load(Ordering::Relaxed) {
                    let user = i % if wide.load(Ordering::Relaxed) { 60 } else { 10 } + 1;
                    i += 1;
                    let at = Instant::now();
                    let status = http
                        .get(format!("{base}/api/user/stats-optimized?userId={user}"))
                        .send()
                        .await
                        .map(|r| r.status())
                        .unwrap_or(StatusCode::IM_A_TEAPOT);
                    out.push(Sample {
                        user,
                        at,
                        took: at.elapsed(),
                        status,
                    });
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                out
            })
        })
        .collect()
}

/// Waits until `check` holds, polling every 10 ms; how long it took, or
/// `None` after `within`.
async fn time_until(within: Duration, check: impl Fn() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < within {
        if check() {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    None
}

/// PostgreSQL becomes unreachable (connections refused, open ones cut)
/// under concurrent load, with the product's default manager settings:
/// the circuit opens within 1 s, cached profiles keep being served, no
/// request takes as long as the acquire timeout, and the service recovers
/// within 1 s of the database's return.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_outage_under_load() {
    let (pg, proxy) = seeded_postgres_behind_proxy().await;
    let config = hpdb::ManagerConfig::new();
    let acquire_timeout = config.pool.acquire_timeout;
    let url = format!("postgres://postgres@127.0.0.1:{}/{}", proxy.port(), pg.name);
    let mut server = test_config(&url);
    server.manager = config;
    let app = start(server).await;
    for user in 1..=10 {
        app.profile(user).await; // users 1-10 cached, 11-20 not
    }

    let stop = Arc::new(AtomicBool::new(false));
    let wide = Arc::new(AtomicBool::new(false));
    let clients = load(&app, 16, wide.clone(), stop.clone());
    tokio::time::sleep(Duration::from_millis(500)).await;

    let down_at = Instant::now();
    proxy.down();
    wide.store(true, Ordering::Relaxed);
    let db = app.db.clone();
    let opened = time_until(Duration::from_secs(5), || {
        db.status().circuit != hpdb::CircuitState::Closed
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    let up_at = Instant::now();
    proxy.up();
    let mut recovered = None;
    let probe = reqwest::Client::new();
    let mut user = 11;
    while up_at.elapsed() < Duration::from_secs(10) {
        // An uncached profile needs the database: served means recovered.
        let r = probe
            .get(format!(
                "{}/api/user/stats-optimized?userId={user}&include=social",
                app.base
            ))
            .send()
            .await
            .unwrap();
        if r.status() == StatusCode::OK {
            recovered = Some(up_at.elapsed());
            break;
        }
        user = if user == 20 { 11 } else { user + 1 };
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let mut samples = Vec::new();
    for c in clients {
        samples.extend(c.await.unwrap());
    }

    let opened = opened.expect("the circuit never opened");
    eprintln!("circuit opened after {opened:?}; recovery after {recovered:?}");
    assert!(
        opened < Duration::from_secs(1),
        "circuit opened after {opened:?}"
    );
    let recovered = recovered.expect("never recovered");
    assert!(
        recovered < Duration::from_secs(1),
        "recovered after {recovered:?}"
    );
    let slowest = samples.iter().map(|s| s.took).max().unwrap();
    assert!(
        slowest < acquire_timeout,
        "a request took {slowest:?}, the acquire timeout is {acquire_timeout:?}"
    );
    let during: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.at > down_at + Duration::from_millis(50) && s.at + s.took < up_at)
        .collect();
    assert!(
        during.len() > 50,
        "too little load during the outage: {}",
        during.len()
    );
    for s in &during {
        if s.user <= 10 {
            assert_eq!(
                s.status,
                StatusCode::OK,
                "cached user {} during the outage",
                s.user
            );
        } else {
            assert!(
                matches!(s.status, StatusCode::OK | StatusCode::SERVICE_UNAVAILABLE),
                "user {}: {}",
                s.user,
                s.status
            );
        }
    }
    assert!(
        during
            .iter()
            .any(|s| s.status == StatusCode::SERVICE_UNAVAILABLE),
        "uncached users need the database: some 503s expected"
    );
    drop(pg);
}

/// Clients that give up on their writes 1 to 50 ms in: whatever was
/// committed reaches the cache, so every cached aggregate equals SQL.
async fn clients_hanging_up_mid_write_leave_caches_right(backend: Backend) {
    let app = spawn_app(backend, None).await;
    let posts: Vec<i64> = (1..=120).collect();
    let fresh_service =
        DataAggregationService::new(app.db.clone()).with_preload(gistfans_data::Preload::Off);
    // Warm every author's and starrer's cached profile first.
    let mut users: Vec<i64> = (1..=60).collect();
    for user in &users {
        app.profile(*user).await;
    }
    let mut tasks = Vec::new();
    for (i, post) in posts.iter().enumerate() {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(1 + (i as u64 * 7) % 50))
            .build()
            .unwrap();
        let url = format!("{}/api/posts/{post}/star", app.base);
        let actor = 1 + (i as i64 * 13) % 60;
        tasks.push(tokio::spawn(async move {
            let _ = http
                .put(url)
                .header("X-User-Id", actor.to_string())
                .send()
                .await;
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    users.sort_unstable();
    for user in users {
        let equal = testkit::pg::eventually(Duration::from_secs(10), || {
            let app = &app;
            let fresh_service = &fresh_service;
            async move {
                let cached = app.profile(user).await;
                let fresh = fresh_service
                    .get_user_aggregated_data(
                        user,
                        AggregateOptions {
                            use_cache: false,
                            ..AggregateOptions::default()
                        },
                    )
                    .await
                    .unwrap()
                    .unwrap();
                cached == serde_json::to_value(&fresh.aggregate.data).unwrap()
            }
        })
        .await;
        assert!(equal, "user {user}: the cached profile differs from SQL");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_clients_hanging_up_mid_write_leave_caches_right() {
    clients_hanging_up_mid_write_leave_caches_right(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_clients_hanging_up_mid_write_leave_caches_right() {
    clients_hanging_up_mid_write_leave_caches_right(Backend::Postgres).await;
}
