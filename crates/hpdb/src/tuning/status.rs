//! What self-tuning is doing, for the status: [`TuningStatus`].

use std::time::Duration;

use serde::Serialize;

use super::{
    log::TuningEvent,
    state::Tuning,
    ttl::{TtlClassStatus, TtlTuner},
};
use crate::config::PoolConfig;

/// What self-tuning is doing, for the status.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TuningStatus {
    /// The pool's automatic sizing, if on.
    pub pool: Option<PoolTuningStatus>,
    /// Each key class's adaptive TTL, if on (busiest first).
    pub ttl_classes: Option<Vec<TtlClassStatus>>,
    /// The latest changes any loop made, newest last.
    pub events: Vec<TuningEvent>,
    /// Changes made since start.
    pub changes: u64,
}

/// The pool loop's state.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PoolTuningStatus {
    /// The limit now (queries running at once).
    pub limit: usize,
    /// Its bounds (`DB_POOL_MIN`, `DB_POOL_MAX`).
    pub min: u32,
    /// Upper bound.
    pub max: u32,
    /// The unloaded service time the controller compares with (ms).
    pub baseline_ms: Option<f64>,
    /// The last window's mean service time (ms).
    pub service_ms: Option<f64>,
    /// Why the limit last moved.
    pub last_reason: Option<String>,
}

impl Tuning {
    /// Self-tuning's state: the pool's limit and why it moved, the TTL
    /// classes, the latest changes.
    pub(crate) fn status(&self, p: &PoolConfig) -> TuningStatus {
        let pool = self.pool.as_ref().map(|l| {
            let l = l.lock();
            let ms = |d: Duration| d.as_secs_f64() * 1000.0;
            PoolTuningStatus {
                limit: l.controller.limit(),
                min: p.min_connections,
                max: p.max_connections,
                baseline_ms: l.controller.baseline().map(ms),
                service_ms: l.controller.last_service().map(ms),
                last_reason: l.last_reason.map(|r| r.describe().to_string()),
            }
        });
        TuningStatus {
            pool,
            ttl_classes: self.ttl.as_ref().map(TtlTuner::status),
            events: self.log.recent(),
            changes: self.log.total(),
        }
    }
}
