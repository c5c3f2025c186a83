//! What a measured run produces: the mode it measured, its counters, and the
//! snapshots taken around it. The vocabulary shared by the workload that
//! fills these and the report that reads them.

use gistfans_data::witness::Witness;
use serde::Serialize;
use serde_json::Value;

use super::server::{ProcSample, Target};

/// How a page is loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Four per-component requests in parallel, plain pool.
    Baseline,
    /// One request to the aggregated, cached route.
    Optimized,
    /// One request to a route that touches nothing (`/api/ping`), through
    /// the server's whole stack.
    Trivial,
    /// The same request to a bare axum handler in the server's process
    /// (`gistfans serve --ceiling-bind`, no layers, axum's own server): the
    /// HTTP ceiling of this machine; trivial ÷ ceiling is the stack's price.
    Ceiling,
}

impl Mode {
    /// True for the modes that read no data (and so make no writes).
    pub fn is_http_only(self) -> bool {
        matches!(self, Mode::Trivial | Mode::Ceiling)
    }
}

/// Counters of a run, for the report.
pub struct Counts {
    /// HTTP requests sent.
    pub requests: u64,
    /// Writes sent.
    pub writes: u64,
    /// Writes that conflicted (already starred, already following): not errors.
    pub conflicts: u64,
    /// Writes a following read did not see.
    pub stale: u64,
}

/// Counters read before and after a measurement.
pub struct Snapshot {
    /// pg_stat_statements total.
    pub statements: Option<i64>,
    /// pg_stat_statements total on the replicas (`--replica-urls`).
    pub replica_statements: Option<i64>,
    /// The admin monitor's status (every instance's added up).
    pub monitor: Option<Value>,
    /// Each instance's own status, in order.
    pub instances: Vec<Value>,
    /// The server process's CPU and memory.
    pub process: Option<ProcSample>,
}

impl Snapshot {
    /// Reads the counters; the admin monitor only if `monitor`.
    pub(super) async fn take(t: &Target, w: &Witness, monitor: bool) -> Snapshot {
        let instances = if monitor {
            t.instance_statuses().await.unwrap_or_default()
        } else {
            Vec::new()
        };
        Snapshot {
            statements: w.statements().await,
            replica_statements: w.replica_statements().await,
            monitor: (!instances.is_empty())
                .then(|| super::server::merge_statuses(instances.clone())),
            instances,
            process: t.proc_sample(),
        }
    }
}
