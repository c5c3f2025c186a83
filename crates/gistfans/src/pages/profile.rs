//! `GET /u/{id}`: the profile page. The server sends the same page for
//! every valid id (`assets/profile.html`, its files linked by version); the
//! page's script (`assets/profile.js`) fetches the data: ONE request to
//! `/api/user/stats-optimized` (with `If-None-Match` when it has a kept
//! copy), or with `?compose=components` the four per-component routes.
//!
//! The API call starts with the HTML, not after the script: in the
//! one-request mode the page answers with a preload hint (`Link: <…>;
//! rel=preload; as=fetch; crossorigin`) for exactly the URL the script
//! will fetch, `from` included (the profile a link was followed from,
//! which the page's links carry), and the script takes the preloaded
//! answer. A reload with a kept copy revalidates instead (`If-None-Match`),
//! and does not use the hint.
//!
//! The id, `compose` and `from` are checked here with the API's rules
//! (`extract::parse_id`): a bad one gets the API's status and message in
//! an HTML error page (`error::PageError`). A well-formed id of a user who
//! does not exist gets the page, whose script shows the API's 404 as its
//! error state: telling them apart would cost the page a query.

use std::sync::LazyLock;

use axum::{
    extract::{rejection::PathRejection, Path},
    http::{header, HeaderMap, HeaderValue},
    response::Response,
};
use serde::Deserialize;

use super::assets::{etag_of, link, respond_page};
use crate::{
    error::{ApiError, PageError},
    extract::{parse_id, ApiQuery},
};

/// The page with its files' URLs written in, and its ETag.
static PAGE: LazyLock<(String, String)> = LazyLock::new(|| {
    let page = link(include_str!("../../assets/profile.html"));
    let etag = etag_of(&page);
    (page, etag)
});

/// The page loads only from this server: its own script and styles, its
/// data from the API (`connect-src`), nothing inline.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Query of the profile page.
#[derive(Debug, Deserialize)]
pub struct PageQuery {
    /// `components`: build the page from the four per-component routes.
    pub compose: Option<String>,
    /// The profile whose link led here (told to the API, which learns what
    /// is opened after what).
    pub from: Option<String>,
}

/// The profile page of user `id`.
pub async fn page(
    path: Result<Path<String>, PathRejection>,
    ApiQuery(q): ApiQuery<PageQuery>,
    headers: HeaderMap,
) -> Result<Response, PageError> {
    let Path(raw) = path.map_err(ApiError::from)?;
    let id = parse_id(&raw, "user id")?;
    let from = q.from.as_deref().map(|f| parse_id(f, "from")).transpose()?;
    let one_request = match q.compose.as_deref() {
        None => true,
        Some("components") => false,
        Some(other) => {
            return Err(ApiError::invalid(format!(
                "unknown compose `{}`: use `compose=components` (four per-component requests) or leave it out (one request)",
                other.chars().take(32).collect::<String>()
            ))
            .into())
        }
    };
    let (body, etag) = &*PAGE;
    let mut resp = respond_page(&headers, body, etag, CONTENT_SECURITY_POLICY);
    if one_request {
        // The same URL as the script's `aggregateUrl` (ids in their
        // canonical spelling, as `parse_id` read them).
        let from = from.map(|f| format!("&from={f}")).unwrap_or_default();
        let link = format!(
            "</api/user/stats-optimized?userId={id}{from}>; rel=preload; as=fetch; crossorigin"
        );
        if let Ok(v) = HeaderValue::from_str(&link) {
            resp.headers_mut().insert(header::LINK, v);
        }
    }
    Ok(resp)
}
