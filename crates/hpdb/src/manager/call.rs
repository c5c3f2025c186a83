//! One call of `execute_query` as its steps pass it on ([`Call`]), and
//! what a background refresh adds to it ([`Background`]).

use std::{
    sync::{atomic::AtomicBool, Arc},
    time::Duration,
};

use tokio::time::Instant;

use crate::options::QueryOptions;

/// One call of `execute_query`, as the steps after the breaker need it.
pub(crate) struct Call {
    pub(crate) key: Arc<str>,
    pub(crate) options: QueryOptions,
    pub(crate) tags: Arc<[Arc<str>]>,
    pub(crate) started: Instant,
    pub(crate) deadline: Instant,
    /// Set for a background refresh: what it needs on the way.
    pub(crate) background: Option<Background>,
}

/// What a background refresh carries through the steps of a call.
pub(crate) struct Background {
    /// Marks the entry it stores (see `CacheEntry::refreshed`).
    pub(crate) mark: Arc<AtomicBool>,
    /// A shared entry with no more than this left is due for a refresh
    /// too: the refresh goes to the database instead of copying it.
    pub(crate) min_ttl_left: Duration,
}
