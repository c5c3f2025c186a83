//! The names of everything hpdb keeps in Redis, in one place.
//!
//! A cached entry, its key's generation counter and its fill lease share one
//! Redis Cluster hash slot (the `{key}` hash tag), so that they can be read
//! and written together; a tag's generation counter hashes by the tag. The
//! bus has [`SHARDS`] streams, each with a (sharded) pub/sub channel of the
//! same name, hence the same slot. Each instance listens for the
//! confirmations of its own invalidations on a channel of its own.

/// Number of bus shards: streams and channels, spread over a cluster's masters.
#[cfg(feature = "redis")]
pub(crate) const SHARDS: usize = 8;

/// What an invalidation names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Kind {
    /// One cache key.
    Key,
    /// Every entry with a tag.
    Tag,
    /// Everything (a new epoch).
    Clear,
}

#[cfg(feature = "redis")]
impl Kind {
    pub(crate) fn code(self) -> char {
        match self {
            Kind::Key => 'k',
            Kind::Tag => 't',
            Kind::Clear => 'c',
        }
    }

    pub(crate) fn from_code(c: char) -> Option<Self> {
        match c {
            'k' => Some(Kind::Key),
            't' => Some(Kind::Tag),
            'c' => Some(Kind::Clear),
            _ => None,
        }
    }
}

/// Redis names under one namespace.
#[cfg(feature = "redis")]
#[derive(Debug, Clone)]
pub(crate) struct Names {
    ns: String,
}

#[cfg(feature = "redis")]
impl Names {
    pub(crate) fn new(namespace: &str) -> Self {
        Self {
            ns: namespace.to_string(),
        }
    }

    /// A cached entry (value and stamps).
    pub(crate) fn entry(&self, key: &str) -> String {
        format!("{}:e:{{{key}}}", self.ns)
    }

    /// The generation counter of a key or a tag.
    pub(crate) fn generation(&self, kind: Kind, name: &str) -> String {
        match kind {
            Kind::Key => format!("{}:gk:{{{name}}}", self.ns),
            _ => format!("{}:gt:{{{name}}}", self.ns),
        }
    }

    /// The replica floor of a key or a tag (`crate::replica`): the highest
    /// WAL position written with its invalidations, as 16 hex digits (so
    /// that Lua compares them as strings). Same slot as its generation.
    pub(crate) fn floor(&self, kind: Kind, name: &str) -> String {
        match kind {
            Kind::Key => format!("{}:fk:{{{name}}}", self.ns),
            _ => format!("{}:ft:{{{name}}}", self.ns),
        }
    }

    /// The lease of the instance filling a key.
    pub(crate) fn lease(&self, key: &str) -> String {
        format!("{}:l:{{{key}}}", self.ns)
    }

    /// The epoch: replaced by a clear, missing after Redis lost its data.
    pub(crate) fn epoch(&self) -> String {
        format!("{}:epoch", self.ns)
    }

    /// The shared hot set: keys by the time they were last filled.
    pub(crate) fn hot(&self) -> String {
        format!("{}:hot", self.ns)
    }

    /// The write lock of a tag (see `lock`).
    pub(crate) fn lock(&self, tag: &str) -> String {
        format!("{}:w:{{{tag}}}", self.ns)
    }

    /// The live instances, by the Redis time of their last heartbeat.
    pub(crate) fn instances(&self) -> String {
        format!("{}:instances", self.ns)
    }

    /// The channel on which other instances confirm to `instance` that
    /// they applied its invalidations.
    pub(crate) fn acks(&self, instance: u64) -> String {
        format!("{}:ack:{{{instance}}}", self.ns)
    }

    /// The stream (and channel) of a bus shard.
    pub(crate) fn stream(&self, shard: usize) -> String {
        format!("{}:bus:{{{shard}}}", self.ns)
    }

    /// The shard of a name's invalidations (FNV-1a, stable across builds
    /// and instances, unlike std's hasher).
    pub(crate) fn shard_of(name: &str) -> usize {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in name.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        (h % SHARDS as u64) as usize
    }
}

#[cfg(feature = "redis")]
#[cfg(test)]
mod tests {
    use super::*;

    /// The slot-sharing names must have the same hash tag, whatever the key holds.
    fn hash_tag(name: &str) -> &str {
        let open = name.find('{').unwrap();
        let close = open + name[open..].find('}').unwrap();
        &name[open + 1..close]
    }

    #[test]
    fn an_entry_its_generation_and_its_lease_share_a_slot() {
        let n = Names::new("app");
        for key in ["agg:1:7", "a{b}c", "x}y", "{}"] {
            let tag = hash_tag(&n.entry(key)).to_string();
            assert_eq!(hash_tag(&n.generation(Kind::Key, key)), tag);
            assert_eq!(hash_tag(&n.lease(key)), tag);
        }
    }

    #[test]
    fn shards_are_stable_and_in_range() {
        assert_eq!(Names::shard_of("user:1"), Names::shard_of("user:1"));
        let used: std::collections::HashSet<usize> = (0..100)
            .map(|i| Names::shard_of(&format!("user:{i}")))
            .collect();
        assert!(used.iter().all(|s| *s < SHARDS));
        assert_eq!(used.len(), SHARDS, "100 tags spread over every shard");
    }
}
