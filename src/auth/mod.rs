//! Authentication: the [`Auth`] service every request shares, and what its flows have in
//! common. Each flow has a file of its own: `login.rs` (the password grant), `refresh.rs`
//! (the refresh grant), `bearer.rs` (a bearer token to a user), `revocation.rs` (RFC 7009),
//! `introspection.rs` (RFC 7662, with client authentication), `second_factor.rs` (TOTP,
//! RFC 6238), `dpop.rs` (RFC 9449 proofs that bind tokens to a client's key),
//! `devices.rs` (trusted-device cookies). Talks to the database
//! through [`Store`] only, and knows nothing of HTTP.

mod bearer;
pub mod cache;
pub mod clients;
pub mod devices;
pub mod dpop;
mod errors;
mod introspection;
mod login;
pub mod password;
mod proof_keys;
mod refresh;
mod replay;
mod revocation;
pub mod second_factor;
mod signatures;
pub mod throttle;
pub mod token;
pub mod totp;

use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};

pub use self::{
    bearer::FromCache,
    dpop::{DpopHeader, DpopRequest, ProofError, TokenType},
    errors::{
        AccessError, ClientAuthError, FieldError, FieldErrorKind, IntrospectionError, LoginError,
        Outcome,
    },
    introspection::{Introspection, TokenUse},
    login::{ClientCredentials, LoginRequest},
    refresh::RefreshRequest,
    second_factor::{Amr, Enrolment, SecondFactorError},
};
use self::{
    cache::TokenCache, clients::ClientSecrets, dpop::ProofChecker, password::Hasher,
    throttle::LoginThrottle,
};
use crate::{
    config::Settings,
    metrics::Metrics,
    scope::Scopes,
    store::{Store, millis, unix_millis},
};

/// Longer usernames and passwords are refused without hashing them.
pub const MAX_USERNAME_LEN: usize = 128;
pub const MAX_PASSWORD_LEN: usize = 1024;

/// Longer client ids are not remembered with a session.
const MAX_CLIENT_ID_LEN: usize = 128;

/// The grant types of the token endpoint, in the order they are documented.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrantType {
    Password,
    RefreshToken,
}

impl GrantType {
    pub const ALL: [GrantType; 2] = [GrantType::Password, GrantType::RefreshToken];

    pub const fn name(self) -> &'static str {
        match self {
            GrantType::Password => "password",
            GrantType::RefreshToken => "refresh_token",
        }
    }
}

/// A name as it may appear in a log: as typed, but no longer than this.
const MAX_LOGGED_NAME_CHARS: usize = 64;

/// `name` cut to [`MAX_LOGGED_NAME_CHARS`], for audit events: a login attempt's username
/// is whatever the client sent.
pub fn loggable(name: &str) -> String {
    let mut chars = name.chars();
    let mut shown: String = chars.by_ref().take(MAX_LOGGED_NAME_CHARS).collect();
    if chars.next().is_some() {
        shown.push('…');
    }
    shown
}

/// What a successful login or refresh hands out.
pub struct IssuedToken {
    pub access_token: String,
    pub expires_in: Duration,
    pub scopes: Scopes,
    /// `None` when refresh tokens are switched off.
    pub refresh_token: Option<String>,
    /// The trusted-device cookie to set (password logins only, when the feature is on).
    pub device_cookie: Option<String>,
    /// `Dpop` when the tokens are bound to the key of the request's DPoP proof.
    pub token_type: TokenType,
}

/// How long sessions and their refresh tokens live (RFC 9700, section 4.14.2).
#[derive(Debug, Clone, Copy)]
pub struct RefreshPolicy {
    /// A session's absolute lifetime from its login; `None`: no refresh tokens.
    pub ttl: Option<Duration>,
    /// A refresh token unused this long is dead.
    pub idle_ttl: Duration,
    /// How long a spent refresh token may be presented again as a retry.
    pub reuse_grace: Duration,
}

impl RefreshPolicy {
    /// The refresh-token lifetimes the settings ask for; a zero `REFRESH_TOKEN_TTL` turns
    /// refresh tokens off.
    pub fn from_settings(settings: &Settings) -> Self {
        Self {
            ttl: (!settings.refresh_token_ttl.is_zero()).then_some(settings.refresh_token_ttl),
            idle_ttl: settings.refresh_token_idle_ttl,
            reuse_grace: settings.refresh_token_reuse_grace,
        }
    }
}

/// Logs users in and checks their tokens; shared by every request.
pub struct Auth {
    store: Store,
    metrics: Arc<Metrics>,
    hasher: Hasher,
    throttle: LoginThrottle,
    tokens: TokenCache,
    client_secrets: ClientSecrets,
    access_ttl: Duration,
    refresh: RefreshPolicy,
    max_sessions_per_user: u32,
    device_cookies: bool,
    failure_window: Duration,
    issuer: String,
    dpop: ProofChecker,
    /// Tokens only for requests with a DPoP proof.
    dpop_required: bool,
}

impl Auth {
    /// `issuer`: this service's issuer identifier (the `ISSUER` setting, or where it
    /// listens).
    pub fn new(store: Store, settings: &Settings, issuer: String) -> Self {
        let metrics = Arc::new(Metrics::default());
        Self {
            tokens: TokenCache::new(store.changes().clone(), &metrics),
            client_secrets: ClientSecrets::new(store.changes().clone()),
            hasher: Hasher::new(&metrics),
            metrics,
            store,
            throttle: LoginThrottle::new(
                settings.login_max_failures,
                settings.login_max_failures_per_address,
                settings.login_failure_window,
            ),
            access_ttl: settings.access_token_ttl,
            refresh: RefreshPolicy::from_settings(settings),
            max_sessions_per_user: settings.max_sessions_per_user,
            device_cookies: settings.login_device_cookies,
            failure_window: settings.login_failure_window,
            issuer,
            dpop: ProofChecker::new(settings.dpop_proof_max_age),
            dpop_required: settings.dpop_required,
        }
    }

    /// This service's issuer identifier (RFC 8414).
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The service's metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Whether the database answers (see [`Store::ping`]).
    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        let result = self.store.ping().await;
        if result.is_err() {
            self.metrics.database_error();
        }
        result
    }

    /// Counts a token-endpoint request refused before it reached a grant (malformed, or
    /// a grant type that is not supported).
    pub fn refused_token_request(&self, err: &LoginError) {
        self.metrics.login(err.outcome());
    }

    /// How often the token cache answered a bearer check, and how often it could not.
    pub fn token_cache_stats(&self) -> cache::CacheStats {
        self.tokens.stats()
    }

    /// How many argon2 jobs logins have run so far.
    pub fn password_hash_jobs(&self) -> u64 {
        self.hasher.jobs()
    }

    /// The grant types the token endpoint accepts with these settings.
    pub fn grant_types(&self) -> Vec<GrantType> {
        GrantType::ALL
            .into_iter()
            .filter(|grant| *grant != GrantType::RefreshToken || self.refresh.ttl.is_some())
            .collect()
    }

    /// Counts an outcome with `record` (`ok`: the word for a success), and a database
    /// error when that is what failed.
    fn observe(
        &self,
        outcome: Result<&'static str, &impl Outcome>,
        record: fn(&Metrics, &'static str),
    ) {
        let word = match outcome {
            Ok(word) => word,
            Err(err) => {
                if err.is_unavailable() {
                    self.metrics.database_error();
                }
                err.outcome()
            }
        };
        record(&self.metrics, word);
    }

    /// Housekeeping: deletes what can never be used again (expired and revoked tokens,
    /// dead sessions, ended throttle windows). Returns how many rows went.
    pub async fn sweep(&self) -> Result<u64, sqlx::Error> {
        self.tokens.prune();
        self.dpop.prune();
        self.store
            .delete_dead(
                unix_millis(SystemTime::now()),
                millis(self.refresh.idle_ttl),
                millis(self.failure_window),
            )
            .await
    }

    /// How often [`Auth::sweep`] should run: often enough that dead rows do not pile up,
    /// rarely enough to cost nothing.
    pub fn sweep_interval(&self) -> Duration {
        self.access_ttl
            .clamp(Duration::from_secs(1), Duration::from_secs(60))
    }
}
