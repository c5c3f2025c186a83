//! What a caller hands the manager to run, and what it gets back.

use std::sync::Arc;

use futures::future::BoxFuture;
use sqlx::Database;

use crate::options::Source;

/// A query closure: gets a connection, runs the caller's sqlx code on it.
///
/// Written as a boxed future because the future borrows the connection and
/// must be `Send`; the call site looks like
/// `|conn| Box::pin(async move { sqlx::query_as(..).fetch_all(conn).await })`.
pub trait QueryFn<DB: Database, T>:
    for<'c> FnOnce(&'c mut DB::Connection) -> BoxFuture<'c, Result<T, sqlx::Error>> + Send
{
}

impl<DB: Database, T, F> QueryFn<DB, T> for F where
    F: for<'c> FnOnce(&'c mut DB::Connection) -> BoxFuture<'c, Result<T, sqlx::Error>> + Send
{
}

/// A result and where it came from.
#[derive(Debug)]
pub struct QueryResult<T> {
    /// The result, shared with other callers of the same key.
    pub value: Arc<T>,
    /// Database, cache, a joined execution, or a stale cache entry.
    pub source: Source,
}
