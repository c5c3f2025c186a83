//! Bounds on the request head, answered with the API's JSON errors.
//!
//! hyper enforces its own limits (a 64 KiB URI, `max_headers` headers, a
//! ~400 KiB read buffer) with empty-bodied 414 and 431 answers. These limits
//! sit well below hyper's, so that every client who exceeds a limit short of
//! hyper's gets a JSON error saying which limit, like every other 4xx.
//! hyper's own answers remain the backstop for grosser abuse.

use axum::{extract::Request, http::StatusCode};

use crate::error::ApiError;

/// Longest request target (path and query) accepted, in bytes.
pub const MAX_URI_BYTES: usize = 8 * 1024;
/// Most request headers accepted.
pub const MAX_HEADERS: usize = 64;
/// Largest total size of the request headers accepted (names and values).
pub const MAX_HEADER_BYTES: usize = 32 * 1024;

/// Rejects a request whose target or headers exceed the limits above (run
/// by the router's edge middleware before anything else).
pub fn check_head(req: &Request) -> Result<(), ApiError> {
    let uri_len = req.uri().path_and_query().map_or(0, |pq| pq.as_str().len());
    if uri_len > MAX_URI_BYTES {
        return Err(ApiError::Rejected {
            status: StatusCode::URI_TOO_LONG,
            message: format!(
                "the request target is {uri_len} bytes; at most {MAX_URI_BYTES} are accepted"
            ),
        });
    }
    let headers = req.headers();
    let count = headers.len();
    let bytes: usize = headers
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len())
        .sum();
    if count > MAX_HEADERS || bytes > MAX_HEADER_BYTES {
        return Err(ApiError::Rejected {
            status: StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            message: format!(
                "{count} headers of {bytes} bytes; at most {MAX_HEADERS} headers and {MAX_HEADER_BYTES} bytes are accepted"
            ),
        });
    }
    Ok(())
}
