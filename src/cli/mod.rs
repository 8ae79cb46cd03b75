//! The command line: run the service, migrate, and manage users and clients without
//! writing SQL. One file per subject: `serve.rs`, `users.rs`, `clients.rs`.

mod clients;
mod serve;
mod table;
mod totp;
mod users;

use std::{
    io::{self, BufRead},
    process::ExitCode,
};

use clap::{Args, Parser, Subcommand};
use secrecy::{ExposeSecret, SecretString};

use self::{clients::ClientsCommand, users::UsersCommand};
use crate::{
    auth::{MAX_PASSWORD_LEN, loggable, password::hash_password},
    config::{DatabaseSettings, Settings},
    scope::{Scope, UnknownScope},
    server,
};

#[derive(Parser, Debug)]
#[command(
    name = "simple-oauth2",
    version,
    about,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// With no command, run the service.
    #[command(flatten)]
    serve: Settings,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the service (the default)
    Serve(Settings),
    /// Create the database if missing, apply the migrations, and exit
    Migrate(DatabaseSettings),
    /// Add, list, change and remove users
    Users {
        #[command(flatten)]
        database: DatabaseSettings,
        #[command(subcommand)]
        command: UsersCommand,
    },
    /// Register, list and remove clients that may introspect tokens
    Clients {
        #[command(flatten)]
        database: DatabaseSettings,
        #[command(subcommand)]
        command: ClientsCommand,
    },
    /// Print an argon2id PHC string for a password, for seeding users in your own migrations
    HashPassword(PasswordInput),
}

#[derive(Args, Debug)]
pub(super) struct PasswordInput {
    /// Read the password from the first line of standard input instead of prompting
    #[arg(long)]
    password_stdin: bool,
}

#[derive(Debug, thiserror::Error)]
pub(super) enum CliError {
    #[error("user {0:?} already exists")]
    UserExists(String),
    #[error("client {0:?} already exists")]
    ClientExists(String),
    #[error("no client named {0:?}")]
    NoSuchClient(String),
    #[error("invalid client id: {0}")]
    InvalidClientId(&'static str),
    #[error("no user named {0:?}")]
    NoSuchUser(String),
    #[error("invalid username: {0}")]
    InvalidUsername(&'static str),
    #[error("invalid password: {0}")]
    InvalidPassword(&'static str),
    #[error("{0}; known scopes: {known}", known = Scope::all_names())]
    InvalidScope(#[from] UnknownScope),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("{0}")]
    Start(#[from] server::StartError),
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// Runs the command line; errors are one line on standard error and exit code 1.
pub async fn run(cli: Cli) -> ExitCode {
    let result = match cli.command {
        None => serve::serve(cli.serve).await,
        Some(Command::Serve(settings)) => serve::serve(settings).await,
        Some(Command::Migrate(database)) => serve::migrate(&database).await,
        Some(Command::Users { database, command }) => users::run(&database, command).await,
        Some(Command::Clients { database, command }) => clients::run(&database, command).await,
        Some(Command::HashPassword(input)) => read_password(&input).map(|password| {
            println!("{}", hash_password(&password));
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}

/// An audit event for a change made on the command line.
pub(super) fn audit(event: &'static str, name: &str) {
    tracing::info!(target: "audit", event, name = %loggable(name), source = "cli", "changed on the command line");
}

/// Reads a password from a hidden prompt (asked twice) or from standard input; never
/// from the command line, where other users of the machine could read it.
pub(super) fn read_password(input: &PasswordInput) -> Result<SecretString, CliError> {
    let password = if input.password_stdin {
        let mut line = String::new();
        io::stdin().lock().read_line(&mut line)?;
        let trimmed = line.trim_end_matches(['\n', '\r']).to_owned();
        SecretString::from(trimmed)
    } else {
        let first = SecretString::from(rpassword::prompt_password("Password: ")?);
        let second = SecretString::from(rpassword::prompt_password("Repeat password: ")?);
        if first.expose_secret() != second.expose_secret() {
            return Err(CliError::InvalidPassword("the two entries differ"));
        }
        first
    };
    if password.expose_secret().is_empty() {
        return Err(CliError::InvalidPassword("it is empty"));
    }
    if password.expose_secret().len() > MAX_PASSWORD_LEN {
        return Err(CliError::InvalidPassword("it is longer than 1024 bytes"));
    }
    Ok(password)
}
