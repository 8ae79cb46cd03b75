//! The `simple-oauth2` binary: settings from `.env` and the environment, then the CLI.

use std::process::ExitCode;

use clap::Parser;
use simple_oauth2::{cli, telemetry};

#[tokio::main]
async fn main() -> ExitCode {
    return_large_allocations_to_the_os();
    // A missing .env is fine; a broken one is worth stopping for.
    if let Err(err) = dotenvy::dotenv()
        && !err.not_found()
    {
        eprintln!("error: cannot read .env: {err}");
        return ExitCode::FAILURE;
    }
    let cli = cli::Cli::parse();
    if let Err(err) = telemetry::init() {
        eprintln!("error: {err}");
        return ExitCode::FAILURE;
    }
    cli::run(cli).await
}

/// Each argon2 job allocates 19 MiB. glibc's malloc raises its mmap threshold after the
/// first such block is freed and then keeps later ones in per-thread arenas, so a login
/// flood grew the resident set to ~500 MiB. A fixed threshold sends them back to the OS.
fn return_large_allocations_to_the_os() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tuning; called before any other thread runs
    // user code that allocates large blocks.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}
