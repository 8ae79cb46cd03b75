//! One integration-test binary: every test talks HTTP to a real server on its own
//! temporary SQLite file.

mod browser;
mod cli;
mod docs;
mod helpers;
mod lifecycle;
mod reliability;
mod scopes;
mod storage;
mod throttle;
mod token;
mod users_me;
