//! Hostile clients: what an anonymous client sends must never become an
//! unbounded label, hold a socket for ever, reach a handler it should not,
//! or get anything but a JSON error. Each test names the defect of the
//! hardening issue it keeps fixed.

mod common;

use std::time::Duration;

use common::*;
use reqwest::{header, Method, StatusCode};
use serde_json::{json, Value};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

fn addr(app: &App) -> String {
    app.base.trim_start_matches("http://").to_string()
}

/// Reads until the server closes the connection; false if it is still open
/// after `within`.
async fn closed_by_server(conn: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 4096];
    let read_to_end = async {
        loop {
            match conn.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    };
    tokio::time::timeout(within, read_to_end).await.is_ok()
}

/// Defect 1: the method token used to become a Prometheus label as it was,
/// so made-up methods grew the registry (and every scrape) without bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn made_up_methods_share_one_metric_label() {
    let app = spawn_app(Backend::Sqlite, None).await;
    let long = format!("M1{}", "X".repeat(4000));
    for i in 0..50 {
        let method = Method::from_bytes(format!("{long}{i}").as_bytes()).unwrap();
        let r = app
            .http
            .request(method, format!("{}/healthz", app.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"], "method_not_allowed", "{body}");
    }
    let metrics = app.metrics_text().await;
    assert!(
        !metrics.contains("M1XX"),
        "a client's method became a label"
    );
    assert!(
        metrics.contains(r#"method="OTHER""#),
        "unknown methods are counted under one label"
    );
    assert!(metrics.len() < 200_000, "{} bytes", metrics.len());
}

/// Defect 3: partial request heads used to hold their sockets for ever.
/// 1,000 half-open connections are closed by the header-read deadline
/// while ordinary clients are served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_open_connections_are_closed_while_others_are_served() {
    let app = spawn_app(Backend::Sqlite, None).await;
    let mut half_open = Vec::with_capacity(1000);
    for _ in 0..1000 {
        let mut c = TcpStream::connect(addr(&app)).await.unwrap();
        c.write_all(b"GET /api/ping HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            .await
            .unwrap();
        half_open.push(c);
    }
    for _ in 0..20 {
        let (s, _) = app.get("/api/ping").await;
        assert_eq!(s, StatusCode::OK, "ordinary clients are served meanwhile");
    }
    let mut still_open = 0;
    for c in &mut half_open {
        if !closed_by_server(c, Duration::from_secs(5)).await {
            still_open += 1;
        }
    }
    assert_eq!(still_open, 0, "half-open connections left open");
    let (s, _) = app.get("/api/ping").await;
    assert_eq!(s, StatusCode::OK);
}

/// Defect 3: an idle keep-alive connection is closed after the idle
/// timeout (the header-read deadline restarts when a connection goes idle).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_connections_are_closed() {
    let app = spawn_app(Backend::Sqlite, None).await;
    let mut c = TcpStream::connect(addr(&app)).await.unwrap();
    c.write_all(b"GET /api/ping HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = c.read(&mut buf).await.unwrap();
    assert!(std::str::from_utf8(&buf[..n])
        .unwrap()
        .starts_with("HTTP/1.1 200"));
    assert!(
        closed_by_server(&mut c, Duration::from_secs(5)).await,
        "an idle keep-alive connection stays open"
    );
}

/// Defect 3: at the connection cap the server stops accepting, so a new
/// client waits instead of taking the last file descriptors; it is served
/// as soon as a connection closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_cap_holds_new_clients_until_one_closes() {
    let limits = gistfans::listener::ConnectionLimits {
        max_connections: 4,
        header_read_timeout: Duration::from_secs(30),
        ..test_limits()
    };
    let app = spawn_app_with(Backend::Sqlite, |c| c.limits = limits).await;
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(TcpStream::connect(addr(&app)).await.unwrap());
    }
    let client = reqwest::Client::new();
    let url = format!("{}/api/ping", app.base);
    let pending = tokio::spawn(async move { client.get(url).send().await.map(|r| r.status()) });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !pending.is_finished(),
        "served although every connection slot was taken"
    );
    drop(held);
    let status = tokio::time::timeout(Duration::from_secs(5), pending)
        .await
        .expect("served once a slot freed")
        .unwrap()
        .unwrap();
    assert_eq!(status, StatusCode::OK);
}

/// Defect 8 and the JSON-error rule: limits on the request head answer
/// JSON, not hyper's empty bodies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_heads_get_json_errors() {
    let app = spawn_app(Backend::Sqlite, None).await;
    let long_uri = format!("/api/ping?pad={}", "a".repeat(9000));
    let (s, v) = app.get(&long_uri).await;
    assert_error(s, &v, StatusCode::URI_TOO_LONG);
    assert_eq!(v["error"], "uri_too_long");

    let mut req = app.http.get(format!("{}/api/ping", app.base));
    for i in 0..80 {
        req = req.header(format!("x-h{i}"), "v");
    }
    let r = req.send().await.unwrap();
    let status = r.status();
    let v: Value = r.json().await.unwrap();
    assert_error(status, &v, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    assert_eq!(v["error"], "headers_too_large");
}

/// Defect 8: the admin routes check the token before they read the body,
/// accept the `Bearer` scheme in any case, refuse two Authorization
/// headers, and refuse unknown fields in an action.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_checks_the_token_first_and_strictly() {
    let app = spawn_app(Backend::Sqlite, Some(TOKEN)).await;
    let url = format!("{}/api/admin/connection-pool-monitor", app.base);
    let r = app
        .http
        .post(&url)
        .header(header::CONTENT_TYPE, "text/plain")
        .body("{{{ not json")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::UNAUTHORIZED,
        "no token: refused before the body is looked at"
    );
    let body: Value = r.json().await.unwrap();
    assert!(
        !body.to_string().contains("clearCache"),
        "no hints for strangers: {body}"
    );

    for scheme in ["bearer", "BEARER", "Bearer"] {
        let r = app
            .http
            .get(&url)
            .header(header::AUTHORIZATION, format!("{scheme} {TOKEN}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "scheme {scheme}");
    }
    let r = app
        .http
        .get(&url)
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
        .header(header::AUTHORIZATION, "Bearer wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"], "duplicate_header");

    let r = app
        .http
        .post(&url)
        .bearer_auth(TOKEN)
        .json(&json!({"action": "clearCache", "x": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST, "unknown field refused");
}

/// Defect 8: ids have one spelling, and the acting user is named once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_have_one_spelling_and_the_actor_one_header() {
    let app = spawn_app(Backend::Sqlite, None).await;
    for path in [
        "/api/users/+5/stats",
        "/api/users/05/stats",
        "/api/users/%205%20/stats",
        "/api/user/stats-optimized?userId=05",
        "/api/user/stats-optimized?userId=+5",
        "/api/user/stats-optimized?userId=%205",
        "/api/users/%FF/stats",
    ] {
        let (s, v) = app.get(path).await;
        assert_error(s, &v, StatusCode::BAD_REQUEST);
    }
    let r = app
        .http
        .put(format!("{}/api/posts/1/star", app.base))
        .header("X-User-Id", "2")
        .header("X-User-Id", "3")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"], "duplicate_header", "{v}");
}

/// Defect 6: a NUL character used to answer 500 on PostgreSQL and 201 on
/// SQLite; both refuse it with a 400 now, and nothing is stored.
async fn nul_characters_are_refused_alike(backend: Backend) {
    let app = spawn_app(backend, None).await;
    let before = app.profile(3).await["stats"]["posts"].clone();
    assert!(before.is_number(), "{before}");
    for body in [
        json!({"title": "a\u{0}b", "language": "rust", "content": "x"}),
        json!({"title": "t", "language": "ru\u{0}st", "content": "x"}),
        json!({"title": "t", "language": "rust", "content": "fn\u{0}"}),
    ] {
        let (s, v) = app
            .send(Method::POST, "/api/posts", Some(3), Some(body))
            .await;
        assert_error(s, &v, StatusCode::BAD_REQUEST);
        assert!(v["message"].as_str().unwrap().contains("NUL"), "{v}");
    }
    let after = app.profile(3).await["stats"]["posts"].clone();
    assert_eq!(before, after, "nothing was stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_nul_characters_are_refused_alike() {
    nul_characters_are_refused_alike(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_nul_characters_are_refused_alike() {
    nul_characters_are_refused_alike(Backend::Postgres).await;
}
