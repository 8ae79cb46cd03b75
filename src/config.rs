//! Settings: read from the environment (and `.env`, loaded by `main`), each with a default.

mod env_file;

use std::time::Duration;

use clap::Args;

use crate::store::DatabaseUrl;

pub use self::env_file::{EnvFile, EnvFileError, Source};

const DEFAULT_DATABASE_URL: &str = "sqlite:simple-oauth2.db";
pub(crate) const DEFAULT_HOST: &str = "127.0.0.1";
pub(crate) const DEFAULT_PORT: u16 = 8000;
const DEFAULT_ACCESS_TOKEN_TTL: &str = "30m";
const DEFAULT_LOGIN_MAX_FAILURES: u32 = 10;
const DEFAULT_LOGIN_MAX_FAILURES_PER_ADDRESS: u32 = 100;
const DEFAULT_LOGIN_FAILURE_WINDOW: &str = "15m";
const DEFAULT_REFRESH_TOKEN_TTL: &str = "30d";
const DEFAULT_REFRESH_TOKEN_IDLE_TTL: &str = "7d";
const DEFAULT_REFRESH_TOKEN_REUSE_GRACE: &str = "30s";
const DEFAULT_MAX_SESSIONS_PER_USER: u32 = 100;
const DEFAULT_DPOP_PROOF_MAX_AGE: &str = "60s";

/// Where the database lives; shared by the server and every management command.
#[derive(Args, Debug, Clone)]
pub struct DatabaseSettings {
    /// `sqlite:` file (created and migrated when missing) or `postgres://` database
    /// (migrated; it must exist).
    #[arg(long, env = "DATABASE_URL", default_value = DEFAULT_DATABASE_URL)]
    pub database_url: DatabaseUrl,
}

/// Everything the server needs to run.
#[derive(Args, Debug, Clone)]
pub struct Settings {
    #[command(flatten)]
    pub database: DatabaseSettings,

    /// Address to listen on.
    #[arg(long, env = "HOST", default_value = DEFAULT_HOST)]
    pub host: String,

    /// Port to listen on (0 picks a free one).
    #[arg(long, env = "PORT", default_value_t = DEFAULT_PORT)]
    pub port: u16,

    /// The issuer identifier in the metadata document and introspection answers; default
    /// `http://HOST:PORT`.
    #[arg(long, env = "ISSUER", value_parser = parse_issuer)]
    pub issuer: Option<String>,

    /// `host:port` of a separate listener serving Prometheus metrics at `/metrics`; unset,
    /// there is none.
    #[arg(long, env = "METRICS_ADDR")]
    pub metrics_addr: Option<String>,

    /// Access-token lifetime, as a duration (`30m`, `1h`, `5s`).
    #[arg(long, env = "ACCESS_TOKEN_TTL", default_value = DEFAULT_ACCESS_TOKEN_TTL, value_parser = parse_positive_duration)]
    pub access_token_ttl: Duration,

    /// Failed logins for one username within the window before 429; 0 turns the limit off.
    #[arg(long, env = "LOGIN_MAX_FAILURES", default_value_t = DEFAULT_LOGIN_MAX_FAILURES)]
    pub login_max_failures: u32,

    /// Failed logins from one client address within the window before 429; 0 turns the limit off.
    #[arg(long, env = "LOGIN_MAX_FAILURES_PER_ADDRESS", default_value_t = DEFAULT_LOGIN_MAX_FAILURES_PER_ADDRESS)]
    pub login_max_failures_per_address: u32,

    /// The window failed logins are counted in, as a duration.
    #[arg(long, env = "LOGIN_FAILURE_WINDOW", default_value = DEFAULT_LOGIN_FAILURE_WINDOW, value_parser = parse_positive_duration)]
    pub login_failure_window: Duration,

    /// A session's absolute lifetime from its login; 0 turns refresh tokens off.
    #[arg(long, env = "REFRESH_TOKEN_TTL", default_value = DEFAULT_REFRESH_TOKEN_TTL, value_parser = parse_duration)]
    pub refresh_token_ttl: Duration,

    /// A refresh token unused this long is dead.
    #[arg(long, env = "REFRESH_TOKEN_IDLE_TTL", default_value = DEFAULT_REFRESH_TOKEN_IDLE_TTL, value_parser = parse_positive_duration)]
    pub refresh_token_idle_ttl: Duration,

    /// How long a spent refresh token may be presented again as a retry; 0 = never.
    #[arg(long, env = "REFRESH_TOKEN_REUSE_GRACE", default_value = DEFAULT_REFRESH_TOKEN_REUSE_GRACE, value_parser = parse_duration)]
    pub refresh_token_reuse_grace: Duration,

    /// Trusted-device cookies that spare known clients from the per-username lockout.
    #[arg(long, env = "LOGIN_DEVICE_COOKIES", default_value_t = true, action = clap::ArgAction::Set)]
    pub login_device_cookies: bool,

    /// Live sessions per user; a login beyond it ends the least recently used one.
    #[arg(long, env = "MAX_SESSIONS_PER_USER", default_value_t = DEFAULT_MAX_SESSIONS_PER_USER, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_sessions_per_user: u32,

    /// `true`: tokens only for token requests with a DPoP proof (RFC 9449).
    #[arg(long, env = "DPOP_REQUIRED", default_value_t = false, action = clap::ArgAction::Set)]
    pub dpop_required: bool,

    /// How far a DPoP proof's `iat` may be from now, before or after.
    #[arg(long, env = "DPOP_PROOF_MAX_AGE", default_value = DEFAULT_DPOP_PROOF_MAX_AGE, value_parser = parse_positive_duration)]
    pub dpop_proof_max_age: Duration,
    /// Comma-separated origins (`https://app.example.com`) whose pages may call the API
    /// from a browser (CORS); unset, none may.
    #[arg(long, env = "CORS_ALLOWED_ORIGINS", value_delimiter = ',', value_parser = parse_origin)]
    pub cors_allowed_origins: Vec<String>,
}

impl Settings {
    /// The defaults, for a database at `database_url`: what the service runs with when no
    /// variable is set.
    pub fn with_database(database_url: impl Into<String>) -> Self {
        Self {
            database: DatabaseSettings {
                database_url: DatabaseUrl::new(database_url),
            },
            host: DEFAULT_HOST.into(),
            port: DEFAULT_PORT,
            issuer: None,
            metrics_addr: None,
            access_token_ttl: default_duration(DEFAULT_ACCESS_TOKEN_TTL),
            login_max_failures: DEFAULT_LOGIN_MAX_FAILURES,
            login_max_failures_per_address: DEFAULT_LOGIN_MAX_FAILURES_PER_ADDRESS,
            login_failure_window: default_duration(DEFAULT_LOGIN_FAILURE_WINDOW),
            refresh_token_ttl: default_duration(DEFAULT_REFRESH_TOKEN_TTL),
            refresh_token_idle_ttl: default_duration(DEFAULT_REFRESH_TOKEN_IDLE_TTL),
            refresh_token_reuse_grace: default_duration(DEFAULT_REFRESH_TOKEN_REUSE_GRACE),
            max_sessions_per_user: DEFAULT_MAX_SESSIONS_PER_USER,
            login_device_cookies: true,
            dpop_required: false,
            dpop_proof_max_age: default_duration(DEFAULT_DPOP_PROOF_MAX_AGE),
            cors_allowed_origins: Vec::new(),
        }
    }
}

fn default_duration(value: &str) -> Duration {
    parse_duration(value).expect("built-in default durations are valid")
}

/// A duration (`30m`, `1h`, `5s`), where `0` is allowed and means "off".
fn parse_duration(value: &str) -> Result<Duration, String> {
    if value.trim() == "0" {
        return Ok(Duration::ZERO);
    }
    let duration = humantime::parse_duration(value).map_err(|err| err.to_string())?;
    if duration > MAX_DURATION {
        return Err("must be at most 100 years".into());
    }
    Ok(duration)
}

/// The longest lifetime or window a setting may give: 100 years of 365.25 days, as
/// humantime counts `100y`.
const MAX_DURATION: Duration = Duration::from_secs(3_155_760_000);

/// The issuer identifier (RFC 8414): an absolute `http` or `https` URL with no query or
/// fragment, kept as written but for a trailing slash. Tokens' DPoP proofs name it and
/// the device cookie is `Secure` by it, so a typo must not pass silently.
fn parse_issuer(value: &str) -> Result<String, String> {
    let issuer = value.trim();
    let uri: http::Uri = issuer
        .parse()
        .map_err(|_| format!("{issuer:?} is not a URL"))?;
    let scheme = uri.scheme_str().unwrap_or_default();
    if !matches!(scheme, "http" | "https") || uri.authority().is_none() {
        return Err(format!(
            "{issuer:?} is not an http(s) URL: write it as https://auth.example.com"
        ));
    }
    if issuer.contains(['?', '#']) {
        return Err(format!(
            "{issuer:?} has a query or fragment: an issuer has neither"
        ));
    }
    Ok(issuer.trim_end_matches('/').to_owned())
}

/// A zero lifetime or window would make every token or count die at birth; one past a
/// century would overflow the clock arithmetic it is added to.
fn parse_positive_duration(value: &str) -> Result<Duration, String> {
    let duration = parse_duration(value)?;
    if duration.is_zero() {
        return Err("must be longer than zero".into());
    }
    Ok(duration)
}

/// An origin as browsers send it in `Origin`: `scheme://host[:port]`, nothing after.
/// Matched exactly, so `https://app.example.com/` (with a slash) would never match.
fn parse_origin(value: &str) -> Result<String, String> {
    let origin = value.trim();
    let uri: http::Uri = origin
        .parse()
        .map_err(|_| format!("{origin:?} is not an origin"))?;
    let exact = uri.scheme().is_some()
        && uri.authority().is_some()
        && origin
            .split_once("://")
            .is_some_and(|(_, rest)| !rest.contains('/'));
    if !exact {
        return Err(format!(
            "{origin:?} is not an exact origin: scheme://host[:port], with no path or slash"
        ));
    }
    Ok(origin.to_owned())
}

/// An example of a good value for each setting that has no default to show.
pub fn example_value(variable: &str) -> Option<&'static str> {
    match variable {
        "ISSUER" => Some("https://auth.example.com"),
        "METRICS_ADDR" => Some("127.0.0.1:9000"),
        "CORS_ALLOWED_ORIGINS" => Some("https://app.example.com,http://localhost:3000"),
        "DATABASE_URL" => Some(DEFAULT_DATABASE_URL),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_issuer_is_an_absolute_http_url_without_query() {
        assert_eq!(
            parse_issuer("https://auth.example.com/").unwrap(),
            "https://auth.example.com"
        );
        assert_eq!(
            parse_issuer("http://127.0.0.1:8000").unwrap(),
            "http://127.0.0.1:8000"
        );
        for bad in [
            "auth.example.com",
            "ftp://x",
            "https://a.example/?q=1",
            "https://a#f",
            "",
        ] {
            assert!(parse_issuer(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_duration_past_a_century_is_refused() {
        assert!(parse_positive_duration("100y").is_ok());
        assert!(parse_positive_duration("400000000000y").is_err());
        assert!(parse_duration("200y").is_err());
    }

    #[test]
    fn origins_are_exact() {
        assert_eq!(
            parse_origin(" https://app.example.com "),
            Ok("https://app.example.com".into())
        );
        assert!(parse_origin("http://localhost:3000").is_ok());
        for bad in [
            "https://app.example.com/",
            "app.example.com",
            "*",
            "https://a.com/x",
        ] {
            assert!(parse_origin(bad).is_err(), "{bad}");
        }
    }
}
