//! User cards by id: what a hover card or a list of people shows.
//!
//! Many lookups of users by id, from one request or from many at once, are
//! what a keyed batch loader is for: each card is cached on its own, and the
//! misses of every concurrent caller are gathered by hpdb's
//! [`hpdb::BatchLoader`] into one `WHERE id IN (…)` query (the ids as one
//! bound JSON array, never SQL built from them; see `store::reads`). A card
//! holds only what no write route changes (handle, name, bio, join date),
//! so its TTL is its only expiry.

use std::{collections::HashMap, sync::Arc};

use hpdb::QueryOptions;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{error::DataError, Db};

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

fn card_key(id: i64) -> String {
    format!("card:{id}")
}

impl UserDirectory {
    /// A directory over `db`.
    pub fn new(db: Db) -> Self {
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
            let loaded = self.db.store().user_cards(&misses).await?;
            for (id, card) in misses.iter().zip(loaded) {
                if let Some(card) = card {
                    let opts = QueryOptions::default().tag(format!("user:{id}"));
                    self.db
                        .control()
                        .put_cached(card_key(*id), &opts, card.clone())
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
