//! The command line: run the service, migrate, and manage users and clients without
//! writing SQL. One file per subject: `serve.rs`, `users.rs`, `clients.rs`.

mod clients;
mod parse;
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

pub use self::parse::{ParseError, known_settings, parse};
use self::{clients::ClientsCommand, users::UsersCommand};
use crate::{
    auth::{MAX_PASSWORD_LEN, loggable, password::hash_password},
    config::{DatabaseSettings, Settings},
    scope::{Scope, UnknownScope},
    server,
    store::{ConnectError, Store},
};

/// Each command reads only the settings it uses: with no command, `serve` is meant, and
/// its settings are `simple-oauth2 serve --help`.
#[derive(Parser, Debug)]
#[command(name = "simple-oauth2", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the service (the default: `simple-oauth2 --port 9000` is `serve --port 9000`)
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
    #[error("cannot open the database: {0}")]
    Connect(#[from] ConnectError),
    #[error("cannot change the database: {0}")]
    Write(ConnectError),
    #[error(
        "there is no terminal to ask for the password on ({0}); send it on standard input \
         with --password-stdin, e.g. printf '%s\\n' \"$PASSWORD\" | simple-oauth2 users add bob --password-stdin"
    )]
    NoTerminal(io::Error),
    #[error("{0}")]
    Start(#[from] server::StartError),
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// Runs the command line; errors are one line on standard error and exit code 1.
pub async fn run(cli: Cli) -> ExitCode {
    let result = match cli.command {
        Command::Serve(settings) => serve::serve(settings).await,
        Command::Migrate(database) => serve::migrate(&database).await,
        Command::Users { database, command } => users::run(&database, command).await,
        Command::Clients { database, command } => clients::run(&database, command).await,
        Command::HashPassword(input) => read_password(&input).map(|password| {
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

/// A failed change, with the file or folder named when the database cannot be written.
pub(super) fn explain_write_error(store: &Store, err: CliError) -> CliError {
    match err {
        CliError::Database(err) => match store.explain_write_error(err) {
            ConnectError::Database(err) => CliError::Database(err),
            explained => CliError::Write(explained),
        },
        other => other,
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
        let prompt = |text| rpassword::prompt_password(text).map_err(CliError::NoTerminal);
        let first = SecretString::from(prompt("Password: ")?);
        let second = SecretString::from(prompt("Repeat password: ")?);
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
