//! The server under test: started here as child processes (so their CPU
//! time and memory can be read from /proc; several instances share one
//! database and one Redis), or an external URL.

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
    /// `http://host:port` of each instance.
    pub bases: Vec<String>,
    /// `http://host:port` of each instance's bare ceiling handler (only for
    /// servers the bench starts).
    pub ceilings: Vec<String>,
    token: Option<String>,
    /// The processes we started, with their logs.
    children: Vec<(Child, PathBuf)>,
    /// The HTTP client (connection pool shared by all virtual users).
    pub http: reqwest::Client,
    /// The Redis namespace of the servers we started (their change
    /// stream's slot is named after it).
    pub namespace: Option<String>,
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
pub(crate) fn serve_args(args: &BenchArgs, port: u16, ceiling: u16) -> Vec<String> {
    let mut argv = vec![
        "serve".to_string(),
        format!("--bind=127.0.0.1:{port}"),
        format!("--ceiling-bind=127.0.0.1:{ceiling}"),
        // No start-up warming: it would overlap the first measurement;
        // each mode has its own (excluded) warm-up instead.
        "--warm-users=0".to_string(),
    ];
    if let Some(rule) = args.preload {
        argv.push(format!("--preload={}", rule.name()));
    }
    // URLs (they may hold a password) go in the environment instead.
    argv.extend(args.manager.to_args_without_urls());
    argv
}

impl Target {
    /// A server someone else runs.
    pub fn external(url: &str, token: Option<String>) -> Target {
        Target {
            bases: vec![url.trim_end_matches('/').to_string()],
            ceilings: Vec::new(),
            token,
            children: Vec::new(),
            http: client(),
            namespace: None,
        }
    }

    /// Instances at `bases` reached through `http` (a task's own handle
    /// on servers another `Target` owns).
    pub fn with_bases(http: reqwest::Client, bases: Vec<String>) -> Target {
        Target {
            bases,
            ceilings: Vec::new(),
            token: None,
            children: Vec::new(),
            http,
            namespace: None,
        }
    }

    /// The first instance (the only one unless several were started).
    pub fn base(&self) -> &str {
        &self.bases[0]
    }

    /// Starts `instances` servers (`gistfans serve`, each on a free loopback
    /// port, sharing the database and, with `--redis-url`, one Redis under a
    /// namespace of this run's own) and waits until they are ready.
    pub async fn start(args: &BenchArgs, instances: usize) -> anyhow::Result<Target> {
        let token = format!("bench-{:x}", rand::random::<u64>());
        let namespace = format!("bench-{:x}", rand::random::<u32>());
        let mut target = Target {
            bases: Vec::new(),
            ceilings: Vec::new(),
            token: Some(token.clone()),
            children: Vec::new(),
            http: client(),
            namespace: Some(namespace.clone()),
        };
        for _ in 0..instances {
            let (child, log, base, ceiling) = spawn(args, &token, &namespace).await?;
            target.bases.push(base);
            target.ceilings.push(ceiling);
            target.children.push((child, log));
        }
        target.wait_ready().await?;
        Ok(target)
    }
}

/// Starts one `gistfans serve`; its process, log, base URL and ceiling URL.
async fn spawn(
    args: &BenchArgs,
    token: &str,
    namespace: &str,
) -> anyhow::Result<(Child, PathBuf, String, String)> {
    let free =
        || -> std::io::Result<std::net::TcpListener> { std::net::TcpListener::bind("127.0.0.1:0") };
    let (a, b) = (free()?, free()?);
    let (port, ceiling) = (a.local_addr()?.port(), b.local_addr()?.port());
    drop((a, b));
    let log = std::env::temp_dir().join(format!("gistfans-bench-server-{port}.log"));
    let exe = std::env::current_exe().context("locating the gistfans binary")?;
    eprintln!(
        "bench: starting `gistfans serve` on 127.0.0.1:{port} over {} (log: {})",
        hpdb::redacted_url(&args.database_url),
        log.display()
    );
    let child = Command::new(exe)
        .args(serve_args(args, port, ceiling))
        // Secrets (a URL may hold a password) in the environment, not on
        // the command line, where `ps` shows them.
        .env("DATABASE_URL", &args.database_url)
        .envs(args.direct_url.as_ref().map(|u| ("DIRECT_URL", u)))
        .envs(
            args.baseline_database_url
                .as_ref()
                .map(|u| ("BASELINE_DATABASE_URL", u)),
        )
        .envs(args.redis_url().map(|u| ("REDIS_URL", u)))
        .env("REDIS_NAMESPACE", namespace)
        // A bench run's namespace is its own: a change-stream slot named
        // after it would outlive the run and keep WAL (issue 21); only
        // `--scenario changes` turns it on, and drops its slot.
        .env(
            "CHANGE_STREAM",
            if args.change_stream { "true" } else { "false" },
        )
        .env("ADMIN_TOKEN", token)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log)?)
        .stderr(std::fs::File::create(&log)?)
        .kill_on_drop(true)
        .spawn()
        .context("spawning gistfans serve")?;
    Ok((
        child,
        log,
        format!("http://127.0.0.1:{port}"),
        format!("http://127.0.0.1:{ceiling}"),
    ))
}

impl Target {
    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        for i in 0..self.bases.len() {
            self.wait_one(i).await?;
        }
        Ok(())
    }

    async fn wait_one(&mut self, i: usize) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(r) = self
                .http
                .get(format!("{}/readyz", self.bases[i]))
                .send()
                .await
            {
                if r.status().is_success() {
                    return Ok(());
                }
            }
            if let Some((child, log)) = self.children.get_mut(i) {
                if let Some(status) = child.try_wait()? {
                    let tail = std::fs::read_to_string(log).unwrap_or_default();
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
        if self.children.is_empty() {
            return format!("external server at {}", self.base());
        }
        let pids: Vec<String> = self
            .children
            .iter()
            .map(|(c, _)| c.id().unwrap_or(0).to_string())
            .collect();
        format!(
            "{} server(s), pid {} at {}",
            self.bases.len(),
            pids.join(", "),
            self.bases.join(", ")
        )
    }

    /// Whether CPU and memory of the servers can be read (we started them).
    pub fn can_measure_process(&self) -> bool {
        !self.children.is_empty()
    }

    /// The admin monitor's answer of instance `i`, if the bench holds the token.
    async fn monitor_of(&self, i: usize) -> Option<Value> {
        let token = self.token.as_ref()?;
        let r = self
            .http
            .get(format!(
                "{}/api/admin/connection-pool-monitor",
                self.bases[i]
            ))
            .bearer_auth(token)
            .send()
            .await
            .ok()?;
        r.json().await.ok()
    }

    pub(super) async fn monitor(&self) -> Option<Value> {
        self.monitor_of(0).await
    }

    /// The managers' status, as the admin monitors report it: with several
    /// instances, their counters added up (see [`merge_statuses`]).
    /// Each instance's status, in order.
    pub async fn instance_statuses(&self) -> Option<Vec<Value>> {
        let mut all = Vec::new();
        for i in 0..self.bases.len() {
            all.push(self.monitor_of(i).await?.get("status")?.clone());
        }
        Some(all)
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

    /// CPU time and RSS of the server processes (added up), from /proc.
    pub fn proc_sample(&self) -> Option<ProcSample> {
        let mut total = ProcSample::default();
        for (child, _) in &self.children {
            let one = proc_sample(child.id()?)?;
            total.cpu_seconds += one.cpu_seconds;
            total.rss_bytes += one.rss_bytes;
        }
        (!self.children.is_empty()).then_some(total)
    }

    /// Stops the servers we started (SIGTERM, then kill after 10 s).
    pub async fn stop(self) {
        for (child, _) in self.children {
            stop(child).await;
        }
    }
}

/// Several instances' statuses as one: counters (whole numbers, at the top
/// level and in `shared`) added up; the rest taken from the first.
pub fn merge_statuses(all: Vec<Value>) -> Value {
    let mut it = all.into_iter();
    let Some(mut total) = it.next() else {
        return Value::Null;
    };
    for other in it {
        add_counts(&mut total, &other);
        if let (Some(t), Some(o)) = (total.get_mut("shared"), other.get("shared")) {
            add_counts(t, o);
        }
    }
    total
}

fn add_counts(total: &mut Value, other: &Value) {
    let Some(map) = total.as_object_mut() else {
        return;
    };
    for (k, v) in map.iter_mut() {
        if let (Some(a), Some(b)) = (v.as_u64(), other.get(k).and_then(Value::as_u64)) {
            *v = Value::from(a + b);
        }
    }
}

/// CPU time and RSS of process `pid`, from /proc.
fn proc_sample(pid: u32) -> Option<ProcSample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces) start after ") ".
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = 100.0; // USER_HZ on Linux
    let cpu_seconds = (f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?) / ticks;
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

/// Stops a server we started (SIGTERM, then kill after 10 s).
async fn stop(mut child: Child) {
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
