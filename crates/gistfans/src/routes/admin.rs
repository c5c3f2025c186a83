//! `GET|POST /api/admin/connection-pool-monitor`: the seed's monitor.
//!
//! Never open by default: without `ADMIN_TOKEN` the routes answer 403 and
//! say how to enable them; with it they need `Authorization: Bearer <token>`,
//! compared in constant time.

use axum::{extract::State, http::HeaderMap, Json};
use gistfans_data::on_manager;
use hpdb::{Advice, HealthReport, ManagerConfig, Status};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use utoipa::ToSchema;

use crate::{
    error::{ApiError, ErrorBody},
    extract::ApiJson,
    state::AppState,
};

fn authorize(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(expected) = state.admin_token.as_deref() else {
        return Err(ApiError::Forbidden(
            "admin routes are disabled: start the server with ADMIN_TOKEN=<secret> (or --admin-token) to enable them".into(),
        ));
    };
    let given = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| {
            ApiError::Unauthorized("send `Authorization: Bearer <ADMIN_TOKEN>`".into())
        })?;
    if bool::from(given.as_bytes().ct_eq(expected.as_bytes())) {
        Ok(())
    } else {
        Err(ApiError::Unauthorized("the admin token is wrong".into()))
    }
}

/// Status, alerts and recommendations.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MonitorReport {
    /// The manager's status (the seed's fields first).
    #[schema(value_type = Object)]
    pub status: Status,
    /// Alerts (warning or critical).
    #[schema(value_type = Vec<Object>)]
    pub alerts: Vec<Advice>,
    /// Recommendations.
    #[schema(value_type = Vec<Object>)]
    pub recommendations: Vec<Advice>,
    /// The configuration in force.
    #[schema(value_type = Object)]
    pub config: ManagerConfig,
}

/// A management action.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(tag = "action", rename_all = "camelCase", deny_unknown_fields)]
pub enum AdminAction {
    /// Drop every cached result.
    ClearCache,
    /// Change the pool size (within min and the ceiling).
    ResizePool {
        /// The new maximum number of connections.
        size: u32,
    },
    /// Ping idle connections, replace broken ones, refill to the minimum.
    HealthCheck,
    /// Zero the counters and histograms.
    ResetMetrics,
}

/// What an action did.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ActionResult {
    /// The action carried out.
    pub action: &'static str,
    /// The health check's findings (for `healthCheck`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub health: Option<HealthReport>,
    /// The status after the action.
    #[schema(value_type = Object)]
    pub status: Status,
}

/// Reads the monitor.
#[utoipa::path(get, path = "/api/admin/connection-pool-monitor", tag = "admin",
    params(("Authorization" = String, Header, description = "`Bearer <ADMIN_TOKEN>`")),
    responses((status = 200, body = MonitorReport), (status = 401, body = ErrorBody), (status = 403, description = "ADMIN_TOKEN not set", body = ErrorBody)))]
pub async fn monitor(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<MonitorReport>, ApiError> {
    authorize(&state, &headers)?;
    let (status, advice, config) =
        on_manager!(state.db(), m => (m.status(), m.advice(), m.config().clone()));
    let (alerts, recommendations) = advice.into_iter().partition(Advice::is_alert);
    Ok(Json(MonitorReport {
        status,
        alerts,
        recommendations,
        config,
    }))
}

/// Carries out a management action.
#[utoipa::path(post, path = "/api/admin/connection-pool-monitor", tag = "admin", request_body = AdminAction,
    params(("Authorization" = String, Header, description = "`Bearer <ADMIN_TOKEN>`")),
    responses((status = 200, body = ActionResult), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn act(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiJson(action): ApiJson<AdminAction>,
) -> Result<Json<ActionResult>, ApiError> {
    authorize(&state, &headers)?;
    let db = state.db();
    let (name, health) = match action {
        AdminAction::ClearCache => {
            on_manager!(db, m => m.clear_cache().await);
            ("clearCache", None)
        }
        AdminAction::ResizePool { size } => {
            on_manager!(db, m => m.resize(size)).map_err(|e| ApiError::invalid(e.to_string()))?;
            ("resizePool", None)
        }
        AdminAction::HealthCheck => (
            "healthCheck",
            Some(on_manager!(db, m => m.health_check().await)),
        ),
        AdminAction::ResetMetrics => {
            on_manager!(db, m => m.reset_metrics());
            ("resetMetrics", None)
        }
    };
    tracing::info!(action = name, "admin action");
    Ok(Json(ActionResult {
        action: name,
        health,
        status: db.status(),
    }))
}
