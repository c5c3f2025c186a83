//! `GET /api/users?ids=…`: user cards for a hover card or a list of people,
//! many at once, through the keyed batch loader.

use axum::{extract::State, Json};
use gistfans_data::{UserCard, MAX_IDS};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::{
    error::{ApiError, ErrorBody},
    extract::{parse_id, ApiQuery},
    state::AppState,
};

/// Query of the user-cards route.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CardsQuery {
    /// Comma-separated user ids, 1 to 100 of them (repeats are ignored).
    pub ids: Option<String>,
}

/// The cards found, and the ids that name no user.
#[derive(Debug, Serialize, ToSchema)]
pub struct Cards {
    /// The users found, in the order asked.
    pub users: Vec<UserCard>,
    /// Ids that name no user.
    pub missing: Vec<i64>,
}

/// The distinct ids of `raw`, in order; a 400 for a malformed or missing list.
fn parse_ids(raw: Option<&str>) -> Result<Vec<i64>, ApiError> {
    let raw = raw.filter(|r| !r.is_empty()).ok_or_else(|| {
        ApiError::invalid("missing query parameter ids (comma-separated user ids)")
    })?;
    let mut ids = Vec::new();
    for part in raw.split(',') {
        let id = parse_id(part, "each of ids")?;
        if !ids.contains(&id) {
            ids.push(id);
        }
        if ids.len() > MAX_IDS {
            return Err(ApiError::invalid(format!(
                "at most {MAX_IDS} ids at a time"
            )));
        }
    }
    Ok(ids)
}

/// User cards by id.
#[utoipa::path(get, path = "/api/users", tag = "profile", params(CardsQuery),
    responses((status = 200, body = Cards), (status = 400, body = ErrorBody)))]
pub async fn cards(
    State(s): State<AppState>,
    ApiQuery(q): ApiQuery<CardsQuery>,
) -> Result<Json<Cards>, ApiError> {
    let ids = parse_ids(q.ids.as_deref())?;
    let (users, missing) = s.users.cards(&ids).await?;
    Ok(Json(Cards { users, missing }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_distinct_canonical_and_bounded() {
        assert_eq!(parse_ids(Some("3,1,3,2")).unwrap(), vec![3, 1, 2]);
        for bad in [
            None,
            Some(""),
            Some("1,,2"),
            Some("1,x"),
            Some("1, 2"),
            Some("05"),
        ] {
            assert!(parse_ids(bad).is_err(), "{bad:?}");
        }
        let many: Vec<String> = (1..=101).map(|i| i.to_string()).collect();
        assert!(parse_ids(Some(&many.join(","))).is_err());
        let enough: Vec<String> = (1..=100).map(|i| i.to_string()).collect();
        assert_eq!(parse_ids(Some(&enough.join(","))).unwrap().len(), 100);
    }
}
