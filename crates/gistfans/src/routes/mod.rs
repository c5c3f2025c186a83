//! The router: every route, and the layers around them.

use std::time::Duration;

use std::sync::Arc;

use axum::{
    error_handling::HandleErrorLayer,
    extract::{DefaultBodyLimit, Request},
    http::{Method, Uri},
    middleware,
    response::{IntoResponse, Response},
    BoxError, Router,
};
use tower::ServiceBuilder;
use tower_http::{catch_panic::CatchPanicLayer, trace::TraceLayer};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    dashboard, error::ApiError, openapi, pages, request_limits, state::AppState, telemetry,
};

pub mod admin;
pub mod baseline;
pub mod ops;
pub mod profile;
pub mod users;
pub mod writes;

/// Largest request body accepted (a post's content is at most 64 KiB).
pub const BODY_LIMIT: usize = 100 * 1024;

/// The application, ready to serve: the API and the pages (`pages::router`),
/// behind the same layers.
pub fn router(state: AppState, request_timeout: Duration) -> Router {
    let (api, document) = api().split_for_parts();
    let _ = state.document.set(Arc::new(openapi::finish(document)));
    api.merge(pages::router())
        .fallback(no_route)
        .method_not_allowed_fallback(wrong_method)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(middleware::from_fn(edge))
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

/// The edge of every request, as one middleware: the bounds of its head
/// (`request_limits`), then its count and time (`telemetry`), rejections
/// included. One layer, not two: axum clones the (boxed) routes behind
/// each `from_fn` layer for every request (issue 22).
async fn edge(req: Request, next: middleware::Next) -> Response {
    let timer = telemetry::RequestTimer::start(&req);
    let resp = match request_limits::check_head(&req) {
        Ok(()) => next.run(req).await,
        Err(e) => e.into_response(),
    };
    timer.finish(&resp);
    resp
}

/// Every route, each registered with its OpenAPI operation: the one list of
/// routes, from which both the router and `/openapi.json` are made.
fn api() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(openapi::base())
        .routes(routes!(profile::stats_optimized))
        .routes(routes!(users::cards))
        .routes(routes!(baseline::stats))
        .routes(routes!(baseline::posts))
        .routes(routes!(baseline::star_history))
        .routes(routes!(baseline::social))
        .routes(routes!(writes::create_post))
        .routes(routes!(writes::star, writes::unstar))
        .routes(routes!(writes::follow, writes::unfollow))
        .routes(routes!(admin::monitor, admin::act))
        .routes(routes!(dashboard::stream::stream))
        .routes(routes!(dashboard::page))
        .routes(routes!(ops::ping))
        .routes(routes!(ops::healthz))
        .routes(routes!(ops::readyz))
        .routes(routes!(ops::metrics))
        .routes(routes!(ops::openapi))
}

/// The OpenAPI document of every route.
pub fn document() -> utoipa::openapi::OpenApi {
    openapi::finish(api().into_openapi())
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
