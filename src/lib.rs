//! simple-oauth2: FastAPI's "Simple OAuth2 with Password and Bearer" in Rust, made secure.

pub mod api;
pub mod auth;
pub mod cli;
pub mod config;
pub mod connections;

pub mod error;
pub mod metrics;
pub mod scope;
pub mod server;
pub mod store;
pub mod telemetry;
pub mod users;

pub use api::app;
pub use config::Settings;
pub use server::Server;
