//! The database code, written once for both backends.
//!
//! [`Store`] is everything the data layer asks of the database: the
//! optimised reads (through hpdb), the writes (through hpdb), and the
//! baseline's per-component queries (on the plain pool). It is implemented
//! once, generically, by [`SqlStore`] for any sqlx database that speaks our
//! SQL ([`Dialect`]: only the aggregate statement and the user-card lookup
//! differ between SQLite and PostgreSQL). [`crate::Db::connect`] chooses the
//! backend from the URL at start-up and keeps it as `Arc<dyn Store>`; no
//! other code in the workspace matches on the database type.
//!
//! sqlx says what a generic database must support as `where` clauses,
//! which Rust does not carry from a trait to its users, so each of the three
//! impl blocks (`reads`, `writes`, `baseline`) states the same list: an
//! executor for `&mut` connections and pools, arguments, and the column
//! types we bind and read (`i64`, `String`, `bool`).

mod baseline;
mod reads;
mod writes;

use hpdb::{BatchLoader, Manager};
use sqlx::{Database, Pool, Postgres, Sqlite};

pub(crate) use baseline::BaselineStore;
pub(crate) use reads::ReadStore;
pub(crate) use writes::{WriteSql, WriteStore};

use crate::users::UserCard;

/// Everything the data layer asks of the database.
pub(crate) trait Store: ReadStore + WriteStore + BaselineStore {}

impl<S: ReadStore + WriteStore + BaselineStore> Store for S {}

/// What differs between the dialects.
pub(crate) trait Dialect: Database + sqlx::database::HasStatementCache {
    /// The whole profile as one JSON text (see `aggregate`).
    const AGGREGATE: &'static str;
    /// User cards whose ids are in `$1`, a JSON array of integers.
    const CARDS_BY_IDS: &'static str;
}

impl Dialect for Postgres {
    const AGGREGATE: &'static str = crate::aggregate::POSTGRES;
    const CARDS_BY_IDS: &'static str =
        "SELECT id, username, display_name, bio, created_at FROM users \
         WHERE id IN (SELECT value::bigint FROM json_array_elements_text($1::json))";
}

impl Dialect for Sqlite {
    const AGGREGATE: &'static str = crate::aggregate::SQLITE;
    const CARDS_BY_IDS: &'static str =
        "SELECT id, username, display_name, bio, created_at FROM users \
         WHERE id IN (SELECT value FROM json_each($1))";
}

/// The store of one backend: the manager (the optimised path), the plain
/// pool (the baseline), and the keyed loader of user cards.
pub(crate) struct SqlStore<DB: Database> {
    manager: Manager<DB>,
    baseline: Pool<DB>,
    /// The baseline pool reaches the database through a transaction-mode
    /// pooler (see `baseline`).
    baseline_behind_pooler: bool,
    cards: BatchLoader<DB, i64, UserCard>,
    /// The writes' statements (marked as ours on PostgreSQL).
    write_sql: WriteSql,
}
