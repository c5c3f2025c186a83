//! Request extractors whose failures are `ApiError`s (JSON, the right 4xx).

use axum::{
    extract::{FromRequest, FromRequestParts, Query},
    http::request::Parts,
};

use crate::error::ApiError;

/// The demo has no login: the acting user is the `X-User-Id` header. A real
/// deployment puts its own authentication in front and sets this header from
/// the authenticated identity.
#[derive(Debug, Clone, Copy)]
pub struct ActingUser(pub i64);

/// The header naming the acting user.
pub const ACTING_USER_HEADER: &str = "x-user-id";

impl<S: Send + Sync> FromRequestParts<S> for ActingUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let raw = parts.headers.get(ACTING_USER_HEADER).ok_or_else(|| {
            ApiError::BadRequest {
                code: "missing_acting_user",
                message: "missing X-User-Id header: this demo has no login, so writes name the acting user's id in X-User-Id".into(),
            }
        })?;
        let raw = raw
            .to_str()
            .map_err(|_| ApiError::invalid("X-User-Id must be a positive integer"))?;
        Ok(ActingUser(parse_id(raw, "X-User-Id")?))
    }
}

/// `axum::Json`, rejecting with an `ApiError` (400, 413, 415).
#[derive(Debug, FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct ApiJson<T>(pub T);

/// `axum::extract::Query`, rejecting with a 400 `ApiError`.
#[derive(Debug, FromRequestParts)]
#[from_request(via(Query), rejection(ApiError))]
pub struct ApiQuery<T>(pub T);

/// Largest id accepted (ids are 64-bit, but nothing real comes near this;
/// anything larger is a typo or a probe).
const MAX_ID: i64 = 1 << 53;

/// Parses a positive integer id, naming `what` in the error.
pub fn parse_id(raw: &str, what: &str) -> Result<i64, ApiError> {
    match raw.trim().parse::<i64>() {
        Ok(id) if (1..=MAX_ID).contains(&id) => Ok(id),
        Ok(id) => Err(ApiError::invalid(format!(
            "{what} must be between 1 and {MAX_ID}, got {id}"
        ))),
        Err(_) => Err(ApiError::invalid(format!(
            "{what} must be a positive integer, got `{raw}`"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_must_be_positive_integers_in_range() {
        assert_eq!(parse_id("42", "id").unwrap(), 42);
        for bad in [
            "0",
            "-1",
            "abc",
            "",
            "1.5",
            "99999999999999999999",
            "9007199254740993",
        ] {
            assert!(parse_id(bad, "id").is_err(), "{bad}");
        }
    }
}
