//! The dashboard's files, embedded in the binary: the page, its script and
//! style, and the vendored uPlot (`assets/vendor/uplot`, see its README).
//!
//! Embedded so that the dashboard works offline and the binary is the whole
//! deployment. Each file is answered with a strong ETag (a hash of its bytes,
//! computed once) and 304 on a matching `If-None-Match`; the page itself is
//! revalidated on every load (`no-cache`), the scripts and styles are cached
//! for a week (a new binary changes their ETags).

use std::{
    hash::{DefaultHasher, Hasher},
    sync::LazyLock,
};

use axum::{
    http::{header, HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
};

/// The vendored uPlot's version (`assets/vendor/uplot/README.md`).
pub const UPLOT_VERSION: &str = "1.6.32";
/// uPlot's script (an IIFE that defines `uPlot`), with its licence banner.
pub const UPLOT_JS: &str = include_str!("../../assets/vendor/uplot/uPlot.iife.min.js");
/// uPlot's style sheet.
pub const UPLOT_CSS: &str = include_str!("../../assets/vendor/uplot/uPlot.min.css");
/// uPlot's licence (MIT).
pub const UPLOT_LICENSE: &str = include_str!("../../assets/vendor/uplot/LICENSE");

/// The dashboard page.
pub const PAGE_HTML: &str = include_str!("../../assets/dashboard/index.html");

/// Cache policy of the page: always revalidate (cheap: 304).
const REVALIDATE: &str = "no-cache";
/// Cache policy of scripts and styles: a week, then revalidate.
const WEEK: &str = "public, max-age=604800";

/// One embedded file.
pub struct Asset {
    /// Its name under `/assets/`.
    pub name: &'static str,
    /// `Content-Type`.
    pub content_type: &'static str,
    /// `Cache-Control`.
    pub cache_control: &'static str,
    /// The bytes.
    pub body: &'static str,
}

/// The files served under `/assets/{file}`: the one table of them.
pub const ASSETS: &[Asset] = &[
    Asset {
        name: "dashboard.js",
        content_type: "text/javascript; charset=utf-8",
        cache_control: WEEK,
        body: include_str!("../../assets/dashboard/dashboard.js"),
    },
    Asset {
        name: "dashboard.css",
        content_type: "text/css; charset=utf-8",
        cache_control: WEEK,
        body: include_str!("../../assets/dashboard/dashboard.css"),
    },
    Asset {
        name: "uplot.js",
        content_type: "text/javascript; charset=utf-8",
        cache_control: WEEK,
        body: UPLOT_JS,
    },
    Asset {
        name: "uplot.css",
        content_type: "text/css; charset=utf-8",
        cache_control: WEEK,
        body: UPLOT_CSS,
    },
    Asset {
        name: "uplot-LICENSE.txt",
        content_type: "text/plain; charset=utf-8",
        cache_control: WEEK,
        body: UPLOT_LICENSE,
    },
];

/// The page, as an asset (served at `/admin`).
pub const PAGE: Asset = Asset {
    name: "admin",
    content_type: "text/html; charset=utf-8",
    cache_control: REVALIDATE,
    body: PAGE_HTML,
};

/// Strong ETags of [`ASSETS`] (same order) and of [`PAGE`] (last), hashed once.
static ETAGS: LazyLock<Vec<HeaderValue>> = LazyLock::new(|| {
    ASSETS
        .iter()
        .chain(std::iter::once(&PAGE))
        .map(|a| etag_of(a.body))
        .collect()
});

/// A strong ETag of `body`: a 64-bit hash and the length. Not a security
/// measure, only a validator; the hash is fixed within one binary.
fn etag_of(body: &str) -> HeaderValue {
    let mut h = DefaultHasher::new();
    h.write(body.as_bytes());
    HeaderValue::from_str(&format!("\"{:016x}-{:x}\"", h.finish(), body.len()))
        .expect("hex is a valid header value")
}

/// The asset named `name`, if there is one.
pub fn find(name: &str) -> Option<(&'static Asset, &'static HeaderValue)> {
    let i = ASSETS.iter().position(|a| a.name == name)?;
    Some((&ASSETS[i], &ETAGS[i]))
}

/// The page and its ETag.
pub fn page() -> (&'static Asset, &'static HeaderValue) {
    (&PAGE, &ETAGS[ASSETS.len()])
}

/// `asset`, or 304 if `If-None-Match` names its ETag.
pub fn respond(asset: &Asset, etag: &HeaderValue, request: &HeaderMap) -> Response {
    let mut headers = HeaderMap::new();
    headers.insert(header::ETAG, etag.clone());
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(asset.cache_control),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    let tag = etag.to_str().expect("an ETag is ASCII");
    if crate::extract::matches_etag(request, tag) {
        return (StatusCode::NOT_MODIFIED, headers).into_response();
    }
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type),
    );
    (headers, asset.body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_has_a_distinct_name_and_etag() {
        let mut names: Vec<&str> = ASSETS.iter().map(|a| a.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), ASSETS.len());
        let mut tags: Vec<&HeaderValue> = ETAGS.iter().collect();
        tags.sort_by_key(|t| t.as_bytes());
        tags.dedup();
        assert_eq!(tags.len(), ASSETS.len() + 1);
    }

    #[test]
    fn the_vendored_uplot_is_the_version_the_readme_names() {
        let readme = include_str!("../../assets/vendor/uplot/README.md");
        assert!(readme.contains(UPLOT_VERSION));
        assert!(UPLOT_JS.contains(&format!("(v{UPLOT_VERSION})")));
    }
}
