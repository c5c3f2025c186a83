//! Preloading against a real (SQLite) database: the learned rule warms the
//! profile viewers opened after this one, the followee rule alone does not,
//! and what a preload became (used or not) is counted.

use std::time::Duration;

use gistfans_data::{
    migrate,
    seed::{seed, SeedConfig},
    AggregateOptions, DataAggregationService, Db, Preload,
};
use hpdb::{ManagerConfig, Source};
use testkit::TempDir;

async fn service(rule: Preload) -> (DataAggregationService, TempDir) {
    let dir = std::env::temp_dir().join(testkit::unique("gf_preload"));
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite://{}/gf.db", dir.display());
    migrate(&url, None).await.unwrap();
    seed(&url, &SeedConfig::small(), false).await.unwrap();
    let db = Db::connect(&url, ManagerConfig::new()).await.unwrap();
    (
        DataAggregationService::new(db).with_preload(rule),
        TempDir(dir),
    )
}

/// Views `id` as a page does, coming from `from`; where it was served from.
async fn view(s: &DataAggregationService, id: i64, from: Option<i64>) -> Source {
    let options = AggregateOptions {
        viewed_from: from,
        ..AggregateOptions::default()
    };
    s.get_user_aggregated_data(id, options)
        .await
        .unwrap()
        .unwrap()
        .source
}

/// A user that `a`'s page does not link among its first followees, so
/// the followee rule never preloads it.
async fn not_a_followee_of(s: &DataAggregationService, a: i64) -> i64 {
    let page = s
        .get_user_aggregated_data(a, AggregateOptions::default())
        .await
        .unwrap()
        .unwrap();
    let social = page.aggregate.data.social.clone().unwrap();
    let followees: Vec<i64> = social.following_sample.iter().map(|u| u.id).collect();
    (2..)
        .find(|id| *id != a && !followees.contains(id))
        .unwrap()
}

/// Waits until the preloads in flight are done: their count stops moving
/// (two at a time, each profile at most once a minute, so it does).
async fn settle(s: &DataAggregationService) {
    let mut last = s.preload_stats().issued;
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = s.preload_stats().issued;
        if now == last {
            return;
        }
        last = now;
    }
}

/// Viewers go from `a` to `b` twice (the cache emptied after each, so
/// nothing is left cached by the views themselves), then, once the
/// preloads those views started are done, one more views `a`.
async fn walk(s: &DataAggregationService, a: i64, b: i64) {
    for _ in 0..2 {
        view(s, a, None).await;
        view(s, b, Some(a)).await;
        settle(s).await;
        s.db().control().clear_cache().await;
    }
    view(s, a, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_learned_rule_preloads_what_viewers_open_next_and_counts_its_use() {
    let (s, _dir) = service(Preload::Learned).await;
    let a = 1;
    let b = not_a_followee_of(&s, a).await;
    s.db().control().clear_cache().await;
    let before = s.preload_stats();
    walk(&s, a, b).await;
    let preloaded = testkit::pg::eventually(Duration::from_secs(10), || s.is_cached(b)).await;
    assert!(preloaded, "b was not preloaded: {:?}", s.preload_stats());
    assert_eq!(view(&s, b, Some(a)).await, Source::Cache);
    let stats = s.preload_stats();
    assert!(stats.used > before.used, "{stats:?}");
    assert!(stats.observed >= 3, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_followee_rule_alone_does_not_preload_a_stranger() {
    let (s, _dir) = service(Preload::Followees).await;
    let a = 1;
    let b = not_a_followee_of(&s, a).await;
    s.db().control().clear_cache().await;
    walk(&s, a, b).await;
    settle(&s).await;
    assert!(!s.is_cached(b).await);
    assert_eq!(view(&s, b, Some(a)).await, Source::Database);
    assert_eq!(
        s.preload_stats().observed,
        0,
        "only the learned rule learns"
    );
}
