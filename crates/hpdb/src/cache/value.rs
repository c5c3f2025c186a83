//! [`CacheValue`]: what a value weighs and how it travels as bytes.

use std::io;

use bytes::Bytes;
use serde::{de::DeserializeOwned, Serialize};

/// A value the cache can hold: it knows how many bytes it takes, and how
/// to travel through the shared level (Redis) as bytes.
///
/// Every `Serialize + Deserialize` type is one: weighed by its JSON size
/// (measured without building the JSON), shared as JSON. A type that
/// already holds its own encoding (a pre-rendered response body, say)
/// implements this trait itself, is not `Serialize`, and so is never
/// serialised a second time just to be weighed or shared.
pub trait CacheValue: Send + Sync + 'static {
    /// The bytes this value stands for in the cache's byte bound, or why
    /// it cannot say (it is then not cached).
    fn cache_size(&self) -> Result<usize, String>;

    /// The value as bytes for the shared level; `None` keeps it in process.
    fn encode(&self) -> Option<Bytes> {
        None
    }

    /// The value back from the bytes [`encode`](Self::encode) gave.
    fn decode(bytes: Bytes) -> Result<Self, String>
    where
        Self: Sized,
    {
        let _ = bytes;
        Err("this type is not shared".into())
    }
}

impl<T: Serialize + DeserializeOwned + Send + Sync + 'static> CacheValue for T {
    fn cache_size(&self) -> Result<usize, String> {
        json_size(self).map_err(|e| e.to_string())
    }

    fn encode(&self) -> Option<Bytes> {
        serde_json::to_vec(self).ok().map(Bytes::from)
    }

    fn decode(bytes: Bytes) -> Result<Self, String> {
        serde_json::from_slice(&bytes).map_err(|e| e.to_string())
    }
}

/// The weight of a value about to be cached under `key`, saturated to
/// `u32`; `None` (and a warning) if it cannot say, in which case it is not
/// cached.
pub(crate) fn weigh<T: CacheValue + ?Sized>(key: &str, value: &T) -> Option<u32> {
    match value.cache_size() {
        Ok(n) => Some(u32::try_from(n).unwrap_or(u32::MAX)),
        Err(e) => {
            tracing::warn!(key, error = %e, "not cached: the value cannot be weighed");
            None
        }
    }
}

/// The JSON size of a value, measured without building the JSON.
pub(crate) fn json_size<T: Serialize>(value: &T) -> Result<usize, serde_json::Error> {
    struct Count(usize);
    impl io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let mut c = Count(0);
    serde_json::to_writer(&mut c, value)?;
    Ok(c.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_size_counts_bytes() {
        assert_eq!(json_size(&"abc").unwrap(), 5);
        assert_eq!(json_size(&vec![1, 2, 3]).unwrap(), 7);
    }
}
