//! What the application tells the monitor: for a family of keys (a key
//! prefix), how to re-read the truth and compare it with a cached value
//! ([`Verdict`]), and the registry of those verifiers (`Verifiers`).
//!
//! hpdb cannot re-run a cached query by itself: a query's closure is
//! given at read time and consumed by it. The verifier is the
//! application's re-read. It is handed the cached value itself (typed,
//! as the family's queries cache it: no decoding), compares what matters
//! and ignores what may legitimately differ (a time, a window that moved
//! with the clock), so the monitor raises no false alarm.

use std::{any::Any, sync::Arc};

use futures::future::BoxFuture;
use parking_lot::RwLock;

/// A verifier's answer about one cached value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The value says what the database says now.
    Fresh,
    /// It does not; the text says what differs (logged with the key), e.g.
    /// `stats.followers: cached 3, database 4`.
    Stale(String),
}

/// Why a verifier could not say (the re-read failed, the key was not the
/// family's): any error; the monitor counts and logs it, nothing more.
pub type VerifyError = Box<dyn std::error::Error + Send + Sync>;

/// What a verifier returns: the database's verdict on a cached value.
pub type VerifyFuture = BoxFuture<'static, Result<Verdict, VerifyError>>;

/// A verifier with its value's type erased: `None` when the cached value
/// is not of the type it was registered for.
pub(crate) type Verify =
    Arc<dyn Fn(Arc<str>, Arc<dyn Any + Send + Sync>) -> Option<VerifyFuture> + Send + Sync>;

/// The verifiers, by key prefix; the longest matching prefix wins.
#[derive(Default)]
pub(crate) struct Verifiers {
    by_prefix: RwLock<Vec<(Arc<str>, Verify)>>,
}

impl Verifiers {
    /// Registers `verify` for the keys starting with `prefix`, replacing
    /// any verifier of that prefix.
    pub(crate) fn add<T, F>(&self, prefix: &str, verify: F)
    where
        T: Send + Sync + 'static,
        F: Fn(Arc<str>, Arc<T>) -> VerifyFuture + Send + Sync + 'static,
    {
        let erased: Verify = Arc::new(move |key, value| Some(verify(key, value.downcast().ok()?)));
        let mut all = self.by_prefix.write();
        all.retain(|(p, _)| &**p != prefix);
        all.push((prefix.into(), erased));
        // Longest first: the first match is the most specific.
        all.sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
    }

    /// The verifier of `key`'s family, if any.
    pub(crate) fn find(&self, key: &str) -> Option<Verify> {
        self.by_prefix
            .read()
            .iter()
            .find(|(p, _)| key.starts_with(&**p))
            .map(|(_, v)| v.clone())
    }

    /// True if `key`'s family has a verifier.
    pub(crate) fn covers(&self, key: &str) -> bool {
        self.by_prefix
            .read()
            .iter()
            .any(|(p, _)| key.starts_with(&**p))
    }

    /// The registered prefixes.
    pub(crate) fn families(&self) -> Vec<String> {
        self.by_prefix
            .read()
            .iter()
            .map(|(p, _)| p.to_string())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answering(text: &'static str) -> impl Fn(Arc<str>, Arc<i64>) -> VerifyFuture {
        move |_, _| Box::pin(async move { Ok(Verdict::Stale(text.into())) })
    }

    #[tokio::test]
    async fn the_longest_prefix_wins_and_a_value_of_another_type_is_refused() {
        let v = Verifiers::default();
        v.add("agg:", answering("short"));
        v.add("agg:1:", answering("long"));
        v.add("agg:", answering("replaced"));
        assert_eq!(v.families().len(), 2);
        assert!(v.covers("agg:2:7") && !v.covers("cards:2"));
        let run = |key: &str, value: Arc<dyn Any + Send + Sync>| {
            let verify = v.find(key).unwrap();
            verify(key.into(), value)
        };
        let long = run("agg:1:7", Arc::new(5i64)).unwrap().await.unwrap();
        assert_eq!(long, Verdict::Stale("long".into()));
        let short = run("agg:2:7", Arc::new(5i64)).unwrap().await.unwrap();
        assert_eq!(short, Verdict::Stale("replaced".into()));
        assert!(run("agg:2:7", Arc::new("text")).is_none());
    }
}
