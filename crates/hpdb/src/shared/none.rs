//! No shared level (no `REDIS_URL`): this instance's cache is the only
//! one, so every step is the local one or nothing, and every invalidation
//! is delivered ([`Delivery::Local`]) once this instance has applied it.

use std::{
    sync::{Arc, Weak},
    time::{Duration, Instant},
};

use bytes::Bytes;
use futures::future::BoxFuture;
use tokio::task::JoinHandle;

use super::{
    api::{Ask, Delivery, FillTicket, Found, Invalidation, LocalCache, SharedLevel, Update},
    lock::TagLocks,
    names::Kind,
    status::SharedStatus,
};
use crate::{cache::Decode, stamp::Stamp};

/// The shared level of a lone instance: nothing.
pub(crate) struct NoShared;

impl SharedLevel for NoShared {
    fn find<'a>(&'a self, _: Ask<'a>) -> BoxFuture<'a, Found> {
        Box::pin(std::future::ready(Found::Miss(FillTicket::default())))
    }

    fn fill(&self, _: Arc<str>, _: &FillTicket, _: Duration, _: Option<Bytes>) {}

    fn may_serve(&self, _: Instant) -> bool {
        true
    }

    fn invalidate<'a>(
        &'a self,
        local: &'a dyn LocalCache,
        kind: Kind,
        name: &'a str,
        floor: Option<u64>,
    ) -> BoxFuture<'a, Invalidation> {
        let _ = floor; // the floors are the manager's own, in process
        Box::pin(async move {
            local.drop_named(kind, name).await;
            Invalidation::new(kind, name, None, Delivery::Local)
        })
    }

    /// The caller's own lock orders its writes: every update is stored,
    /// unless the whole cache was cleared after its snapshot (checked
    /// again after the insert): the clear may stand for a write the
    /// snapshot did not see (another process's commit on SQLite), so the
    /// update is refused and the writer fetches the value again.
    fn update_tag<'a>(
        &'a self,
        local: &'a dyn LocalCache,
        tag: &'a str,
        tags: Arc<[Arc<str>]>,
        updates: Vec<Update>,
        floor: Option<u64>,
    ) -> BoxFuture<'a, Invalidation> {
        let _ = floor;
        Box::pin(async move {
            let mut done = Invalidation::new(Kind::Tag, tag, None, Delivery::Local);
            let (stored, refused): (Vec<Update>, Vec<Update>) = updates
                .into_iter()
                .partition(|u| !local.cleared_after(u.since));
            let entries = stored
                .iter()
                .map(|u| (u.key.clone(), u.entry(&tags, None)))
                .collect();
            local.replace_tag(tag, entries).await;
            done.refused.extend(refused.into_iter().map(|u| u.key));
            for u in stored {
                if local.cleared_after(u.since) {
                    local.remove(&u.key).await;
                    done.refused.push(u.key);
                }
            }
            done
        })
    }

    fn read_any<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Option<(Bytes, Stamp, Duration)>> {
        Box::pin(std::future::ready(None))
    }

    fn lock_tags<'a>(&'a self, _: &'a [&'a str]) -> BoxFuture<'a, TagLocks> {
        Box::pin(std::future::ready(TagLocks::none()))
    }

    fn warm<'a>(
        &'a self,
        _: &'a dyn LocalCache,
        _: &'a str,
        _: usize,
        _: Decode,
    ) -> BoxFuture<'a, usize> {
        Box::pin(std::future::ready(0))
    }

    fn start(&self, _: Weak<dyn LocalCache>) -> Vec<JoinHandle<()>> {
        Vec::new()
    }

    fn leave(&self) -> BoxFuture<'_, ()> {
        Box::pin(std::future::ready(()))
    }

    fn status(&self) -> Option<SharedStatus> {
        None
    }

    fn interrupted(&self, kind: Kind, name: &str) -> Invalidation {
        Invalidation::new(kind, name, None, Delivery::Local)
    }
}
