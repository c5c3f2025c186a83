//! Writes and the cached aggregates they touch.
//!
//! Once the write holds its connection (its [`Turn`], awaited by the store
//! just before the statement), under a per-user lock (striped, taken in
//! ascending order; with a shared level also the users' write locks across
//! instances): read the cached aggregates, write to the database,
//! invalidate the user's tag (which also stops any fetch that started
//! before the write from storing or sharing its result, here and, through
//! the shared level, on every instance), then store the aggregates updated
//! in place. The lock orders writes on one instance; across instances the
//! shared level's generations do (an update in place is stored only if it
//! follows the snapshot's version directly); an aggregate whose update was
//! refused for that reason is fetched again before the write is answered.
//! A lock is held for the statement's round trip and the cache step only:
//! its holder already has its connection, so a hot user's writes queue
//! behind each other's statements, not behind the readers' queue for
//! connections. Each write and its cache step run in a task of their own
//! ([`detached`]).

use std::sync::Arc;

use hpdb::{Delivery, QueryOptions, TagLocks, Versioned};
use tokio::sync::{oneshot, OwnedMutexGuard};

use super::{
    key, tag,
    timing::{PhaseClock, WritePhase},
    AggregateOptions, DataAggregationService,
};
use crate::{
    error::DataError,
    incremental,
    model::{Include, Post, RecentPost, UserAggregate},
    rendered::{CachedAggregate, RenderedAggregate},
    writes::{self, FollowChange, NewPost, StarChange, Turn, Written},
};

/// A user's cached aggregates before a write: per include set, the value
/// with what an update in place needs (its time left, its shared version).
type Snapshot = Vec<(Include, Versioned<CachedAggregate>)>;

/// Aggregates a write could not update in place (another instance wrote
/// the same user meanwhile): fetched again before the write is answered.
type Refill = Vec<(i64, Include)>;

/// A write's cache step for one user: what to refill, and how far its
/// invalidation was delivered.
struct Applied {
    refill: Refill,
    delivery: Delivery,
}

impl Applied {
    fn and(mut self, other: Applied) -> Applied {
        self.refill.extend(other.refill);
        self.delivery = self.delivery.and(other.delivery);
        self
    }
}

/// The locks a write holds: its users' stripes on this instance, then
/// their tags' write locks across instances (see `hpdb::TagLocks`).
struct WriteLocks {
    _stripes: Vec<OwnedMutexGuard<()>>,
    _tags: TagLocks,
}

/// What a write holds once its turn has come: its locks, its users'
/// cached aggregates read under them (in the order the users were given),
/// and its clock.
struct Taken {
    locks: WriteLocks,
    snapshots: Vec<Snapshot>,
    clock: PhaseClock,
}

impl DataAggregationService {
    /// The turn of a write to `users` (distinct), for the store to await
    /// once the write holds its connection: the users' locks taken, their
    /// cached aggregates read; what it took arrives on the receiver (sent
    /// before the statement runs, so a write that succeeded always has it).
    ///
    /// The users' queues are taken first, before the write asks for a
    /// connection, and let go once the locks are held: of a hot user's
    /// writes, one holds the lock, at most one waits for it with a
    /// connection, and the rest wait without one.
    async fn turn(
        &self,
        users: Vec<i64>,
        mut clock: PhaseClock,
    ) -> (Turn, oneshot::Receiver<Taken>) {
        clock.next(WritePhase::Queue);
        let queued = self.queues.lock(&users).await;
        clock.next(WritePhase::Admission);
        let (sender, taken) = oneshot::channel();
        let this = self.clone();
        let turn = Box::pin(async move {
            clock.next(WritePhase::Lock);
            let locks = this.lock(users.clone()).await;
            drop(queued);
            clock.next(WritePhase::Snapshot);
            let snapshots =
                futures::future::join_all(users.iter().map(|&u| this.snapshot(u))).await;
            clock.next(WritePhase::Statement);
            // The receiver is gone only if the write was: nothing to hand over.
            let _ = sender.send(Taken {
                locks,
                snapshots,
                clock,
            });
        });
        (turn, taken)
    }

    /// What the turn of a write that succeeded took. The store awaits the
    /// turn before its statement, so it is always there; were it ever not,
    /// the locks are taken now and the snapshots left empty, so the cache
    /// step invalidates the users' aggregates instead of updating them.
    async fn taken(&self, taken: oneshot::Receiver<Taken>, users: &[i64]) -> Taken {
        match taken.await {
            Ok(taken) => taken,
            Err(_) => Taken {
                locks: self.lock(users.to_vec()).await,
                snapshots: Vec::new(),
                clock: PhaseClock::start(self.write_timings.clone(), WritePhase::Lock),
            },
        }
    }

    async fn lock(&self, users: Vec<i64>) -> WriteLocks {
        let stripes = self.locks.lock(&users).await;
        let tags: Vec<String> = users.into_iter().map(tag).collect();
        let tags: Vec<&str> = tags.iter().map(String::as_str).collect();
        WriteLocks {
            _stripes: stripes,
            _tags: self.db.control().lock_tags(&tags).await,
        }
    }

    /// The cached aggregates of `user_id` (every include set, in process or
    /// in the shared level), read before a write.
    async fn snapshot(&self, user_id: i64) -> Snapshot {
        let control = self.db.control();
        let peeks = Include::all_combinations().map(|inc| {
            let (control, k) = (control.clone(), key(user_id, inc));
            async move {
                let v = control.peek_versioned::<CachedAggregate>(&k).await?;
                Some((inc, v))
            }
        });
        futures::future::join_all(peeks)
            .await
            .into_iter()
            .flatten()
            .collect()
    }

    /// After the write: the user's tag invalidated here and, through the
    /// shared level, on every instance, and the aggregates updated in place
    /// stored (see `hpdb::Control::update_tag`). An update in place keeps
    /// the time its original had left, and is stored only if no other
    /// write to the user came between the snapshot and this one, on any
    /// instance; the include sets whose update was refused are returned,
    /// to be [`refill`](Self::refill)ed, with the invalidation's delivery.
    async fn apply(
        &self,
        user_id: i64,
        before: Snapshot,
        update: impl Fn(&mut UserAggregate) -> bool,
    ) -> Applied {
        let mut updates = Vec::with_capacity(before.len());
        let mut includes = Vec::with_capacity(before.len());
        for (include, cached) in before {
            let Some(rendered) = cached.value.0.as_ref() else {
                continue;
            };
            let mut data = rendered.data.clone();
            if update(&mut data) {
                let value = Arc::new(CachedAggregate(Some(Arc::new(RenderedAggregate::new(
                    data,
                )))));
                let k: Arc<str> = Arc::from(key(user_id, include));
                includes.push((k.clone(), include));
                updates.push((k, cached, value));
            }
        }
        let opts = QueryOptions::default().tag(tag(user_id));
        let done = self
            .db
            .control()
            .update_tag(&tag(user_id), &opts, updates)
            .await;
        let refill = includes
            .into_iter()
            .filter(|(k, _)| done.refused().contains(k))
            .map(|(_, include)| (user_id, include))
            .collect();
        Applied {
            refill,
            delivery: done.delivery(),
        }
    }

    /// Fetches again (through the cache, so once for every instance) the
    /// aggregates a write could not update in place: cached before the
    /// write, they are likely read next, and the write's answer waits for
    /// them so that the read after it does not. Failures are left to that
    /// read.
    async fn refill(&self, refill: Refill) {
        let loads = refill.into_iter().map(|(user_id, include)| {
            let options = AggregateOptions {
                include,
                ..AggregateOptions::default()
            };
            async move { self.load(user_id, options).await }
        });
        for failed in futures::future::join_all(loads)
            .await
            .into_iter()
            .filter_map(Result::err)
        {
            tracing::debug!(error = %failed, "refill after a write failed");
        }
    }

    /// Creates a post; the author's cached aggregates gain it.
    pub async fn create_post(
        &self,
        author: i64,
        post: NewPost,
    ) -> Result<Written<Post>, DataError> {
        let this = self.clone();
        detached(async move { this.create_post_now(author, post).await }).await
    }

    /// Stars (`on`) or unstars a post; the author's and the starrer's aggregates follow.
    pub async fn set_star(
        &self,
        user: i64,
        post: i64,
        on: bool,
    ) -> Result<Written<StarChange>, DataError> {
        let this = self.clone();
        detached(async move { this.set_star_now(user, post, on).await }).await
    }

    /// Follows (`on`) or unfollows; both users' aggregates follow.
    pub async fn set_follow(
        &self,
        follower: i64,
        followee: i64,
        on: bool,
    ) -> Result<Written<FollowChange>, DataError> {
        let this = self.clone();
        detached(async move { this.set_follow_now(follower, followee, on).await }).await
    }

    async fn create_post_now(
        &self,
        author: i64,
        post: NewPost,
    ) -> Result<Written<Post>, DataError> {
        let clock = PhaseClock::start(self.write_timings.clone(), WritePhase::Prepare);
        let (turn, taken) = self.turn(vec![author], clock).await;
        let post = writes::create_post(&self.db, author, post, turn).await?;
        let Taken {
            locks,
            snapshots,
            mut clock,
        } = self.taken(taken, &[author]).await;
        clock.next(WritePhase::Cache);
        let before = snapshots.into_iter().next().unwrap_or_default();
        let recent = RecentPost {
            id: post.id,
            title: post.title.clone(),
            language: post.language.clone(),
            created_at: post.created_at,
            stars: 0,
        };
        let applied = self
            .apply(author, before, |a| incremental::post_created(a, &recent))
            .await;
        drop(locks);
        clock.next(WritePhase::Refill);
        self.refill(applied.refill).await;
        Ok(Written {
            value: post,
            delivery: applied.delivery,
        })
    }

    async fn set_star_now(
        &self,
        user: i64,
        post: i64,
        on: bool,
    ) -> Result<Written<StarChange>, DataError> {
        // The author is only known after the write; lock and snapshot by
        // looking it up first (a post's author never changes).
        let clock = PhaseClock::start(self.write_timings.clone(), WritePhase::Prepare);
        let author = self.post_author(post).await?;
        let users = if user == author {
            vec![author]
        } else {
            vec![author, user]
        };
        let (turn, taken) = self.turn(users.clone(), clock).await;
        let change = if on {
            writes::star(&self.db, user, post, turn).await?
        } else {
            writes::unstar(&self.db, user, post, turn).await?
        };
        let Taken {
            locks,
            snapshots,
            mut clock,
        } = self.taken(taken, &users).await;
        clock.next(WritePhase::Cache);
        let mut snapshots = snapshots.into_iter();
        let before_author = snapshots.next().unwrap_or_default();
        let before_user = snapshots.next().unwrap_or_default();
        let delta = if on { 1 } else { -1 };
        let applied = if user == author {
            self.apply(author, before_author, |a| {
                incremental::star_received(a, post, change.starred_at, delta)
                    && incremental::star_given(a, delta)
            })
            .await
        } else {
            // The two users' cache steps (and their waits for the other
            // instances) at once.
            let (author_step, user_step) = tokio::join!(
                self.apply(author, before_author, |a| {
                    incremental::star_received(a, post, change.starred_at, delta)
                }),
                self.apply(user, before_user, |a| incremental::star_given(a, delta))
            );
            author_step.and(user_step)
        };
        drop(locks);
        clock.next(WritePhase::Refill);
        self.refill(applied.refill).await;
        Ok(Written {
            value: change,
            delivery: applied.delivery,
        })
    }

    async fn post_author(&self, post: i64) -> Result<i64, DataError> {
        let author = self.db.store().post_author(post).await?;
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
    ) -> Result<Written<FollowChange>, DataError> {
        if follower == followee {
            return Err(DataError::Invalid("a user cannot follow themselves".into()));
        }
        let clock = PhaseClock::start(self.write_timings.clone(), WritePhase::Prepare);
        let (turn, taken) = self.turn(vec![follower, followee], clock).await;
        let change = if on {
            writes::follow(&self.db, follower, followee, turn).await?
        } else {
            writes::unfollow(&self.db, follower, followee, turn).await?
        };
        let Taken {
            locks,
            snapshots,
            mut clock,
        } = self.taken(taken, &[follower, followee]).await;
        clock.next(WritePhase::Cache);
        let mut snapshots = snapshots.into_iter();
        let before_follower = snapshots.next().unwrap_or_default();
        let before_followee = snapshots.next().unwrap_or_default();
        let delta = if on { 1 } else { -1 };
        let (follower_step, followee_step) = tokio::join!(
            self.apply(follower, before_follower, |a| {
                incremental::followed(a, &change.followee, change.mutual, delta)
            }),
            self.apply(followee, before_followee, |a| {
                incremental::gained_follower(a, &change.follower, change.mutual, delta)
            })
        );
        let applied = follower_step.and(followee_step);
        drop(locks);
        clock.next(WritePhase::Refill);
        self.refill(applied.refill).await;
        Ok(Written {
            value: change,
            delivery: applied.delivery,
        })
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
