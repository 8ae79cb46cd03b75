//! `users totp ...`: an operator gives a user a second factor (TOTP), active at once, or
//! takes it away.

use std::{
    io::{self, IsTerminal, Write},
    time::SystemTime,
};

use clap::{Args, Subcommand};
use qrcode::{QrCode, render::unicode::Dense1x2};
use secrecy::{ExposeSecret, SecretString};

use super::CliError;
use crate::{
    auth::{
        loggable,
        totp::{new_secret, otpauth_uri},
    },
    config::{DEFAULT_HOST, DEFAULT_PORT},
    server,
    store::{Store, unix_millis},
};

#[derive(Subcommand, Debug)]
pub(super) enum TotpCommand {
    /// Give a user a new second factor, active at once (it replaces any other): prints
    /// its otpauth:// URI, drawn as a QR code too when the output is a terminal
    Enable {
        username: String,
        #[command(flatten)]
        issuer: IssuerSettings,
    },
    /// Remove a user's second factor
    Disable { username: String },
}

/// What names the service in authenticator apps: the issuer's host, found as the server
/// finds its issuer.
#[derive(Args, Debug)]
pub(super) struct IssuerSettings {
    /// The service's issuer identifier; default `http://HOST:PORT`.
    #[arg(long, env = "ISSUER")]
    issuer: Option<String>,
    /// The address the service listens on.
    #[arg(long, env = "HOST", default_value = DEFAULT_HOST)]
    host: String,
    /// The port the service listens on.
    #[arg(long, env = "PORT", default_value_t = DEFAULT_PORT)]
    port: u16,
}

pub(super) async fn run(store: &Store, command: TotpCommand) -> Result<(), CliError> {
    match command {
        TotpCommand::Enable { username, issuer } => {
            let user = store
                .find_user(&username)
                .await?
                .ok_or(CliError::NoSuchUser(username))?;
            let issuer = server::issuer(issuer.issuer.as_deref(), &issuer.host, issuer.port);
            let secret = new_secret();
            let uri = otpauth_uri(&secret, &issuer, &user.username)
                .expect("a fresh 160-bit secret always makes a URI");
            store
                .set_totp_active(
                    user.id,
                    secret.expose_secret(),
                    unix_millis(SystemTime::now()),
                )
                .await?;
            audit("totp.enrolled", &user.username);
            print_enrolment(&uri, &user.username)?;
            Ok(())
        }
        TotpCommand::Disable { username } => {
            let user = store
                .find_user(&username)
                .await?
                .ok_or(CliError::NoSuchUser(username))?;
            if store.delete_totp(user.id).await? {
                audit("totp.removed", &user.username);
                println!("removed the second factor of {}", escape(&user.username));
            } else {
                println!("{} has no second factor", escape(&user.username));
            }
            Ok(())
        }
    }
}

/// The URI alone when the output is a file or a pipe (for scripts); on a terminal, a QR
/// code for a phone's camera above it.
fn print_enrolment(uri: &SecretString, username: &str) -> Result<(), CliError> {
    let mut out = io::stdout().lock();
    if out.is_terminal() {
        // Light modules on the terminal's dark background: the inverted code that
        // phone cameras read from a dark terminal.
        if let Ok(code) = QrCode::new(uri.expose_secret().as_bytes()) {
            let drawn = code
                .render::<Dense1x2>()
                .dark_color(Dense1x2::Light)
                .light_color(Dense1x2::Dark)
                .build();
            writeln!(out, "{drawn}")?;
        }
        writeln!(
            out,
            "second factor of {} is active; scan the code, or give the URI to an \
             authenticator app (shown this once):",
            escape(username)
        )?;
    }
    writeln!(out, "{}", uri.expose_secret())?;
    Ok(())
}

/// Control characters in a username are not sent to the terminal as they are.
fn escape(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().collect()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// An audit event for a second-factor change made on the command line.
fn audit(event: &'static str, username: &str) {
    tracing::info!(
        target: "audit", event, username = %loggable(username), source = "cli",
        "second factor changed on the command line"
    );
}
