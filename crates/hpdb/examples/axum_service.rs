//! Adopting hpdb in an existing axum + sqlx service: a small users service
//! whose reads go through the manager (cached per user, tagged) and whose
//! writes invalidate that tag, so a read after a write shows the write.
//!
//! What changes when a service adopts hpdb is small and local:
//! - at start-up, `Manager::connect(url, config)` instead of
//!   `SqlitePool::connect(url)` (the manager owns the sqlx pool; writes and
//!   migrations still use it, through `manager.pool()`);
//! - each cached read: `manager.execute_query(key, options, |conn| …)`
//!   around the sqlx code it already had (`fetch_optional(&pool)` becomes
//!   `fetch_optional(conn)`);
//! - each write: one `manager.invalidate_tag(tag)` after it commits.
//!
//! Run: `cargo run -p hpdb --example axum_service`, then
//! `curl 127.0.0.1:3001/users/1` and
//! `curl -X PUT 127.0.0.1:3001/users/1 -H 'content-type: application/json' -d '{"name":"Ada L."}'`.
//! `DATABASE_URL` (default `sqlite::memory:`) and hpdb's `DB_*` variables
//! apply. Its tests run in CI (`cargo nextest run --workspace`).

use axum::{
    extract::{Path, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::get,
    Json, Router,
};
use hpdb::{Manager, ManagerConfig, Priority, QueryOptions};
use serde::{Deserialize, Serialize};
use sqlx::Sqlite;

/// A row of `users`, as the service answers it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct User {
    id: i64,
    name: String,
}

/// A write's body.
#[derive(Debug, Deserialize)]
struct Rename {
    name: String,
}

/// The service's state. Before hpdb it held a `sqlx::SqlitePool`; the
/// manager is as cheap to clone.
#[derive(Clone)]
struct AppState {
    db: Manager<Sqlite>,
}

/// The one place errors become HTTP: details of a 5xx are logged, not sent.
enum AppError {
    NotFound,
    /// The database is away or overloaded: the client may retry.
    Unavailable,
    Internal(String),
}

impl From<hpdb::Error> for AppError {
    fn from(e: hpdb::Error) -> Self {
        if e.is_unavailable() || e.is_timeout() {
            AppError::Unavailable
        } else {
            AppError::Internal(e.to_string())
        }
    }
}

impl From<sqlx::Error> for AppError {
    fn from(e: sqlx::Error) -> Self {
        AppError::Internal(e.to_string())
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        match self {
            AppError::NotFound => StatusCode::NOT_FOUND.into_response(),
            AppError::Unavailable => StatusCode::SERVICE_UNAVAILABLE.into_response(),
            AppError::Internal(e) => {
                eprintln!("database error: {e}");
                StatusCode::INTERNAL_SERVER_ERROR.into_response()
            }
        }
    }
}

/// The tag every cached read of user `id` carries, and that a write of it
/// invalidates.
fn user_tag(id: i64) -> String {
    format!("user:{id}")
}

/// `GET /users/{id}`.
///
/// Before hpdb:
/// ```text
/// let row: Option<(i64, String)> = sqlx::query_as("SELECT id, name FROM users WHERE id = ?")
///     .bind(id)
///     .fetch_optional(&state.pool)
///     .await?;
/// ```
/// After: the same query inside `execute_query`, which serves it from the
/// cache, runs it once for concurrent callers of the same key, and admits
/// it by priority when every connection is busy.
async fn get_user(
    State(state): State<AppState>,
    Path(id): Path<i64>,
) -> Result<Json<User>, AppError> {
    let user = state
        .db
        .execute_query(
            format!("user:{id}"),
            QueryOptions::default()
                .tag(user_tag(id))
                .priority(Priority::HIGH),
            move |conn| {
                Box::pin(async move {
                    let row: Option<(i64, String)> =
                        sqlx::query_as("SELECT id, name FROM users WHERE id = ?")
                            .bind(id)
                            .fetch_optional(conn)
                            .await?;
                    Ok(row.map(|(id, name)| User { id, name }))
                })
            },
        )
        .await?;
    // `user` is an `Arc<Option<User>>`: "no such user" is cached too, and
    // dropped by the same tag when the user is created.
    user.as_ref().clone().map(Json).ok_or(AppError::NotFound)
}

/// `PUT /users/{id}`: creates or renames the user, then invalidates its
/// tag. Once `invalidate_tag` has returned, no read that starts afterwards
/// is served the old name, not even by a query that was already running.
async fn put_user(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    Json(body): Json<Rename>,
) -> Result<Json<User>, AppError> {
    // Writes go to the pool directly, as before.
    sqlx::query(
        "INSERT INTO users (id, name) VALUES (?, ?)
         ON CONFLICT (id) DO UPDATE SET name = excluded.name",
    )
    .bind(id)
    .bind(&body.name)
    .execute(state.db.pool())
    .await?;
    state.db.invalidate_tag(&user_tag(id)).await;
    Ok(Json(User {
        id,
        name: body.name,
    }))
}

/// The app without a socket, so tests can call it directly.
fn router(state: AppState) -> Router {
    Router::new()
        .route("/users/{id}", get(get_user).put(put_user))
        .with_state(state)
}

/// Connects the manager and creates the schema (a real service would run
/// its migrations here).
async fn connect(url: &str) -> Result<AppState, Box<dyn std::error::Error>> {
    // Before: `let pool = SqlitePool::connect(url).await?;`
    let db = Manager::<Sqlite>::connect(url, ManagerConfig::from_env()?).await?;
    sqlx::raw_sql(
        "CREATE TABLE IF NOT EXISTS users (id INTEGER PRIMARY KEY, name TEXT NOT NULL);
         INSERT OR IGNORE INTO users (id, name) VALUES (1, 'Ada'), (2, 'Grace');",
    )
    .execute(db.pool())
    .await?;
    Ok(AppState { db })
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("DATABASE_URL").unwrap_or_else(|_| "sqlite::memory:".into());
    let state = connect(&url).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3001").await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, router(state)).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use axum::{
        body::{to_bytes, Body},
        http::Request,
    };
    use tower::ServiceExt;

    use super::*;

    /// Sends one request to the router over `state`: the status, and the
    /// body as JSON (`null` when empty).
    async fn call(
        state: &AppState,
        method: &str,
        uri: &str,
        body: Option<&str>,
    ) -> (StatusCode, serde_json::Value) {
        let request = Request::builder()
            .method(method)
            .uri(uri)
            .header("content-type", "application/json")
            .body(body.map_or_else(Body::empty, |b| Body::from(b.to_owned())))
            .unwrap();
        let response = router(state.clone()).oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = to_bytes(response.into_body(), 1 << 20).await.unwrap();
        let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
        (status, json)
    }

    #[tokio::test]
    async fn a_read_after_a_write_shows_the_write() {
        let state = connect("sqlite::memory:").await.unwrap();
        let (status, before) = call(&state, "GET", "/users/1", None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(before["name"], "Ada");
        // The second read is a cache hit: the same answer, no query.
        let queries = state.db.status().database_queries;
        let (_, again) = call(&state, "GET", "/users/1", None).await;
        assert_eq!(again, before);
        assert_eq!(state.db.status().database_queries, queries);

        let (status, _) = call(&state, "PUT", "/users/1", Some(r#"{"name":"Ada L."}"#)).await;
        assert_eq!(status, StatusCode::OK);
        let (status, after) = call(&state, "GET", "/users/1", None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(after["name"], "Ada L.");
    }

    #[tokio::test]
    async fn a_cached_not_found_ends_when_the_user_is_created() {
        let state = connect("sqlite::memory:").await.unwrap();
        let (status, _) = call(&state, "GET", "/users/7", None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let cached = state.db.peek_cached::<Option<User>>("user:7").await;
        assert_eq!(cached.as_deref(), Some(&None), "the miss is cached");

        let (status, _) = call(&state, "PUT", "/users/7", Some(r#"{"name":"Linus"}"#)).await;
        assert_eq!(status, StatusCode::OK);
        let (status, user) = call(&state, "GET", "/users/7", None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(user["name"], "Linus");
        let cached = state.db.peek_cached::<Option<User>>("user:7").await;
        let name = cached
            .as_deref()
            .and_then(Option::as_ref)
            .map(|u| u.name.as_str());
        assert_eq!(name, Some("Linus"), "the new row is cached in its place");
    }
}
