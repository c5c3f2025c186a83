//! User cards by id: what a hover card or a list of people shows.
//!
//! Many lookups of users by id, from one request or from many at once, are
//! what a keyed batch loader is for: each card is cached on its own, and the
//! misses of every concurrent caller are gathered by hpdb's [`BatchLoader`]
//! into one `WHERE id IN (…)` query (one `= ANY($1)` on PostgreSQL, one
//! `json_each` on SQLite: a single bound parameter, never SQL built from
//! the ids). A card holds only what no write route changes (handle, name,
//! bio, join date), so its TTL is its only expiry.

use std::{collections::HashMap, sync::Arc};

use hpdb::{BatchLoader, QueryOptions};
use serde::{Deserialize, Serialize};
use sqlx::{Postgres, Sqlite};
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

const COLUMNS: &str = "SELECT id, username, display_name, bio, created_at FROM users";

enum Loader {
    Sqlite(BatchLoader<Sqlite, i64, UserCard>),
    Postgres(BatchLoader<Postgres, i64, UserCard>),
}

/// User cards by id, cached and batched. Cheap to clone.
#[derive(Clone)]
pub struct UserDirectory {
    db: Db,
    loader: Arc<Loader>,
}

fn card_key(id: i64) -> String {
    format!("card:{id}")
}

fn by_id(rows: Vec<UserCard>) -> HashMap<i64, UserCard> {
    rows.into_iter().map(|c| (c.id, c)).collect()
}

impl UserDirectory {
    /// A directory over `db`.
    pub fn new(db: Db) -> Self {
        let loader = match &db {
            Db::Sqlite { manager, .. } => Loader::Sqlite(BatchLoader::new(
                manager,
                "user_cards",
                |conn, ids: Vec<i64>| {
                    Box::pin(async move {
                        let ids = serde_json::to_string(&ids).expect("ids serialise");
                        let sql =
                            format!("{COLUMNS} WHERE id IN (SELECT value FROM json_each(?1))");
                        let rows = sqlx::query_as::<_, UserCard>(&sql)
                            .bind(ids)
                            .fetch_all(conn)
                            .await?;
                        Ok(by_id(rows))
                    })
                },
            )),
            Db::Postgres { manager, .. } => Loader::Postgres(BatchLoader::new(
                manager,
                "user_cards",
                |conn, ids: Vec<i64>| {
                    Box::pin(async move {
                        let sql = format!("{COLUMNS} WHERE id = ANY($1)");
                        let rows = sqlx::query_as::<_, UserCard>(&sql)
                            .bind(ids)
                            .fetch_all(conn)
                            .await?;
                        Ok(by_id(rows))
                    })
                },
            )),
        };
        Self {
            db,
            loader: Arc::new(loader),
        }
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
            let loaded = match &*self.loader {
                Loader::Sqlite(l) => l.load_many(&misses).await?,
                Loader::Postgres(l) => l.load_many(&misses).await?,
            };
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
