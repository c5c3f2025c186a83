//! Request extractors whose failures are `ApiError`s (JSON, the right 4xx).

use axum::{
    extract::{FromRequest, FromRequestParts, Path, Query},
    http::{request::Parts, HeaderMap, HeaderValue},
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
        let raw = single_header(&parts.headers, ACTING_USER_HEADER)?.ok_or_else(|| {
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

/// The one value of header `name`, if present; a 400 if it is sent more
/// than once (which value would count is ambiguous, so neither does).
pub fn single_header<'a>(
    headers: &'a HeaderMap,
    name: &str,
) -> Result<Option<&'a HeaderValue>, ApiError> {
    let mut values = headers.get_all(name).iter();
    let first = values.next();
    if values.next().is_some() {
        return Err(ApiError::BadRequest {
            code: "duplicate_header",
            message: format!("the {name} header must be sent once"),
        });
    }
    Ok(first)
}

/// `axum::Json`, rejecting with an `ApiError` (400, 413, 415).
#[derive(Debug, FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct ApiJson<T>(pub T);

/// `axum::extract::Path`, rejecting with a 400 `ApiError` (a path segment
/// that is not valid UTF-8, for one).
#[derive(Debug, FromRequestParts)]
#[from_request(via(Path), rejection(ApiError))]
pub struct ApiPath<T>(pub T);

/// `axum::extract::Query`, rejecting with a 400 `ApiError`.
#[derive(Debug, FromRequestParts)]
#[from_request(via(Query), rejection(ApiError))]
pub struct ApiQuery<T>(pub T);

/// Largest id accepted (ids are 64-bit, but nothing real comes near this;
/// anything larger is a typo or a probe). The OpenAPI document states it.
pub const MAX_ID: i64 = 1 << 53;

/// Parses a positive integer id in its one canonical spelling (ASCII digits,
/// no sign, no leading zero, no spaces), naming `what` in the error. One
/// spelling per id keeps cache keys, ETags and logs unambiguous.
pub fn parse_id(raw: &str, what: &str) -> Result<i64, ApiError> {
    let canonical = !raw.is_empty()
        && raw.len() <= 16
        && raw.bytes().all(|b| b.is_ascii_digit())
        && !raw.starts_with('0');
    match raw.parse::<i64>() {
        Ok(id) if canonical && (1..=MAX_ID).contains(&id) => Ok(id),
        Ok(id) if canonical => Err(ApiError::invalid(format!(
            "{what} must be between 1 and {MAX_ID}, got {id}"
        ))),
        _ => Err(ApiError::invalid(format!(
            "{what} must be a positive integer written with digits only (1 to {MAX_ID}), got `{}`",
            raw.chars().take(32).collect::<String>()
        ))),
    }
}

/// True if `If-None-Match` names `etag` (or `*`); weak comparison, as
/// RFC 9110 (13.1.2) asks for `If-None-Match`.
pub fn matches_etag(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(axum::http::header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().trim_start_matches("W/"))
        .any(|t| t == etag || t == "*")
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
            " 5 ",
            "5 ",
            "+5",
            "05",
            "0x5",
            "５",
        ] {
            assert!(parse_id(bad, "id").is_err(), "{bad}");
        }
    }
}
