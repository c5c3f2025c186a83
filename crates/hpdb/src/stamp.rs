//! [`Stamp`]: the versions a shared entry was read under. A leaf type:
//! the in-process cache's entries carry one, the shared level writes and
//! checks them.

use std::sync::Arc;

/// What an entry was checked against when it was fetched: the epoch and the
/// generations of its key and tags at that moment. A reader serves it only
/// if all still hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamp {
    pub(crate) epoch: u64,
    pub(crate) key_gen: u64,
    pub(crate) tag_gens: Vec<(Arc<str>, u64)>,
}

impl Stamp {
    /// The generation of `tag` in this stamp.
    #[cfg(feature = "redis")]
    pub(crate) fn tag_gen(&self, tag: &str) -> Option<u64> {
        self.tag_gens
            .iter()
            .find(|(t, _)| t.as_ref() == tag)
            .map(|(_, g)| *g)
    }

    /// The same stamp with `tag` at generation `gen`.
    #[cfg(feature = "redis")]
    pub(crate) fn with_tag_gen(&self, tag: &str, gen: u64) -> Stamp {
        let mut s = self.clone();
        for (t, g) in &mut s.tag_gens {
            if t.as_ref() == tag {
                *g = gen;
            }
        }
        s
    }
}
