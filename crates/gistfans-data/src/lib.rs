//! # gistfans-data — the GistFans data layer
//!
//! Schema and migrations for SQLite and PostgreSQL, a deterministic demo-data
//! generator, and the seed's `DataAggregationService`: one call returns all a
//! profile page needs, in one SQL statement when uncached, through hpdb.
//!
//! The baseline (the seed's "before", one query per figure on a plain pool)
//! lives in [`baseline`]; the optimised path in [`DataAggregationService`].

#![forbid(unsafe_code)]

pub mod aggregate;
pub mod baseline;
pub mod changes;
mod connection_plan;
mod db;
mod error;
pub mod incremental;
pub mod model;
mod rendered;
pub mod seed;
mod service;
mod store;
mod users;
pub mod witness;
pub mod writes;

pub use db::{migrate, session_url, sqlite_options, Backend, Db};
pub use error::DataError;
pub use model::{Include, Post, UserAggregate};
pub use rendered::RenderedAggregate;
pub use service::{
    AggregateOptions, DataAggregationService, PhaseTiming, Preload, PreloadStats, Served,
    WritePhase,
};
pub use users::{UserCard, UserDirectory, MAX_IDS};
pub use writes::{NewPost, Written};
