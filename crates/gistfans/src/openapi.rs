//! The OpenAPI 3 document, generated from the handlers' annotations.

use utoipa::OpenApi;

use crate::routes::{admin, baseline, ops, profile, writes};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "GistFans API",
        description = "Profiles of a code-snippet site, served by the hpdb data layer. Writes name the acting user in X-User-Id (the demo has no login; put real authentication in front)."
    ),
    paths(
        profile::stats_optimized,
        baseline::stats,
        baseline::posts,
        baseline::star_history,
        baseline::social,
        writes::create_post,
        writes::star,
        writes::unstar,
        writes::follow,
        writes::unfollow,
        admin::monitor,
        admin::act,
        ops::ping,
        ops::healthz,
        ops::readyz,
        ops::metrics,
        ops::openapi,
    ),
    components(schemas(crate::error::ErrorBody, writes::NewPostBody, admin::AdminAction))
)]
struct ApiDoc;

/// The document.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}
