//! The bytes of a shared (L2) entry: a small versioned envelope around the
//! value's own encoding.
//!
//! Written by hand: it is forty lines, a fixed layout that must stay
//! readable by every instance of a rolling deploy, and it wraps the value's
//! bytes without copying them through a serialiser.
//!
//! ```text
//! u8  version (1)
//! u64 epoch, u64 key generation, u64 stored at (Unix ms), u32 TTL (ms)
//! u16 tag count, then per tag: u16 length, the tag, u64 generation
//! the value's bytes (the rest)
//! ```
//! Integers are big-endian. An entry of another version is a miss.

use std::sync::Arc;

use crate::stamp::Stamp;

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// The version this build writes and reads.
const VERSION: u8 = 1;

/// A decoded entry.
#[derive(Debug, Clone)]
pub(crate) struct Envelope {
    pub(crate) stamp: Stamp,
    pub(crate) stored_at_ms: u64,
    pub(crate) ttl_ms: u32,
    pub(crate) value: Bytes,
}

pub(crate) fn encode(stamp: &Stamp, stored_at_ms: u64, ttl_ms: u32, value: &[u8]) -> Vec<u8> {
    let tags: usize = stamp.tag_gens.iter().map(|(t, _)| 10 + t.len()).sum();
    let mut b = BytesMut::with_capacity(31 + tags + value.len());
    b.put_u8(VERSION);
    b.put_u64(stamp.epoch);
    b.put_u64(stamp.key_gen);
    b.put_u64(stored_at_ms);
    b.put_u32(ttl_ms);
    b.put_u16(stamp.tag_gens.len().min(u16::MAX as usize) as u16);
    for (t, g) in stamp.tag_gens.iter().take(u16::MAX as usize) {
        let t = &t.as_bytes()[..t.len().min(u16::MAX as usize)];
        b.put_u16(t.len() as u16);
        b.put_slice(t);
        b.put_u64(*g);
    }
    b.put_slice(value);
    b.to_vec()
}

/// The entry in `bytes`, or why it cannot be read.
pub(crate) fn decode(bytes: Bytes) -> Result<Envelope, &'static str> {
    let mut b = bytes;
    let need = |b: &Bytes, n: usize| {
        if b.remaining() < n {
            Err("truncated")
        } else {
            Ok(())
        }
    };
    need(&b, 31)?;
    if b.get_u8() != VERSION {
        return Err("unknown version");
    }
    let epoch = b.get_u64();
    let key_gen = b.get_u64();
    let stored_at_ms = b.get_u64();
    let ttl_ms = b.get_u32();
    let n = b.get_u16() as usize;
    let mut tag_gens = Vec::with_capacity(n.min(64));
    for _ in 0..n {
        need(&b, 2)?;
        let len = b.get_u16() as usize;
        need(&b, len + 8)?;
        let tag = std::str::from_utf8(&b[..len]).map_err(|_| "tag is not UTF-8")?;
        let tag: Arc<str> = Arc::from(tag);
        b.advance(len);
        tag_gens.push((tag, b.get_u64()));
    }
    Ok(Envelope {
        stamp: Stamp {
            epoch,
            key_gen,
            tag_gens,
        },
        stored_at_ms,
        ttl_ms,
        value: b,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_reads_back_as_written() {
        let stamp = Stamp {
            epoch: 7,
            key_gen: 3,
            tag_gens: vec![(Arc::from("user:1"), 9), (Arc::from("all"), 0)],
        };
        let bytes = encode(&stamp, 1_700_000_000_000, 300_000, b"{\"a\":1}");
        let e = decode(Bytes::from(bytes)).unwrap();
        assert_eq!(e.stamp, stamp);
        assert_eq!((e.stored_at_ms, e.ttl_ms), (1_700_000_000_000, 300_000));
        assert_eq!(&e.value[..], b"{\"a\":1}");
    }

    #[test]
    fn damaged_or_foreign_entries_are_refused() {
        let stamp = Stamp {
            epoch: 1,
            key_gen: 0,
            tag_gens: vec![(Arc::from("t"), 1)],
        };
        let bytes = encode(&stamp, 0, 1, b"x");
        for cut in [0, 5, 31, 34] {
            assert!(
                decode(Bytes::copy_from_slice(&bytes[..cut])).is_err(),
                "{cut}"
            );
        }
        let mut other = bytes.clone();
        other[0] = 2;
        assert_eq!(decode(Bytes::from(other)).unwrap_err(), "unknown version");
    }
}
