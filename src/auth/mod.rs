//! Authentication: logging in with a password, and turning a bearer token into a user.

mod cache;
pub mod password;
pub mod throttle;
pub mod token;

use std::{
    net::{IpAddr, Ipv4Addr},
    sync::Arc,
    time::{Duration, SystemTime},
};

use secrecy::{ExposeSecret, SecretString};
use sqlx::SqlitePool;

use self::{
    cache::TokenCache,
    password::{Hasher, Verdict},
    throttle::LoginThrottle,
    token::{NewToken, TokenDigest},
};
use crate::{
    config::Settings,
    db::CommitWatch,
    scope::{Scope, Scopes, UnknownScope},
    users,
};

/// Longer usernames and passwords are refused without hashing them.
pub const MAX_USERNAME_LEN: usize = 128;
pub const MAX_PASSWORD_LEN: usize = 1024;

/// A form field that is wrong in a way RFC 6749 calls `invalid_request`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub kind: FieldErrorKind,
    pub field: &'static str,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldErrorKind {
    /// Absent or empty.
    Missing,
    /// Given more than once (RFC 6749, section 3.2).
    Repeated,
}

/// Why a token endpoint refused a request.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    #[error("malformed request")]
    InvalidRequest(Vec<FieldError>),
    #[error("unsupported grant type")]
    UnsupportedGrantType,
    #[error("{0}")]
    InvalidScope(UnknownScope),
    #[error("incorrect username or password")]
    InvalidGrant,
    #[error("too many failed logins")]
    TooManyAttempts(Duration),
    #[error("database unavailable: {0}")]
    Unavailable(#[from] sqlx::Error),
}

/// Why a bearer token does not give access.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error("no bearer token")]
    NotAuthenticated,
    #[error("more than one Authorization header")]
    InvalidRequest,
    #[error("invalid token")]
    InvalidToken,
    #[error("the token lacks the {0:?} scope")]
    InsufficientScope(Scope),
    #[error("inactive user")]
    InactiveUser,
    #[error("database unavailable: {0}")]
    Unavailable(#[from] sqlx::Error),
}

/// A well-formed password-grant request.
pub struct LoginRequest {
    pub username: String,
    pub password: SecretString,
    pub scopes: Scopes,
}

/// What a successful login hands out.
pub struct IssuedToken {
    pub access_token: String,
    pub expires_in: Duration,
    pub scopes: Scopes,
}

/// Logs users in and checks their tokens; shared by every request.
pub struct Auth {
    db: SqlitePool,
    hasher: Hasher,
    throttle: LoginThrottle,
    tokens: TokenCache,
    token_ttl: Duration,
}

impl Auth {
    pub fn new(db: SqlitePool, settings: &Settings) -> Self {
        Self {
            db,
            hasher: Hasher::default(),
            throttle: LoginThrottle::new(
                settings.login_max_failures,
                settings.login_max_failures_per_address,
                settings.login_failure_window,
            ),
            tokens: TokenCache::new(CommitWatch::new(&settings.database.database_url)),
            token_ttl: settings.access_token_ttl,
        }
    }

    pub fn db(&self) -> &SqlitePool {
        &self.db
    }

    /// How many argon2 jobs logins have run so far.
    pub fn password_hash_jobs(&self) -> u64 {
        self.hasher.jobs()
    }

    /// The OAuth2 password grant. An unknown user, a wrong password and a disabled
    /// user's wrong password fail alike, after the same argon2 work.
    pub async fn login(
        &self,
        request: LoginRequest,
        client: Option<IpAddr>,
    ) -> Result<IssuedToken, LoginError> {
        let client = client.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        let username = request.username.as_str();
        let throttled = |wait| {
            tracing::warn!(%client, "login refused: too many failures");
            LoginError::TooManyAttempts(wait)
        };
        self.throttle.check(username, client).map_err(throttled)?;
        if username.len() > MAX_USERNAME_LEN
            || request.password.expose_secret().len() > MAX_PASSWORD_LEN
        {
            self.throttle.record_failure(username, client);
            return Err(LoginError::InvalidGrant);
        }
        let found = users::find_credentials(&self.db, username).await?;
        let slot = self.hasher.slot().await;
        // Again: failures may have been counted while this attempt waited for its slot.
        self.throttle.check(username, client).map_err(throttled)?;
        let stored = found.as_ref().map(|(_, hash)| hash.clone());
        let user = match (slot.verify(request.password, stored).await, found) {
            (Verdict::Match { rehashed }, Some((user, stored))) => {
                // An upgrade that cannot be stored now is tried again at the next login;
                // it is no reason to refuse this one.
                if let Some(fresh) = rehashed
                    && let Err(err) =
                        users::replace_password_hash(&self.db, user.id, &stored, &fresh).await
                {
                    tracing::warn!(error = %err, "could not store an upgraded password hash");
                }
                user
            }
            _ => {
                tracing::info!(%client, "login failed");
                self.throttle.record_failure(username, client);
                return Err(LoginError::InvalidGrant);
            }
        };
        self.throttle.record_success(username);

        let scopes = request.scopes.intersection(&user.allowed_scopes());
        let token = NewToken::generate();
        token::store(
            &self.db,
            &token,
            user.id,
            &scopes,
            SystemTime::now(),
            self.token_ttl,
        )
        .await?;
        tracing::info!(user = %user.username, scopes = %scopes, "token issued");
        Ok(IssuedToken {
            access_token: token.token,
            expires_in: self.token_ttl,
            scopes,
        })
    }

    /// The user holding `token`, if the token is live, carries `required` (when given),
    /// and the user is active. The scopes that count are those granted at login that the
    /// user still has.
    pub async fn current_user(
        &self,
        token: &str,
        required: Option<Scope>,
    ) -> Result<users::User, AccessError> {
        if !token::is_well_formed(token) {
            return Err(AccessError::InvalidToken);
        }
        let digest = TokenDigest::of(token);
        let now = SystemTime::now();
        let live = match self.tokens.get(&digest, token::unix_millis(now)) {
            Some(live) => live,
            None => {
                let live = token::find_user_by_token(&self.db, &digest, now)
                    .await?
                    .ok_or(AccessError::InvalidToken)?;
                let live = Arc::new(live);
                self.tokens.insert(digest, live.clone());
                live
            }
        };
        let user = &live.user;
        if let Some(scope) = required
            && !live
                .scopes
                .intersection(&user.allowed_scopes())
                .contains(scope)
        {
            return Err(AccessError::InsufficientScope(scope));
        }
        if user.disabled {
            return Err(AccessError::InactiveUser);
        }
        Ok(user.clone())
    }

    /// Revokes `token` (RFC 7009): unknown or dead tokens are fine.
    pub async fn revoke(&self, token: &str) -> Result<(), LoginError> {
        if token::is_well_formed(token) {
            let digest = TokenDigest::of(token);
            token::revoke(&self.db, &digest, SystemTime::now()).await?;
            self.tokens.remove(&digest);
        }
        Ok(())
    }

    /// Housekeeping: deletes expired and revoked tokens and forgets ended throttle
    /// windows. Returns how many token rows went.
    pub async fn sweep(&self) -> Result<u64, sqlx::Error> {
        self.throttle.prune();
        self.tokens.prune();
        token::delete_dead(&self.db, SystemTime::now()).await
    }

    /// How often [`Auth::sweep`] should run: often enough that dead tokens do not pile
    /// up, rarely enough to cost nothing.
    pub fn sweep_interval(&self) -> Duration {
        self.token_ttl
            .clamp(Duration::from_secs(1), Duration::from_secs(60))
    }
}
