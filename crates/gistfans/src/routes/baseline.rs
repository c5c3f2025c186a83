//! The seed's "before": one route per UI component, each on the plain pool.

use axum::{extract::State, Json};
use gistfans_data::{
    baseline,
    model::{DayStars, RecentPost, Social},
};

use crate::{
    error::{ApiError, ErrorBody},
    extract::{parse_id, ApiPath},
    state::AppState,
};

/// Profile and counters.
#[utoipa::path(get, path = "/api/users/{id}/stats", tag = "baseline",
    params(("id" = i64, Path, description = "User id")),
    responses((status = 200, body = baseline::ProfileStats), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn stats(
    State(s): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<baseline::ProfileStats>, ApiError> {
    Ok(Json(
        baseline::stats(s.db(), parse_id(&id, "user id")?).await?,
    ))
}

/// Newest posts with their star counts.
#[utoipa::path(get, path = "/api/users/{id}/posts", tag = "baseline",
    params(("id" = i64, Path, description = "User id")),
    responses((status = 200, body = Vec<RecentPost>), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn posts(
    State(s): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Vec<RecentPost>>, ApiError> {
    Ok(Json(
        baseline::posts(s.db(), parse_id(&id, "user id")?).await?,
    ))
}

/// Stars received per day, last 30 days.
#[utoipa::path(get, path = "/api/users/{id}/star-history", tag = "baseline",
    params(("id" = i64, Path, description = "User id")),
    responses((status = 200, body = Vec<DayStars>), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn star_history(
    State(s): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Vec<DayStars>>, ApiError> {
    Ok(Json(
        baseline::star_history(s.db(), parse_id(&id, "user id")?).await?,
    ))
}

/// Followers, following, mutual follows.
#[utoipa::path(get, path = "/api/users/{id}/social", tag = "baseline",
    params(("id" = i64, Path, description = "User id")),
    responses((status = 200, body = Social), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn social(
    State(s): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Social>, ApiError> {
    Ok(Json(
        baseline::social(s.db(), parse_id(&id, "user id")?).await?,
    ))
}
