//! Self-tuning: the loops that change knobs from what is measured, instead
//! of leaving them where the configuration put them.
//!
//! | loop | module | what it may change |
//! | --- | --- | --- |
//! | concurrency | `concurrency` | the admission gate's limit, within `[DB_POOL_MIN, DB_POOL_MAX]` |
//! | TTLs | `ttl` | the TTL of entries stored without an explicit one, per key class |
//! | co-visitation | `covisit` | nothing by itself: it predicts which keys a caller preloads |

pub mod concurrency;
pub mod covisit;
pub mod log;
pub mod ttl;
