//! An aggregate in the form the cache keeps and the server sends: the data,
//! its JSON body and a strong ETag, built once, off the connection.

use std::{
    hash::{Hash, Hasher},
    sync::Arc,
};

use bytes::Bytes;
use serde::Serialize;

use crate::{aggregate::assemble, model::UserAggregate};

/// An aggregate with its JSON body and a strong ETag (a hash of the body).
#[derive(Debug, Clone)]
pub struct RenderedAggregate {
    /// The aggregate.
    pub data: UserAggregate,
    /// `data` as JSON.
    pub body: Bytes,
    /// `"…"`, changes whenever the body does.
    pub etag: String,
}

impl RenderedAggregate {
    /// Serialises `data` (the one time it is) and hashes the body.
    pub(crate) fn new(data: UserAggregate) -> Self {
        let body = Bytes::from(serde_json::to_vec(&data).expect("aggregates always serialise"));
        Self::with_body(data, body)
    }

    /// An aggregate and the body it was rendered to (read back from the
    /// shared cache level: the body is kept as it was, not re-rendered).
    fn with_body(data: UserAggregate, body: Bytes) -> Self {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        body.hash(&mut h);
        let etag = format!("\"{:016x}-{:x}\"", h.finish(), body.len());
        Self { data, body, etag }
    }
}

impl Serialize for RenderedAggregate {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.data.serialize(s)
    }
}

/// What the cache holds for one (user, include set): the rendered
/// aggregate, or `None` for a user that does not exist (negative caching).
///
/// Not `Serialize`: its weight is its body's length, and it travels through
/// the shared level as that body, so it is never serialised again (see
/// [`hpdb::CacheValue`]).
#[derive(Debug, Clone)]
pub(crate) struct CachedAggregate(pub(crate) Option<Arc<RenderedAggregate>>);

impl hpdb::CacheValue for CachedAggregate {
    fn cache_size(&self) -> Result<usize, String> {
        // Its JSON size, as for any other cached value: the body, or `null`.
        Ok(self.0.as_ref().map_or(4, |r| r.body.len()))
    }

    fn encode(&self) -> Option<Bytes> {
        Some(match &self.0 {
            Some(r) => r.body.clone(),
            None => Bytes::from_static(b"null"),
        })
    }

    fn decode(body: Bytes) -> Result<Self, String> {
        if &body[..] == b"null" {
            return Ok(CachedAggregate(None));
        }
        let data: UserAggregate = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
        Ok(CachedAggregate(Some(Arc::new(
            RenderedAggregate::with_body(data, body),
        ))))
    }
}

/// Turns the database's JSON for a user into what the cache keeps.
pub(crate) fn render(json: Option<String>, today: i64) -> Result<CachedAggregate, sqlx::Error> {
    let Some(json) = json else {
        return Ok(CachedAggregate(None));
    };
    let data = assemble(&json, today).map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
    Ok(CachedAggregate(Some(Arc::new(RenderedAggregate::new(
        data,
    )))))
}
