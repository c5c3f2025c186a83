//! What the monitor counts, per delay, and how it is reported: the
//! [`ConsistencyStatus`] in [`Status`](crate::Status), with "nines".
//!
//! Nines are Polaris's figure: with `stale` of `checked` entries found
//! stale, `-log10(stale / checked)` (99.9% consistent is 3 nines). With
//! none stale the ratio says nothing but "fewer than one in `checked`",
//! so the figure is `log10(checked)` marked as a lower bound
//! (`ninesAtLeast`): 1,000 clean checks are "at least 3 nines".

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use serde::Serialize;

/// How one check ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The cached entry says what the database says.
    Fresh,
    /// It does not, confirmed by a second look (see the module `consistency`).
    Stale,
    /// Nothing cached under the key at check time: nothing to check.
    Absent,
    /// Not run: a query waited at the gate or the circuit was open.
    Skipped,
    /// The entry changed (a write's invalidation landed) between the two
    /// looks of a stale finding: inconclusive.
    Raced,
    /// The verifier failed (the database did not answer, its time ran out,
    /// or the value was not of the verifier's type).
    Error,
}

/// One delay's counters.
#[derive(Default)]
pub(crate) struct Tally {
    fresh: AtomicU64,
    stale: AtomicU64,
    absent: AtomicU64,
    skipped: AtomicU64,
    raced: AtomicU64,
    errors: AtomicU64,
}

impl Tally {
    pub(crate) fn record(&self, outcome: Outcome) {
        let counter = match outcome {
            Outcome::Fresh => &self.fresh,
            Outcome::Stale => &self.stale,
            Outcome::Absent => &self.absent,
            Outcome::Skipped => &self.skipped,
            Outcome::Raced => &self.raced,
            Outcome::Error => &self.errors,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn reset(&self) {
        for c in [
            &self.fresh,
            &self.stale,
            &self.absent,
            &self.skipped,
            &self.raced,
            &self.errors,
        ] {
            c.store(0, Ordering::Relaxed);
        }
    }

    pub(crate) fn status(&self, delay: Duration) -> WithinStatus {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let (fresh, stale) = (get(&self.fresh), get(&self.stale));
        let checked = fresh + stale;
        let (nines, nines_at_least) = nines(checked, stale);
        WithinStatus {
            within: label(delay),
            within_ms: delay.as_millis() as u64,
            checked,
            stale,
            absent: get(&self.absent),
            skipped: get(&self.skipped),
            raced: get(&self.raced),
            errors: get(&self.errors),
            nines,
            nines_at_least,
        }
    }
}

/// The monitor's figures for one delay ("within 1 s").
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WithinStatus {
    /// The delay as a label: `1s`, `10s`, `250ms` (bounded: two per manager).
    pub within: String,
    /// The delay in milliseconds.
    pub within_ms: u64,
    /// Entries compared with the database (fresh + stale).
    pub checked: u64,
    /// Entries found to differ from the database (each logged once, with its key).
    pub stale: u64,
    /// Checks that found nothing cached under their key (not counted as checked).
    pub absent: u64,
    /// Checks not run because a query waited at the gate or the circuit was open.
    pub skipped: u64,
    /// Stale findings not confirmed: the entry changed between the two looks.
    pub raced: u64,
    /// Checks whose verifier failed.
    pub errors: u64,
    /// `-log10(stale / checked)`; with none stale, `log10(checked)` as a
    /// lower bound (`ninesAtLeast`); `None` before the first check.
    pub nines: Option<f64>,
    /// True when `nines` is a lower bound (no stale entry found yet).
    pub nines_at_least: bool,
}

/// The consistency monitor in [`Status`](crate::Status).
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConsistencyStatus {
    /// False when `DB_CONSISTENCY_SAMPLE` is 0.
    pub enabled: bool,
    /// Percent of touched keys sampled (`DB_CONSISTENCY_SAMPLE`).
    pub sample_percent: f64,
    /// Key families with a verifier (their prefixes).
    pub families: Vec<String>,
    /// Keys sampled and queued (each is checked at every delay).
    pub sampled: u64,
    /// Keys sampled but not queued: the queue was full.
    pub dropped: u64,
    /// Checks waiting for their time.
    pub pending: u64,
    /// One entry per delay, shortest first.
    pub within: Vec<WithinStatus>,
    /// The key of the latest stale finding, if any.
    pub last_stale: Option<String>,
}

/// Nines of `checked` entries of which `stale` were stale, and whether the
/// figure is a lower bound (none stale); `None` before any check. Rounded
/// to two decimals.
pub fn nines(checked: u64, stale: u64) -> (Option<f64>, bool) {
    if checked == 0 {
        return (None, false);
    }
    let (value, at_least) = if stale == 0 {
        ((checked as f64).log10(), true)
    } else {
        ((checked as f64 / stale as f64).log10(), false)
    };
    (Some((value * 100.0).round() / 100.0), at_least)
}

/// A delay as a short label: whole seconds as `1s`, else milliseconds.
pub(crate) fn label(delay: Duration) -> String {
    let ms = delay.as_millis();
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nines_are_minus_log10_of_the_stale_share() {
        assert_eq!(nines(1000, 1), (Some(3.0), false));
        assert_eq!(nines(100, 10), (Some(1.0), false));
        assert_eq!(nines(4, 4), (Some(0.0), false), "all stale: no nine");
        assert_eq!(nines(200, 1), (Some(2.3), false));
    }

    #[test]
    fn with_none_stale_the_nines_are_a_lower_bound_and_none_before_a_check() {
        assert_eq!(nines(1000, 0), (Some(3.0), true));
        assert_eq!(nines(1, 0), (Some(0.0), true));
        assert_eq!(nines(0, 0), (None, false));
    }

    #[test]
    fn labels_are_short_and_exact() {
        assert_eq!(label(Duration::from_secs(1)), "1s");
        assert_eq!(label(Duration::from_secs(10)), "10s");
        assert_eq!(label(Duration::from_millis(250)), "250ms");
        assert_eq!(label(Duration::from_millis(1500)), "1500ms");
    }

    #[test]
    fn a_tally_counts_fresh_and_stale_as_checked_and_the_rest_apart() {
        let t = Tally::default();
        for o in [
            Outcome::Fresh,
            Outcome::Fresh,
            Outcome::Stale,
            Outcome::Absent,
            Outcome::Skipped,
            Outcome::Raced,
            Outcome::Error,
        ] {
            t.record(o);
        }
        let s = t.status(Duration::from_secs(1));
        assert_eq!((s.checked, s.stale), (3, 1));
        assert_eq!((s.absent, s.skipped, s.raced, s.errors), (1, 1, 1, 1));
        assert_eq!(s.nines, Some(0.48));
        t.reset();
        assert_eq!(t.status(Duration::from_secs(1)).checked, 0);
    }
}
