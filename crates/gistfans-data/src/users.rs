//! User cards by id: what a hover card or a list of people shows.
//!
//! Many lookups of users by id, from one request or from many at once, are
//! what a keyed batch loader is for: each card is cached on its own, and the
//! misses of every concurrent caller are gathered by hpdb's
//! [`hpdb::BatchLoader`] into one `WHERE id IN (…)` query (the ids as one
//! bound JSON array, never SQL built from them; see `store::reads`). A card
//! holds only what no write route changes (handle, name, bio, join date),
//! so its TTL is its only expiry, or an invalidation of its user (the
//! change stream's, for a change made around the server). The consistency
//! monitor checks a sample of cards after such invalidations: a card read
//! again (the batch loader, uncached) must equal the cached one.

use std::{
    collections::HashMap,
    sync::{Arc, Weak},
};

use hpdb::{QueryOptions, Verdict, VerifyError};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{error::DataError, store::Store, Db};

/// Most ids one call may ask for.
pub const MAX_IDS: usize = 100;

/// A user as a card shows them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct UserCard {
    /// User id.
    pub id: i64,
    /// Handle.
    pub username: String,
    /// Display name.
    pub display_name: String,
    /// Bio.
    pub bio: String,
    /// When the user joined, Unix seconds.
    pub created_at: i64,
}

/// User cards by id, cached and batched. Cheap to clone.
#[derive(Clone)]
pub struct UserDirectory {
    db: Db,
}

/// The prefix of every cached card's key.
const CARD_PREFIX: &str = "card:";

fn card_key(id: i64) -> String {
    format!("{CARD_PREFIX}{id}")
}

impl UserDirectory {
    /// A directory over `db`; registers the consistency monitor's verifier
    /// of cards (again: replaces it).
    pub fn new(db: Db) -> Self {
        let store = db.store_weak();
        db.control()
            .verify_prefix(CARD_PREFIX, move |key, cached: Arc<UserCard>| {
                Box::pin(verify(store.clone(), key, cached))
            });
        Self { db }
    }

    /// The cards of `ids` (at most [`MAX_IDS`]), in the order asked, and
    /// the ids that name no user. Cached cards are served from the cache;
    /// the rest are loaded in one batch with everyone else's.
    pub async fn cards(&self, ids: &[i64]) -> Result<(Vec<UserCard>, Vec<i64>), DataError> {
        if ids.len() > MAX_IDS {
            return Err(DataError::Invalid(format!(
                "at most {MAX_IDS} ids at a time, got {}",
                ids.len()
            )));
        }
        let mut found: HashMap<i64, Arc<UserCard>> = HashMap::with_capacity(ids.len());
        let mut misses = Vec::new();
        for &id in ids {
            let cached = self
                .db
                .control()
                .peek_cached::<UserCard>(&card_key(id))
                .await;
            match cached {
                Some(card) => {
                    found.insert(id, card);
                }
                None => misses.push(id),
            }
        }
        if !misses.is_empty() {
            // Marked before the load: a user changed meanwhile (a write, the
            // change stream) is not cached as it was before.
            let read_at = self.db.control().read_mark();
            let loaded = self.db.store().user_cards(&misses).await?;
            for (id, card) in misses.iter().zip(loaded) {
                if let Some(card) = card {
                    let opts = QueryOptions::default().tag(format!("user:{id}"));
                    self.db
                        .control()
                        .put_cached_read_at(read_at, card_key(*id), &opts, card.clone())
                        .await;
                    found.insert(*id, card);
                }
            }
        }
        let mut cards = Vec::with_capacity(found.len());
        let mut missing = Vec::new();
        for id in ids {
            match found.get(id) {
                Some(card) => cards.push(UserCard::clone(card)),
                None => missing.push(*id),
            }
        }
        Ok((cards, missing))
    }
}

/// The database's verdict on the card cached under `key`.
async fn verify(
    store: Weak<dyn Store>,
    key: Arc<str>,
    cached: Arc<UserCard>,
) -> Result<Verdict, VerifyError> {
    let store = store.upgrade().ok_or("the data layer is closed")?;
    let id: i64 = key
        .strip_prefix(CARD_PREFIX)
        .ok_or("not a card's key")?
        .parse()?;
    let now = store.user_cards(&[id]).await?;
    Ok(match now.into_iter().next().flatten() {
        Some(card) if card == cached => Verdict::Fresh,
        Some(card) => Verdict::Stale(format!("card: cached {cached:?}, database {card:?}")),
        None => Verdict::Stale("the user no longer exists".into()),
    })
}
