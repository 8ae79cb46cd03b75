//! The password grant (RFC 6749, section 4.3): throttle, verify the password, start a
//! session.

use std::{
    net::{IpAddr, Ipv4Addr},
    time::SystemTime,
};

use secrecy::{ExposeSecret, SecretString};

use super::{
    Amr, Auth, IssuedToken, LoginError, MAX_CLIENT_ID_LEN, MAX_PASSWORD_LEN, MAX_USERNAME_LEN,
    loggable, password::Verdict, throttle::Refusal, token::NewToken,
};
use crate::{
    metrics::Metrics,
    scope::Scopes,
    store::{NewAccessToken, unix_millis},
    users,
};

/// A well-formed password-grant request.
pub struct LoginRequest {
    pub username: String,
    pub password: SecretString,
    pub scopes: Scopes,
    /// The client that says it is logging in (not authenticated; remembered for
    /// introspection).
    pub client_id: Option<String>,
    /// The one-time code (form field `totp`), for a user with a second factor.
    pub totp: Option<SecretString>,
}

impl Auth {
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
            Err(LoginError::IncorrectOneTimeCode) => tracing::info!(
                target: "audit", event = "login.second_factor_failed", %username, %client,
                "login failed: incorrect one-time code"
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
        let (password, second_factor) = self
            .second_factor_input(
                found.as_ref().map(|(user, _)| user.id),
                request.password,
                request.totp,
            )
            .await?;
        let slot = self.hasher.slot().await;
        // Counted only once it can be hashed: parallel right-password logins are never
        // refused, and parallel guesses are counted before any of them is checked.
        let attempt = self
            .throttle
            .count(&self.store, username, client)
            .await
            .map_err(refused)?;
        let stored = found.as_ref().map(|(_, hash)| hash.clone());
        let user = match (slot.verify(password, stored).await, found) {
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
        let amr = self
            .check_second_factor(&user, second_factor, attempt)
            .await?;

        let scopes = request.scopes.intersection(&user.allowed_scopes());
        let client_id = request.client_id.filter(|id| id.len() <= MAX_CLIENT_ID_LEN);
        Ok(self
            .start_session(&user, client_id.as_deref(), scopes, amr)
            .await?)
    }

    async fn start_session(
        &self,
        user: &users::User,
        client_id: Option<&str>,
        scopes: Scopes,
        amr: Amr,
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
                amr.stored(),
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
}
