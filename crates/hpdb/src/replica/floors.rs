//! [`Floors`]: per key and tag, the WAL position a read of it must see.
//!
//! Bounded by hand rather than with a cache crate: an evicted floor must
//! never be forgotten (that would let a read through to a replica older
//! than a write), and an eviction callback runs after the entry is gone.
//! Here, when the map is full, every floor is folded into the one floor of
//! every name (`base`) under the same lock: coarser, never lower.

use std::{collections::HashMap, sync::Arc};

use parking_lot::Mutex;

use crate::shared::names::Kind;

/// Names whose floors are kept apart; past this, they are folded into one.
pub const FLOOR_NAMES: usize = 100_000;

/// The floors of recently written keys and tags.
pub(crate) struct Floors {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Keys' floors and tags' floors (two maps, so a lookup by `&str`
    /// allocates nothing).
    keys: HashMap<Arc<str>, u64>,
    tags: HashMap<Arc<str>, u64>,
    /// The floor of every name (raised by clears and by folding).
    base: u64,
}

impl Floors {
    pub(crate) fn new() -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
        }
    }

    /// `kind`/`name` must now be read at `lsn` or later (a clear: every name).
    pub(crate) fn raise(&self, kind: Kind, name: &str, lsn: u64) {
        let mut inner = self.inner.lock();
        if kind == Kind::Clear {
            inner.base = inner.base.max(lsn);
            return;
        }
        if lsn <= inner.base {
            return;
        }
        if inner.keys.len() + inner.tags.len() >= FLOOR_NAMES {
            let highest = inner
                .keys
                .values()
                .chain(inner.tags.values())
                .copied()
                .max();
            inner.base = inner.base.max(highest.unwrap_or(0)).max(lsn);
            inner.keys.clear();
            inner.tags.clear();
            return;
        }
        let map = match kind {
            Kind::Key => &mut inner.keys,
            _ => &mut inner.tags,
        };
        let floor = map.entry(Arc::from(name)).or_insert(0);
        *floor = (*floor).max(lsn);
    }

    /// Every name at least `lsn` (a position whose writes are unknown).
    pub(crate) fn raise_all(&self, lsn: u64) {
        self.raise(Kind::Clear, "", lsn);
    }

    /// The highest floor of `key` and `tags`.
    pub(crate) fn of(&self, key: &str, tags: &[Arc<str>]) -> u64 {
        let inner = self.inner.lock();
        let key_floor = inner.keys.get(key).copied().unwrap_or(0);
        tags.iter()
            .filter_map(|t| inner.tags.get(&**t).copied())
            .fold(inner.base.max(key_floor), u64::max)
    }

    /// Names kept apart now.
    pub(crate) fn len(&self) -> usize {
        let inner = self.inner.lock();
        inner.keys.len() + inner.tags.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_sees_the_highest_floor_of_its_key_and_tags() {
        let f = Floors::new();
        f.raise(Kind::Tag, "user:1", 100);
        f.raise(Kind::Tag, "user:1", 50);
        f.raise(Kind::Key, "agg:2", 70);
        let tags: Vec<Arc<str>> = vec!["user:1".into(), "user:3".into()];
        assert_eq!(f.of("agg:1", &tags), 100, "never lowered");
        assert_eq!(f.of("agg:2", &[]), 70);
        assert_eq!(f.of("agg:9", &["user:9".into()]), 0);
        f.raise(Kind::Clear, "", 80);
        assert_eq!(f.of("agg:9", &[]), 80);
        assert_eq!(f.of("agg:1", &tags), 100);
    }

    #[test]
    fn a_full_map_folds_its_floors_into_every_name_never_lower() {
        let f = Floors::new();
        for i in 0..FLOOR_NAMES as u64 {
            f.raise(Kind::Tag, &format!("t{i}"), i + 1);
        }
        assert_eq!(f.len(), FLOOR_NAMES);
        f.raise(Kind::Tag, "one more", 5);
        assert_eq!(f.len(), 0);
        assert_eq!(f.of("anything", &[]), FLOOR_NAMES as u64, "the highest");
        f.raise(Kind::Tag, "later", FLOOR_NAMES as u64 + 10);
        assert_eq!(f.of("k", &["later".into()]), FLOOR_NAMES as u64 + 10);
    }
}
