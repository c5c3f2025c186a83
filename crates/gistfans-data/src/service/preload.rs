//! Preloading: after a profile is served, the profiles its user follows
//! most recently are warmed at low priority, a few at a time, each at most
//! once a minute, and only while nobody is queued for a connection.

use super::{key, AggregateOptions, DataAggregationService};
use crate::{
    model::{Include, UserAggregate},
    rendered::CachedAggregate,
};

/// Followees warmed per page view, at most.
const PRELOAD_PER_PAGE: usize = 3;

impl DataAggregationService {
    /// Warms the profiles `agg`'s user follows most recently, at low priority.
    pub(super) fn preload_followees(&self, agg: &UserAggregate) {
        let Some(social) = agg.social.as_ref() else {
            return;
        };
        if self.db.pending_requests() > 0 {
            return;
        }
        let ids: Vec<i64> = social
            .following_sample
            .iter()
            .take(PRELOAD_PER_PAGE)
            .map(|u| u.id)
            .collect();
        for id in ids {
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
                let cached = this
                    .db
                    .control()
                    .peek_cached::<CachedAggregate>(&key(id, Include::ALL))
                    .await
                    .is_some();
                if !cached {
                    if let Err(e) = this.load(id, AggregateOptions::warming()).await {
                        tracing::debug!(user_id = id, error = %e, "preload failed");
                    }
                }
            });
        }
    }
}
