//! The `simple-oauth2` binary: settings from `.env` and the environment, then the CLI.

use std::{path::Path, process::ExitCode};

use simple_oauth2::{cli, config::EnvFile, telemetry};

#[tokio::main]
async fn main() -> ExitCode {
    return_large_allocations_to_the_os();
    // A missing .env is fine; a broken one, or one that says two things, is worth
    // stopping for.
    let path = Path::new(".env");
    let env_file = match EnvFile::read(path).and_then(|file| file.load(path).map(|()| file)) {
        Ok(env_file) => env_file,
        Err(err) => return fail(err),
    };
    let cli = match cli::parse(std::env::args_os(), &env_file) {
        Ok(cli) => cli,
        Err(cli::ParseError::Clap(err)) => err.exit(),
        Err(cli::ParseError::Setting(message)) => return fail(message),
    };
    if let Err(err) = telemetry::init(&env_file) {
        return fail(err);
    }
    let settings = cli::known_settings();
    for (key, line, setting) in env_file.near_misses(&settings) {
        tracing::warn!("{key} in .env line {line} is not a setting; did you mean {setting}?");
    }
    cli::run(cli).await
}

/// One line on standard error, and the exit code of every failed start.
fn fail(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::FAILURE
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
