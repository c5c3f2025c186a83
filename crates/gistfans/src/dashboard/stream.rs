//! `GET /api/admin/stream`: the dashboard's figures as Server-Sent Events.
//!
//! Each event is `event: status`, `id: <seq>`, `data: <one JSON line>`
//! (`{seq, atMs, status, alerts, recommendations}`, the monitor's figures).
//! A client first receives the feed's backlog (up to a minute of samples),
//! then one event per second. The stream ends after the feed's maximum
//! lifetime or when the server shuts down; clients reconnect. Bounds and
//! their reasons: `feed`.

use std::{convert::Infallible, sync::Arc, time::Duration};

use axum::{
    extract::State,
    response::sse::{Event, KeepAlive, Sse},
};
use futures::{stream, Stream, StreamExt};

use super::feed::Sample;
use crate::{error::ApiError, routes::admin::Admin, state::AppState};

/// A comment line this often keeps proxies from closing a quiet stream
/// (events come every second, so it matters only if the ticker stalls).
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// The pool's status once a second.
#[utoipa::path(get, path = "/api/admin/stream", tag = "admin",
    params(("Authorization" = String, Header, description = "`Bearer <ADMIN_TOKEN>`")),
    responses(
        (status = 200, description = "Server-Sent Events: `event: status`, `data: {seq, atMs, status, alerts, recommendations}` once a second, after a backlog; ends after 10 minutes (reconnect)", content_type = "text/event-stream"),
        (status = 401, body = crate::error::ErrorBody),
        (status = 403, description = "ADMIN_TOKEN not set", body = crate::error::ErrorBody),
        (status = 503, description = "Too many streams open, or shutting down", body = crate::error::ErrorBody),
    ))]
pub async fn stream(
    _: Admin,
    State(state): State<AppState>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let mut sub = state.feed.subscribe()?;
    let backlog = std::mem::take(&mut sub.backlog);
    let live = stream::unfold(
        sub,
        |mut sub| async move { sub.next().await.map(|s| (s, sub)) },
    );
    let events = stream::iter(backlog).chain(live).map(|s| Ok(event(&s)));
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)))
}

fn event(sample: &Arc<Sample>) -> Event {
    Event::default()
        .event("status")
        .id(sample.seq.to_string())
        .data(&sample.json)
}
