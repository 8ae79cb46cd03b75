//! Authentication: logging in with a password, refreshing a session, turning a bearer
//! token into a user, and revoking tokens. Talks to the database through [`Store`] only.

pub mod cache;
pub mod clients;
pub mod password;
pub mod throttle;
pub mod token;

use std::{
    net::{IpAddr, Ipv4Addr},
    sync::Arc,
    time::{Duration, SystemTime},
};

use secrecy::{ExposeSecret, SecretString};

use self::{
    cache::TokenCache,
    password::{Hasher, Verdict},
    throttle::{LoginThrottle, Refusal},
    token::{NewToken, TokenDigest},
};
use crate::{
    config::Settings,
    metrics::Metrics,
    scope::{Scope, Scopes, UnknownScope},
    store::{NewAccessToken, RefreshRecord, Rotation, Store, millis, unix_millis},
    users,
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
    /// The grant type is unknown or switched off; the enabled ones are listed.
    #[error("unsupported grant type")]
    UnsupportedGrantType(Vec<GrantType>),
    #[error("{0}")]
    InvalidScope(UnknownScope),
    /// A refresh asked for more than the session holds.
    #[error("scope wider than the session's")]
    ScopeTooWide,
    #[error("incorrect username or password")]
    InvalidGrant,
    #[error("invalid refresh token")]
    InvalidRefreshToken,
    #[error("inactive user")]
    InactiveUser,
    #[error("too many failed logins")]
    TooManyAttempts(Duration),
    #[error("database unavailable: {0}")]
    Unavailable(#[from] sqlx::Error),
}

/// What a failed request counts as in the metrics.
pub trait Outcome {
    /// A fixed word for metrics.
    fn outcome(&self) -> &'static str;

    /// Whether the database failed (counted apart, too).
    fn is_unavailable(&self) -> bool;
}

impl Outcome for LoginError {
    fn is_unavailable(&self) -> bool {
        matches!(self, LoginError::Unavailable(_))
    }

    fn outcome(&self) -> &'static str {
        match self {
            LoginError::InvalidRequest(_) => "invalid_request",
            LoginError::UnsupportedGrantType(_) => "unsupported_grant_type",
            LoginError::InvalidScope(_) | LoginError::ScopeTooWide => "invalid_scope",
            LoginError::InvalidGrant | LoginError::InvalidRefreshToken => "invalid_grant",
            LoginError::InactiveUser => "inactive_user",
            LoginError::TooManyAttempts(_) => "throttled",
            LoginError::Unavailable(_) => "unavailable",
        }
    }
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

impl Outcome for AccessError {
    fn is_unavailable(&self) -> bool {
        matches!(self, AccessError::Unavailable(_))
    }

    fn outcome(&self) -> &'static str {
        match self {
            AccessError::NotAuthenticated => "not_authenticated",
            AccessError::InvalidRequest => "invalid_request",
            AccessError::InvalidToken => "invalid_token",
            AccessError::InsufficientScope(_) => "insufficient_scope",
            AccessError::InactiveUser => "inactive_user",
            AccessError::Unavailable(_) => "unavailable",
        }
    }
}

/// Why an introspection request is refused.
#[derive(Debug, thiserror::Error)]
pub enum IntrospectionError {
    #[error("malformed request")]
    InvalidRequest(Vec<FieldError>),
    /// No client credentials, several, or wrong ones (a bearer token is not one).
    #[error("client authentication failed")]
    InvalidClient,
    #[error("database unavailable: {0}")]
    Unavailable(#[from] sqlx::Error),
}

impl Outcome for IntrospectionError {
    fn is_unavailable(&self) -> bool {
        matches!(self, IntrospectionError::Unavailable(_))
    }

    fn outcome(&self) -> &'static str {
        match self {
            IntrospectionError::InvalidRequest(_) => "invalid_request",
            IntrospectionError::InvalidClient => "invalid_client",
            IntrospectionError::Unavailable(_) => "unavailable",
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

/// What RFC 7662 tells a registered client about a live token.
#[derive(Debug, Clone)]
pub struct Introspection {
    pub username: String,
    /// The scopes the token carries now (those granted that the user still has).
    pub scopes: Scopes,
    /// Unix seconds.
    pub issued_at: i64,
    pub expires_at: i64,
    /// The client the login named, if any.
    pub client_id: Option<String>,
    /// This service's issuer identifier.
    pub issuer: String,
}

/// A well-formed password-grant request.
pub struct LoginRequest {
    pub username: String,
    pub password: SecretString,
    pub scopes: Scopes,
    /// The client that says it is logging in (not authenticated; remembered for
    /// introspection).
    pub client_id: Option<String>,
}

/// A well-formed refresh-token-grant request.
pub struct RefreshRequest {
    pub refresh_token: String,
    /// `None`: the session's scopes.
    pub scopes: Option<Scopes>,
}

/// What a successful login or refresh hands out.
pub struct IssuedToken {
    pub access_token: String,
    pub expires_in: Duration,
    pub scopes: Scopes,
    /// `None` when refresh tokens are switched off.
    pub refresh_token: Option<String>,
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

/// Logs users in and checks their tokens; shared by every request.
pub struct Auth {
    store: Store,
    metrics: Arc<Metrics>,
    hasher: Hasher,
    throttle: LoginThrottle,
    tokens: TokenCache,
    access_ttl: Duration,
    refresh: RefreshPolicy,
    failure_window: Duration,
    issuer: String,
}

impl Auth {
    /// `issuer`: this service's issuer identifier (the `ISSUER` setting, or where it
    /// listens).
    pub fn new(store: Store, settings: &Settings, issuer: String) -> Self {
        let metrics = Arc::new(Metrics::default());
        Self {
            tokens: TokenCache::new(store.changes().clone(), &metrics),
            hasher: Hasher::new(&metrics),
            metrics,
            store,
            throttle: LoginThrottle::new(
                settings.login_max_failures,
                settings.login_max_failures_per_address,
                settings.login_failure_window,
            ),
            access_ttl: settings.access_token_ttl,
            refresh: settings.refresh_policy(),
            failure_window: settings.login_failure_window,
            issuer,
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

    /// Counts an introspection request's outcome.
    pub fn introspection_answered(
        &self,
        result: &Result<Option<Introspection>, IntrospectionError>,
    ) {
        let answered = result.as_ref().map(|found| {
            if found.is_some() {
                "active"
            } else {
                "inactive"
            }
        });
        self.observe(answered, Metrics::introspection);
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

    /// The OAuth2 password grant. An unknown user, a wrong password and a disabled
    /// user's wrong password fail alike, after the same argon2 work.
    pub async fn login(
        &self,
        request: LoginRequest,
        client: Option<IpAddr>,
    ) -> Result<IssuedToken, LoginError> {
        let client = client.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        let username = loggable(&request.username);
        let result = self.try_login(request, client).await;
        match &result {
            Ok(issued) => tracing::info!(
                target: "audit", event = "login.succeeded", %username, %client,
                scopes = %issued.scopes, "login succeeded"
            ),
            Err(LoginError::InvalidGrant) => tracing::info!(
                target: "audit", event = "login.failed", %username, %client, "login failed"
            ),
            Err(LoginError::TooManyAttempts(_)) => tracing::warn!(
                target: "audit", event = "login.throttled", %username, %client,
                "login refused: too many failures"
            ),
            Err(_) => {}
        }
        self.observe(result.as_ref().map(|_| "issued"), Metrics::login);
        result
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

    async fn try_login(
        &self,
        request: LoginRequest,
        client: IpAddr,
    ) -> Result<IssuedToken, LoginError> {
        let username = request.username.as_str();
        let refused = |refusal| match refusal {
            Refusal::Throttled(wait) => LoginError::TooManyAttempts(wait),
            Refusal::Database(err) => LoginError::Unavailable(err),
        };
        if username.len() > MAX_USERNAME_LEN
            || request.password.expose_secret().len() > MAX_PASSWORD_LEN
        {
            // Counted (and so limited) like any failure, but never hashed.
            let _failure = self
                .throttle
                .count(&self.store, username, client)
                .await
                .map_err(refused)?;
            return Err(LoginError::InvalidGrant);
        }
        // Refused attempts need not wait for a hashing slot.
        self.throttle
            .check(&self.store, username, client)
            .await
            .map_err(refused)?;
        let found = self.store.find_credentials(username).await?;
        let slot = self.hasher.slot().await;
        // Counted only once it can be hashed: parallel right-password logins are never
        // refused, and parallel guesses are counted before any of them is checked.
        let attempt = self
            .throttle
            .count(&self.store, username, client)
            .await
            .map_err(refused)?;
        let stored = found.as_ref().map(|(_, hash)| hash.clone());
        let user = match (slot.verify(request.password, stored).await, found) {
            (Verdict::Match { rehashed }, Some((user, stored))) => {
                // An upgrade that cannot be stored now is tried again at the next login;
                // it is no reason to refuse this one.
                if let Some(fresh) = rehashed
                    && let Err(err) = self
                        .store
                        .upgrade_password_hash(user.id, &stored, &fresh)
                        .await
                {
                    tracing::warn!(error = %err, "could not store an upgraded password hash");
                }
                user
            }
            _ => return Err(LoginError::InvalidGrant),
        };
        self.throttle.succeeded(&self.store, attempt).await?;

        let scopes = request.scopes.intersection(&user.allowed_scopes());
        let client_id = request.client_id.filter(|id| id.len() <= MAX_CLIENT_ID_LEN);
        Ok(self
            .start_session(&user, client_id.as_deref(), scopes)
            .await?)
    }

    async fn start_session(
        &self,
        user: &users::User,
        client_id: Option<&str>,
        scopes: Scopes,
    ) -> Result<IssuedToken, sqlx::Error> {
        let now = SystemTime::now();
        let access = NewToken::generate();
        let refresh = self.refresh.ttl.map(|_| NewToken::generate());
        // Without refresh tokens, a session is just the one access token's.
        let session_ttl = self.refresh.ttl.unwrap_or(self.access_ttl);
        self.store
            .start_session(
                user.id,
                client_id,
                &scopes,
                unix_millis(now),
                unix_millis(now + session_ttl),
                NewAccessToken {
                    digest: access.digest.as_bytes(),
                    scopes: &scopes,
                    expires_at: unix_millis(now + self.access_ttl),
                },
                refresh.as_ref().map(|token| token.digest.as_bytes()),
            )
            .await?;
        Ok(IssuedToken {
            access_token: access.token,
            expires_in: self.access_ttl,
            scopes,
            refresh_token: refresh.map(|token| token.token),
        })
    }

    /// The refresh-token grant (RFC 6749, section 6) with rotation: a new access token and
    /// a new refresh token, the presented one spent. A spent token presented again within
    /// the grace is a retry and gets a fresh pair; after it, the token was stolen, and the
    /// whole session ends (RFC 9700, section 4.14.2).
    pub async fn refresh(
        &self,
        request: RefreshRequest,
        client: Option<IpAddr>,
    ) -> Result<IssuedToken, LoginError> {
        let client = client.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        let result = self.try_refresh(request, client).await;
        self.observe(result.as_ref().map(|_| "issued"), Metrics::refresh);
        result
    }

    async fn try_refresh(
        &self,
        request: RefreshRequest,
        client: IpAddr,
    ) -> Result<IssuedToken, LoginError> {
        let Some(_) = self.refresh.ttl else {
            return Err(LoginError::UnsupportedGrantType(self.grant_types()));
        };
        if !token::is_well_formed(&request.refresh_token) {
            return Err(LoginError::InvalidRefreshToken);
        }
        let digest = TokenDigest::of(&request.refresh_token);
        // Twice at most: a refresh that loses the race to spend the token sees it spent,
        // just now, and is then a retry.
        for _ in 0..2 {
            let record = self
                .store
                .find_refresh_token(digest.as_bytes())
                .await?
                .ok_or(LoginError::InvalidRefreshToken)?;
            let now = SystemTime::now();
            let scopes = self.refreshable(&record, request.scopes.as_ref(), unix_millis(now))?;
            let spend = match record.spent_at {
                None => Some(digest.as_bytes()),
                Some(spent_at) if self.is_retry(spent_at, unix_millis(now)) => None,
                Some(_) => {
                    self.store
                        .revoke_session(record.session_id, unix_millis(now))
                        .await?;
                    self.metrics.refresh_token_reused();
                    tracing::warn!(
                        target: "audit", event = "session.reuse_detected",
                        username = %record.user.username, %client, session = record.session_id,
                        "a spent refresh token was presented again: session revoked"
                    );
                    return Err(LoginError::InvalidRefreshToken);
                }
            };
            let access = NewToken::generate();
            let refresh = NewToken::generate();
            let rotation = self
                .store
                .refresh_session(
                    record.session_id,
                    spend,
                    unix_millis(now),
                    NewAccessToken {
                        digest: access.digest.as_bytes(),
                        scopes: &scopes,
                        expires_at: unix_millis(now + self.access_ttl),
                    },
                    refresh.digest.as_bytes(),
                )
                .await?;
            match rotation {
                Rotation::Issued => {
                    tracing::info!(
                        target: "audit", event = "token.refreshed",
                        username = %record.user.username, %client, scopes = %scopes,
                        "token refreshed"
                    );
                    return Ok(IssuedToken {
                        access_token: access.token,
                        expires_in: self.access_ttl,
                        scopes,
                        refresh_token: Some(refresh.token),
                    });
                }
                Rotation::SessionEnded => return Err(LoginError::InvalidRefreshToken),
                Rotation::AlreadySpent => continue,
            }
        }
        Err(LoginError::InvalidRefreshToken)
    }

    /// Whether `record` may be refreshed at `now` (Unix ms), and with which scopes:
    /// `requested`, which must lie within the session's, or else all of the session's
    /// (those granted at login that the user still has).
    fn refreshable(
        &self,
        record: &RefreshRecord,
        requested: Option<&Scopes>,
        now: i64,
    ) -> Result<Scopes, LoginError> {
        let idle_deadline = record
            .issued_at
            .saturating_add(millis(self.refresh.idle_ttl));
        let unspent_but_idle = record.spent_at.is_none() && idle_deadline <= now;
        if record.session_revoked || record.session_expires_at <= now || unspent_but_idle {
            return Err(LoginError::InvalidRefreshToken);
        }
        if record.user.disabled {
            return Err(LoginError::InactiveUser);
        }
        let session = record
            .session_scopes
            .intersection(&record.user.allowed_scopes());
        match requested {
            None => Ok(session),
            Some(requested) if requested.is_subset(&session) => Ok(requested.clone()),
            Some(_) => Err(LoginError::ScopeTooWide),
        }
    }

    /// A spent refresh token presented again this soon is a retry, not a theft.
    fn is_retry(&self, spent_at: i64, now: i64) -> bool {
        now.saturating_sub(spent_at) < millis(self.refresh.reuse_grace)
    }

    /// The user holding access token `token`, if the token is live, carries `required`
    /// (when given), and the user is active. The scopes that count are those granted
    /// with the token that the user still has.
    pub async fn current_user(
        &self,
        token: &str,
        required: Option<Scope>,
    ) -> Result<users::User, AccessError> {
        let result = self.check_bearer(token, required).await;
        self.observe(result.as_ref().map(|_| "ok"), Metrics::bearer_check);
        result
    }

    /// Calls `answer` with the user behind `token` when the token cache alone can say:
    /// a token checked lately, of a user still active, with nothing changed since; and
    /// counts the check. `None`, not counted, means "ask [`Auth::current_user`]", which
    /// answers every case.
    pub fn with_cached_user<R>(
        &self,
        token: &str,
        answer: impl FnOnce(&users::User) -> R,
    ) -> Option<R> {
        if !token::is_well_formed(token) {
            return None;
        }
        let now = unix_millis(SystemTime::now());
        let live = self.tokens.peek(&TokenDigest::of(token), now)?;
        if live.user.disabled {
            return None;
        }
        self.tokens.hit();
        self.metrics.bearer_check("ok");
        Some(answer(&live.user))
    }

    async fn check_bearer(
        &self,
        token: &str,
        required: Option<Scope>,
    ) -> Result<users::User, AccessError> {
        if !token::is_well_formed(token) {
            return Err(AccessError::InvalidToken);
        }
        let digest = TokenDigest::of(token);
        let now = unix_millis(SystemTime::now());
        let live = match self.tokens.get(&digest, now) {
            Some(live) => live,
            None => {
                let started = self.tokens.read_started();
                let live = self
                    .store
                    .find_live_token(digest.as_bytes(), now)
                    .await?
                    .ok_or(AccessError::InvalidToken)?;
                let live = Arc::new(live);
                self.tokens.insert(digest, live.clone(), started);
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

    /// Revokes `token` (RFC 7009): a refresh token ends its whole session, access tokens
    /// included; an access token ends only itself. Unknown or dead tokens are fine.
    pub async fn revoke(&self, token: &str, client: Option<IpAddr>) -> Result<(), LoginError> {
        let client = client.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        let kind = match self.try_revoke(token).await {
            Ok(kind) => kind,
            Err(err) => {
                self.metrics.database_error();
                return Err(LoginError::Unavailable(err));
            }
        };
        self.metrics.revocation(kind);
        match kind {
            "session" => tracing::info!(
                target: "audit", event = "session.revoked", %client,
                "a refresh token was revoked: its session ended"
            ),
            "access_token" => tracing::info!(
                target: "audit", event = "token.revoked", %client, "an access token was revoked"
            ),
            _ => {}
        }
        Ok(())
    }

    /// Revokes and says what the token was: `session`, `access_token` or `unknown`.
    async fn try_revoke(&self, token: &str) -> Result<&'static str, sqlx::Error> {
        if !token::is_well_formed(token) {
            return Ok("unknown");
        }
        let digest = TokenDigest::of(token);
        let now = unix_millis(SystemTime::now());
        if let Some(session) = self
            .store
            .session_of_refresh_token(digest.as_bytes())
            .await?
        {
            self.store.revoke_session(session, now).await?;
            return Ok("session");
        }
        let revoked = self
            .store
            .revoke_access_token(digest.as_bytes(), now)
            .await?;
        Ok(if revoked { "access_token" } else { "unknown" })
    }

    /// Checks a registered client's credentials, in constant time whether or not the
    /// client exists.
    pub async fn authenticate_client(
        &self,
        client_id: &str,
        secret: &str,
    ) -> Result<(), IntrospectionError> {
        let stored = self.store.client_secret_digest(client_id).await?;
        if clients::secret_matches(secret, stored.as_deref()) {
            Ok(())
        } else {
            tracing::warn!(
                target: "audit", event = "client.authentication_failed",
                client_id = %loggable(client_id), "client authentication failed"
            );
            Err(IntrospectionError::InvalidClient)
        }
    }

    /// What a live access or refresh token is (RFC 7662); `None` for anything else:
    /// unknown, malformed, expired, revoked, spent, or its user disabled or deleted.
    /// `refresh_first`: the client's hint that it is a refresh token.
    pub async fn introspect(
        &self,
        token: &str,
        refresh_first: bool,
    ) -> Result<Option<Introspection>, sqlx::Error> {
        if !token::is_well_formed(token) {
            return Ok(None);
        }
        let digest = TokenDigest::of(token);
        let now = unix_millis(SystemTime::now());
        if refresh_first {
            if let Some(found) = self.introspect_refresh_token(&digest, now).await? {
                return Ok(Some(found));
            }
            return self.introspect_access_token(&digest, now).await;
        }
        if let Some(found) = self.introspect_access_token(&digest, now).await? {
            return Ok(Some(found));
        }
        self.introspect_refresh_token(&digest, now).await
    }

    async fn introspect_access_token(
        &self,
        digest: &TokenDigest,
        now: i64,
    ) -> Result<Option<Introspection>, sqlx::Error> {
        let Some(live) = self.store.find_live_token(digest.as_bytes(), now).await? else {
            return Ok(None);
        };
        if live.user.disabled {
            return Ok(None);
        }
        Ok(Some(Introspection {
            scopes: live.scopes.intersection(&live.user.allowed_scopes()),
            username: live.user.username,
            issued_at: live.issued_at / 1000,
            expires_at: live.expires_at / 1000,
            client_id: live.client_id,
            issuer: self.issuer.clone(),
        }))
    }

    async fn introspect_refresh_token(
        &self,
        digest: &TokenDigest,
        now: i64,
    ) -> Result<Option<Introspection>, sqlx::Error> {
        if self.refresh.ttl.is_none() {
            return Ok(None);
        }
        let Some(record) = self.store.find_refresh_token(digest.as_bytes()).await? else {
            return Ok(None);
        };
        let idle_deadline = record
            .issued_at
            .saturating_add(millis(self.refresh.idle_ttl));
        let live = !record.session_revoked
            && record.spent_at.is_none()
            && record.session_expires_at > now
            && idle_deadline > now
            && !record.user.disabled;
        if !live {
            return Ok(None);
        }
        Ok(Some(Introspection {
            scopes: record
                .session_scopes
                .intersection(&record.user.allowed_scopes()),
            username: record.user.username,
            issued_at: record.issued_at / 1000,
            expires_at: record.session_expires_at.min(idle_deadline) / 1000,
            client_id: record.client_id,
            issuer: self.issuer.clone(),
        }))
    }

    /// Housekeeping: deletes what can never be used again (expired and revoked tokens,
    /// dead sessions, ended throttle windows). Returns how many rows went.
    pub async fn sweep(&self) -> Result<u64, sqlx::Error> {
        self.tokens.prune();
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
