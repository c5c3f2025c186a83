//! Reading aggregates: the page's own read, and warming at start-up.

use std::{sync::Arc, time::Duration};

use hpdb::{Priority, QueryOptions, Source};

use super::{key, tag, AggregateOptions, DataAggregationService, Served, KEY_PREFIX};
use crate::{error::DataError, rendered::CachedAggregate};

impl DataAggregationService {
    /// Everything a profile page needs; `None` if the user does not exist.
    pub async fn get_user_aggregated_data(
        &self,
        user_id: i64,
        options: AggregateOptions,
    ) -> Result<Option<Served>, DataError> {
        let (cached, source) = self.load(user_id, options).await?;
        let Some(aggregate) = cached.0.clone() else {
            return Ok(None);
        };
        if options.priority > Priority::LOW && source != Source::Stale {
            self.after_page(&aggregate.data, options.viewed_from);
        }
        Ok(Some(Served { aggregate, source }))
    }

    pub(super) async fn load(
        &self,
        user_id: i64,
        options: AggregateOptions,
    ) -> Result<(Arc<CachedAggregate>, Source), DataError> {
        let include = options.include;
        let mut q = QueryOptions::default()
            .use_cache(options.use_cache)
            .priority(options.priority)
            .tag(tag(user_id));
        if let Some(ttl) = options.cache_ttl {
            q = q.ttl(ttl);
        }
        if options.refresh {
            q = q.refresh();
        }
        let r = self
            .db
            .store()
            .aggregate(key(user_id, include), q, user_id, include)
            .await?;
        Ok((r.value, r.source))
    }

    /// Warms up to `n` profiles: from the shared cache level's hot set when
    /// there is one and it holds any (a new instance beside running ones),
    /// else the `n` most-followed users from the database, at low priority.
    /// Returns how many were warmed.
    pub async fn warm_hottest(&self, n: i64) -> Result<usize, DataError> {
        let limit = usize::try_from(n).unwrap_or(0);
        let shared = self
            .db
            .control()
            .warm_from_shared::<CachedAggregate>(KEY_PREFIX, limit)
            .await;
        if shared > 0 {
            return Ok(shared);
        }
        let ids = self.db.store().hottest_users(n).await?;
        let opts = AggregateOptions::warming();
        let mut warmed = 0;
        for id in ids.iter() {
            if self.db.pending_requests() > 0 {
                // Never in the way of real traffic: try again later.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            self.load(*id, opts).await?;
            warmed += 1;
        }
        Ok(warmed)
    }
}
