//! [`HealthReport`]: what one health check found and did (the check is
//! the pool's, `manager::health`; its loop is in `tasks`).

use serde::Serialize;

use crate::breaker::CircuitState;

/// What one health check found and did.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthReport {
    /// Whether the database answered.
    pub database_reachable: bool,
    /// Idle connections pinged.
    pub checked: u32,
    /// Connections that failed their ping and were closed.
    pub broken_closed: u32,
    /// Connections opened to bring the pool back to its minimum.
    pub opened: u32,
    /// Pool size after the check.
    pub pool_size: u32,
    /// The circuit breaker's state after the check.
    pub circuit: CircuitState,
    /// How long the check took, in milliseconds.
    pub took_ms: f64,
}
