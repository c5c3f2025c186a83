//! # gistfans — the server
//!
//! A thin axum layer over `gistfans-data`: routes, the one `ApiError`,
//! extractors, metrics, OpenAPI, the HTML pages (profile, live dashboard),
//! and the CLI (`serve`, `migrate`, `seed`, `bench`).
//! `server::Server::build` builds the whole server from a plain
//! `server::ServerConfig`, for `gistfans serve` and the tests alike.

#![forbid(unsafe_code)]

pub mod bench;
pub mod cli;
pub mod dashboard;
pub mod error;
pub mod extract;
pub mod listener;
pub mod openapi;
pub mod pages;
pub mod request_limits;
pub mod routes;
pub mod server;
pub mod state;
pub mod telemetry;
