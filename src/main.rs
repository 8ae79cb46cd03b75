//! The `simple-oauth2` binary: settings from `.env` and the environment, then the CLI.

use std::process::ExitCode;

use clap::Parser;
use simple_oauth2::{cli, telemetry};

#[tokio::main]
async fn main() -> ExitCode {
    // A missing .env is fine; a broken one is worth stopping for.
    if let Err(err) = dotenvy::dotenv()
        && !err.not_found()
    {
        eprintln!("error: cannot read .env: {err}");
        return ExitCode::FAILURE;
    }
    let cli = cli::Cli::parse();
    telemetry::init();
    cli::run(cli).await
}
