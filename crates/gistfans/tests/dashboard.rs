//! The live dashboard over HTTP: the page and its embedded files, and the
//! status stream's promises (the admin token, one sample a second that
//! follows the load, the cap on clients, the lifetime, the end at shutdown).
//! The dashboard's behaviour in a browser is tested with the browser harness.

mod common;

use std::time::Duration;

use common::{assert_error, spawn_app, spawn_app_with, test_config, Backend, TempDir, TOKEN};
use gistfans::server::Server;
use gistfans_data::seed::SeedConfig;
use reqwest::{header, StatusCode};
use serde_json::Value;

const STREAM: &str = "/api/admin/stream";
/// A guard against a hang, not a speed requirement.
const PATIENCE: Duration = Duration::from_secs(30);

/// Server-Sent Events read from a response, one `status` event at a time.
struct Events {
    resp: reqwest::Response,
    buf: Vec<u8>,
}

impl Events {
    /// The next `status` event's data, or `None` when the stream ends.
    async fn next(&mut self) -> Option<Value> {
        tokio::time::timeout(PATIENCE, self.next_inner())
            .await
            .expect("an event or the end of the stream")
    }

    async fn next_inner(&mut self) -> Option<Value> {
        loop {
            if let Some(end) = self.buf.windows(2).position(|w| w == b"\n\n") {
                let block: Vec<u8> = self.buf.drain(..end + 2).collect();
                let block = String::from_utf8(block).expect("events are UTF-8");
                let event = block.lines().find_map(|l| l.strip_prefix("event: "));
                let data: Vec<&str> = block
                    .lines()
                    .filter_map(|l| l.strip_prefix("data: "))
                    .collect();
                if event == Some("status") {
                    return Some(serde_json::from_str(&data.join("\n")).expect("JSON data"));
                }
                continue; // a keep-alive comment
            }
            let chunk = self.resp.chunk().await.ok()??;
            self.buf.extend_from_slice(&chunk);
        }
    }
}

async fn open_stream(app: &common::App, token: Option<&str>) -> reqwest::Response {
    let mut req = app.http.get(format!("{}{STREAM}", app.base));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    req.send().await.unwrap()
}

async fn events(app: &common::App) -> Events {
    let resp = open_stream(app, Some(TOKEN)).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.headers()[header::CONTENT_TYPE],
        "text/event-stream",
        "an SSE stream"
    );
    Events {
        resp,
        buf: Vec::new(),
    }
}

async fn json_of(resp: reqwest::Response) -> (StatusCode, Value) {
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_needs_the_admin_token() {
    let app = spawn_app(Backend::Sqlite, Some(TOKEN)).await;
    let (s, v) = json_of(open_stream(&app, None).await).await;
    assert_error(s, &v, StatusCode::UNAUTHORIZED);
    let (s, v) = json_of(open_stream(&app, Some("wrong-token")).await).await;
    assert_error(s, &v, StatusCode::UNAUTHORIZED);
    assert!(v["message"].as_str().unwrap().contains("wrong"), "{v}");

    let closed = spawn_app(Backend::Sqlite, None).await;
    for token in [None, Some(TOKEN)] {
        let (s, v) = json_of(open_stream(&closed, token).await).await;
        assert_error(s, &v, StatusCode::FORBIDDEN);
        assert!(
            v["message"].as_str().unwrap().contains("ADMIN_TOKEN"),
            "{v}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_sends_samples_that_follow_the_load() {
    let app = spawn_app(Backend::Sqlite, Some(TOKEN)).await;
    let mut events = events(&app).await;
    let first = events.next().await.expect("a first sample");
    for field in [
        "activeConnections",
        "idleConnections",
        "pendingRequests",
        "maxConnections",
        "cacheHitRate",
        "singleFlightJoins",
        "refresh",
        "batchedKeys",
        "circuit",
        "leaksDetected",
        "acquireWaitHistogram",
        "latencyMs",
        "consistency",
    ] {
        assert!(
            !first["status"][field].is_null(),
            "{field} missing in {first}"
        );
    }
    assert!(first["alerts"].is_array() && first["recommendations"].is_array());
    // The panel "Writes around the server": SQLite's data-version watch.
    let changes = &first["status"]["changes"];
    assert_eq!(changes["mode"], "dataVersion", "{changes}");
    for field in [
        "polls",
        "foreignCommits",
        "epochs",
        "transactions",
        "ownSkipped",
    ] {
        assert!(changes[field].is_u64(), "{field} missing in {changes}");
    }
    let before = first["status"]["totalQueries"].as_u64().unwrap();

    let database_before = first["status"]["databaseQueries"].as_u64().unwrap();
    for _ in 0..2 {
        for id in 1..=20 {
            app.profile(id).await;
        }
    }
    // The next samples: newer, later, and one of them counts the load.
    let mut previous = first;
    let mut grew = false;
    for _ in 0..5 {
        let sample = events.next().await.expect("the stream goes on");
        assert!(
            sample["seq"].as_u64() > previous["seq"].as_u64(),
            "{sample}"
        );
        assert!(sample["atMs"].as_u64() > previous["atMs"].as_u64());
        if sample["status"]["totalQueries"].as_u64().unwrap() >= before + 40 {
            assert!(sample["status"]["databaseQueries"].as_u64() > Some(database_before));
            grew = true;
            break;
        }
        previous = sample;
    }
    assert!(grew, "no sample counted the 40 page loads");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboards_share_one_sample_per_tick() {
    let app = spawn_app(Backend::Sqlite, Some(TOKEN)).await;
    let mut a = events(&app).await;
    let first = a.next().await.expect("a sample");
    // A later client starts with the backlog: the very samples others got.
    let mut b = events(&app).await;
    let from_backlog = b.next().await.expect("the backlog");
    assert_eq!(from_backlog, first);
    // Then both get the same sample each tick (one read, not one per client).
    let (mut next_a, next_b) = (a.next().await.unwrap(), b.next().await.unwrap());
    while next_a["seq"].as_u64() < next_b["seq"].as_u64() {
        next_a = a.next().await.unwrap();
    }
    assert_eq!(next_a, next_b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_beyond_the_cap_get_503_until_one_leaves() {
    let app = spawn_app_with(Backend::Sqlite, |c| {
        c.admin_token = Some(TOKEN.into());
        c.stream.max_streams = 2;
    })
    .await;
    let mut a = events(&app).await;
    let _b = events(&app).await;
    let third = open_stream(&app, Some(TOKEN)).await;
    assert!(third.headers().contains_key(header::RETRY_AFTER));
    let (s, v) = json_of(third).await;
    assert_error(s, &v, StatusCode::SERVICE_UNAVAILABLE);

    a.next().await.expect("a sample");
    drop(a);
    // The server notices the client left at its next write (a second at most).
    for attempt in 0.. {
        let resp = open_stream(&app, Some(TOKEN)).await;
        if resp.status() == StatusCode::OK {
            break;
        }
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(attempt < 300, "the slot was never given back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_ends_after_its_lifetime() {
    let app = spawn_app_with(Backend::Sqlite, |c| {
        c.admin_token = Some(TOKEN.into());
        c.stream.max_lifetime = Duration::from_secs(2);
    })
    .await;
    let mut events = events(&app).await;
    let mut n = 0;
    while events.next().await.is_some() {
        n += 1;
        assert!(n < 60, "the stream outlived its lifetime");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_end_when_the_server_shuts_down() {
    let dir = std::env::temp_dir().join(testkit::unique("gf_dash"));
    std::fs::create_dir_all(&dir).unwrap();
    let _dir = TempDir(dir.clone());
    let url = format!("sqlite://{}/gf.db", dir.display());
    gistfans_data::migrate(&url, None).await.unwrap();
    gistfans_data::seed::seed(&url, &SeedConfig::small(), false)
        .await
        .unwrap();
    let mut config = test_config(&url);
    config.admin_token = Some(TOKEN.into());
    // Far beyond PATIENCE: if the stream held the drain, the test would fail.
    config.limits.drain_timeout = Duration::from_secs(120);
    let server = Server::build(config).await.unwrap();
    let app = common::App {
        base: format!("http://{}", server.local_addr()),
        http: reqwest::Client::new(),
        db: server.db().clone(),
        _pg: None,
        _dir: None,
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(server.run(async {
        let _ = stopped.await;
    }));
    let mut events = events(&app).await;
    events.next().await.expect("a sample");
    stop.send(()).unwrap();
    tokio::time::timeout(PATIENCE, async { while events.next().await.is_some() {} })
        .await
        .expect("the stream ended as the shutdown began");
    tokio::time::timeout(PATIENCE, running)
        .await
        .expect("the server stopped without waiting out the drain")
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_and_its_files_are_served_with_etags() {
    // The page loads without a token (and without one configured): it says
    // what to do; the data needs the token.
    let app = spawn_app(Backend::Sqlite, None).await;
    // The page links each file by its versioned URL, cached for good.
    let versioned = |name: &str| gistfans::pages::assets::find(name).unwrap().url();
    let files = [
        ("/admin".to_string(), "text/html; charset=utf-8", "no-cache"),
        (
            versioned("dashboard.js"),
            "text/javascript; charset=utf-8",
            "immutable",
        ),
        (
            versioned("dashboard.css"),
            "text/css; charset=utf-8",
            "immutable",
        ),
        (
            versioned("uplot.js"),
            "text/javascript; charset=utf-8",
            "immutable",
        ),
        (
            versioned("uplot.css"),
            "text/css; charset=utf-8",
            "immutable",
        ),
        (
            versioned("uplot-LICENSE.txt"),
            "text/plain; charset=utf-8",
            "immutable",
        ),
    ];
    for (path, content_type, cache) in files {
        let url = format!("{}{path}", app.base);
        let r = app.http.get(&url).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        assert_eq!(r.headers()[header::CONTENT_TYPE], content_type, "{path}");
        let cache_control = r.headers()[header::CACHE_CONTROL].to_str().unwrap();
        assert!(cache_control.contains(cache), "{path}: {cache_control}");
        let etag = r.headers()[header::ETAG].to_str().unwrap().to_owned();
        assert!(
            etag.starts_with('"') && etag.ends_with('"'),
            "a strong ETag: {etag}"
        );
        assert!(!r.text().await.unwrap().is_empty());
        let again = app
            .http
            .get(&url)
            .header(header::IF_NONE_MATCH, &etag)
            .send()
            .await
            .unwrap();
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED, "{path}");
        assert_eq!(again.headers()[header::ETAG].to_str().unwrap(), etag);
        let changed = app
            .http
            .get(&url)
            .header(header::IF_NONE_MATCH, "\"something-else\"")
            .send()
            .await
            .unwrap();
        assert_eq!(changed.status(), StatusCode::OK, "{path}");
    }
    let page = app
        .http
        .get(format!("{}/admin", app.base))
        .send()
        .await
        .unwrap();
    let csp = page.headers()[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap();
    assert!(
        csp.contains("script-src 'self'") && csp.contains("connect-src 'self'"),
        "{csp}"
    );
    let (s, v) = app.get("/assets/nothing.js").await;
    assert_error(s, &v, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_loads_nothing_from_elsewhere() {
    let app = spawn_app(Backend::Sqlite, Some(TOKEN)).await;
    let text = |path: &'static str| {
        let url = format!("{}{path}", app.base);
        let http = app.http.clone();
        async move { http.get(url).send().await.unwrap().text().await.unwrap() }
    };
    let page = text("/admin").await;
    for file in ["/admin", "/assets/dashboard.js", "/assets/dashboard.css"] {
        let body = text(file).await;
        for scheme in ["http://", "https://", "//cdn", "@import"] {
            assert!(!body.contains(scheme), "{file} contains {scheme}");
        }
    }
    // Every src and href of the page is one of ours.
    for attr in ["src=\"", "href=\""] {
        for (i, _) in page.match_indices(attr) {
            let target = &page[i + attr.len()..];
            assert!(
                target.starts_with("/assets/"),
                "{attr}{}",
                &target[..40.min(target.len())]
            );
        }
    }
    let js = text("/assets/dashboard.js").await;
    assert!(
        js.contains("sessionStorage") && !js.contains("localStorage"),
        "the token is kept for the tab only"
    );
    assert!(
        !js.contains("new EventSource"),
        "the token must not go in a URL"
    );
    let (s, doc) = app.get("/openapi.json").await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        doc["paths"][STREAM]["get"].is_object(),
        "the stream is documented"
    );
}
