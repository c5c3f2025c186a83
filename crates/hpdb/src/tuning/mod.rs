//! Self-tuning: the loops that change knobs from what is measured, instead
//! of leaving them where the configuration put them.
//!
//! | loop | module | what it may change |
//! | --- | --- | --- |
//! | concurrency | `concurrency` | the admission gate's limit, within `[DB_POOL_MIN, DB_POOL_MAX]` |
//! | TTLs | `ttl` | the TTL of entries stored without an explicit one, per key class |
//! | co-visitation | `covisit` | nothing by itself: it predicts which keys a caller preloads |

//!
//! `state` holds what the manager calls on its paths (`Tuning`),
//! whose parts do nothing while their loop is off; `status` what it reports.

pub mod concurrency;
pub mod covisit;
pub mod log;
pub(crate) mod state;
mod status;
pub mod ttl;

pub use status::{PoolTuningStatus, TuningStatus};
