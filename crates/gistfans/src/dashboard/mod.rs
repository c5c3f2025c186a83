//! The live pool dashboard: `GET /admin` (the page; its script, style and
//! the vendored uPlot are served by `pages::assets`), and
//! `GET /api/admin/stream` (the status once a second, as Server-Sent Events).
//!
//! The page is public and holds nothing secret: every figure comes from the
//! stream and every action from `POST /api/admin/connection-pool-monitor`,
//! and both need the admin token (`admin::Admin`). The page asks for the
//! token and keeps it in `sessionStorage` (this tab only). It reads the
//! stream with `fetch()`, not `EventSource`, because `EventSource` cannot
//! send an `Authorization` header, and a token in the URL would end up in
//! logs and history.
//!
//! Submodules: `assets` (the page and the vendored uPlot), `feed` (one
//! status read per second shared by every stream, and the streams' bounds),
//! `stream` (the SSE route).

use axum::{http::HeaderMap, response::Response};

pub mod assets;
pub mod feed;
pub mod stream;

pub use feed::{Feed, FeedError, StreamLimits};

/// What the page may load and contact: itself only (no CDN, no inline
/// script). uPlot sets inline styles, hence `style-src 'unsafe-inline'`.
const PAGE_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
     img-src 'self' data:; connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'";

/// The dashboard page.
#[utoipa::path(get, path = "/admin", tag = "dashboard",
    responses(
        (status = 200, description = "The dashboard (HTML); it asks for the admin token", content_type = "text/html"),
        (status = 304, description = "Unchanged since the ETag in If-None-Match"),
    ))]
pub async fn page(request: HeaderMap) -> Response {
    let (body, etag) = assets::page();
    crate::pages::assets::respond_page(&request, body, etag, PAGE_CSP)
}
