//! Redis for tests: a `redis-server` of the test's own (started on a free
//! loopback port, stopped by its PID when dropped) that a test may kill,
//! pause (`SIGSTOP`) and restart empty, and the local Redis Cluster that
//! `scripts/services.sh` starts on 127.0.0.1:7000-7005.
//!
//! Nothing here skips: a test that needs Redis fails with the command that
//! starts it.

use std::{
    net::TcpListener,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// A URL for the local Redis Cluster (`REDIS_CLUSTER_URL`, else
/// `redis+cluster://127.0.0.1:7000,127.0.0.1:7001,127.0.0.1:7002`).
pub fn cluster_url() -> String {
    std::env::var("REDIS_CLUSTER_URL").unwrap_or_else(|_| {
        "redis+cluster://127.0.0.1:7000,127.0.0.1:7001,127.0.0.1:7002".to_string()
    })
}

/// The cluster's node ports.
pub const CLUSTER_PORTS: [u16; 6] = [7000, 7001, 7002, 7003, 7004, 7005];

/// Runs `redis-cli -p port args…` and returns its output (panics if it cannot run).
pub fn cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .arg("-p")
        .arg(port.to_string())
        .args(args)
        .output()
        .expect("redis-cli runs (scripts/services.sh installs redis-tools)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Panics unless the local cluster answers with `cluster_state:ok`.
pub fn require_cluster() {
    let info = cli(CLUSTER_PORTS[0], &["cluster", "info"]);
    assert!(
        info.contains("cluster_state:ok"),
        "the Redis Cluster on 127.0.0.1:7000-7005 is not up (`cluster info`: {info:?}); \
         start it with `bash scripts/services.sh`. These tests never skip."
    );
}

/// A free loopback port (bound, then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// A `redis-server` of this test's own.
pub struct RedisServer {
    /// Its port on 127.0.0.1.
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts one on a free port, keeping nothing on disk; waits until it answers.
    pub fn start() -> RedisServer {
        let port = free_port();
        let dir = std::env::temp_dir().join(crate::unique("redis"));
        std::fs::create_dir_all(&dir).expect("a scratch directory");
        let mut r = RedisServer {
            port,
            dir,
            child: None,
        };
        r.restart();
        r
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts the server again on the same port, empty (after [`kill`](Self::kill)).
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "still running");
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port"])
            .arg(self.port.to_string())
            .args(["--save", "", "--appendonly", "no", "--dir"])
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server runs (scripts/services.sh installs redis-server)");
        self.child = Some(child);
        let until = Instant::now() + Duration::from_secs(10);
        while cli(self.port, &["ping"]).trim() != "PONG" {
            assert!(
                Instant::now() < until,
                "redis-server on {} did not start",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the server (its data is lost: nothing is kept on disk).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Freezes the process (`SIGSTOP`): connections stay open, nothing answers.
    pub fn freeze(&self) {
        self.signal("-STOP");
    }

    /// Lets a frozen process go on (`SIGCONT`).
    pub fn thaw(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().expect("running").id();
        let ok = Command::new("kill")
            .arg(sig)
            .arg(pid.to_string())
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill {sig} {pid}");
    }

    /// Runs `redis-cli` against it.
    pub fn cli(&self, args: &[&str]) -> String {
        cli(self.port, args)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.thaw();
        }
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
