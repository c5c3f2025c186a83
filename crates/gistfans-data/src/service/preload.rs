//! Preloading: after a profile is served, the profiles its viewer is likely
//! to open next are warmed at low priority, a few at a time, each at most
//! once a minute, and only while nobody is queued for a connection.
//!
//! Two rules say which: the profiles the user follows most recently (the
//! followee rule), and, with [`Preload::Learned`], the profiles viewers
//! opened next after this one lately (hpdb's co-visitation model, fed by
//! the `from` of each page view).
//!
//! What preloading costs is counted ([`PreloadStats`]): a preload read by a
//! page before its entry's default TTL is *used*; one never read by then is
//! *wasted*.

use std::{
    str::FromStr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use hpdb::tuning::covisit::{CoVisitConfig, CoVisits};
use moka::notification::RemovalCause;
use serde::Serialize;

use super::{key, AggregateOptions, DataAggregationService};
use crate::{
    model::{Include, UserAggregate},
    rendered::CachedAggregate,
};

/// Profiles warmed per rule and page view, at most.
const PRELOAD_PER_PAGE: usize = 3;
/// Learned successors warmed per page view, at most.
const LEARNED_PER_PAGE: usize = 2;

/// Which profiles are preloaded after a profile is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Preload {
    /// None.
    Off,
    /// The profiles its user follows most recently.
    Followees,
    /// Those, and the profiles viewers opened next after it lately.
    Learned,
}

impl Preload {
    /// The rule as [`FromStr`] reads it.
    pub fn name(self) -> &'static str {
        match self {
            Preload::Off => "off",
            Preload::Followees => "followees",
            Preload::Learned => "learned",
        }
    }
}

impl std::fmt::Display for Preload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Preload {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [Preload::Off, Preload::Followees, Preload::Learned]
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| format!("`{s}` is not off, followees or learned"))
    }
}

/// What preloading did, since start.
#[derive(Debug, Clone, Copy, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PreloadStats {
    /// Profiles preloaded (fetched because no entry was cached).
    pub issued: u64,
    /// Of those, read by a page within the default TTL.
    pub used: u64,
    /// Of those, never read within the default TTL.
    pub wasted: u64,
    /// Transitions the co-visitation model has seen.
    pub observed: u64,
}

/// The preloading state a service shares between its clones.
pub(super) struct Preloader {
    pub(super) rule: Preload,
    covisits: CoVisits<i64>,
    /// Preloaded profiles not read yet; an entry that leaves by expiry or
    /// eviction was wasted.
    unread: moka::sync::Cache<i64, ()>,
    issued: AtomicU64,
    used: AtomicU64,
    wasted: Arc<AtomicU64>,
}

impl Preloader {
    pub(super) fn new(rule: Preload, ttl: Duration) -> Self {
        let wasted = Arc::new(AtomicU64::new(0));
        let counter = wasted.clone();
        Self {
            rule,
            covisits: CoVisits::new(CoVisitConfig::default()),
            unread: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(ttl)
                .eviction_listener(move |_, _, cause| {
                    if matches!(cause, RemovalCause::Expired | RemovalCause::Size) {
                        counter.fetch_add(1, Ordering::Relaxed);
                    }
                })
                .build(),
            issued: AtomicU64::new(0),
            used: AtomicU64::new(0),
            wasted,
        }
    }

    /// A page showed `user_id`: a preload of it, if any, was used.
    fn read(&self, user_id: i64) {
        if self.unread.remove(&user_id).is_some() {
            self.used.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(super) fn stats(&self) -> PreloadStats {
        self.unread.run_pending_tasks();
        PreloadStats {
            issued: self.issued.load(Ordering::Relaxed),
            used: self.used.load(Ordering::Relaxed),
            wasted: self.wasted.load(Ordering::Relaxed),
            observed: self.covisits.observed(),
        }
    }
}

impl DataAggregationService {
    /// After a page showed `agg` (opened from `from`, if known): learns the
    /// step, and warms what the rules predict, at low priority.
    pub(super) fn after_page(&self, agg: &UserAggregate, from: Option<i64>) {
        let p = &self.preloader;
        p.read(agg.profile.id);
        if p.rule == Preload::Off {
            return;
        }
        let mut ids: Vec<i64> = Vec::new();
        if p.rule == Preload::Learned {
            if let Some(from) = from {
                p.covisits.observe(&from, &agg.profile.id);
            }
            let next = p.covisits.predict(&agg.profile.id, LEARNED_PER_PAGE);
            ids.extend(next.into_iter().map(|(id, _)| id));
        }
        if let Some(social) = agg.social.as_ref() {
            let followees = social.following_sample.iter().map(|u| u.id);
            ids.extend(followees.take(PRELOAD_PER_PAGE));
        }
        let mut unique = Vec::with_capacity(ids.len());
        for id in ids {
            if !unique.contains(&id) && id != agg.profile.id {
                unique.push(id);
            }
        }
        self.preload(unique);
    }

    /// Warms each of `ids` not preloaded lately and not cached, while
    /// nobody waits for a connection and a preload slot is free.
    fn preload(&self, ids: Vec<i64>) {
        for id in ids {
            if self.db.pending_requests() > 0 {
                return;
            }
            if self.recently_preloaded.contains_key(&id) {
                continue;
            }
            let Ok(permit) = self.preloads.clone().try_acquire_owned() else {
                return;
            };
            self.recently_preloaded.insert(id, ());
            let this = self.clone();
            tokio::spawn(async move {
                let _permit = permit;
                if this.is_cached(id).await {
                    return;
                }
                match this.load(id, AggregateOptions::warming()).await {
                    Ok(_) => {
                        this.preloader.issued.fetch_add(1, Ordering::Relaxed);
                        this.preloader.unread.insert(id, ());
                    }
                    Err(e) => tracing::debug!(user_id = id, error = %e, "preload failed"),
                }
            });
        }
    }

    /// Whether `user_id`'s whole profile is in the in-process cache now
    /// (looking does not count as a read, and stores nothing).
    pub async fn is_cached(&self, user_id: i64) -> bool {
        self.db
            .control()
            .peek_cached::<CachedAggregate>(&key(user_id, Include::ALL))
            .await
            .is_some()
    }

    /// Which profiles a profile view preloads.
    pub fn preload_rule(&self) -> Preload {
        self.preloader.rule
    }

    /// What preloading did since start.
    pub fn preload_stats(&self) -> PreloadStats {
        self.preloader.stats()
    }
}
