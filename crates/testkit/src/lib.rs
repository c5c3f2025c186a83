//! Test support shared by the workspace's tests and benchmarks.
//!
//! - [`Proxy`]: a TCP proxy on loopback in front of a database, to make it
//!   unreachable, bring it back, or slow down new connections.
//! - [`redis`]: a Redis of the test's own to kill, pause and restart, and the
//!   local Redis Cluster.
//! - [`Cleanup`]: asynchronous clean-up when a test ends, passed or failed.
//! - [`TempDir`]: a directory of a test's own, removed when it ends.
//! - [`pg`]: where the PostgreSQL tests connect, and the witnesses they ask
//!   (`pg_stat_statements`, `pg_stat_activity`).
//!
//! Nothing here skips: a test that needs PostgreSQL fails loudly when it
//! cannot reach it, because a skipped test proves nothing.

mod cleanup;
pub mod pg;
mod proxy;
pub mod redis;
pub mod replica;
mod temp_dir;

pub use cleanup::Cleanup;
pub use proxy::Proxy;
pub use temp_dir::TempDir;

/// A name unique to this process and call, for tables, keys and
/// application names that tests running in parallel must not share.
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{prefix}_{}_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        nanos % 100_000
    )
}
