//! Writes. The acting user is the `X-User-Id` header (the demo has no login;
//! see `extract::ActingUser`). Every write is visible to every later read
//! on this instance (the service updates cached aggregates in place); its
//! `X-Delivery` header says whether every other instance had applied it
//! when it was answered (`confirmed`; `unconfirmed`: one may show the
//! value from before it for at most the bus lease; `local`: no shared
//! level).

use axum::{extract::State, http::StatusCode, Json};
use gistfans_data::{NewPost, Post, Written};
use serde::Deserialize;
use utoipa::ToSchema;

use crate::{
    error::{ApiError, ErrorBody},
    extract::{parse_id, ActingUser, ApiJson, ApiPath},
    state::AppState,
};

/// A post to create.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewPostBody {
    /// 1 to 200 characters.
    #[schema(min_length = 1, max_length = 200)]
    pub title: String,
    /// 1 to 40 characters, e.g. `rust`.
    #[schema(min_length = 1, max_length = 40)]
    pub language: String,
    /// The snippet, 1 byte to 64 KiB.
    #[schema(min_length = 1, max_length = 65536)]
    pub content: String,
}

/// The header that tells a client how far a write reached the other instances.
const DELIVERY: &str = "x-delivery";

/// A write's answer: `status`, its delivery header, and `body`.
fn answer<T, B>(
    status: StatusCode,
    written: Written<T>,
    body: impl FnOnce(T) -> B,
) -> (StatusCode, [(&'static str, &'static str); 1], B) {
    let header = [(DELIVERY, written.delivery.as_str())];
    (status, header, body(written.value))
}

fn check_len(field: &str, value: &str, max_chars: usize) -> Result<String, ApiError> {
    let v = value.trim();
    if v.is_empty() || v.chars().count() > max_chars {
        return Err(ApiError::invalid(format!(
            "{field} must be 1 to {max_chars} characters"
        )));
    }
    Ok(v.to_string())
}

/// Creates a post by the acting user.
#[utoipa::path(post, path = "/api/posts", tag = "writes", request_body = NewPostBody,
    params(("X-User-Id" = i64, Header, description = "The acting user (the demo has no login)")),
    responses((status = 201, body = Post, headers(("X-Delivery" = String, description = "confirmed, unconfirmed or local (see the module doc)"))), (status = 400, body = ErrorBody), (status = 413, body = ErrorBody)))]
pub async fn create_post(
    State(s): State<AppState>,
    ActingUser(user): ActingUser,
    ApiJson(body): ApiJson<NewPostBody>,
) -> Result<impl axum::response::IntoResponse, ApiError> {
    if body.content.is_empty() || body.content.len() > 64 * 1024 {
        return Err(ApiError::invalid("content must be 1 byte to 64 KiB"));
    }
    let post = NewPost {
        title: check_len("title", &body.title, 200)?,
        language: check_len("language", &body.language, 40)?,
        content: body.content,
    };
    let written = s.service.create_post(user, post).await?;
    Ok(answer(StatusCode::CREATED, written, Json))
}

/// Stars a post.
#[utoipa::path(put, path = "/api/posts/{id}/star", tag = "writes",
    params(("id" = i64, Path, description = "Post id"), ("X-User-Id" = i64, Header, description = "The acting user")),
    responses((status = 204, description = "Starred", headers(("X-Delivery" = String, description = "confirmed, unconfirmed or local (see the module doc)"))), (status = 404, body = ErrorBody), (status = 409, description = "Already starred", body = ErrorBody)))]
pub async fn star(
    State(s): State<AppState>,
    ActingUser(user): ActingUser,
    ApiPath(id): ApiPath<String>,
) -> Result<impl axum::response::IntoResponse, ApiError> {
    let written = s
        .service
        .set_star(user, parse_id(&id, "post id")?, true)
        .await?;
    Ok(answer(StatusCode::NO_CONTENT, written, |_| ()))
}

/// Takes a star back.
#[utoipa::path(delete, path = "/api/posts/{id}/star", tag = "writes",
    params(("id" = i64, Path, description = "Post id"), ("X-User-Id" = i64, Header, description = "The acting user")),
    responses((status = 204, description = "Unstarred", headers(("X-Delivery" = String, description = "confirmed, unconfirmed or local (see the module doc)"))), (status = 404, body = ErrorBody), (status = 409, description = "Not starred", body = ErrorBody)))]
pub async fn unstar(
    State(s): State<AppState>,
    ActingUser(user): ActingUser,
    ApiPath(id): ApiPath<String>,
) -> Result<impl axum::response::IntoResponse, ApiError> {
    let written = s
        .service
        .set_star(user, parse_id(&id, "post id")?, false)
        .await?;
    Ok(answer(StatusCode::NO_CONTENT, written, |_| ()))
}

/// Follows a user.
#[utoipa::path(put, path = "/api/users/{id}/follow", tag = "writes",
    params(("id" = i64, Path, description = "User to follow"), ("X-User-Id" = i64, Header, description = "The acting user")),
    responses((status = 204, description = "Following", headers(("X-Delivery" = String, description = "confirmed, unconfirmed or local (see the module doc)"))), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, description = "Already following", body = ErrorBody)))]
pub async fn follow(
    State(s): State<AppState>,
    ActingUser(user): ActingUser,
    ApiPath(id): ApiPath<String>,
) -> Result<impl axum::response::IntoResponse, ApiError> {
    let written = s
        .service
        .set_follow(user, parse_id(&id, "user id")?, true)
        .await?;
    Ok(answer(StatusCode::NO_CONTENT, written, |_| ()))
}

/// Stops following a user.
#[utoipa::path(delete, path = "/api/users/{id}/follow", tag = "writes",
    params(("id" = i64, Path, description = "User to unfollow"), ("X-User-Id" = i64, Header, description = "The acting user")),
    responses((status = 204, description = "Not following any more", headers(("X-Delivery" = String, description = "confirmed, unconfirmed or local (see the module doc)"))), (status = 404, body = ErrorBody), (status = 409, description = "Was not following", body = ErrorBody)))]
pub async fn unfollow(
    State(s): State<AppState>,
    ActingUser(user): ActingUser,
    ApiPath(id): ApiPath<String>,
) -> Result<impl axum::response::IntoResponse, ApiError> {
    let written = s
        .service
        .set_follow(user, parse_id(&id, "user id")?, false)
        .await?;
    Ok(answer(StatusCode::NO_CONTENT, written, |_| ()))
}
