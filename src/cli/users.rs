//! `users ...`: adding, listing, changing and removing users, and ending their sessions.

use std::{collections::HashMap, time::SystemTime};

use clap::Subcommand;
use secrecy::SecretString;

use super::{
    CliError, PasswordInput, audit, explain_write_error, read_password,
    table::{format_time, print_columns, print_fields},
    totp::{self, TotpCommand},
};
use crate::{
    auth::{MAX_USERNAME_LEN, password::hash_password},
    config::DatabaseSettings,
    scope::Scopes,
    store::{SessionSummary, Store, millis, unix_millis},
    users::{NewUser, User},
};

#[derive(Subcommand, Debug)]
pub(super) enum UsersCommand {
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
    /// Give a user a second factor (TOTP), or remove it
    Totp {
        #[command(subcommand)]
        command: TotpCommand,
    },
}

pub(super) async fn run(
    database: &DatabaseSettings,
    command: UsersCommand,
) -> Result<(), CliError> {
    // Check what can be checked before touching the database or asking for a password.
    if let UsersCommand::Add {
        username, scopes, ..
    } = &command
    {
        check_username(username)?;
        Scopes::parse(scopes)?;
    }
    // A new user's password is asked for before anything is created.
    let password = match &command {
        UsersCommand::Add { password, .. } => Some(read_password(password)?),
        _ => None,
    };
    let store = Store::connect(&database.database_url).await?;
    let result = change_users(&store, command, password)
        .await
        .map_err(|err| explain_write_error(&store, err));
    store.close().await;
    result
}

async fn change_users(
    store: &Store,
    command: UsersCommand,
    new_password: Option<SecretString>,
) -> Result<(), CliError> {
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
            let password = match new_password {
                Some(password) => password,
                None => read_password(&password)?,
            };
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
            print_table(&store.list_users().await?, &store.totp_states().await?);
            Ok(())
        }
        UsersCommand::Show { username } => {
            let user = store
                .find_user(&username)
                .await?
                .ok_or(CliError::NoSuchUser(username))?;
            let totp = store.find_totp(user.id).await?.map(|f| f.is_active());
            print_user(&user, totp);
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
            let idle = millis(refresh_token_idle_ttl);
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
        UsersCommand::Totp { command } => totp::run(store, command).await,
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

/// A second factor's state, for people: `yes` (active), `pending` or `no`.
fn totp_state(active: Option<bool>) -> &'static str {
    match active {
        Some(true) => "yes",
        Some(false) => "pending",
        None => "no",
    }
}

fn print_user(user: &User, totp: Option<bool>) {
    print_fields(&[
        ("username", &user.username),
        ("email", user.email.as_deref().unwrap_or("")),
        ("full name", user.full_name.as_deref().unwrap_or("")),
        ("disabled", &user.disabled.to_string()),
        ("scopes", &user.allowed_scopes().to_string()),
        ("totp", totp_state(totp)),
    ]);
}

fn print_table(users: &[User], totp: &HashMap<i64, bool>) {
    let rows: Vec<[String; 6]> = users
        .iter()
        .map(|u| {
            [
                u.username.clone(),
                u.email.clone().unwrap_or_default(),
                u.full_name.clone().unwrap_or_default(),
                if u.disabled { "yes" } else { "no" }.to_owned(),
                u.allowed_scopes().to_string(),
                totp_state(totp.get(&u.id).copied()).to_owned(),
            ]
        })
        .collect();
    let header = [
        "USERNAME",
        "EMAIL",
        "FULL NAME",
        "DISABLED",
        "SCOPES",
        "TOTP",
    ];
    print_columns(header, &rows);
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
