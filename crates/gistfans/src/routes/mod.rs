//! The router: every route, and the layers around them.

use std::time::Duration;

use axum::{
    error_handling::HandleErrorLayer,
    extract::DefaultBodyLimit,
    http::{Method, Uri},
    middleware,
    routing::{get, post, put},
    BoxError, Router,
};
use tower::ServiceBuilder;
use tower_http::{catch_panic::CatchPanicLayer, trace::TraceLayer};

use crate::{error::ApiError, request_limits, state::AppState, telemetry};

pub mod admin;
pub mod baseline;
pub mod ops;
pub mod profile;
pub mod writes;

/// Largest request body accepted (a post's content is at most 64 KiB).
pub const BODY_LIMIT: usize = 100 * 1024;

/// Every route as (method, path), as the OpenAPI document must list them.
pub const ROUTES: &[(&str, &str)] = &[
    ("get", "/api/user/stats-optimized"),
    ("get", "/api/users/{id}/stats"),
    ("get", "/api/users/{id}/posts"),
    ("get", "/api/users/{id}/star-history"),
    ("get", "/api/users/{id}/social"),
    ("post", "/api/posts"),
    ("put", "/api/posts/{id}/star"),
    ("delete", "/api/posts/{id}/star"),
    ("put", "/api/users/{id}/follow"),
    ("delete", "/api/users/{id}/follow"),
    ("get", "/api/admin/connection-pool-monitor"),
    ("post", "/api/admin/connection-pool-monitor"),
    ("get", "/api/ping"),
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
    ("get", "/openapi.json"),
];

/// The application, ready to serve.
pub fn router(state: AppState, request_timeout: Duration) -> Router {
    Router::new()
        .route("/api/user/stats-optimized", get(profile::stats_optimized))
        .route("/api/users/{id}/stats", get(baseline::stats))
        .route("/api/users/{id}/posts", get(baseline::posts))
        .route("/api/users/{id}/star-history", get(baseline::star_history))
        .route("/api/users/{id}/social", get(baseline::social))
        .route("/api/posts", post(writes::create_post))
        .route(
            "/api/posts/{id}/star",
            put(writes::star).delete(writes::unstar),
        )
        .route(
            "/api/users/{id}/follow",
            put(writes::follow).delete(writes::unfollow),
        )
        .route(
            "/api/admin/connection-pool-monitor",
            get(admin::monitor).post(admin::act),
        )
        .route("/api/ping", get(ops::ping))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .route("/openapi.json", get(ops::openapi))
        .fallback(no_route)
        .method_not_allowed_fallback(wrong_method)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(middleware::from_fn(request_limits::check_head))
        .layer(middleware::from_fn(telemetry::track))
        .layer(
            ServiceBuilder::new()
                .layer(CatchPanicLayer::custom(|_| {
                    axum::response::IntoResponse::into_response(ApiError::Internal(
                        "a handler panicked".into(),
                    ))
                }))
                .layer(HandleErrorLayer::new(move |e: BoxError| async move {
                    timed_out(e, request_timeout)
                }))
                .timeout(request_timeout),
        )
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

fn timed_out(e: BoxError, limit: Duration) -> ApiError {
    if e.is::<tower::timeout::error::Elapsed>() {
        ApiError::Unavailable {
            message: format!(
                "the request took longer than {} ms; retry shortly",
                limit.as_millis()
            ),
            retry_after: Duration::from_secs(1),
        }
    } else {
        ApiError::Internal(e.to_string())
    }
}

async fn no_route(method: Method, uri: Uri) -> ApiError {
    ApiError::NotFound(format!(
        "no route for {method} {}; see /openapi.json",
        uri.path()
    ))
}

async fn wrong_method(method: Method, uri: Uri) -> ApiError {
    ApiError::Rejected {
        status: axum::http::StatusCode::METHOD_NOT_ALLOWED,
        message: format!(
            "{method} is not allowed on {}; see /openapi.json",
            uri.path()
        ),
    }
}
