//! `GET /api/user/stats-optimized`: the whole profile in one request, through
//! the aggregation service (cached, coalesced, prioritised), with an ETag.

use axum::{
    extract::State,
    http::{header, HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
};
use gistfans_data::{AggregateOptions, Include};
use serde::Deserialize;
use utoipa::IntoParams;

use crate::{
    error::{ApiError, ErrorBody},
    extract::{matches_etag, parse_id, ApiQuery},
    state::AppState,
};

/// Query of the optimised profile route.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct ProfileQuery {
    /// The user whose profile to return (a positive integer).
    pub user_id: Option<String>,
    /// Comma-separated optional parts: `recentPosts`, `starHistory`, `social` (default all).
    pub include: Option<String>,
    /// The profile the viewer came from (a positive integer), if any: the
    /// learned preloading rule learns which profiles are opened after which.
    pub from: Option<String>,
}

/// The aggregated profile of one user.
#[utoipa::path(
    get, path = "/api/user/stats-optimized", tag = "profile", params(ProfileQuery),
    responses(
        (status = 200, description = "The aggregate; `ETag` and `X-Cache` (cache, shared, database, joined, stale, revalidating) headers", body = gistfans_data::UserAggregate),
        (status = 304, description = "Unchanged since the ETag in If-None-Match"),
        (status = 400, description = "Bad userId or include", body = ErrorBody),
        (status = 404, description = "No such user", body = ErrorBody),
        (status = 503, description = "Database unavailable or saturated; see Retry-After", body = ErrorBody),
    )
)]
pub async fn stats_optimized(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<ProfileQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let raw = q
        .user_id
        .ok_or_else(|| ApiError::invalid("missing query parameter userId (a positive integer)"))?;
    let user_id = parse_id(&raw, "userId")?;
    let include = match q.include.as_deref() {
        None => Include::ALL,
        Some(list) => Include::parse(list).map_err(|bad| {
            ApiError::invalid(format!(
                "unknown include `{bad}`; use a comma-separated list of {}",
                Include::NAMES.join(", ")
            ))
        })?,
    };
    let viewed_from = q.from.as_deref().map(|f| parse_id(f, "from")).transpose()?;
    let options = AggregateOptions {
        include,
        viewed_from,
        ..AggregateOptions::default()
    };
    let served = state
        .service
        .get_user_aggregated_data(user_id, options)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("user {user_id} does not exist")))?;
    let agg = &served.aggregate;
    let etag = HeaderValue::from_str(&agg.etag).map_err(|e| ApiError::Internal(e.to_string()))?;
    let mut resp = if matches_etag(&headers, &agg.etag) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            agg.body.clone(),
        )
            .into_response()
    };
    let h = resp.headers_mut();
    h.insert(header::ETAG, etag);
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-cache"),
    );
    insert_cache_source(h, served.source);
    Ok(resp)
}

/// Sets the `X-Cache` header: where an answer came from.
pub(crate) fn insert_cache_source(headers: &mut HeaderMap, source: hpdb::Source) {
    let value = HeaderValue::from_static(match source {
        hpdb::Source::Cache => "cache",
        hpdb::Source::Shared => "shared",
        hpdb::Source::Database => "database",
        hpdb::Source::Joined => "joined",
        hpdb::Source::Stale => "stale",
        hpdb::Source::Revalidating => "revalidating",
    });
    headers.insert("x-cache", value);
}
