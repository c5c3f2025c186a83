//! `GET /u/{id}`: the profile page. The page is `assets/profile.html` with
//! its script (`assets/profile.js`) written in and allowed by its hash in
//! the CSP; the script renders the data into the page's sections.
//!
//! In the one-request mode (the default) the data comes WITH the page: the
//! handler asks the aggregation service for the profile (the API's path,
//! cache included) and writes its JSON into the page as a data block
//! (`<script type="application/json" id="profile-data">`, `<` escaped), so
//! the page is the one request, and the script, at the end of the body,
//! renders the data synchronously while the page is parsed: no request
//! after the page, no task between the data and the DOM. Measured with
//! `examples/page_load.rs`: a preloaded API answer taken over by the
//! script still waited ~20 ms idle (~50 ms under load) behind the page's
//! own loading before its data was in the DOM. The page's ETag covers both
//! the page and the aggregate's ETag, so a reload revalidates both with one
//! request (a 304 when neither changed). With `?compose=components` the page
//! carries no data and its script fetches the four per-component routes
//! (the "before").
//!
//! The id, `compose` and `from` are checked here with the API's rules
//! (`extract::parse_id`); a bad one, a user who does not exist, or a
//! service error gets the API's status and message in an HTML error page
//! (`error::PageError`). `from` (the profile a link was followed from,
//! which the page's links carry) is told to the service, which learns what
//! is opened after what.

use std::sync::LazyLock;

use axum::{
    extract::{rejection::PathRejection, Path, State},
    http::HeaderMap,
    response::Response,
};
use base64::Engine;
use gistfans_data::{AggregateOptions, Include};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::assets::{etag_of, respond_page};
use crate::{
    error::{ApiError, PageError},
    extract::{parse_id, ApiQuery},
    routes::profile::insert_cache_source,
    state::AppState,
};

/// The page's script, written into the page.
const SCRIPT: &str = include_str!("../../assets/profile.js");

/// The page's styles, written into the page (the file other pages link).
fn style() -> &'static str {
    super::assets::find("gistfans.css")
        .expect("gistfans.css is an asset")
        .body
}

/// Where the data block's JSON goes in the page.
const DATA_SLOT: &str = "{{profile-data}}";

/// The page around its data block, the page with no data (the
/// four-request mode), and the page's own ETag.
struct Page {
    before_data: String,
    after_data: String,
    without_data: String,
    etag: String,
}

static PAGE: LazyLock<Page> = LazyLock::new(|| {
    for (name, text, end) in [
        ("profile.js", SCRIPT, "</script"),
        ("gistfans.css", style(), "</style"),
    ] {
        assert!(
            !text.to_ascii_lowercase().contains(end),
            "{name} cannot be written into the page: it contains {end}"
        );
    }
    let page = include_str!("../../assets/profile.html")
        .replacen("{{script:profile.js}}", SCRIPT, 1)
        .replacen("{{style:gistfans.css}}", style(), 1);
    let (before, after) = page
        .split_once(DATA_SLOT)
        .expect("profile.html has a {{profile-data}} slot");
    Page {
        etag: etag_of(&page),
        without_data: [before, "null", after].concat(),
        before_data: before.to_string(),
        after_data: after.to_string(),
    }
});

/// The page loads nothing but its data from the API (`connect-src`, for
/// the refresh button and the four-request mode): its script and styles
/// are in it, allowed by their hashes.
static CONTENT_SECURITY_POLICY: LazyLock<String> = LazyLock::new(|| {
    let hash = |text: &str| base64::engine::general_purpose::STANDARD.encode(Sha256::digest(text));
    format!(
        "default-src 'none'; script-src 'sha256-{}'; style-src 'sha256-{}'; \
         connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        hash(SCRIPT),
        hash(style())
    )
});

/// Query of the profile page.
#[derive(Debug, Deserialize)]
pub struct PageQuery {
    /// `components`: build the page from the four per-component routes.
    pub compose: Option<String>,
    /// The profile whose link led here (told to the service, which learns
    /// what is opened after what).
    pub from: Option<String>,
}

/// The profile page of user `id`.
pub async fn page(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    ApiQuery(q): ApiQuery<PageQuery>,
    headers: HeaderMap,
) -> Result<Response, PageError> {
    let Path(raw) = path.map_err(ApiError::from)?;
    let id = parse_id(&raw, "user id")?;
    let viewed_from = q.from.as_deref().map(|f| parse_id(f, "from")).transpose()?;
    let csp = CONTENT_SECURITY_POLICY.as_str();
    let page = &*PAGE;
    match q.compose.as_deref() {
        None => {}
        Some("components") => {
            return Ok(respond_page(
                &headers,
                page.without_data.as_str(),
                &page.etag,
                csp,
            ));
        }
        Some(other) => {
            return Err(ApiError::invalid(format!(
                "unknown compose `{}`: use `compose=components` (four per-component requests) or leave it out (one request)",
                other.chars().take(32).collect::<String>()
            ))
            .into())
        }
    }
    let options = AggregateOptions {
        include: Include::ALL,
        viewed_from,
        ..AggregateOptions::default()
    };
    let served = state
        .service
        .get_user_aggregated_data(id, options)
        .await
        .map_err(ApiError::from)?
        .ok_or_else(|| ApiError::NotFound(format!("user {id} does not exist")))?;
    let agg = &served.aggregate;
    let data = std::str::from_utf8(&agg.body)
        .map_err(|e| ApiError::Internal(format!("the aggregate is not UTF-8: {e}")))?;
    let mut body =
        String::with_capacity(page.before_data.len() + data.len() + page.after_data.len() + 64);
    body.push_str(&page.before_data);
    write_data_block(&mut body, data);
    body.push_str(&page.after_data);
    let etag = format!(
        "\"{}+{}\"",
        page.etag.trim_matches('"'),
        agg.etag.trim_start_matches("W/").trim_matches('"')
    );
    let mut resp = respond_page(&headers, body, &etag, csp);
    insert_cache_source(resp.headers_mut(), served.source);
    Ok(resp)
}

/// `json` written into a `<script type="application/json">` element: every
/// `<` as `\u003c`, so no text in it (a post title with `</script>`, say)
/// can end the element. JSON has `<` only inside strings, where the escape
/// means the same character.
fn write_data_block(out: &mut String, json: &str) {
    for (i, part) in json.split('<').enumerate() {
        if i > 0 {
            out.push_str("\\u003c");
        }
        out.push_str(part);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_data_block_cannot_be_ended_by_the_data() {
        let json = r#"{"title":"</script><script>alert(1)</script>","n":1}"#;
        let mut out = String::new();
        write_data_block(&mut out, json);
        assert!(!out.contains('<'));
        let back: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(
            back,
            serde_json::from_str::<serde_json::Value>(json).unwrap()
        );
    }

    #[test]
    fn the_page_allows_exactly_its_own_script() {
        let page = &*PAGE;
        assert!(page.after_data.contains(SCRIPT) && page.before_data.contains(style()));
        assert!(!page.before_data.contains("{{") && !page.after_data.contains("{{"));
        let csp = CONTENT_SECURITY_POLICY.as_str();
        assert!(csp.contains("script-src 'sha256-") && csp.contains("style-src 'sha256-"));
        assert!(!csp.contains("unsafe-inline") && !csp.contains("'self'; style"));
    }
}
