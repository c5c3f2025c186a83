//! The live dashboard (`/admin`) in headless Chromium over WebDriver
//! (`common::browser`): it refuses a wrong token, shows figures that follow
//! a load, and its clear-cache button empties the cache (checked through
//! the API). Nothing here is timed; waits are bounded.

mod common;

use std::time::Duration;

use common::{
    browser::{Browser, Window},
    *,
};
use fantoccini::Locator;
use serde_json::Value;

/// Waits (at most 30 s) until `script` (a function body) returns `true`.
async fn until(browser: &Browser, what: &str, script: &str) {
    for _ in 0..300 {
        if browser.eval(script).await == Value::Bool(true) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what}: not within 30 s");
}

/// The raw figure the dashboard shows in `#id`.
async fn figure(browser: &Browser, id: &str) -> f64 {
    let v = browser
        .eval(&format!(
            "return document.getElementById('{id}').dataset.value || null"
        ))
        .await;
    v.as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("#{id} shows no figure: {v}"))
}

async fn enter_token(browser: &Browser, token: &str) {
    let input = browser.wait_for("#token-form:not([hidden]) #token").await;
    input.clear().await.unwrap();
    input.send_keys(token).await.unwrap();
    browser
        .client
        .find(Locator::Css("#token-submit"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_refuses_a_wrong_token_follows_a_load_and_clears_the_cache() {
    let app = spawn_app(Backend::Sqlite, Some(TOKEN)).await;
    let browser = Browser::start(Window::Desktop).await;
    browser.open(&format!("{}/admin", app.base)).await;

    enter_token(&browser, "not-the-token").await;
    until(
        &browser,
        "a wrong token is refused",
        "const e = document.getElementById('token-error'); \
         return document.getElementById('connection').dataset.state === 'unauthorized' \
                && !e.hidden && e.textContent.length > 0",
    )
    .await;

    enter_token(&browser, TOKEN).await;
    until(
        &browser,
        "the stream is live",
        "return document.getElementById('connection').dataset.state === 'live' \
                && document.getElementById('total-queries').dataset.value !== undefined",
    )
    .await;
    // The panel of writes made around the server: SQLite's watch, its
    // figures shown and the change stream's hidden.
    until(
        &browser,
        "the watch's panel shows SQLite's mode",
        "return document.getElementById('changes-mode').dataset.value === 'dataVersion' \
                && document.getElementById('changes-detail').textContent.includes('data_version') \
                && !document.getElementById('changes-polls').parentElement.hidden \
                && document.getElementById('changes-lag-bytes').parentElement.hidden",
    )
    .await;
    assert!(figure(&browser, "changes-polls").await > 0.0);
    assert_eq!(figure(&browser, "changes-foreign-commits").await, 0.0);
    let before = figure(&browser, "total-queries").await;
    for id in 1..=40 {
        app.profile(id).await;
    }
    until(
        &browser,
        "the figures follow the load",
        &format!(
            "return Number(document.getElementById('total-queries').dataset.value) >= {}",
            before + 40.0
        ),
    )
    .await;
    assert!(figure(&browser, "cache-entries").await > 0.0);
    // The consistency monitor's card: one row per delay.
    let rows = browser
        .eval("return document.getElementById('consistency-within').textContent")
        .await;
    let rows = rows.as_str().unwrap_or_default();
    assert!(
        rows.contains("Nines within 1s") && rows.contains("Nines within 10s"),
        "{rows}"
    );
    // The card shows how many keys were sampled (`figure` fails unless it
    // shows a number).
    figure(&browser, "consistency-sampled").await;
    browser.screenshot("dashboard-desktop").await;

    // The buttons ask first: answer yes.
    browser
        .eval("window.confirm = () => true; return true")
        .await;
    browser
        .client
        .find(Locator::Css("#btn-clear-cache"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    until(
        &browser,
        "the action reports success",
        "const r = document.getElementById('action-result'); \
         return r.dataset.action !== '' && r.dataset.ok === 'true'",
    )
    .await;
    let monitor: Value = app
        .http
        .get(format!("{}/api/admin/connection-pool-monitor", app.base))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        monitor["status"]["cache"]["entries"], 0,
        "the cache is empty: {}",
        monitor["status"]["cache"]
    );
    browser.close().await;
}
