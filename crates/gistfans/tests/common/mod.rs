//! Shared by the server's integration tests: a real server on port 0, built
//! by `gistfans::server::Server::build` as `gistfans serve` builds it, over
//! a fresh, seeded database.

#![allow(dead_code)]

pub mod browser;
pub mod instance;

use std::time::Duration;

use gistfans::{
    listener::ConnectionLimits,
    server::{Server, ServerConfig},
};
use gistfans_data::{seed::SeedConfig, Db};
use reqwest::StatusCode;
use serde_json::Value;
pub use testkit::TempDir;

pub struct App {
    pub base: String,
    pub http: reqwest::Client,
    pub db: Db,
    pub _pg: Option<testkit::pg::TestDatabase>,
    pub _dir: Option<TempDir>,
}

#[derive(Clone, Copy, Debug)]
pub enum Backend {
    Sqlite,
    Postgres,
    /// PostgreSQL through our PgBouncer in transaction mode
    /// (`DATABASE_URL=…?pgbouncer=true`, migrations and seeding over
    /// `DIRECT_URL`), the deployment the README suggests.
    PgBouncer,
}

pub const TOKEN: &str = "s3cret-token";

/// A server over a fresh database seeded with the small demo data, as the
/// product builds it, with the test settings of [`test_config`].
pub async fn spawn_app(backend: Backend, admin_token: Option<&str>) -> App {
    let token = admin_token.map(String::from);
    spawn_app_with(backend, |c| c.admin_token = token).await
}

/// [`spawn_app`], with `configure` applied to the server's configuration.
pub async fn spawn_app_with(backend: Backend, configure: impl FnOnce(&mut ServerConfig)) -> App {
    let (url, pg, dir) = match backend {
        Backend::Sqlite => {
            let dir = std::env::temp_dir().join(testkit::unique("gf_api"));
            std::fs::create_dir_all(&dir).unwrap();
            (
                format!("sqlite://{}/gf.db", dir.display()),
                None,
                Some(TempDir(dir)),
            )
        }
        Backend::Postgres | Backend::PgBouncer => {
            let pg = testkit::pg::TestDatabase::create().await;
            (pg.url.clone(), Some(pg), None)
        }
    };
    gistfans_data::migrate(&url, None).await.unwrap();
    gistfans_data::seed::seed(&url, &SeedConfig::small(), false)
        .await
        .unwrap();
    let mut config = match backend {
        Backend::PgBouncer => {
            let mut c = test_config(&testkit::pg::via_pooler(&url));
            c.direct_url = Some(url);
            c
        }
        _ => test_config(&url),
    };
    configure(&mut config);
    let mut app = start(config).await;
    app._pg = pg;
    app._dir = dir;
    app
}

/// The connection layer's limits in tests: the product's, with short
/// deadlines so that tests about them end quickly.
pub fn test_limits() -> ConnectionLimits {
    ConnectionLimits {
        header_read_timeout: Duration::from_millis(500),
        write_timeout: Duration::from_secs(2),
        max_connections: 4096,
        max_headers: 128,
        drain_timeout: Duration::from_secs(2),
    }
}

/// The product's configuration over `url`, on a free loopback port, with
/// [`test_limits`], a 10 s request timeout and no start-up warming (it
/// would run queries behind the tests' backs). Preloading stays on. No
/// change stream: its slot would outlive the test's database (tests of the
/// stream turn it on and drop their slot).
pub fn test_config(url: &str) -> ServerConfig {
    let mut c = ServerConfig::new(url);
    c.change_stream = false;
    c.bind = "127.0.0.1:0".parse().unwrap();
    c.request_timeout = Duration::from_secs(10);
    c.limits = test_limits();
    c.warm_users = 0;
    c
}

/// Builds the server from `config` (over a migrated, seeded database) with
/// `Server::build`, as `gistfans serve` does, and serves it until the test ends.
pub async fn start(config: ServerConfig) -> App {
    let server = Server::build(config).await.unwrap();
    let base = format!("http://{}", server.local_addr());
    let db = server.db().clone();
    tokio::spawn(server.run(std::future::pending()));
    App {
        base,
        http: reqwest::Client::new(),
        db,
        _pg: None,
        _dir: None,
    }
}

impl App {
    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        let status = r.status();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        user: Option<i64>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(u) = user {
            req = req.header("X-User-Id", u.to_string());
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.unwrap();
        let status = r.status();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// The `/metrics` text.
    pub async fn metrics_text(&self) -> String {
        self.http
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    pub async fn profile(&self, id: i64) -> Value {
        let (s, v) = self
            .get(&format!("/api/user/stats-optimized?userId={id}"))
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        v
    }
}

pub fn assert_error(status: StatusCode, body: &Value, expect: StatusCode) {
    assert_eq!(status, expect, "{body}");
    assert!(
        body["error"].is_string() && body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "error body: {body}"
    );
}

/// A fresh PostgreSQL database with the small demo data, and a fault proxy
/// in front of it (connect through `proxy.port()`).
pub async fn seeded_postgres_behind_proxy() -> (testkit::pg::TestDatabase, testkit::Proxy) {
    let pg = testkit::pg::TestDatabase::create().await;
    gistfans_data::migrate(&pg.url, None).await.unwrap();
    gistfans_data::seed::seed(&pg.url, &SeedConfig::small(), false)
        .await
        .unwrap();
    let proxy = testkit::Proxy::start(&testkit::pg::host_port())
        .await
        .unwrap();
    (pg, proxy)
}
