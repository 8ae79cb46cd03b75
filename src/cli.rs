//! The command line: run the service, migrate, and manage users without writing SQL.

use std::{
    io::{self, BufRead, Write},
    process::ExitCode,
    time::SystemTime,
};

use clap::{Args, Parser, Subcommand};
use secrecy::{ExposeSecret, SecretString};

use crate::{
    auth::{
        MAX_PASSWORD_LEN, MAX_USERNAME_LEN,
        clients::{check_client_id, generate_secret},
        loggable,
        password::hash_password,
    },
    config::{DatabaseSettings, Settings},
    scope::{Scope, Scopes, UnknownScope},
    server::{self, Server},
    store::{SessionSummary, Store, unix_millis},
    telemetry::{self, LogFormat},
    users::{NewUser, User},
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

#[derive(Subcommand, Debug)]
enum ClientsCommand {
    /// Register a client; its secret is printed once, on standard output
    Add { client_id: String },
    /// List the registered clients (never a secret)
    List,
    /// Remove a client: its secret stops working at once
    Delete { client_id: String },
}

#[derive(Subcommand, Debug)]
enum UsersCommand {
    /// Add a user; the password is asked for (or read with --password-stdin)
    Add {
        username: String,
        #[arg(long)]
        email: Option<String>,
        #[arg(long)]
        full_name: Option<String>,
        /// Space-separated scopes the user may be granted
        #[arg(long, default_value = "me")]
        scopes: String,
        /// Create the user disabled
        #[arg(long)]
        disabled: bool,
        #[command(flatten)]
        password: PasswordInput,
    },
    /// List every user (never their hashes)
    List,
    /// Show one user
    Show { username: String },
    /// Disable a user: their tokens stop working
    Disable { username: String },
    /// Enable a disabled user
    Enable { username: String },
    /// Delete a user and their tokens
    Delete { username: String },
    /// Set a new password; the user's tokens are revoked
    SetPassword {
        username: String,
        #[command(flatten)]
        password: PasswordInput,
    },
    /// Set the scopes a user may be granted, e.g. "me items"
    SetScopes { username: String, scopes: String },
    /// List a user's live sessions (one per login; never a token)
    Sessions {
        username: String,
        /// How long an unused refresh token lives, to tell which sessions are live
        #[arg(long, env = "REFRESH_TOKEN_IDLE_TTL", default_value = "7d", value_parser = humantime::parse_duration)]
        refresh_token_idle_ttl: std::time::Duration,
    },
    /// End every session of a user: their refresh and access tokens stop working
    Logout { username: String },
}

#[derive(Args, Debug)]
struct PasswordInput {
    /// Read the password from the first line of standard input instead of prompting
    #[arg(long)]
    password_stdin: bool,
}

#[derive(Debug, thiserror::Error)]
enum CliError {
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
        None => serve(cli.serve).await,
        Some(Command::Serve(settings)) => serve(settings).await,
        Some(Command::Migrate(database)) => migrate(&database).await,
        Some(Command::Users { database, command }) => users_command(&database, command).await,
        Some(Command::Clients { database, command }) => clients_command(&database, command).await,
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

async fn serve(settings: Settings) -> Result<(), CliError> {
    let server = Server::build(&settings).await?;
    // On standard output whatever RUST_LOG says: it is how to reach the service.
    let address = server.local_addr();
    let line = format!("serving on http://{address}, docs at http://{address}/docs");
    match telemetry::format() {
        LogFormat::Text => println!("{line}"),
        // Shaped like the JSON log lines, so a log shipper reads it like them.
        LogFormat::Json => println!(
            "{}",
            serde_json::json!({
                "timestamp": humantime::format_rfc3339_micros(SystemTime::now()).to_string(),
                "level": "INFO",
                "fields": {"message": line, "address": address.to_string()},
                "target": "simple_oauth2::cli",
            })
        ),
    }
    server.run_until(server::shutdown_signal()).await?;
    Ok(())
}

async fn migrate(database: &DatabaseSettings) -> Result<(), CliError> {
    Store::connect(&database.database_url).await?.close().await;
    println!("database {} is up to date", database.database_url);
    Ok(())
}

async fn users_command(database: &DatabaseSettings, command: UsersCommand) -> Result<(), CliError> {
    // Check what can be checked before touching the database or asking for a password.
    if let UsersCommand::Add {
        username, scopes, ..
    } = &command
    {
        check_username(username)?;
        Scopes::parse(scopes)?;
    }
    let store = Store::connect(&database.database_url).await?;
    let result = change_users(&store, command).await;
    store.close().await;
    result
}

/// An audit event for a change made on the command line.
fn audit(event: &'static str, name: &str) {
    tracing::info!(target: "audit", event, name = %loggable(name), source = "cli", "changed on the command line");
}

async fn change_users(store: &Store, command: UsersCommand) -> Result<(), CliError> {
    let found = |done: bool, username: String, event: &'static str| {
        if done {
            audit(event, &username);
            Ok(())
        } else {
            Err(CliError::NoSuchUser(username))
        }
    };
    match command {
        UsersCommand::Add {
            username,
            email,
            full_name,
            scopes,
            disabled,
            password,
        } => {
            let password = read_password(&password)?;
            let new_user = NewUser {
                username: username.clone(),
                email,
                full_name,
                disabled,
                scopes: Scopes::parse(&scopes)?,
                hashed_password: hash_password(&password),
            };
            let user = store
                .insert_user(&new_user)
                .await?
                .ok_or(CliError::UserExists(username))?;
            println!("added user {}", user.username);
            audit("user.added", &user.username);
            Ok(())
        }
        UsersCommand::List => {
            print_table(&store.list_users().await?);
            Ok(())
        }
        UsersCommand::Show { username } => {
            let user = store
                .find_user(&username)
                .await?
                .ok_or(CliError::NoSuchUser(username))?;
            print_user(&user);
            Ok(())
        }
        UsersCommand::Disable { username } => found(
            store.set_disabled(&username, true).await?,
            username,
            "user.disabled",
        ),
        UsersCommand::Enable { username } => found(
            store.set_disabled(&username, false).await?,
            username,
            "user.enabled",
        ),
        UsersCommand::Delete { username } => found(
            store.delete_user(&username).await?,
            username,
            "user.deleted",
        ),
        UsersCommand::SetPassword { username, password } => {
            if store.find_user(&username).await?.is_none() {
                return Err(CliError::NoSuchUser(username));
            }
            let hashed = hash_password(&read_password(&password)?);
            let now = unix_millis(SystemTime::now());
            found(
                store.set_password_hash(&username, &hashed, now).await?,
                username,
                "user.password_changed",
            )
        }
        UsersCommand::SetScopes { username, scopes } => {
            let scopes = Scopes::parse(&scopes)?;
            found(
                store.set_scopes(&username, &scopes).await?,
                username,
                "user.scopes_changed",
            )
        }
        UsersCommand::Sessions {
            username,
            refresh_token_idle_ttl,
        } => {
            let now = unix_millis(SystemTime::now());
            let idle = crate::store::millis(refresh_token_idle_ttl);
            let sessions = store
                .list_sessions(&username, now, idle)
                .await?
                .ok_or(CliError::NoSuchUser(username))?;
            print_sessions(&sessions);
            Ok(())
        }
        UsersCommand::Logout { username } => {
            let now = unix_millis(SystemTime::now());
            let ended = store
                .logout_user(&username, now)
                .await?
                .ok_or_else(|| CliError::NoSuchUser(username.clone()))?;
            println!("ended {ended} session(s) of {username}");
            audit("user.logged_out", &username);
            Ok(())
        }
    }
}

async fn clients_command(
    database: &DatabaseSettings,
    command: ClientsCommand,
) -> Result<(), CliError> {
    if let ClientsCommand::Add { client_id } = &command {
        check_client_id(client_id).map_err(CliError::InvalidClientId)?;
    }
    let store = Store::connect(&database.database_url).await?;
    let result = change_clients(&store, command).await;
    store.close().await;
    result
}

async fn change_clients(store: &Store, command: ClientsCommand) -> Result<(), CliError> {
    match command {
        ClientsCommand::Add { client_id } => {
            let secret = generate_secret();
            let now = unix_millis(SystemTime::now());
            if !store
                .insert_client(&client_id, secret.digest.as_bytes(), now)
                .await?
            {
                return Err(CliError::ClientExists(client_id));
            }
            // The only time the secret is shown: it is not stored.
            println!("{}", secret.token);
            tracing::info!("added client {client_id}; its secret (above) is shown only now");
            audit("client.added", &client_id);
            Ok(())
        }
        ClientsCommand::List => {
            let rows: Vec<[String; 2]> = store
                .list_clients()
                .await?
                .into_iter()
                .map(|client| [client.client_id, format_time(client.created_at)])
                .collect();
            print_columns(["CLIENT ID", "ADDED"], &rows);
            Ok(())
        }
        ClientsCommand::Delete { client_id } => {
            if store.delete_client(&client_id).await? {
                audit("client.deleted", &client_id);
                Ok(())
            } else {
                Err(CliError::NoSuchClient(client_id))
            }
        }
    }
}

fn check_username(username: &str) -> Result<(), CliError> {
    if username.is_empty() {
        return Err(CliError::InvalidUsername("it is empty"));
    }
    if username.len() > MAX_USERNAME_LEN {
        return Err(CliError::InvalidUsername("it is longer than 128 bytes"));
    }
    if username
        .chars()
        .any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(CliError::InvalidUsername(
            "it contains white space or control characters",
        ));
    }
    Ok(())
}

/// Reads a password from a hidden prompt (asked twice) or from standard input; never
/// from the command line, where other users of the machine could read it.
fn read_password(input: &PasswordInput) -> Result<SecretString, CliError> {
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

fn print_user(user: &User) {
    let mut out = io::stdout().lock();
    let _ = writeln!(out, "username:  {}", user.username);
    let _ = writeln!(out, "email:     {}", user.email.as_deref().unwrap_or(""));
    let _ = writeln!(
        out,
        "full name: {}",
        user.full_name.as_deref().unwrap_or("")
    );
    let _ = writeln!(out, "disabled:  {}", user.disabled);
    let _ = writeln!(out, "scopes:    {}", user.allowed_scopes());
}

fn print_table(users: &[User]) {
    let rows: Vec<[String; 5]> = users
        .iter()
        .map(|u| {
            [
                u.username.clone(),
                u.email.clone().unwrap_or_default(),
                u.full_name.clone().unwrap_or_default(),
                if u.disabled { "yes" } else { "no" }.to_owned(),
                u.allowed_scopes().to_string(),
            ]
        })
        .collect();
    let header = ["USERNAME", "EMAIL", "FULL NAME", "DISABLED", "SCOPES"];
    print_columns(header, &rows);
}

/// A stored time (Unix ms) as RFC 3339, to the second.
fn format_time(millis: i64) -> String {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(millis.max(0) as u64);
    humantime::format_rfc3339_seconds(at).to_string()
}

fn print_sessions(sessions: &[SessionSummary]) {
    let rows: Vec<[String; 5]> = sessions
        .iter()
        .map(|s| {
            [
                format_time(s.started_at),
                format_time(s.refreshed_at),
                format_time(s.expires_at),
                Scopes::from_stored(&s.scopes).to_string(),
                s.client_id.clone().unwrap_or_default(),
            ]
        })
        .collect();
    let header = ["STARTED", "LAST REFRESHED", "ENDS", "SCOPES", "CLIENT"];
    print_columns(header, &rows);
}

/// Prints rows under a header, each column as wide as its widest cell.
fn print_columns<const N: usize>(header: [&str; N], rows: &[[String; N]]) {
    let header = header.map(String::from);
    let mut widths = header.clone().map(|h| h.chars().count());
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = io::stdout().lock();
    for row in std::iter::once(&header).chain(rows) {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        let _ = writeln!(out, "{}", line.join("  ").trim_end());
    }
}
