//! One integration-test binary: every test talks HTTP to a real server on a database of
//! its own. Tests in `both_backends!` run twice: on a temporary SQLite file and on a
//! PostgreSQL database made for them (skipped, loudly, when no server answers).

#[macro_use]
mod helpers;

mod browser;
mod cli;
mod cors;
mod devices;
mod docs;
mod dpop;
mod forms;
mod hardening;
mod introspection;
mod lifecycle;
mod logs;
mod operations;
mod refresh;
mod reliability;
mod replicas;
mod robustness;
mod scopes;
mod sessions;
mod settings;
mod storage;
mod throttle;
mod token;
mod totp;
mod users_me;
