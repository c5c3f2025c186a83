//! The server and writes made around it (issue 21): on PostgreSQL its
//! change stream; on SQLite its `PRAGMA data_version` watch, tested with
//! `gistfans serve` as a process of its own and the test's own connection
//! to the same file as the other process.

mod common;

/// `gistfans serve` over a SQLite file, stopped (by its PID) when dropped.
struct SqliteServer {
    base: String,
    http: reqwest::Client,
    child: std::process::Child,
    dir: std::path::PathBuf,
}

impl Drop for SqliteServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl SqliteServer {
    /// Starts one over a new file with the small demo data, with the
    /// product's defaults, and waits until it answers.
    async fn start() -> SqliteServer {
        use std::process::{Command, Stdio};
        let dir = std::env::temp_dir().join(testkit::unique("gf_sqlite_serve"));
        std::fs::create_dir_all(&dir).unwrap();
        let url = format!("sqlite://{}/gf.db", dir.display());
        gistfans_data::migrate(&url, None).await.unwrap();
        let small = gistfans_data::seed::SeedConfig::small();
        gistfans_data::seed::seed(&url, &small, false)
            .await
            .unwrap();
        let port = testkit::redis::free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_gistfans"))
            .arg("serve")
            .env("DATABASE_URL", url)
            .env("BIND_ADDR", format!("127.0.0.1:{port}"))
            .env("WARM_USERS", "0")
            .env("PRELOAD", "off")
            .env("RUST_LOG", "warn")
            .env_remove("REDIS_URL")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the gistfans binary runs");
        let server = SqliteServer {
            base: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::new(),
            child,
            dir,
        };
        let up = testkit::pg::eventually(std::time::Duration::from_secs(60), || async {
            server
                .http
                .get(format!("{}/healthz", server.base))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
        })
        .await;
        assert!(up, "the server on {port} started");
        server
    }

    fn url(&self) -> String {
        format!("sqlite://{}/gf.db", self.dir.display())
    }

    /// User `id`'s follower count and the answer's `X-Cache`.
    async fn followers(&self, id: i64) -> (i64, String) {
        let r = self
            .http
            .get(format!(
                "{}/api/user/stats-optimized?userId={id}",
                self.base
            ))
            .send()
            .await
            .expect("the server answers");
        assert!(r.status().is_success());
        let cache = r.headers()["x-cache"].to_str().unwrap().to_string();
        let body: serde_json::Value = r.json().await.unwrap();
        (body["stats"]["followers"].as_i64().unwrap(), cache)
    }

    /// `follower` follows (`on`) or unfollows `followee` through the API.
    async fn follow(&self, follower: i64, followee: i64, on: bool) {
        let method = if on {
            reqwest::Method::PUT
        } else {
            reqwest::Method::DELETE
        };
        let r = self
            .http
            .request(method, format!("{}/api/users/{followee}/follow", self.base))
            .header("X-User-Id", follower.to_string())
            .send()
            .await
            .expect("the server answers");
        assert!(r.status().is_success(), "{:?}", r.text().await);
    }

    /// A line of `/metrics` starting with `name` (its value, 0 when absent).
    async fn metric(&self, name: &str) -> f64 {
        let text = self
            .http
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .expect("the server answers")
            .text()
            .await
            .unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
            .unwrap_or(0.0)
    }
}

#[tokio::test]
async fn on_sqlite_another_processs_follow_reaches_the_servers_cache_and_its_own_writes_keep_it() {
    use sqlx::{sqlite::SqliteConnectOptions, ConnectOptions, Connection};

    let patience = std::time::Duration::from_secs(20);
    let server = SqliteServer::start().await;
    assert_eq!(
        server
            .metric("hpdb_changes_mode{mode=\"data_version\"}")
            .await,
        1.0
    );
    let (followers, _) = server.followers(2).await;
    assert_eq!(server.followers(2).await, (followers, "cache".to_string()));

    // Another process's commit: the test's own connection to the file.
    let mut other = server
        .url()
        .parse::<SqliteConnectOptions>()
        .unwrap()
        .busy_timeout(std::time::Duration::from_secs(5))
        .connect()
        .await
        .unwrap();
    let follower: i64 = sqlx::query_scalar(
        "SELECT id FROM users WHERE id <> 2 AND id NOT IN \
         (SELECT follower_id FROM follows WHERE followee_id = 2) ORDER BY id LIMIT 1",
    )
    .fetch_one(&mut other)
    .await
    .unwrap();
    sqlx::query("INSERT INTO follows (follower_id, followee_id, created_at) VALUES (?, 2, 0)")
        .bind(follower)
        .execute(&mut other)
        .await
        .unwrap();
    other.close().await.unwrap();
    assert!(
        testkit::pg::eventually(patience, || async {
            server.followers(2).await.0 == followers + 1
        })
        .await,
        "the other process's follow never reached the server's cache"
    );
    let foreign = server.metric("hpdb_changes_foreign_commits_total").await;
    assert!(foreign >= 1.0);

    // The server's own writes: no foreign commit, the cache kept.
    let (bystander, _) = server.followers(3).await;
    for on in [false, true, false] {
        server.follow(follower, 2, on).await;
    }
    let polls = server.metric("hpdb_changes_polls_total").await;
    assert!(
        testkit::pg::eventually(patience, || async {
            server.metric("hpdb_changes_polls_total").await >= polls + 3.0
        })
        .await
    );
    assert_eq!(
        server.metric("hpdb_changes_foreign_commits_total").await,
        foreign
    );
    assert_eq!(server.followers(3).await, (bystander, "cache".to_string()));
    assert_eq!(server.followers(2).await.0, followers);
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
