//! Reads on replicas in the bench's reports (hpdb's `status.replicas`,
//! `--replica-urls`): between two snapshots, summed over the instances,
//! the reads that ran on a replica and those that stayed on the primary
//! (and why), what routing added to a read (each instance's figures since
//! it started: percentiles do not subtract), and the statements the
//! replicas executed by their own `pg_stat_statements`.

use serde::Serialize;
use serde_json::Value;

use super::measures::Snapshot;

/// Routing figures of one measurement.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Routing {
    /// Reads that ran on a replica.
    pub routed: u64,
    /// … that waited for one to catch up first.
    pub waited: u64,
    /// Reads on the primary: no replica replayed their floor in time.
    pub behind: u64,
    /// … no replica usable.
    pub unavailable: u64,
    /// … the replica failed mid-query.
    pub retried: u64,
    /// … the shared level did not answer their lookup.
    pub unanswered: u64,
    /// Reads whose floor was the primary's position (no shared answer).
    pub strict: u64,
    /// What routing added to a read, worst instance, since the servers
    /// started: p50, p99, max in ms.
    pub routing_ms: [f64; 3],
    /// Statements the replicas executed (their own count; `None`: no
    /// witness there).
    pub replica_statements: Option<i64>,
}

fn counts(status: &Value) -> [u64; 7] {
    let r = &status["replicas"];
    let sum = |field: &str| {
        r["replicas"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|x| x[field].as_u64().unwrap_or(0))
            .sum::<u64>()
    };
    let n = |field: &str| r[field].as_u64().unwrap_or(0);
    [
        sum("routed"),
        sum("waited"),
        n("fallbacksBehind"),
        n("fallbacksUnavailable"),
        n("retriedOnPrimary"),
        n("strictReads"),
        n("fallbacksUnanswered"),
    ]
}

/// The figures between `before` and `after`; `None` when the servers read
/// from no replica.
pub fn between(before: &Snapshot, after: &Snapshot) -> Option<Routing> {
    if after.instances.iter().all(|s| s["replicas"].is_null()) {
        return None;
    }
    let mut total = [0u64; 7];
    for (i, a) in after.instances.iter().enumerate() {
        let was = before.instances.get(i).map(counts).unwrap_or_default();
        for (k, now) in counts(a).into_iter().enumerate() {
            total[k] += now.saturating_sub(was[k]);
        }
    }
    let worst = |q: &str| {
        after
            .instances
            .iter()
            .filter_map(|s| s["replicas"]["routingMs"][q].as_f64())
            .fold(0.0, f64::max)
    };
    Some(Routing {
        routed: total[0],
        waited: total[1],
        behind: total[2],
        unavailable: total[3],
        retried: total[4],
        strict: total[5],
        unanswered: total[6],
        routing_ms: [worst("p50"), worst("p99"), worst("max")],
        replica_statements: after
            .replica_statements
            .zip(before.replica_statements)
            .map(|(a, b)| a - b),
    })
}

/// One sentence for the report.
pub fn sentence(r: &Routing) -> String {
    let reads = r.routed + r.behind + r.unavailable + r.unanswered;
    let share = if reads > 0 {
        100.0 * r.routed as f64 / reads as f64
    } else {
        0.0
    };
    format!(
        "{} reads on a replica ({share:.1}% of those offered; {} waited), on the primary: {} behind, {} none usable, {} Redis did not answer, {} replica failed; {} at the primary's position; routing added p50 {:.3} ms, p99 {:.3} ms, max {:.1} ms; replica statements {}",
        r.routed,
        r.waited,
        r.behind,
        r.unavailable,
        r.unanswered,
        r.retried,
        r.strict,
        r.routing_ms[0],
        r.routing_ms[1],
        r.routing_ms[2],
        r.replica_statements
            .map(|n| n.to_string())
            .unwrap_or_else(|| "n/a".into())
    )
}
