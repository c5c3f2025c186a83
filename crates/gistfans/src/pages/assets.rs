//! The files pages load, embedded in the binary (`include_str!` from
//! `crates/gistfans/assets/`), each with its content type and a strong ETag
//! (a hash of its bytes).
//!
//! Caching: pages are served `no-cache` (revalidated on every load, so a new
//! binary's page is seen at once) and name their files with a version,
//! `/assets/{name}?v={version}` (written into the page by [`link`]). A
//! request for the current version may be cached for a year (`immutable`):
//! the next binary with a changed file links a new version. Any other
//! request is served `no-cache`. So a reload fetches the page (or gets a
//! 304) and its data, never the files again, and never mixes a new page
//! with an old script.

use std::hash::{Hash, Hasher};

use axum::{
    http::{header, HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
};
use serde::Deserialize;

use crate::{
    error::ApiError,
    extract::matches_etag,
    extract::{ApiPath, ApiQuery},
};

/// A file served under `/assets/`.
#[derive(Debug)]
pub struct Asset {
    /// Its name in `/assets/{name}` (and in `crates/gistfans/assets/`).
    pub name: &'static str,
    /// Its `Content-Type`.
    pub content_type: &'static str,
    /// Its bytes.
    pub body: &'static str,
}

/// Every file under `/assets/`: the one list.
pub const FILES: &[Asset] = &[
    Asset {
        name: "gistfans.css",
        content_type: "text/css; charset=utf-8",
        body: include_str!("../../assets/gistfans.css"),
    },
    Asset {
        name: "dashboard.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../../assets/dashboard/dashboard.js"),
    },
    Asset {
        name: "dashboard.css",
        content_type: "text/css; charset=utf-8",
        body: include_str!("../../assets/dashboard/dashboard.css"),
    },
    Asset {
        name: "uplot.js",
        content_type: "text/javascript; charset=utf-8",
        body: crate::dashboard::assets::UPLOT_JS,
    },
    Asset {
        name: "uplot.css",
        content_type: "text/css; charset=utf-8",
        body: crate::dashboard::assets::UPLOT_CSS,
    },
    Asset {
        name: "uplot-LICENSE.txt",
        content_type: "text/plain; charset=utf-8",
        body: crate::dashboard::assets::UPLOT_LICENSE,
    },
];

/// `Cache-Control` of a page, and of a file asked for without its current version.
pub const REVALIDATE: &str = "no-cache";
/// `Cache-Control` of a file asked for with its current version.
pub const IMMUTABLE: &str = "public, max-age=31536000, immutable";

impl Asset {
    /// A hash of the bytes: the `v` of the file's URL and its ETag's core.
    pub fn version(&self) -> String {
        version_of(self.body)
    }

    /// The URL a page links: `/assets/{name}?v={version}`.
    pub fn url(&self) -> String {
        format!("/assets/{}?v={}", self.name, self.version())
    }
}

/// The file named `name`, if there is one.
pub fn find(name: &str) -> Option<&'static Asset> {
    FILES.iter().find(|a| a.name == name)
}

fn version_of(body: &str) -> String {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    body.hash(&mut h);
    format!("{:016x}", h.finish())
}

/// A strong ETag for `body`.
pub fn etag_of(body: &str) -> String {
    format!("\"{}-{:x}\"", version_of(body), body.len())
}

/// `page` with every `{{asset:NAME}}` replaced by that file's versioned URL.
///
/// # Panics
/// If a page names a file that is not in [`FILES`] (a bug, found by any
/// test that loads the page).
pub fn link(page: &str) -> String {
    let mut out = page.to_string();
    while let Some(start) = out.find("{{asset:") {
        let end = start + out[start..].find("}}").expect("an {{asset:…}} is closed");
        let name = &out[start + "{{asset:".len()..end];
        let url = find(name)
            .unwrap_or_else(|| panic!("a page links /assets/{name}, which is not in FILES"))
            .url();
        out.replace_range(start..end + 2, &url);
    }
    out
}

/// `body` as a response: 304 if `If-None-Match` names its ETag, else 200
/// with the body; either way with its ETag, `cache_control`, and `nosniff`.
pub fn respond(
    request: &HeaderMap,
    body: impl Into<axum::body::Body>,
    etag: &str,
    content_type: &'static str,
    cache_control: &'static str,
) -> Response {
    let mut resp = if matches_etag(request, etag) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let mut r = body.into().into_response();
        r.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        r
    };
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(etag) {
        h.insert(header::ETAG, v);
    }
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(cache_control),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    resp
}

/// An HTML page as a response: revalidated on every load (304 when
/// unchanged), with its Content-Security-Policy and no referrer.
pub fn respond_page(
    request: &HeaderMap,
    body: impl Into<axum::body::Body>,
    etag: &str,
    csp: &'static str,
) -> Response {
    let mut resp = respond(request, body, etag, "text/html; charset=utf-8", REVALIDATE);
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(csp),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    resp
}

/// Query of a file: its version.
#[derive(Debug, Deserialize)]
pub struct AssetQuery {
    /// The version the page linked.
    pub v: Option<String>,
}

/// `GET /assets/{name}`: an embedded file; 404 (JSON) for any other name.
pub async fn serve(
    ApiPath(name): ApiPath<String>,
    ApiQuery(q): ApiQuery<AssetQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let asset = find(&name).ok_or_else(|| {
        ApiError::NotFound(format!(
            "no file /assets/{}",
            name.chars().take(64).collect::<String>()
        ))
    })?;
    let version = asset.version();
    let cache = if q.v.as_deref() == Some(version.as_str()) {
        IMMUTABLE
    } else {
        REVALIDATE
    };
    Ok(respond(
        &headers,
        asset.body,
        &etag_of(asset.body),
        asset.content_type,
        cache,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_writes_each_files_versioned_url() {
        let page =
            link("<link href=\"{{asset:gistfans.css}}\"><script src=\"{{asset:uplot.js}}\">");
        assert_eq!(
            page,
            format!(
                "<link href=\"{}\"><script src=\"{}\">",
                find("gistfans.css").unwrap().url(),
                find("uplot.js").unwrap().url()
            )
        );
        assert!(!page.contains("{{"));
    }

    #[test]
    fn etags_are_strong_and_follow_the_bytes() {
        let a = etag_of("a");
        assert!(a.starts_with('"') && !a.starts_with("W/"));
        assert_ne!(a, etag_of("b"));
        assert_eq!(a, etag_of("a"));
    }
}
