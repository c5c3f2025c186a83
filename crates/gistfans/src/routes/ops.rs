//! Operator routes: liveness, readiness, metrics, the OpenAPI document, and
//! a trivial route (the HTTP ceiling of the machine, for the benchmark).

use std::{sync::Arc, time::Duration};

use axum::{extract::State, http::header, response::IntoResponse, Json};
use serde_json::{json, Value};

use crate::{error::ApiError, state::AppState};

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "ops", responses((status = 200, description = "Alive")))]
pub async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// The database answers.
#[utoipa::path(get, path = "/readyz", tag = "ops",
    responses((status = 200, description = "Ready"), (status = 503, description = "Database unreachable", body = crate::error::ErrorBody)))]
pub async fn readyz(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    state.db().ping(Duration::from_secs(2)).await?;
    Ok(Json(
        json!({ "status": "ready", "circuit": state.db().status().circuit }),
    ))
}

/// Prometheus metrics: requests per route, latency, pool, cache.
#[utoipa::path(get, path = "/metrics", tag = "ops", responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let body = crate::telemetry::render(
        &state.metrics,
        &state.db().status(),
        &state.service.preload_stats(),
        &state.service.write_timings(),
    );
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body)
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "ops", responses((status = 200, description = "OpenAPI 3 document")))]
pub async fn openapi(
    State(state): State<AppState>,
) -> Result<Json<Arc<utoipa::openapi::OpenApi>>, ApiError> {
    let document = state.document.get().cloned();
    document
        .map(Json)
        .ok_or_else(|| ApiError::Internal("the OpenAPI document was not built".into()))
}

/// A trivial JSON response: no database, no cache.
#[utoipa::path(get, path = "/api/ping", tag = "ops", responses((status = 200, description = "Pong")))]
pub async fn ping() -> Json<Value> {
    Json(json!({ "pong": true }))
}
