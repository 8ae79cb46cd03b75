//! The refresh grant (RFC 6749, section 6) with rotation and reuse detection (RFC 9700,
//! section 4.14.2).

use std::{
    net::{IpAddr, Ipv4Addr},
    time::{Duration, SystemTime},
};

use super::{
    Auth, ClientCredentials, IssuedToken, LoginError,
    dpop::{DpopRequest, ProofError, TokenType},
    token::{self, NewToken, TokenDigest},
};
use crate::{
    metrics::Metrics,
    scope::Scopes,
    store::{NewAccessToken, RefreshRecord, Rotation, millis, unix_millis},
};

/// A well-formed refresh-token-grant request.
pub struct RefreshRequest {
    pub refresh_token: String,
    /// `None`: the session's scopes.
    pub scopes: Option<Scopes>,
    /// The request's DPoP proof, if any: a bound session needs one of its key.
    pub dpop: DpopRequest,
    /// The client credentials that came with the request, if any: a session a
    /// registered client started is refreshed only by that client (RFC 6749, section 6).
    pub client: Option<ClientCredentials>,
}

impl Auth {
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
        let dpop_jkt = self.token_request_key(&request.dpop)?;
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
            // Before anything is spent or revoked: without the session's key, a bound
            // refresh token is worth nothing, not even as a sign of theft.
            check_binding(record.dpop_jkt.as_deref(), dpop_jkt.as_deref())?;
            self.check_session_client(record.client_id.as_deref(), request.client.as_ref(), client)
                .await?;
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
            // An access token never outlives its session.
            let access_expires_at =
                unix_millis(now + self.access_ttl).min(record.session_expires_at);
            let rotation = self
                .store
                .refresh_session(
                    record.session_id,
                    record.user.id,
                    spend,
                    unix_millis(now),
                    NewAccessToken {
                        digest: access.digest.as_bytes(),
                        scopes: &scopes,
                        expires_at: access_expires_at,
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
                        expires_in: Duration::from_millis(
                            u64::try_from(access_expires_at - unix_millis(now)).unwrap_or(0),
                        ),
                        scopes,
                        refresh_token: Some(refresh.token),
                        device_cookie: None,
                        token_type: TokenType::of_binding(record.dpop_jkt.as_deref()),
                    });
                }
                Rotation::SessionEnded => return Err(LoginError::InvalidRefreshToken),
                Rotation::AlreadySpent => continue,
            }
        }
        Err(LoginError::InvalidRefreshToken)
    }

    /// A session started by a registered client (with its secret) is refreshed only by
    /// that client, authenticated again; like a missing proof of a bound session's key,
    /// anything else is refused before a token is spent or a theft is suspected.
    async fn check_session_client(
        &self,
        session_client: Option<&str>,
        presented: Option<&ClientCredentials>,
        address: IpAddr,
    ) -> Result<(), LoginError> {
        let Some(session_client) = session_client else {
            return Ok(());
        };
        match presented {
            Some(client) if client.client_id == session_client => Ok(self
                .authenticate_client(session_client, client.secret.as_deref(), Some(address))
                .await?),
            _ => Err(LoginError::InvalidClient),
        }
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
}

/// A session's binding against the key of the refresh request's proof: a bound session
/// needs a proof of its key; an unbound one stays unbound, so it takes no proof (binding
/// it now would let whoever stole its refresh token lock the owner out, where the owner's
/// next refresh would otherwise reveal the theft).
fn check_binding(session: Option<&str>, proof: Option<&str>) -> Result<(), ProofError> {
    match (session, proof) {
        (None, None) => Ok(()),
        (Some(bound), Some(key)) if bound == key => Ok(()),
        (Some(_), None) => Err(ProofError::Missing),
        (Some(_), Some(_)) => Err(ProofError::WrongKey),
        (None, Some(_)) => Err(ProofError::NotBound),
    }
}
