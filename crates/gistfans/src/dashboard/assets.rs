//! The dashboard's own files, embedded in the binary: the page and the
//! vendored uPlot (`assets/vendor/uplot`, see its README). Served like every
//! other file through the one table in `pages::assets` (`/assets/{name}`,
//! strong ETags, versioned URLs cached for good); the page is linked to
//! their versioned URLs once.
//!
//! Embedded so that the dashboard works offline and the binary is the whole
//! deployment.

use std::sync::LazyLock;

use crate::pages::assets::{etag_of, link};

/// The vendored uPlot's version (`assets/vendor/uplot/README.md`).
pub const UPLOT_VERSION: &str = "1.6.32";
/// uPlot's script (an IIFE that defines `uPlot`), with its licence banner.
pub const UPLOT_JS: &str = include_str!("../../assets/vendor/uplot/uPlot.iife.min.js");
/// uPlot's style sheet.
pub const UPLOT_CSS: &str = include_str!("../../assets/vendor/uplot/uPlot.min.css");
/// uPlot's licence (MIT).
pub const UPLOT_LICENSE: &str = include_str!("../../assets/vendor/uplot/LICENSE");

/// The dashboard page, linked to its files' versioned URLs, and its ETag.
static PAGE: LazyLock<(String, String)> = LazyLock::new(|| {
    let body = link(include_str!("../../assets/dashboard/index.html"));
    let etag = etag_of(&body);
    (body, etag)
});

/// The page and its strong ETag.
pub fn page() -> (&'static str, &'static str) {
    (&PAGE.0, &PAGE.1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_vendored_uplot_is_the_version_the_readme_names() {
        let readme = include_str!("../../assets/vendor/uplot/README.md");
        assert!(readme.contains(UPLOT_VERSION));
        assert!(UPLOT_JS.contains(&format!("(v{UPLOT_VERSION})")));
    }

    #[test]
    fn the_page_links_every_file_by_its_versioned_url() {
        let (body, etag) = page();
        assert!(!body.contains("{{"), "every {{asset:…}} is linked");
        for name in ["dashboard.js", "dashboard.css", "uplot.js", "uplot.css"] {
            let url = crate::pages::assets::find(name).unwrap().url();
            assert!(body.contains(&url), "{name}");
        }
        assert!(etag.starts_with('"'));
    }
}
