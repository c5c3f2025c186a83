//! Reads from PostgreSQL streaming replicas, with read-your-writes by tag
//! (issue 23).
//!
//! A replica replays the primary's WAL some time after each commit; a read
//! sent there may see the database as it was before a write its caller was
//! just told had succeeded. The anchors guess (Rails waits a flat 2 s after
//! a session's last write, GitLab pins a user to the primary for 30 s) or
//! do not check at all. hpdb knows, per cache tag and key, which writes a
//! query must see: every invalidation is a write's announcement. So:
//!
//! - **The floor.** An invalidation of a key or tag (a write of ours, or one
//!   the change stream saw) records a WAL position at or after the write's
//!   commit as that name's floor ([`Floors`]): the primary's insert
//!   position read after the commit ([`Position`], one round trip on a
//!   connection of its own, shared by the invalidations waiting for it), or
//!   the commit's own end from the change stream. A miss reads the highest
//!   floor of its key and tags; bounded: past [`FLOOR_NAMES`] names they
//!   are folded into one floor for every name (coarser, never lower).
//! - **With a shared level** (several instances) another instance's writes
//!   must bound this one's reads too: the floors are written in Redis with
//!   the names' generations (and sent on the bus), and a miss's shared
//!   lookup reads them with the generations, in the same round trip. A read
//!   whose lookup Redis did not answer goes to the primary; an uncached
//!   read (no lookup) takes the primary's position at its start as its
//!   floor (*strict*: every write acknowledged anywhere before it is below
//!   it), one round trip shared by the reads asking at once.
//! - **Routing** ([`Replicas`]): a read the caller allows on a replica
//!   ([`Manager::execute_read_then`](crate::Manager::execute_read_then))
//!   goes, with its admission slot, to a replica in rotation whose replay
//!   position is at or past its floor, round robin; else it waits at most
//!   `DB_REPLICA_WAIT` (asking the replicas' pollers for a fresh position
//!   at once), else it runs on the primary. Writes, queries marked
//!   `writes` and every other query run on the primary.
//! - **What is known of each replica** ([`ReplicaState`]): its replay
//!   position and lag, read every `DB_REPLICA_POLL` on a connection of its
//!   own; a replica further behind than `DB_REPLICA_MAX_LAG` leaves the
//!   rotation until it is under half of it; failed connects and polls open
//!   its own circuit breaker (the primary's is not touched), and a read
//!   that lost its replica connection mid-query runs again on the primary.
//!
//! Guarantee: a read that starts after a write was acknowledged (its
//! invalidation returned) never runs on a replica that has not replayed
//! that write. Absences: no replica read without a known replay position;
//! no floor lowered; no write, and nothing marked `writes`, on a replica.
//!
//! | file | one job |
//! | --- | --- |
//! | `floors` | the floor of each recently written key and tag, bounded ([`Floors`]) |
//! | `board` | what is known of the replicas and the primary's position ([`Board`], [`ReplicaState`], [`ReplicaStatus`]) |
//! | `route` | a connection on a replica that has replayed a floor, or why not ([`Replicas`]) |
//!
//! The PostgreSQL side (the pools, the pollers, the position) is in
//! `postgres::replica`.

// Only PostgreSQL has replicas: with other backends alone the routing is
// built but never used.
#![cfg_attr(not(feature = "postgres"), allow(dead_code, unused_imports))]

mod board;
mod floors;
mod route;

pub(crate) use board::{Board, Position, ReplicaState};
pub use board::{ReplicaStatus, ReplicasStatus};
pub use floors::FLOOR_NAMES;
pub(crate) use route::Replicas;
