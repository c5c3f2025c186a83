//! The server under test: started here as a child process (so its CPU time
//! and memory can be read from /proc), or an external URL.

use std::{path::PathBuf, process::Stdio, time::Duration};

use anyhow::Context;
use serde_json::Value;
use tokio::process::{Child, Command};

use super::{BenchArgs, START_TIMEOUT};

/// CPU time and resident memory of the server process.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcSample {
    /// User + system CPU seconds since the process started.
    pub cpu_seconds: f64,
    /// Resident set size, bytes.
    pub rss_bytes: u64,
}

/// Where the benchmark sends its requests.
pub struct Target {
    /// `http://host:port`.
    pub base: String,
    token: Option<String>,
    child: Option<Child>,
    log: Option<PathBuf>,
    /// The HTTP client (connection pool shared by all virtual users).
    pub http: reqwest::Client,
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(usize::MAX)
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("an HTTP client without TLS always builds")
}

/// The command line of the server under test: `gistfans serve` as a user
/// runs it (its defaults, or the environment's `DB_*`), with the bench's
/// flags only where given (flags override the environment).
pub(crate) fn serve_args(args: &BenchArgs, port: u16) -> Vec<String> {
    let mut argv = vec![
        "serve".to_string(),
        format!("--bind=127.0.0.1:{port}"),
        // No start-up warming: it would overlap the first measurement;
        // each mode has its own (excluded) warm-up instead.
        "--warm-users=0".to_string(),
    ];
    if let Some(n) = args.pool_max {
        argv.push(format!("--pool-max={n}"));
    }
    if let Some(n) = args.cache_size {
        argv.push(format!("--cache-size={n}"));
    }
    if let Some(policy) = &args.cache_policy {
        argv.push(format!("--cache-policy={policy}"));
    }
    argv
}

impl Target {
    /// A server someone else runs.
    pub fn external(url: &str, token: Option<String>) -> Target {
        Target {
            base: url.trim_end_matches('/').to_string(),
            token,
            child: None,
            log: None,
            http: client(),
        }
    }

    /// Starts `gistfans serve` on a free loopback port and waits until it is ready.
    pub async fn start(args: &BenchArgs) -> anyhow::Result<Target> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let token = format!("bench-{:x}", rand::random::<u64>());
        let log = std::env::temp_dir().join(format!("gistfans-bench-server-{port}.log"));
        let exe = std::env::current_exe().context("locating the gistfans binary")?;
        eprintln!(
            "bench: starting `gistfans serve` on 127.0.0.1:{port} over {} (log: {})",
            hpdb::redacted_url(&args.database_url),
            log.display()
        );
        let child = Command::new(exe)
            .args(serve_args(args, port))
            // Secrets (a URL may hold a password) in the environment, not on
            // the command line, where `ps` shows them.
            .env("DATABASE_URL", &args.database_url)
            .envs(args.direct_url.as_ref().map(|u| ("DIRECT_URL", u)))
            .envs(
                args.baseline_database_url
                    .as_ref()
                    .map(|u| ("BASELINE_DATABASE_URL", u)),
            )
            .env("ADMIN_TOKEN", &token)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log)?)
            .stderr(std::fs::File::create(&log)?)
            .kill_on_drop(true)
            .spawn()
            .context("spawning gistfans serve")?;
        let mut target = Target {
            base: format!("http://127.0.0.1:{port}"),
            token: Some(token),
            child: Some(child),
            log: Some(log),
            http: client(),
        };
        target.wait_ready().await?;
        Ok(target)
    }

    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(r) = self.http.get(format!("{}/readyz", self.base)).send().await {
                if r.status().is_success() {
                    return Ok(());
                }
            }
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    let tail = self
                        .log
                        .as_ref()
                        .and_then(|l| std::fs::read_to_string(l).ok())
                        .unwrap_or_default();
                    anyhow::bail!(
                        "the server exited ({status}) before it was ready:\n{}",
                        tail.lines()
                            .rev()
                            .take(20)
                            .collect::<Vec<_>>()
                            .into_iter()
                            .rev()
                            .collect::<Vec<_>>()
                            .join("\n")
                    );
                }
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "the server was not ready within {:?}",
                START_TIMEOUT
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// A short description for the output.
    pub fn describe(&self) -> String {
        match &self.child {
            Some(c) => format!("server pid {} at {}", c.id().unwrap_or(0), self.base),
            None => format!("external server at {}", self.base),
        }
    }

    /// Whether CPU and memory of the server can be read (we started it).
    pub fn can_measure_process(&self) -> bool {
        self.child.is_some()
    }

    /// The admin monitor's answer, if the bench holds the token.
    async fn monitor(&self) -> Option<Value> {
        let token = self.token.as_ref()?;
        let r = self
            .http
            .get(format!("{}/api/admin/connection-pool-monitor", self.base))
            .bearer_auth(token)
            .send()
            .await
            .ok()?;
        r.json().await.ok()
    }

    /// The manager's status, as the admin monitor reports it.
    pub async fn monitor_status(&self) -> Option<Value> {
        self.monitor().await?.get("status").cloned()
    }

    /// The settings the server under test runs with, as its monitor reports
    /// them (pool, cache bounds and policy, TTL), for the report's header.
    pub async fn settings(&self) -> Option<String> {
        let v = self.monitor().await?;
        let c = v.get("config")?;
        let (pool, cache) = (&c["pool"], &c["cache"]);
        Some(format!(
            "pool {}..{} connections, cache {} entries / {} MiB, {}, TTL {} s",
            pool["min_connections"],
            pool["max_connections"],
            cache["max_entries"],
            cache["max_bytes"].as_u64()? / (1024 * 1024),
            cache["policy"].as_str()?,
            cache["ttl"]["secs"],
        ))
    }

    /// CPU time and RSS of the server process, from /proc.
    pub fn proc_sample(&self) -> Option<ProcSample> {
        let pid = self.child.as_ref()?.id()?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // Fields after the command name (which may contain spaces) start after ") ".
        let rest = &stat[stat.rfind(')')? + 2..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks = 100.0; // USER_HZ on Linux
        let cpu_seconds =
            (f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?) / ticks;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let rss_kb = status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))?
            .split_whitespace()
            .nth(1)?
            .parse::<u64>()
            .ok()?;
        Some(ProcSample {
            cpu_seconds,
            rss_bytes: rss_kb * 1024,
        })
    }

    /// Stops the server we started (SIGTERM, then kill after 10 s).
    pub async fn stop(mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Some(pid) = child.id() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .status()
                .await;
            if tokio::time::timeout(Duration::from_secs(10), child.wait())
                .await
                .is_ok()
            {
                return;
            }
        }
        let _ = child.kill().await;
    }
}
