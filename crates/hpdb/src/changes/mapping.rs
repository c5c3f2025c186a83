//! [`Mapping`]: how the application turns a changed row into cache tags.
//!
//! hpdb knows nothing of the application's tables; the application says,
//! per table, which tags a row names: directly from the row's columns
//! (`follows(follower_id, followee_id)` → `user:{follower_id}`,
//! `user:{followee_id}`), or through a lookup when the row does not carry
//! what the tag needs (a `stars` row names a post; the aggregate is tagged
//! by the post's author). Lookups are bounded: at most
//! [`LOOKUP_CONCURRENCY`] at once, each within [`LOOKUP_TIMEOUT`], their
//! answers cached (up to [`LOOKUP_CAPACITY`] keys per rule, for
//! [`LOOKUP_TTL`]). A lookup
//! must therefore map a key to tags that do not change (a post's author),
//! or the stale answer would name the wrong tags.
//!
//! A row whose tags cannot be found (a lookup failed or timed out) is
//! reported as an error: the consumer then drops every cached entry, which
//! is coarse but never wrong.

use std::{collections::HashMap, sync::Arc, time::Duration};

use futures::future::BoxFuture;
use tokio::sync::Semaphore;

/// Lookups running at once, across every rule.
pub const LOOKUP_CONCURRENCY: usize = 4;
/// The longest one lookup may take.
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(2);
/// Keys whose answers each lookup rule remembers.
pub const LOOKUP_CAPACITY: u64 = 10_000;
/// How long a lookup's answer is remembered.
pub const LOOKUP_TTL: Duration = Duration::from_secs(600);

/// A changed row: its table and each column's value as PostgreSQL prints
/// it (`None`: NULL, or an unchanged TOASTed value, which is not sent).
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// The table's name (without its schema).
    pub table: Arc<str>,
    columns: Vec<(Arc<str>, Option<String>)>,
}

impl Row {
    /// A row of `table` with these columns.
    pub fn new(table: Arc<str>, columns: Vec<(Arc<str>, Option<String>)>) -> Self {
        Self { table, columns }
    }

    /// The text of column `name`, if sent and not NULL.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.columns
            .iter()
            .find(|(c, _)| &**c == name)
            .and_then(|(_, v)| v.as_deref())
    }

    /// Column `name` as an integer.
    pub fn i64(&self, name: &str) -> Option<i64> {
        self.get(name)?.parse().ok()
    }
}

/// Why a row's tags could not be found.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum MappingError {
    /// The application's lookup failed.
    #[error("the lookup of table {table}'s tags failed: {message}")]
    Lookup {
        /// The row's table.
        table: String,
        /// What the lookup said.
        message: String,
    },
    /// The lookup took longer than [`LOOKUP_TIMEOUT`].
    #[error("the lookup of table {table}'s tags took over {LOOKUP_TIMEOUT:?}")]
    Timeout {
        /// The row's table.
        table: String,
    },
}

type Direct = Arc<dyn Fn(&Row) -> Vec<String> + Send + Sync>;
type Key = Arc<dyn Fn(&Row) -> Option<String> + Send + Sync>;
/// A lookup: a key taken from a row → the tags, or why not.
pub type LookupFn =
    Arc<dyn Fn(String) -> BoxFuture<'static, Result<Vec<String>, String>> + Send + Sync>;

enum Rule {
    Direct(Direct),
    Lookup {
        key: Key,
        fetch: LookupFn,
        answers: moka::sync::Cache<String, Arc<Vec<String>>>,
    },
}

/// Per table, the rules that name a changed row's tags. Cheap to clone.
#[derive(Clone, Default)]
pub struct Mapping {
    tables: HashMap<Arc<str>, Vec<Arc<Rule>>>,
    lookups: Arc<LookupGate>,
}

struct LookupGate(Semaphore);

impl Default for LookupGate {
    fn default() -> Self {
        Self(Semaphore::new(LOOKUP_CONCURRENCY))
    }
}

impl std::fmt::Debug for Mapping {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mapping")
            .field("tables", &self.tables())
            .finish_non_exhaustive()
    }
}

impl Mapping {
    /// A mapping of no table.
    pub fn new() -> Self {
        Self::default()
    }

    /// A row of `table` names the tags `tags` returns (from its columns).
    #[must_use]
    pub fn table(
        mut self,
        table: &str,
        tags: impl Fn(&Row) -> Vec<String> + Send + Sync + 'static,
    ) -> Self {
        self.add(table, Rule::Direct(Arc::new(tags)));
        self
    }

    /// A row of `table` names the tags `fetch` finds for the key `key`
    /// takes from it (none if `key` gives none); bounded and cached (see
    /// the module's doc).
    #[must_use]
    pub fn lookup(
        mut self,
        table: &str,
        key: impl Fn(&Row) -> Option<String> + Send + Sync + 'static,
        fetch: LookupFn,
    ) -> Self {
        let answers = moka::sync::Cache::builder()
            .max_capacity(LOOKUP_CAPACITY)
            .time_to_live(LOOKUP_TTL)
            .build();
        let rule = Rule::Lookup {
            key: Arc::new(key),
            fetch,
            answers,
        };
        self.add(table, rule);
        self
    }

    fn add(&mut self, table: &str, rule: Rule) {
        self.tables
            .entry(Arc::from(table))
            .or_default()
            .push(Arc::new(rule));
    }

    /// The tables mapped, sorted (the publication's tables).
    pub fn tables(&self) -> Vec<String> {
        let mut t: Vec<String> = self.tables.keys().map(|t| t.to_string()).collect();
        t.sort();
        t
    }

    /// The tags `row` names (none if its table is not mapped).
    pub async fn tags(&self, row: &Row) -> Result<Vec<String>, MappingError> {
        let mut tags = Vec::new();
        for rule in self.tables.get(&row.table).into_iter().flatten() {
            match &**rule {
                Rule::Direct(f) => tags.extend(f(row)),
                Rule::Lookup {
                    key,
                    fetch,
                    answers,
                } => {
                    let Some(k) = key(row) else { continue };
                    let found = match answers.get(&k) {
                        Some(found) => found,
                        None => {
                            let found = self.fetch(&row.table, fetch, k.clone()).await?;
                            answers.insert(k, found.clone());
                            found
                        }
                    };
                    tags.extend(found.iter().cloned());
                }
            }
        }
        Ok(tags)
    }

    async fn fetch(
        &self,
        table: &str,
        fetch: &LookupFn,
        key: String,
    ) -> Result<Arc<Vec<String>>, MappingError> {
        let _permit = self.lookups.0.acquire().await;
        match tokio::time::timeout(LOOKUP_TIMEOUT, fetch(key)).await {
            Ok(Ok(tags)) => Ok(Arc::new(tags)),
            Ok(Err(message)) => Err(MappingError::Lookup {
                table: table.into(),
                message,
            }),
            Err(_) => Err(MappingError::Timeout {
                table: table.into(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    fn row(table: &str, cols: &[(&str, &str)]) -> Row {
        Row::new(
            table.into(),
            cols.iter()
                .map(|(c, v)| (Arc::from(*c), Some(v.to_string())))
                .collect(),
        )
    }

    #[tokio::test]
    async fn direct_rules_read_columns_and_lookups_are_cached_per_key() {
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = calls.clone();
        let m = Mapping::new()
            .table("follows", |r| {
                ["follower_id", "followee_id"]
                    .iter()
                    .filter_map(|c| r.i64(c).map(|id| format!("user:{id}")))
                    .collect()
            })
            .lookup(
                "stars",
                |r| r.get("post_id").map(str::to_string),
                Arc::new(move |post: String| {
                    counted.fetch_add(1, Ordering::SeqCst);
                    Box::pin(async move { Ok(vec![format!("author-of:{post}")]) })
                }),
            );
        assert_eq!(m.tables(), ["follows", "stars"]);
        let f = row("follows", &[("follower_id", "1"), ("followee_id", "2")]);
        assert_eq!(m.tags(&f).await.unwrap(), ["user:1", "user:2"]);
        let s = row("stars", &[("user_id", "3"), ("post_id", "8")]);
        assert_eq!(m.tags(&s).await.unwrap(), ["author-of:8"]);
        assert_eq!(m.tags(&s).await.unwrap(), ["author-of:8"]);
        assert_eq!(calls.load(Ordering::SeqCst), 1, "the second was cached");
        assert!(m.tags(&row("other", &[])).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_failed_lookup_is_an_error_not_an_empty_set_of_tags() {
        let m = Mapping::new().lookup(
            "stars",
            |r| r.get("post_id").map(str::to_string),
            Arc::new(|_| Box::pin(async { Err("database down".to_string()) })),
        );
        let err = m
            .tags(&row("stars", &[("post_id", "1")]))
            .await
            .unwrap_err();
        assert!(matches!(err, MappingError::Lookup { .. }), "{err}");
    }
}
