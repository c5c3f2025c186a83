//! The consistency monitor's figures in the bench's reports (hpdb's
//! `status.consistency`): per delay, summed over the instances, between two
//! snapshots, with the nines of what was checked in between.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

/// The monitor's figures for one delay over a measurement.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Nines {
    /// The delay's label (`1s`, `10s`).
    pub within: String,
    /// Entries compared with the database.
    pub checked: u64,
    /// Entries found stale.
    pub stale: u64,
    /// Checks skipped (a query waited at the gate).
    pub skipped: u64,
    /// `-log10(stale / checked)`; a lower bound when `nines_at_least`.
    pub nines: Option<f64>,
    /// True while none was stale.
    pub nines_at_least: bool,
}

/// The counters of each delay on one instance's status.
fn counts(status: &Value) -> BTreeMap<(u64, String), [u64; 3]> {
    let within = status["consistency"]["within"].as_array();
    within
        .into_iter()
        .flatten()
        .map(|w| {
            let n = |name: &str| w[name].as_u64().unwrap_or(0);
            let label = w["within"].as_str().unwrap_or("?").to_string();
            (
                (n("withinMs"), label),
                [n("checked"), n("stale"), n("skipped")],
            )
        })
        .collect()
}

/// The figures between `before` and `after` (each instance's status, in
/// the same order), summed over the instances, shortest delay first.
pub fn between(before: &[Value], after: &[Value]) -> Vec<Nines> {
    let mut sum: BTreeMap<(u64, String), [u64; 3]> = BTreeMap::new();
    for (i, a) in after.iter().enumerate() {
        let b = before.get(i).map(counts).unwrap_or_default();
        for (key, now) in counts(a) {
            let was = b.get(&key).copied().unwrap_or_default();
            let total = sum.entry(key).or_default();
            for k in 0..3 {
                total[k] += now[k].saturating_sub(was[k]);
            }
        }
    }
    sum.into_iter()
        .map(|((_, within), [checked, stale, skipped])| {
            let (nines, nines_at_least) = hpdb::nines(checked, stale);
            Nines {
                within,
                checked,
                stale,
                skipped,
                nines,
                nines_at_least,
            }
        })
        .collect()
}

/// One sentence: `within 1s: ≥ 2.30 nines (200 checked, 0 stale, 0 skipped); …`.
pub fn sentence(all: &[Nines]) -> String {
    all.iter()
        .map(|n| {
            let nines = match n.nines {
                Some(v) => format!("{}{v:.2} nines", if n.nines_at_least { "≥ " } else { "" }),
                None => "no check".to_string(),
            };
            format!(
                "within {}: {nines} ({} checked, {} stale, {} skipped)",
                n.within, n.checked, n.stale, n.skipped
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn status(checked: u64, stale: u64) -> Value {
        json!({"consistency": {"within": [
            {"within": "1s", "withinMs": 1000, "checked": checked, "stale": stale, "skipped": 1},
            {"within": "10s", "withinMs": 10000, "checked": 0, "stale": 0, "skipped": 0},
        ]}})
    }

    #[test]
    fn figures_are_summed_over_instances_between_snapshots() {
        let before = [status(10, 0), status(5, 0)];
        let after = [status(510, 0), status(505, 1)];
        let n = between(&before, &after);
        assert_eq!(n.len(), 2);
        assert_eq!(
            (n[0].within.as_str(), n[0].checked, n[0].stale),
            ("1s", 1000, 1)
        );
        assert_eq!((n[0].nines, n[0].nines_at_least), (Some(3.0), false));
        assert_eq!((n[1].within.as_str(), n[1].nines), ("10s", None));
        assert_eq!(
            sentence(&n),
            "within 1s: 3.00 nines (1000 checked, 1 stale, 0 skipped); \
             within 10s: no check (0 checked, 0 stale, 0 skipped)"
        );
    }
}
