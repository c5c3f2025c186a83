//! `GET|POST /api/admin/connection-pool-monitor`: the seed's monitor.
//!
//! Never open by default: without `ADMIN_TOKEN` the routes answer 403 and
//! say how to enable them; with it they need `Authorization: Bearer <token>`,
//! compared in constant time.

use axum::{
    extract::{FromRequestParts, State},
    http::{header, request::Parts},
    Json,
};
use hpdb::{Advice, HealthReport, ManagerConfig, Status};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use utoipa::ToSchema;

use crate::{
    error::{ApiError, ErrorBody},
    extract::{single_header, ApiJson},
    state::AppState,
};

/// Proof that the request carries the admin token. An extractor, so that it
/// runs before the body is read: an unauthenticated caller learns nothing
/// about what the body should be.
pub struct Admin;

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Some(expected) = state.admin_token.as_deref() else {
            return Err(ApiError::Forbidden(
                "admin routes are disabled: start the server with ADMIN_TOKEN=<secret> (or --admin-token) to enable them".into(),
            ));
        };
        let missing =
            || ApiError::Unauthorized("send `Authorization: Bearer <ADMIN_TOKEN>`".into());
        let header =
            single_header(&parts.headers, header::AUTHORIZATION.as_str())?.ok_or_else(missing)?;
        let given = header
            .to_str()
            .ok()
            .and_then(bearer_token)
            .ok_or_else(missing)?;
        if bool::from(given.as_bytes().ct_eq(expected.as_bytes())) {
            Ok(Admin)
        } else {
            Err(ApiError::Unauthorized("the admin token is wrong".into()))
        }
    }
}

/// The token of a `Bearer` credential; the scheme is case-insensitive (RFC 9110, 11.1).
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim_start_matches(' '))
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
    /// What preloading did: the rule, preloads issued, used and wasted.
    #[schema(value_type = Object)]
    pub preload: PreloadReport,
    /// Where writes' time went, phase by phase (prepare, queue, admission, lock, snapshot, statement,
    /// cache, refill, total), in ms.
    #[schema(value_type = Vec<Object>)]
    pub write_timings: Vec<gistfans_data::PhaseTiming>,
}

/// Preloading's rule and figures.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PreloadReport {
    /// Which profiles a profile view preloads.
    pub rule: gistfans_data::Preload,
    /// Its figures since start.
    #[serde(flatten)]
    pub stats: gistfans_data::PreloadStats,
}

/// A management action. Every variant is a struct variant, even without
/// fields: serde ignores `deny_unknown_fields` on the unit variants of an
/// internally tagged enum (serde-rs/serde#1358), and a stray field must be
/// refused, not ignored.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(tag = "action", rename_all = "camelCase", deny_unknown_fields)]
pub enum AdminAction {
    /// Drop every cached result.
    ClearCache {},
    /// Change the pool size (within min and the ceiling).
    ResizePool {
        /// The new maximum number of connections.
        size: u32,
    },
    /// Ping idle connections, replace broken ones, refill to the minimum.
    HealthCheck {},
    /// Zero the counters and histograms.
    ResetMetrics {},
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
    _: Admin,
    State(state): State<AppState>,
) -> Result<Json<MonitorReport>, ApiError> {
    let control = state.db().control();
    let (status, advice, config) = (control.status(), control.advice(), control.config().clone());
    let (alerts, recommendations) = advice.into_iter().partition(Advice::is_alert);
    let preload = PreloadReport {
        rule: state.service.preload_rule(),
        stats: state.service.preload_stats(),
    };
    Ok(Json(MonitorReport {
        status,
        alerts,
        recommendations,
        config,
        preload,
        write_timings: state.service.write_timings(),
    }))
}

/// Carries out a management action.
#[utoipa::path(post, path = "/api/admin/connection-pool-monitor", tag = "admin", request_body = AdminAction,
    params(("Authorization" = String, Header, description = "`Bearer <ADMIN_TOKEN>`")),
    responses((status = 200, body = ActionResult), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn act(
    _: Admin,
    State(state): State<AppState>,
    ApiJson(action): ApiJson<AdminAction>,
) -> Result<Json<ActionResult>, ApiError> {
    let control = state.db().control();
    let (name, health) = match action {
        AdminAction::ClearCache {} => {
            control.clear_cache().await;
            ("clearCache", None)
        }
        AdminAction::ResizePool { size } => {
            control
                .resize(size)
                .map_err(|e| ApiError::invalid(e.to_string()))?;
            ("resizePool", None)
        }
        AdminAction::HealthCheck {} => ("healthCheck", Some(control.health_check().await)),
        AdminAction::ResetMetrics {} => {
            control.reset_metrics();
            state.service.reset_write_timings();
            ("resetMetrics", None)
        }
    };
    tracing::info!(action = name, "admin action");
    Ok(Json(ActionResult {
        action: name,
        health,
        status: control.status(),
    }))
}
