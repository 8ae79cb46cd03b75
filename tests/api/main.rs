//! One integration-test binary: every test talks HTTP to a real server on a database of
//! its own. Tests in `both_backends!` run twice: on a temporary SQLite file and on a
//! PostgreSQL database made for them (skipped, loudly, when no server answers).

#[macro_use]
mod helpers;

mod browser;
mod cli;
mod cors;
mod docs;
mod forms;
mod hardening;
mod introspection;
mod lifecycle;
mod logs;
mod operations;
mod refresh;
mod reliability;
mod replicas;
mod scopes;
mod settings;
mod storage;
mod throttle;
mod token;
mod users_me;
