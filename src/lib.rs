//! simple-oauth2: FastAPI's "Simple OAuth2 with Password and Bearer" in Rust, made secure.

/// The HTTP API: operations, docs, extractors, and what wraps every request.
pub mod api;
/// Logging in, refreshing, bearer checks, introspection, throttling: no HTTP, no SQL.
pub mod auth;
/// The command line: serve, migrate, users, clients, hash-password.
pub mod cli;
/// Settings from the environment, with defaults.
pub mod config;
/// Accepting and serving connections: cap, timeouts, back-off, graceful drain.
pub mod connections;
/// The one place errors become HTTP responses.
pub mod error;
/// Prometheus metrics, served on `METRICS_ADDR`.
pub mod metrics;
/// The OAuth2 scopes and sets of them.
pub mod scope;
/// The running service: database, listeners, change watch, housekeeping, shutdown.
pub mod server;
/// Every query, on SQLite or PostgreSQL, behind one interface.
pub mod store;
/// Logging set-up: text or JSON.
pub mod telemetry;
/// The user record.
pub mod users;

pub use api::app;
pub use config::Settings;
pub use server::Server;
