//! `ApiError`: every error a client can see, and the one place that maps
//! errors to HTTP. The body is always `{"error": code, "message": …}`; the
//! details of a 5xx are logged, never sent.

use std::time::Duration;

use axum::{
    extract::rejection::{JsonRejection, PathRejection, QueryRejection},
    http::{header, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    Json,
};
use gistfans_data::DataError;

use crate::dashboard::FeedError;
use serde::Serialize;
use utoipa::ToSchema;

/// The body of every error response.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// A stable, machine-readable code (`invalid_parameter`, `not_found`, …).
    pub error: &'static str,
    /// What went wrong and what to do about it.
    pub message: String,
}

/// Errors of the HTTP API.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: a parameter, header or body field is malformed or out of range.
    #[error("{message}")]
    BadRequest {
        /// Error code.
        code: &'static str,
        /// Message.
        message: String,
    },
    /// 401: a token is required and was missing or wrong.
    #[error("{0}")]
    Unauthorized(String),
    /// 403: the route is disabled.
    #[error("{0}")]
    Forbidden(String),
    /// 404: no such user or post.
    #[error("{0}")]
    NotFound(String),
    /// 409: the write conflicts with the current state.
    #[error("{0}")]
    Conflict(String),
    /// A request rejected before it reached the handler: 405, 413, 414, 415,
    /// 431, or 400 for a malformed body.
    #[error("{message}")]
    Rejected {
        /// The status the rejection carries.
        status: StatusCode,
        /// Its message.
        message: String,
    },
    /// 503 with Retry-After: the pool or the circuit breaker refused.
    #[error("{message}")]
    Unavailable {
        /// Message.
        message: String,
        /// When to retry.
        retry_after: Duration,
    },
    /// 504: the database did not answer in time.
    #[error("{0}")]
    Timeout(String),
    /// 500: a bug or an unexpected failure (details only in the log).
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    /// A 400 with code `invalid_parameter`.
    pub fn invalid(message: impl Into<String>) -> Self {
        ApiError::BadRequest {
            code: "invalid_parameter",
            message: message.into(),
        }
    }

    fn parts(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::BadRequest { code, .. } => (StatusCode::BAD_REQUEST, code),
            ApiError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            ApiError::Rejected { status, .. } => (
                *status,
                match *status {
                    StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
                    StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
                    StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
                    StatusCode::URI_TOO_LONG => "uri_too_long",
                    StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => "headers_too_large",
                    _ => "invalid_body",
                },
            ),
            ApiError::Unavailable { .. } => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ApiError::Timeout(_) => (StatusCode::GATEWAY_TIMEOUT, "timeout"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }

    /// What the client is told: the message, except for a 500, whose
    /// details are logged here and replaced by a pointer to the log.
    fn client_message(&self) -> String {
        if let ApiError::Internal(detail) = self {
            tracing::error!(%detail, "internal error");
            "internal error; the details are in the server log".to_string()
        } else {
            self.to_string()
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.parts();
        let message = self.client_message();
        let mut resp = (
            status,
            Json(ErrorBody {
                error: code,
                message,
            }),
        )
            .into_response();
        self.add_headers(&mut resp);
        resp
    }
}

impl ApiError {
    /// The headers an error's answer carries whatever its body (JSON for
    /// the API, HTML for a page): when to retry, how to authenticate.
    fn add_headers(&self, resp: &mut Response) {
        if let ApiError::Unavailable { retry_after, .. } = self {
            let secs = retry_after.as_secs().max(1);
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if matches!(self, ApiError::Unauthorized(_)) {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
    }
}

/// An [`ApiError`] answered to a person's browser: the same status, with
/// the message in an HTML error page (`assets/error.html`, the pages' own
/// error state) instead of JSON. Returned by the HTML pages (`pages`).
#[derive(Debug)]
pub struct PageError(pub ApiError);

impl From<ApiError> for PageError {
    fn from(e: ApiError) -> Self {
        PageError(e)
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let (status, _) = self.0.parts();
        let title = match status {
            StatusCode::BAD_REQUEST => "Not a valid address",
            StatusCode::NOT_FOUND => "Not found",
            s if s.is_server_error() => "The server could not answer",
            _ => "The page could not be shown",
        };
        let page = crate::pages::assets::link(include_str!("../assets/error.html"))
            .replace("{{status}}", status.as_str())
            .replace("{{title}}", title)
            .replace("{{message}}", &html_escape(&self.0.client_message()));
        let mut resp = (status, axum::response::Html(page)).into_response();
        resp.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        self.0.add_headers(&mut resp);
        resp
    }
}

/// `text` safe to place in HTML text or a quoted attribute.
fn html_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

impl From<DataError> for ApiError {
    fn from(e: DataError) -> Self {
        match e {
            DataError::NotFound { .. } => ApiError::NotFound(e.to_string()),
            DataError::Conflict(m) => ApiError::Conflict(m),
            DataError::Invalid(m) => ApiError::invalid(m),
            DataError::Db(e) => e.into(),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<hpdb::Error> for ApiError {
    fn from(e: hpdb::Error) -> Self {
        use hpdb::{Error, TimeoutPhase};
        match &e {
            Error::CircuitOpen { .. } => ApiError::Unavailable {
                message: "the database is unavailable; retry shortly".into(),
                retry_after: e.retry_after().unwrap_or(Duration::from_secs(1)),
            },
            Error::Timeout { phase: TimeoutPhase::Queued | TimeoutPhase::Acquire, .. } => ApiError::Unavailable {
                message: "the server is saturated: no database connection became free in time; retry shortly".into(),
                retry_after: e.retry_after().unwrap_or(Duration::from_secs(1)),
            },
            Error::Timeout { .. } => ApiError::Timeout("the database did not answer in time".into()),
            _ if e.is_unavailable() => ApiError::Unavailable {
                message: "the database is unavailable; retry shortly".into(),
                retry_after: Duration::from_secs(1),
            },
            _ => ApiError::Internal(e.to_string()),
        }
    }
}

impl From<FeedError> for ApiError {
    fn from(e: FeedError) -> Self {
        let retry_after = match e {
            FeedError::Full(_) => Duration::from_secs(5),
            FeedError::Closed => Duration::from_secs(1),
        };
        ApiError::Unavailable {
            message: e.to_string(),
            retry_after,
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        let status = match r.status() {
            StatusCode::UNPROCESSABLE_ENTITY => StatusCode::BAD_REQUEST,
            s => s,
        };
        ApiError::Rejected {
            status,
            message: r.body_text(),
        }
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        ApiError::invalid(r.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        ApiError::invalid(r.body_text())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_unavailable_says_when_to_retry_as_the_api_does() {
        let e = || ApiError::Unavailable {
            message: "database unavailable".into(),
            retry_after: Duration::from_secs(3),
        };
        let page = PageError(e()).into_response();
        let api = e().into_response();
        assert_eq!(page.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(page.headers()[header::RETRY_AFTER], "3");
        assert_eq!(api.headers()[header::RETRY_AFTER], "3");
    }

    #[test]
    fn page_errors_escape_the_message() {
        assert_eq!(
            html_escape(r#"<script>"x" & 'y'</script>"#),
            "&lt;script&gt;&quot;x&quot; &amp; &#39;y&#39;&lt;/script&gt;"
        );
    }
}
