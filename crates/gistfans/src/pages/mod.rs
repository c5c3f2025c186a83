//! Pages a person opens in a browser, and the files they load. Plain HTML,
//! JS and CSS from `crates/gistfans/assets/`, embedded in the binary (no
//! framework, no CDN: the pages work offline). The profile page carries its
//! data (the aggregate, through the API's own service); the dashboard's
//! script fetches its own from the admin API.
//!
//! Pages are not in the OpenAPI document: they are for people, not clients.
//! Their routes are listed here, once, and merged into `routes::router`, so
//! they sit behind the same layers (timeouts, request limits, telemetry:
//! `/u/{id}` and `/assets/{name}` are one route label each, whatever the id
//! or name). A page's errors are `error::PageError`: the API's status, in
//! an HTML error page.

use axum::{routing::get, Router};

use crate::state::AppState;

pub mod assets;
pub mod profile;

/// Every page and the route of their files.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/u/{id}", get(profile::page))
        .route("/assets/{name}", get(assets::serve))
}
