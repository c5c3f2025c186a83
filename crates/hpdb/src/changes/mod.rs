//! The change-stream invalidator: cached entries dropped when *any* writer
//! changes their rows, not only this server (issue 21).
//!
//! A cached aggregate is right only while every write goes through the
//! code that invalidates it. An operator's `psql`, a cron job, a migration
//! or `ON DELETE CASCADE` write around it, and their changes stayed
//! invisible until the TTL. PostgreSQL's logical replication says what
//! every transaction changed; this module reads it and invalidates the tags
//! the changed rows name, through the ordinary path
//! ([`Control::invalidate_tag`](crate::Control::invalidate_tag): in
//! process, the shared level and the bus), so every instance drops them.
//!
//! - **Protocol**: `pgwire-replication` (a maintained, dependency-light
//!   client of the replication protocol that sends standby status
//!   feedback, also when idle, and resumes from the slot's position);
//!   `pgoutput` (protocol 1, with logical messages) is decoded here
//!   (`pgoutput`). See ARCHITECTURE.md for the crates considered.
//! - **Mapping**: the application says which tags a changed row names
//!   ([`Mapping`]), from its columns or through a bounded, cached lookup.
//! - **Own writes**: a writer that updates the caches itself marks its
//!   transaction ([`own_write_sql`]); the consumer skips marked
//!   transactions.
//! - **One consumer per database**: the holder of a PostgreSQL advisory
//!   lock consumes; the others retry every [`ChangesConfig::retry`].
//! - **Slot hygiene**: feedback on keepalives, lag in
//!   [`Status::changes`](crate::Status::changes), an alert when
//!   `max_slot_wal_keep_size` is unlimited, and a lost slot recreated with
//!   every cached entry dropped.
//! - **Without logical replication** the consumer reports
//!   [`ChangeMode::Unavailable`] (one log line) and the server works as
//!   before: other writers' changes are visible after the TTL.
//! - **SQLite** has no stream: `sqlite` watches `PRAGMA data_version` on
//!   the writer connection instead ([`ChangeMode::DataVersion`]; the same
//!   [`ChangeStatus`] carries its figures) and drops the whole cache on
//!   another process's commit.
//!
//! | file | one job |
//! | --- | --- |
//! | `config` | settings, names, the own-write mark ([`ChangesConfig`], [`own_write_sql`]) |
//! | `error` | why a session ended ([`ChangeError`]) |
//! | `state` | the figures ([`ChangeStatus`]) and their cell (always built) |
//! | `mapping` | rows to tags ([`Mapping`], [`Row`]) (always built) |
//! | `pgoutput` | decoding `pgoutput`'s row messages (feature `changes`) |
//! | `slot` | checks, leader lock, publication, slot, lag (feature `changes`) |
//! | `visible` | waiting until a streamed transaction is visible to new snapshots (feature `changes`) |
//! | `consumer` | the consumer, on a thread of its own ([`ChangeStream`]) (feature `changes`) |

mod config;
#[cfg(feature = "changes")]
mod consumer;
mod error;
pub mod mapping;
#[cfg(feature = "changes")]
mod pgoutput;
#[cfg(feature = "changes")]
mod slot;
pub(crate) mod state;

#[cfg(feature = "changes")]
mod visible;

pub use config::{own_write_sql, ChangesConfig};
#[cfg(feature = "changes")]
pub use consumer::ChangeStream;
pub use error::ChangeError;
pub use mapping::{Mapping, MappingError, Row};
#[cfg(feature = "changes")]
pub use pgoutput::DecodeError;
#[cfg(feature = "changes")]
pub use slot::drop_stream;
pub use state::{ChangeMode, ChangeStatus};
