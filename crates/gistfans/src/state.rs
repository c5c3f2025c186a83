//! What every handler can reach.

use std::sync::Arc;

use gistfans_data::{DataAggregationService, Db, UserDirectory};
use metrics_exporter_prometheus::PrometheusHandle;

use crate::dashboard::{Feed, StreamLimits};

/// Shared application state: one `Arc`, because axum clones the state for
/// every request (even for handlers that take none), and a clone of five
/// fields (reference counts, moka handles) cost 2-3% of the trivial
/// route's CPU (issue 22).
#[derive(Clone)]
pub struct AppState(Arc<State>);

/// What [`AppState`] holds.
pub struct State {
    /// The aggregation service (and through it the database).
    pub service: DataAggregationService,
    /// User cards by id (cached, batched).
    pub users: UserDirectory,
    /// `ADMIN_TOKEN`; admin routes answer 403 while it is unset.
    pub admin_token: Option<Arc<str>>,
    /// Renders `/metrics`.
    pub metrics: PrometheusHandle,
    /// The dashboard's status feed (one read per second for every stream).
    pub feed: Feed,
    /// The OpenAPI document, made once from the routes (`/openapi.json`).
    pub document: std::sync::OnceLock<Arc<utoipa::openapi::OpenApi>>,
}

impl std::ops::Deref for AppState {
    type Target = State;

    fn deref(&self) -> &State {
        &self.0
    }
}

impl AppState {
    /// State over `service`; starts the dashboard's feed (needs a tokio runtime).
    pub fn new(
        service: DataAggregationService,
        admin_token: Option<String>,
        stream: StreamLimits,
    ) -> Self {
        Self(Arc::new(State {
            feed: Feed::start(service.db().control().clone(), stream),
            users: UserDirectory::new(service.db().clone()),
            service,
            admin_token: admin_token.filter(|t| !t.is_empty()).map(Arc::from),
            metrics: crate::telemetry::prometheus(),
            document: std::sync::OnceLock::new(),
        }))
    }
}

impl State {
    /// The database.
    pub fn db(&self) -> &Db {
        self.service.db()
    }
}
