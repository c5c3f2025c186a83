//! The profile page (`/u/{id}`) in headless Chromium over WebDriver
//! (`common::browser`), against a real server on port 0 over a fresh,
//! seeded database; and the page's HTTP contract (content types, ETags,
//! caching, error pages, route labels) without a browser.
//!
//! Nothing here is timed: the page's `data-rendered` is for measurements.

mod common;

use chrono::DateTime;
use common::{
    browser::{Browser, Window},
    *,
};
use reqwest::{header, StatusCode};
use serde_json::{json, Value};

/// What the page shows, read from its DOM as a person sees it (text).
const READ_PAGE: &str = r#"
const q = (s) => document.querySelector(s);
const texts = (s) => [...document.querySelectorAll(s)].map((e) => e.textContent.trim());
return {
  name: q('#name').textContent, username: q('#username').textContent, bio: q('#bio').textContent,
  joined: q('#joined').getAttribute('datetime'),
  stats: Object.fromEntries([...document.querySelectorAll('[data-stat]')].map((e) => [e.dataset.stat, e.textContent])),
  postTitles: texts('#posts [data-field=title]'), postStars: texts('#posts [data-field=stars]'),
  historyTotal: q('[data-field=history-total]').textContent,
  historyDays: texts('#history-table tbody th'), historyStars: texts('#history-table tbody td'),
  historyBars: document.querySelectorAll('#history-chart svg rect').length,
  followers: q('[data-field=followers]').textContent, following: q('[data-field=following]').textContent,
  mutual: q('[data-field=mutual]').textContent,
  followerSample: texts('#followers-sample a'), followingSample: texts('#following-sample a'),
  mutualSample: texts('#mutual-sample a'),
  errorShown: !q('#error').hidden, profileShown: !q('#profile').hidden,
};"#;

/// The page as the API's data should make it look (the same shape as [`READ_PAGE`]).
fn expected_page(agg: &Value) -> Value {
    let strings = |v: &Value, field: &str| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| match &x[field] {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect()
    };
    let handles = |v: &Value| -> Vec<String> {
        strings(v, "username")
            .into_iter()
            .map(|u| format!("@{u}"))
            .collect()
    };
    let (p, s, social, history) = (
        &agg["profile"],
        &agg["stats"],
        &agg["social"],
        &agg["starHistory"],
    );
    let total: i64 = history
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["stars"].as_i64().unwrap())
        .sum();
    let joined = DateTime::from_timestamp(p["createdAt"].as_i64().unwrap(), 0).unwrap();
    json!({
        "name": p["displayName"], "username": format!("@{}", p["username"].as_str().unwrap()),
        "bio": p["bio"], "joined": joined.format("%Y-%m-%d").to_string(),
        "stats": s.as_object().unwrap().iter().map(|(k, v)| (k.clone(), json!(v.to_string()))).collect::<serde_json::Map<_, _>>(),
        "postTitles": strings(&agg["recentPosts"], "title"), "postStars": strings(&agg["recentPosts"], "stars"),
        "historyTotal": total.to_string(),
        "historyDays": strings(history, "date"), "historyStars": strings(history, "stars"),
        "historyBars": history.as_array().unwrap().len(),
        "followers": social["followers"].to_string(), "following": social["following"].to_string(),
        "mutual": social["mutualCount"].to_string(),
        "followerSample": handles(&social["followerSample"]), "followingSample": handles(&social["followingSample"]),
        "mutualSample": handles(&social["mutualSample"]),
        "errorShown": false, "profileShown": true,
    })
}

/// The API's answer for user `id`: one aggregate, or the four component
/// routes put together (what the page in that mode reads).
async fn api_data(app: &App, id: i64, components: bool) -> Value {
    if !components {
        return app.profile(id).await;
    }
    let part = |name: &str| format!("/api/users/{id}/{name}");
    let (_, stats) = app.get(&part("stats")).await;
    let (_, posts) = app.get(&part("posts")).await;
    let (_, history) = app.get(&part("star-history")).await;
    let (_, social) = app.get(&part("social")).await;
    json!({"profile": stats["profile"], "stats": stats["stats"], "recentPosts": posts,
           "starHistory": history, "social": social})
}

async fn page_shows_the_api_numbers(backend: Backend, components: bool) {
    let app = spawn_app(backend, None).await;
    let browser = Browser::start(Window::Desktop).await;
    let query = if components {
        "?compose=components"
    } else {
        ""
    };
    for id in [1, 2] {
        let expected = expected_page(&api_data(&app, id, components).await);
        assert!(!expected["postTitles"].as_array().unwrap().is_empty());
        browser.open(&format!("{}/u/{id}{query}", app.base)).await;
        browser.wait_for_attr("rendered").await;
        let data = browser.html_data().await;
        assert_eq!(data["state"], "ready", "{data}");
        assert_eq!(data["status"], "200", "{data}");
        let (requests, mode) = if components {
            ("4", "components")
        } else {
            ("1", "aggregate")
        };
        assert_eq!(
            (data["requests"].as_str(), data["mode"].as_str()),
            (Some(requests), Some(mode))
        );
        assert_eq!(browser.eval(READ_PAGE).await, expected, "user {id}{query}");
        if id == 1 && matches!(backend, Backend::Sqlite) {
            let name = if components {
                "profile-components-desktop"
            } else {
                "profile-desktop"
            };
            browser.screenshot(name).await;
        }
    }
    browser.close().await;
}

#[tokio::test]
async fn profile_page_shows_the_aggregate_api_numbers_sqlite() {
    page_shows_the_api_numbers(Backend::Sqlite, false).await;
}

#[tokio::test]
async fn profile_page_shows_the_aggregate_api_numbers_postgres() {
    page_shows_the_api_numbers(Backend::Postgres, false).await;
}

#[tokio::test]
async fn profile_page_composed_from_components_shows_the_component_api_numbers_sqlite() {
    page_shows_the_api_numbers(Backend::Sqlite, true).await;
}

/// Requests of `route` answered with `status`, from `/metrics`.
async fn served(app: &App, route: &str, status: u16) -> u64 {
    let wanted = format!("route=\"{route}\"");
    let wanted_status = format!("status=\"{status}\"");
    app.metrics_text()
        .await
        .lines()
        .filter(|l| {
            l.starts_with("http_requests_total{")
                && l.contains(&wanted)
                && l.contains(&wanted_status)
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// The data comes with the page: one request in all (counted by the
/// browser and by the server), none to the API, also when the profile was
/// opened from a link (`?from=`).
#[tokio::test]
async fn the_page_carries_its_data_and_makes_no_other_request() {
    let app = spawn_app(Backend::Sqlite, None).await;
    let browser = Browser::start(Window::Desktop).await;
    let api = "/api/user/stats-optimized";
    for (path, n) in [("/u/1", 1), ("/u/2?from=1", 2)] {
        let (api_before, page_before) = (
            served(&app, api, 200).await,
            served(&app, "/u/{id}", 200).await,
        );
        browser.open(&format!("{}{path}", app.base)).await;
        browser.wait_for_attr("painted").await;
        let data = browser.html_data().await;
        assert_eq!(
            (
                data["state"].as_str(),
                data["status"].as_str(),
                data["requests"].as_str(),
                data["fetches"].as_str()
            ),
            (Some("ready"), Some("200"), Some("1"), Some("0")),
            "{path}: {data}"
        );
        assert_eq!(
            served(&app, api, 200).await,
            api_before,
            "{path}: no API request"
        );
        assert_eq!(
            served(&app, "/u/{id}", 200).await,
            page_before + 1,
            "{path}: one request"
        );
        let answered: f64 = data["answered"].as_str().unwrap().parse().unwrap();
        assert!(answered > 0.0, "the page's own answer: {data}");
        assert_eq!(
            browser.eval(READ_PAGE).await,
            expected_page(&app.profile(n).await),
            "{path}"
        );
    }
    browser.close().await;
}

/// Runs `click` (a script) and waits for the page to show data again.
async fn after_click(browser: &Browser, click: &str) -> Value {
    browser
        .eval(&format!(
            "delete document.documentElement.dataset.painted; {click}; return null"
        ))
        .await;
    browser.wait_for_attr("painted").await;
    browser.html_data().await
}

/// A reload revalidates the page (its ETag covers the data: 304, the kept
/// page shown again); the Refresh button fetches the API, and its second
/// click revalidates the kept answer (If-None-Match → 304).
#[tokio::test]
async fn a_reload_or_a_refresh_sends_if_none_match_and_renders_the_kept_body_from_a_304() {
    let app = spawn_app(Backend::Sqlite, None).await;
    let browser = Browser::start(Window::Desktop).await;
    browser.open(&format!("{}/u/1", app.base)).await;
    browser.wait_for_attr("painted").await;
    assert_eq!(browser.html_data().await["status"], "200");
    let first = browser.eval(READ_PAGE).await;
    assert_eq!(first, expected_page(&app.profile(1).await));
    let (page, api) = ("/u/{id}", "/api/user/stats-optimized");

    let before = served(&app, page, 304).await;
    browser.reload().await;
    browser.wait_for_attr("painted").await;
    let data = browser.html_data().await;
    assert_eq!(
        (
            data["state"].as_str(),
            data["status"].as_str(),
            data["requests"].as_str()
        ),
        (Some("ready"), Some("304"), Some("1")),
        "{data}"
    );
    assert_eq!(
        served(&app, page, 304).await,
        before + 1,
        "the server answered the reload with a 304"
    );
    assert_eq!(
        browser.eval(READ_PAGE).await,
        first,
        "the kept page is shown again"
    );

    let click = "document.querySelector('#refresh').click()";
    let data = after_click(&browser, click).await;
    assert_eq!(
        (data["state"].as_str(), data["status"].as_str()),
        (Some("ready"), Some("200")),
        "{data}"
    );
    let before = served(&app, api, 304).await;
    let data = after_click(&browser, click).await;
    assert_eq!(
        (data["state"].as_str(), data["status"].as_str()),
        (Some("ready"), Some("304")),
        "{data}"
    );
    assert_eq!(
        served(&app, api, 304).await,
        before + 1,
        "the server answered the refresh with a 304"
    );
    assert_eq!(
        browser.eval(READ_PAGE).await,
        first,
        "the kept body is shown again"
    );
    browser.close().await;
}

#[tokio::test]
async fn bad_and_unknown_ids_show_the_error_state() {
    let app = spawn_app(Backend::Sqlite, None).await;
    let browser = Browser::start(Window::Desktop).await;
    let read_error = "return {title: document.querySelector('#error-title').textContent, \
        message: document.querySelector('#error-message').textContent, \
        shown: !document.querySelector('#error').hidden}";
    for (path, status, title, says) in [
        (
            "/u/999999",
            "404",
            "Not found",
            "user 999999 does not exist",
        ),
        (
            "/u/05",
            "400",
            "Not a valid address",
            "user id must be a positive integer",
        ),
        (
            "/u/abc?compose=components",
            "400",
            "Not a valid address",
            "got `abc`",
        ),
        (
            "/u/1?compose=everything",
            "400",
            "Not a valid address",
            "unknown compose",
        ),
    ] {
        browser.open(&format!("{}{path}", app.base)).await;
        browser.wait_for("html[data-state=error]").await;
        assert_eq!(browser.html_data().await["status"], status, "{path}");
        let shown = browser.eval(read_error).await;
        assert_eq!(
            (shown["title"].as_str(), shown["shown"].as_bool()),
            (Some(title), Some(true)),
            "{path}: {shown}"
        );
        assert!(
            shown["message"].as_str().unwrap().contains(says),
            "{path}: {shown}"
        );
    }
    browser.close().await;
}

#[tokio::test]
async fn profile_page_fits_a_phone_and_shows_keyboard_focus() {
    use fantoccini::{
        actions::{InputSource, KeyAction, KeyActions},
        key::Key,
    };
    let app = spawn_app(Backend::Sqlite, None).await;
    let browser = Browser::start(Window::Phone).await;
    browser.open(&format!("{}/u/1", app.base)).await;
    browser.wait_for_attr("rendered").await;
    let fit = browser
        .eval("return {width: window.innerWidth, scroll: document.documentElement.scrollWidth}")
        .await;
    assert_eq!(
        fit["width"], 390,
        "the viewport meta gives a phone-wide layout: {fit}"
    );
    assert!(
        fit["scroll"].as_i64() <= fit["width"].as_i64(),
        "no sideways scrolling: {fit}"
    );
    browser.screenshot("profile-phone").await;

    let tab = KeyActions::new("keyboard".into())
        .then(KeyAction::Down {
            value: Key::Tab.into(),
        })
        .then(KeyAction::Up {
            value: Key::Tab.into(),
        });
    browser.client.perform_actions(tab).await.unwrap();
    let focused = browser
        .eval("const e = document.activeElement; return {cls: e.className, outline: getComputedStyle(e).outlineStyle}")
        .await;
    assert_eq!(
        focused,
        json!({"cls": "skip", "outline": "solid"}),
        "the first Tab reaches the skip link, visibly"
    );
    browser.close().await;
}

#[tokio::test]
async fn page_and_files_have_content_types_strong_etags_and_cache_control() {
    let app = spawn_app(Backend::Sqlite, None).await;
    let get = |path: &str, etag: Option<&str>| {
        let mut req = app.http.get(format!("{}{path}", app.base));
        if let Some(e) = etag {
            req = req.header(header::IF_NONE_MATCH, e);
        }
        req.send()
    };
    let page = get("/u/1", None).await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let h = page.headers().clone();
    assert_eq!(h[header::CONTENT_TYPE], "text/html; charset=utf-8");
    assert_eq!(h[header::CACHE_CONTROL], "no-cache");
    assert!(h.contains_key(header::CONTENT_SECURITY_POLICY));
    let etag = h[header::ETAG].to_str().unwrap().to_string();
    assert!(etag.starts_with('"'), "strong: {etag}");
    let html = page.text().await.unwrap();
    assert!(html.contains(r#"<meta name="viewport""#));
    // The page carries its data: its ETag covers it.
    assert_eq!(
        get("/u/1", Some(&etag)).await.unwrap().status(),
        StatusCode::NOT_MODIFIED
    );
    assert_eq!(
        get("/u/2", Some(&etag)).await.unwrap().status(),
        StatusCode::OK
    );
    let post = json!({"title": "new", "language": "rust", "content": "fn main() {}"});
    let (s, _) = app
        .send(reqwest::Method::POST, "/api/posts", Some(1), Some(post))
        .await;
    assert!(s.is_success(), "{s}");
    assert_eq!(
        get("/u/1", Some(&etag)).await.unwrap().status(),
        StatusCode::OK,
        "a write to the profile changes the page's ETag"
    );
    // Nothing of the profile page is loaded from elsewhere.
    assert!(!html.contains("/assets/"), "{html}");

    // The files other pages link (the dashboard's).
    let dashboard = get("/admin", None).await.unwrap().text().await.unwrap();
    let links: Vec<&str> = dashboard
        .split('"')
        .filter(|s| s.starts_with("/assets/") && (s.contains(".js?") || s.contains(".css?")))
        .collect();
    assert_eq!(links.len(), 4, "{dashboard}");
    for link in links {
        let r = get(link, None).await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{link}");
        let want = if link.contains(".js?") {
            "text/javascript; charset=utf-8"
        } else {
            "text/css; charset=utf-8"
        };
        assert_eq!(r.headers()[header::CONTENT_TYPE], want);
        assert_eq!(
            r.headers()[header::CACHE_CONTROL],
            "public, max-age=31536000, immutable"
        );
        let etag = r.headers()[header::ETAG].to_str().unwrap().to_string();
        assert_eq!(
            get(link, Some(&etag)).await.unwrap().status(),
            StatusCode::NOT_MODIFIED
        );
        let unversioned = link.split('?').next().unwrap();
        assert_eq!(
            get(unversioned, None).await.unwrap().headers()[header::CACHE_CONTROL],
            "no-cache"
        );
    }
    let (s, body) = app.get("/assets/nope.js").await;
    assert_error(s, &body, StatusCode::NOT_FOUND);

    let bad = get("/u/%2B5", None).await.unwrap();
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        bad.headers()[header::CONTENT_TYPE],
        "text/html; charset=utf-8"
    );
    assert!(bad.text().await.unwrap().contains("positive integer"));
    let (s, body) = app.send(reqwest::Method::POST, "/u/1", None, None).await;
    assert_error(s, &body, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn every_profile_page_is_one_route_label() {
    let app = spawn_app(Backend::Sqlite, None).await;
    for path in [
        "/u/1",
        "/u/2",
        "/u/3",
        "/u/x",
        "/assets/profile.js",
        "/assets/nope",
    ] {
        app.http
            .get(format!("{}{path}", app.base))
            .send()
            .await
            .unwrap();
    }
    let text = app.metrics_text().await;
    assert!(
        text.contains(r#"route="/u/{id}""#) && text.contains(r#"route="/assets/{name}""#),
        "{text}"
    );
    for leaked in [
        r#"route="/u/1""#,
        r#"route="/u/x""#,
        r#"route="/assets/profile.js""#,
    ] {
        assert!(!text.contains(leaked), "{leaked}");
    }
}
