//! `gistfans serve` as a separate process (the real binary), for the tests
//! that run several instances over one database and one Redis.

use std::{
    process::{Child, Command, Stdio},
    time::Duration,
};

use reqwest::{Method, StatusCode};
use serde_json::Value;

pub const TOKEN: &str = "instances-test-token";

/// One `gistfans serve` process, stopped (by its PID) when dropped.
pub struct Instance {
    pub base: String,
    pub http: reqwest::Client,
    child: Child,
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Instance {
    /// Starts one over `db_url` and `redis_url` (namespace `ns`) on a free
    /// port with the product's defaults, and waits until it answers and its
    /// bus is current.
    pub async fn start(db_url: &str, redis_url: &str, ns: &str) -> Instance {
        Self::start_with(db_url, redis_url, ns, &[]).await
    }

    /// [`start`](Self::start), with more variables set.
    pub async fn start_with(
        db_url: &str,
        redis_url: &str,
        ns: &str,
        env: &[(&str, &str)],
    ) -> Instance {
        let port = testkit::redis::free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_gistfans"))
            .arg("serve")
            .env("DATABASE_URL", db_url)
            .env("BIND_ADDR", format!("127.0.0.1:{port}"))
            .env("REDIS_URL", redis_url)
            .env("REDIS_NAMESPACE", ns)
            .env("WARM_USERS", "0")
            // No change stream: its slot would outlive the test's database.
            .env("CHANGE_STREAM", "false")
            .env("ADMIN_TOKEN", TOKEN)
            .env("RUST_LOG", "warn")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the gistfans binary runs");
        let i = Instance {
            base: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::new(),
            child,
        };
        let up = testkit::pg::eventually(Duration::from_secs(30), || async {
            i.http
                .get(format!("{}/healthz", i.base))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
        })
        .await;
        assert!(up, "instance on {port} started");
        assert!(
            testkit::pg::eventually(Duration::from_secs(10), || async {
                i.metric("hpdb_shared_bus_current").await == 1
            })
            .await,
            "its bus became current"
        );
        i
    }

    pub async fn profile(&self, id: i64) -> Value {
        let r = self
            .http
            .get(format!(
                "{}/api/user/stats-optimized?userId={id}",
                self.base
            ))
            .send()
            .await
            .expect("the instance answers");
        assert_eq!(r.status(), StatusCode::OK);
        r.json().await.unwrap()
    }

    pub async fn stars(&self, user: i64) -> i64 {
        self.profile(user).await["stats"]["starsReceived"]
            .as_i64()
            .unwrap()
    }

    pub async fn star(&self, post: i64, by: i64, on: bool) {
        let method = if on { Method::PUT } else { Method::DELETE };
        let r = self
            .http
            .request(method, format!("{}/api/posts/{post}/star", self.base))
            .header("X-User-Id", by.to_string())
            .send()
            .await
            .expect("the instance answers");
        assert_eq!(r.status(), StatusCode::NO_CONTENT, "{:?}", r.text().await);
    }

    /// The dashboard's "clear cache" button.
    pub async fn clear_cache(&self) {
        let r = self
            .http
            .post(format!("{}/api/admin/connection-pool-monitor", self.base))
            .bearer_auth(TOKEN)
            .json(&serde_json::json!({"action": "clearCache"}))
            .send()
            .await
            .expect("the instance answers");
        assert!(r.status().is_success(), "{:?}", r.text().await);
    }

    /// The admin monitor's report.
    pub async fn monitor(&self) -> Value {
        let r = self
            .http
            .get(format!("{}/api/admin/connection-pool-monitor", self.base))
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect("the instance answers");
        assert!(r.status().is_success());
        r.json().await.unwrap()
    }

    /// A figure of `/metrics` (0 when absent).
    pub async fn metric(&self, name: &str) -> u64 {
        let Ok(r) = self.http.get(format!("{}/metrics", self.base)).send().await else {
            return 0;
        };
        let text = r.text().await.unwrap_or_default();
        text.lines()
            .find_map(|l| {
                l.strip_prefix(name)?
                    .strip_prefix(' ')?
                    .trim()
                    .parse::<f64>()
                    .ok()
            })
            .map_or(0, |v| v as u64)
    }
}
