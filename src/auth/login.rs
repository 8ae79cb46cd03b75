//! The password grant (RFC 6749, section 4.3): throttle, verify the password, start a
//! session.

use std::{
    net::{IpAddr, Ipv4Addr},
    time::SystemTime,
};

use secrecy::{ExposeSecret, SecretString};

use super::dpop::{DpopRequest, TokenType};
use super::{
    Amr, Auth, IssuedToken, LoginError, MAX_CLIENT_ID_LEN, MAX_PASSWORD_LEN, MAX_USERNAME_LEN,
    loggable, password::Verdict, throttle::Subject, token::NewToken,
};
use crate::{
    metrics::Metrics,
    scope::Scopes,
    store::{Credentials, NewAccessToken, NewSession, unix_millis},
};

/// A well-formed password-grant request.
pub struct LoginRequest {
    pub username: String,
    pub password: SecretString,
    pub scopes: Scopes,
    /// The client that says it is logging in, if any.
    pub client: Option<ClientCredentials>,
    /// The trusted-device cookie the client sent, if any.
    pub device: Option<String>,
    /// The one-time code (form field `totp`), for a user with a second factor.
    pub totp: Option<SecretString>,
    /// The request's DPoP proof, if any: the session is then bound to its key.
    pub dpop: DpopRequest,
}

/// A client id, with the secret that came with it (HTTP Basic or the form), if any.
pub struct ClientCredentials {
    pub client_id: String,
    pub secret: Option<String>,
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
        address: IpAddr,
    ) -> Result<IssuedToken, LoginError> {
        // A malformed request: refused before any password work, and not a failed login.
        let dpop_jkt = self.token_request_key(&request.dpop)?;
        let client_id = self.login_client(request.client, address).await?;
        let username = request.username.as_str();
        if username.len() > MAX_USERNAME_LEN
            || request.password.expose_secret().len() > MAX_PASSWORD_LEN
        {
            // Never right, so never hashed; counted against the address only, so that
            // such requests cannot lock the username.
            let attempt = self
                .throttle
                .count(&self.store, Subject::AddressOnly, address)
                .await?;
            self.throttle.failed(&self.store, attempt).await?;
            return Err(LoginError::InvalidGrant);
        }
        let device = self
            .presented_device(request.device.as_deref(), username)
            .await?;
        let subject = device.subject(username);
        // Refused attempts need not wait for a hashing slot.
        self.throttle.check(&self.store, subject, address).await?;
        let found = self.store.find_credentials(username).await?;
        let (password, second_factor) = self
            .second_factor_input(
                found.as_ref().map(|found| found.user.id),
                request.password,
                request.totp,
            )
            .await?;
        let slot = self.hasher.slot().await;
        // Counted only once it can be hashed: parallel guesses are counted before any
        // of them is checked, and parallel right-password logins wait for each other.
        let attempt = self.throttle.count(&self.store, subject, address).await?;
        let stored = found.as_ref().map(|found| found.hashed_password.clone());
        let found = match (slot.verify(password, stored).await, found) {
            (Verdict::Match { rehashed }, Some(found)) => {
                // An upgrade that cannot be stored now is tried again at the next login;
                // it is no reason to refuse this one.
                if let Some(fresh) = rehashed
                    && let Err(err) = self
                        .store
                        .upgrade_password_hash(found.user.id, &found.hashed_password, &fresh)
                        .await
                {
                    tracing::warn!(error = %err, "could not store an upgraded password hash");
                }
                found
            }
            _ => {
                self.throttle.failed(&self.store, attempt).await?;
                return Err(LoginError::InvalidGrant);
            }
        };
        let user = &found.user;
        let amr = self
            .check_second_factor(user, second_factor, attempt)
            .await?;

        let scopes = request.scopes.intersection(&user.allowed_scopes());
        let mut issued = self
            .start_session(
                &found,
                client_id.as_deref(),
                scopes,
                amr,
                dpop_jkt.as_deref(),
            )
            .await?;
        issued.device_cookie = self.remember_device(device, &found).await?;
        Ok(issued)
    }

    /// The client id to record with the session: only a registered client's, and only
    /// when its secret came with the login. A registered id without its secret is
    /// refused; any other id (a public client's) is accepted and forgotten.
    async fn login_client(
        &self,
        client: Option<ClientCredentials>,
        address: IpAddr,
    ) -> Result<Option<String>, LoginError> {
        let Some(client) = client.filter(|client| {
            !client.client_id.is_empty() && client.client_id.len() <= MAX_CLIENT_ID_LEN
        }) else {
            return Ok(None);
        };
        if !self.is_registered_client(&client.client_id).await? {
            return Ok(None);
        }
        self.authenticate_client(&client.client_id, client.secret.as_deref(), Some(address))
            .await?;
        Ok(Some(client.client_id))
    }

    /// Starts the session of a verified login; a password changed since the login read
    /// the user (which ends every session) refuses it as a wrong password would.
    async fn start_session(
        &self,
        verified: &Credentials,
        client_id: Option<&str>,
        scopes: Scopes,
        amr: Amr,
        dpop_jkt: Option<&str>,
    ) -> Result<IssuedToken, LoginError> {
        let now = SystemTime::now();
        let access = NewToken::generate();
        let refresh = self.refresh.ttl.map(|_| NewToken::generate());
        // Without refresh tokens, a session is just the one access token's.
        let session_ttl = self.refresh.ttl.unwrap_or(self.access_ttl);
        let access_ttl = self.access_ttl.min(session_ttl);
        let started = self
            .store
            .start_session(
                NewSession {
                    user_id: verified.user.id,
                    client_id,
                    scopes: &scopes,
                    started_at: unix_millis(now),
                    expires_at: unix_millis(now + session_ttl),
                    max_per_user: self.max_sessions_per_user,
                    amr: amr.stored(),
                    dpop_jkt,
                    password_changed_at: verified.password_changed_at,
                },
                NewAccessToken {
                    digest: access.digest.as_bytes(),
                    scopes: &scopes,
                    expires_at: unix_millis(now + access_ttl),
                },
                refresh.as_ref().map(|token| token.digest.as_bytes()),
            )
            .await?;
        if !started {
            return Err(LoginError::InvalidGrant);
        }
        Ok(IssuedToken {
            access_token: access.token,
            expires_in: access_ttl,
            scopes,
            refresh_token: refresh.map(|token| token.token),
            device_cookie: None,
            token_type: TokenType::of_binding(dpop_jkt),
        })
    }
}
