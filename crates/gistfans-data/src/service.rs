//! `DataAggregationService`: one call returns a whole profile.
//!
//! - Reads run through hpdb: cached per (user, include set), coalesced, at the
//!   caller's priority (a page's own read high, preloading low). The cached
//!   value carries its JSON body and ETag, so a cache hit serialises nothing.
//! - Writes go through the service, which updates every cached aggregate
//!   they touch in place (see `incremental`), under a per-user lock so two
//!   writes never race on one aggregate. The order is what makes this safe:
//!   read the cached aggregates, write to the database, invalidate the keys
//!   (which also stops any fetch that started before the write from storing
//!   or sharing its result), then store the updated aggregates.
//! - Preloading: after a profile is served, the profiles its user follows
//!   most recently are warmed at low priority, a few at a time, only while
//!   nobody is queued for a connection; at start-up the most-followed users
//!   are warmed the same way.

use std::{
    hash::{Hash, Hasher},
    sync::Arc,
    time::Duration,
};

use bytes::Bytes;
use hpdb::{Priority, QueryOptions, Source};
use serde::Serialize;
use tokio::sync::{Mutex, OwnedMutexGuard, Semaphore};

use crate::{
    aggregate::{assemble, fetch_postgres, fetch_sqlite, today},
    error::DataError,
    incremental,
    model::{Include, Post, RecentPost, UserAggregate},
    on_manager,
    writes::{self, FollowChange, NewPost, StarChange},
    Db,
};

/// Options of [`DataAggregationService::get_user_aggregated_data`], as in the seed.
#[derive(Debug, Clone, Copy)]
pub struct AggregateOptions {
    /// Which optional parts to include.
    pub include: Include,
    /// Serve from and store into the cache.
    pub use_cache: bool,
    /// Cache TTL; `None` uses the manager's default (5 min).
    pub cache_ttl: Option<Duration>,
    /// Admission priority.
    pub priority: Priority,
    /// Fetch and store without looking in the cache first (warming).
    pub refresh: bool,
}

impl Default for AggregateOptions {
    fn default() -> Self {
        Self {
            include: Include::ALL,
            use_cache: true,
            cache_ttl: None,
            priority: Priority::HIGH,
            refresh: false,
        }
    }
}

impl AggregateOptions {
    /// Warming: low priority, straight to the database, result cached.
    pub fn warming() -> Self {
        Self {
            priority: Priority::LOW,
            refresh: true,
            ..Self::default()
        }
    }
}

/// An aggregate with its JSON body and a strong ETag (a hash of the body).
#[derive(Debug, Clone)]
pub struct RenderedAggregate {
    /// The aggregate.
    pub data: UserAggregate,
    /// `data` as JSON.
    pub body: Bytes,
    /// `"…"`, changes whenever the body does.
    pub etag: String,
}

impl RenderedAggregate {
    fn new(data: UserAggregate) -> Self {
        let body = Bytes::from(serde_json::to_vec(&data).expect("aggregates always serialise"));
        let mut h = std::collections::hash_map::DefaultHasher::new();
        body.hash(&mut h);
        let etag = format!("\"{:016x}-{:x}\"", h.finish(), body.len());
        Self { data, body, etag }
    }
}

impl Serialize for RenderedAggregate {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.data.serialize(s)
    }
}

/// The cached value: `None` for a user that does not exist (negative caching).
type Cached = Option<Arc<RenderedAggregate>>;

/// A user's cached aggregates before a write: per key, the value and the
/// time it had left.
type Snapshot = Vec<(String, Option<(Arc<Cached>, Duration)>)>;

/// An aggregate as served, and where it came from.
#[derive(Debug, Clone)]
pub struct Served {
    /// The aggregate with its body and ETag.
    pub aggregate: Arc<RenderedAggregate>,
    /// Cache, database, a joined identical query, or a stale entry.
    pub source: Source,
}

const LOCK_STRIPES: usize = 64;
const PRELOAD_PER_PAGE: usize = 3;

/// The aggregation service. Cheap to clone.
#[derive(Clone)]
pub struct DataAggregationService {
    db: Db,
    locks: Arc<[Arc<Mutex<()>>]>,
    preloads: Arc<Semaphore>,
    /// Users preloaded lately: each is preloaded at most once a minute, so a
    /// hot page does not spawn work on every view.
    recently_preloaded: moka::sync::Cache<i64, ()>,
    preload_enabled: bool,
}

fn key(user_id: i64, include: Include) -> String {
    format!("agg:{user_id}:{}", include.mask())
}

fn tag(user_id: i64) -> String {
    format!("user:{user_id}")
}

impl DataAggregationService {
    /// A service over `db`, preloading on.
    pub fn new(db: Db) -> Self {
        Self {
            db,
            locks: (0..LOCK_STRIPES)
                .map(|_| Arc::new(Mutex::new(())))
                .collect(),
            preloads: Arc::new(Semaphore::new(2)),
            recently_preloaded: moka::sync::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(Duration::from_secs(60))
                .build(),
            preload_enabled: true,
        }
    }

    /// Turns preloading on or off (tests that count queries turn it off).
    pub fn with_preloading(mut self, on: bool) -> Self {
        self.preload_enabled = on;
        self
    }

    /// The database.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Everything a profile page needs; `None` if the user does not exist.
    pub async fn get_user_aggregated_data(
        &self,
        user_id: i64,
        options: AggregateOptions,
    ) -> Result<Option<Served>, DataError> {
        let (cached, source) = self.load(user_id, options).await?;
        let Some(aggregate) = cached.as_ref().clone() else {
            return Ok(None);
        };
        if self.preload_enabled && options.priority > Priority::LOW && source != Source::Stale {
            self.preload_followees(&aggregate.data);
        }
        Ok(Some(Served { aggregate, source }))
    }

    async fn load(
        &self,
        user_id: i64,
        options: AggregateOptions,
    ) -> Result<(Arc<Cached>, Source), DataError> {
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
        let r = on_manager!(&self.db, m => {
            let db_today = today();
            m.execute_query_traced(key(user_id, include), q, move |conn| Box::pin(async move {
                let json = conn.fetch(user_id, include, db_today).await?;
                json.map(|j| assemble(&j, db_today).map(|a| Arc::new(RenderedAggregate::new(a))))
                    .transpose()
                    .map_err(|e| sqlx::Error::Decode(Box::new(e)))
            })).await?
        });
        Ok((r.value, r.source))
    }

    /// Warms the profiles `agg`'s user follows most recently, at low priority.
    fn preload_followees(&self, agg: &UserAggregate) {
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
                    .peek_cached::<Cached>(&key(id, Include::ALL))
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

    /// Warms the `n` most-followed users, at low priority. Returns how many were warmed.
    pub async fn warm_hottest(&self, n: i64) -> Result<usize, DataError> {
        let ids = on_manager!(&self.db, m => m.execute_query("hottest_users", QueryOptions::uncached().priority(Priority::LOW), move |conn| Box::pin(async move {
            sqlx::query_scalar::<_, i64>(
                "SELECT followee_id FROM follows GROUP BY followee_id ORDER BY count(*) DESC, followee_id LIMIT $1",
            ).bind(n).fetch_all(conn).await
        })).await?);
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

    async fn lock(&self, mut users: Vec<i64>) -> Vec<OwnedMutexGuard<()>> {
        // Stripes in ascending order: two writes locking the same two users never deadlock.
        let mut stripes: Vec<usize> = users
            .drain(..)
            .map(|u| u.rem_euclid(LOCK_STRIPES as i64) as usize)
            .collect();
        stripes.sort_unstable();
        stripes.dedup();
        let mut guards = Vec::with_capacity(stripes.len());
        for s in stripes {
            guards.push(self.locks[s].clone().lock_owned().await);
        }
        guards
    }

    /// The cached aggregates of `user_id` (every include set) with the time
    /// each has left, read before a write.
    async fn snapshot(&self, user_id: i64) -> Snapshot {
        let mut out = Vec::with_capacity(8);
        for inc in Include::all_combinations() {
            let k = key(user_id, inc);
            let v = self.db.control().peek_cached_with_ttl::<Cached>(&k).await;
            out.push((k, v));
        }
        out
    }

    /// After the write: invalidate, then store the updated aggregates.
    /// The updated aggregate keeps the time its original had left: an
    /// update in place never extends a cached value's life.
    async fn apply(
        &self,
        user_id: i64,
        before: Snapshot,
        update: impl Fn(&mut UserAggregate) -> bool,
    ) {
        for (k, cached) in before {
            self.db.control().invalidate(&k).await;
            let Some((cached, ttl_left)) = cached else {
                continue;
            };
            let Some(rendered) = cached.as_ref() else {
                continue;
            };
            let mut data = rendered.data.clone();
            if update(&mut data) {
                let opts = QueryOptions::default().tag(tag(user_id)).ttl(ttl_left);
                let value: Arc<Cached> = Arc::new(Some(Arc::new(RenderedAggregate::new(data))));
                self.db.control().put_cached(k.clone(), &opts, value).await;
            }
        }
    }

    /// Creates a post; the author's cached aggregates gain it.
    pub async fn create_post(&self, author: i64, post: NewPost) -> Result<Post, DataError> {
        let this = self.clone();
        detached(async move { this.create_post_now(author, post).await }).await
    }

    /// Stars (`on`) or unstars a post; the author's and the starrer's aggregates follow.
    pub async fn set_star(&self, user: i64, post: i64, on: bool) -> Result<StarChange, DataError> {
        let this = self.clone();
        detached(async move { this.set_star_now(user, post, on).await }).await
    }

    /// Follows (`on`) or unfollows; both users' aggregates follow.
    pub async fn set_follow(
        &self,
        follower: i64,
        followee: i64,
        on: bool,
    ) -> Result<FollowChange, DataError> {
        let this = self.clone();
        detached(async move { this.set_follow_now(follower, followee, on).await }).await
    }

    async fn create_post_now(&self, author: i64, post: NewPost) -> Result<Post, DataError> {
        let _g = self.lock(vec![author]).await;
        let before = self.snapshot(author).await;
        let post = writes::create_post(&self.db, author, post).await?;
        let recent = RecentPost {
            id: post.id,
            title: post.title.clone(),
            language: post.language.clone(),
            created_at: post.created_at,
            stars: 0,
        };
        self.apply(author, before, |a| incremental::post_created(a, &recent))
            .await;
        Ok(post)
    }

    async fn set_star_now(&self, user: i64, post: i64, on: bool) -> Result<StarChange, DataError> {
        // The author is only known after the write; lock and snapshot by
        // looking it up first (a post's author never changes).
        let author = self.post_author(post).await?;
        let _g = self.lock(vec![user, author]).await;
        let before_author = self.snapshot(author).await;
        let before_user = if user == author {
            Vec::new()
        } else {
            self.snapshot(user).await
        };
        let change = if on {
            writes::star(&self.db, user, post).await?
        } else {
            writes::unstar(&self.db, user, post).await?
        };
        let delta = if on { 1 } else { -1 };
        if user == author {
            self.apply(author, before_author, |a| {
                incremental::star_received(a, post, change.starred_at, delta)
                    && incremental::star_given(a, delta)
            })
            .await;
        } else {
            self.apply(author, before_author, |a| {
                incremental::star_received(a, post, change.starred_at, delta)
            })
            .await;
            self.apply(user, before_user, |a| incremental::star_given(a, delta))
                .await;
        }
        Ok(change)
    }

    async fn post_author(&self, post: i64) -> Result<i64, DataError> {
        let author = on_manager!(&self.db, m => m.execute_query(format!("post_author:{post}"), QueryOptions::default().ttl(Duration::from_secs(3600)), move |conn| Box::pin(async move {
            sqlx::query_scalar::<_, i64>("SELECT user_id FROM posts WHERE id = $1").bind(post).fetch_optional(conn).await
        })).await?);
        (*author).ok_or(DataError::NotFound {
            what: "post",
            id: post,
        })
    }

    async fn set_follow_now(
        &self,
        follower: i64,
        followee: i64,
        on: bool,
    ) -> Result<FollowChange, DataError> {
        if follower == followee {
            return Err(DataError::Invalid("a user cannot follow themselves".into()));
        }
        let _g = self.lock(vec![follower, followee]).await;
        let (before_follower, before_followee) =
            (self.snapshot(follower).await, self.snapshot(followee).await);
        let change = if on {
            writes::follow(&self.db, follower, followee).await?
        } else {
            writes::unfollow(&self.db, follower, followee).await?
        };
        let delta = if on { 1 } else { -1 };
        self.apply(follower, before_follower, |a| {
            incremental::followed(a, &change.followee, change.mutual, delta)
        })
        .await;
        self.apply(followee, before_followee, |a| {
            incremental::gained_follower(a, &change.follower, change.mutual, delta)
        })
        .await;
        Ok(change)
    }
}

/// Runs a write and its cache updates to completion in a task of its own.
///
/// The caller's future may be dropped at any await point: the client hung
/// up, or a timeout layer gave up on it. If the write had committed by then,
/// dropping it before its cache step would leave every cached aggregate it
/// touches wrong until it expires. Spawned, the write and its cache step
/// finish together whatever happens to the caller; the caller only stops
/// waiting for the answer.
async fn detached<T: Send + 'static>(
    write: impl std::future::Future<Output = Result<T, DataError>> + Send + 'static,
) -> Result<T, DataError> {
    match tokio::spawn(write).await {
        Ok(result) => result,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        // Only a runtime shutting down cancels the task.
        Err(_) => Err(DataError::Db(hpdb::Error::Closed)),
    }
}

/// Runs the dialect's aggregate statement on a connection of either backend.
trait FetchAggregate {
    fn fetch<'c>(
        &'c mut self,
        user_id: i64,
        include: Include,
        today: i64,
    ) -> futures::future::BoxFuture<'c, Result<Option<String>, sqlx::Error>>;
}

impl FetchAggregate for sqlx::PgConnection {
    fn fetch<'c>(
        &'c mut self,
        user_id: i64,
        include: Include,
        today: i64,
    ) -> futures::future::BoxFuture<'c, Result<Option<String>, sqlx::Error>> {
        Box::pin(fetch_postgres(self, user_id, include, today))
    }
}

impl FetchAggregate for sqlx::SqliteConnection {
    fn fetch<'c>(
        &'c mut self,
        user_id: i64,
        include: Include,
        today: i64,
    ) -> futures::future::BoxFuture<'c, Result<Option<String>, sqlx::Error>> {
        Box::pin(fetch_sqlite(self, user_id, include, today))
    }
}
