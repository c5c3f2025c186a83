//! The "before": one endpoint per UI component, each running its own
//! queries on the plain pool, the way per-component code written against an
//! ORM does (one statement per figure; the SQL is in `store::baseline`). No
//! admission, no cache, no coalescing. It stays correct, so the benchmark compares like with like,
//! and the server tests check the aggregate against it field by field.

use crate::{
    error::DataError,
    model::{DayStars, Profile, RecentPost, Social, Stats},
    Db,
};

/// Profile and counters of a user (the stats component).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProfileStats {
    /// The profile.
    pub profile: Profile,
    /// The counters.
    pub stats: Stats,
}

/// `GET /api/users/{id}/stats`.
pub async fn stats(db: &Db, id: i64) -> Result<ProfileStats, DataError> {
    db.store().stats(id).await
}

/// `GET /api/users/{id}/posts`: newest posts with their star counts.
pub async fn posts(db: &Db, id: i64) -> Result<Vec<RecentPost>, DataError> {
    db.store().posts(id).await
}

/// `GET /api/users/{id}/star-history`: stars received per day, 30 days.
pub async fn star_history(db: &Db, id: i64) -> Result<Vec<DayStars>, DataError> {
    db.store().star_history(id).await
}

/// `GET /api/users/{id}/social`.
pub async fn social(db: &Db, id: i64) -> Result<Social, DataError> {
    db.store().social(id).await
}
