//! The HTTP ceiling of the machine, for the benchmark: a bare poem server answering a
//! constant, with no authentication, logging or database. `PORT` (default 8000) on
//! 127.0.0.1. Run: `cargo run --release --example ceiling`.

use poem::{Route, Server, get, handler, listener::TcpListener};

#[handler]
fn constant() -> &'static str {
    "ok"
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let port = std::env::var("PORT").unwrap_or_else(|_| "8000".into());
    Server::new(TcpListener::bind(format!("127.0.0.1:{port}")))
        .run(Route::new().at("/", get(constant)))
        .await
}
