//! Token introspection (RFC 7662) for registered clients (who authenticate as
//! `clients.rs` says).

use std::{net::IpAddr, time::SystemTime};

use super::{
    Amr, Auth, IntrospectionError,
    token::{self, TokenDigest},
};
use crate::{
    metrics::Metrics,
    scope::Scopes,
    store::{LiveToken, millis, unix_millis},
};

/// Which kind of token was described.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenUse {
    AccessToken,
    RefreshToken,
}

impl TokenUse {
    /// The name introspection answers carry in `token_use`.
    pub const fn name(self) -> &'static str {
        match self {
            TokenUse::AccessToken => "access_token",
            TokenUse::RefreshToken => "refresh_token",
        }
    }
}

/// What RFC 7662 tells a registered client about a live token.
#[derive(Debug, Clone)]
pub struct Introspection {
    pub token_use: TokenUse,
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
    /// How the session's login authenticated the user (RFC 8176): `pwd`, and `otp`.
    pub amr: Vec<String>,
    /// The thumbprint of the DPoP key the token is bound to, if any.
    pub dpop_jkt: Option<String>,
}

impl Auth {
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

    /// What a live access token is (RFC 7662), or a live refresh token when the client
    /// asked for one by name (`refresh_hint`): a resource server checking what it was
    /// sent as a bearer token must never take a refresh token for an access token.
    /// `None` for anything else: unknown, malformed, expired, revoked, spent, or its
    /// user disabled or deleted.
    pub async fn introspect(
        &self,
        token: &str,
        refresh_hint: bool,
    ) -> Result<Option<Introspection>, sqlx::Error> {
        if !token::is_well_formed(token) {
            return Ok(None);
        }
        let digest = TokenDigest::of(token);
        let now = unix_millis(SystemTime::now());
        if refresh_hint && let Some(found) = self.introspect_refresh_token(&digest, now).await? {
            return Ok(Some(found));
        }
        self.introspect_access_token(&digest, now).await
    }

    async fn introspect_access_token(
        &self,
        digest: &TokenDigest,
        now: i64,
    ) -> Result<Option<Introspection>, sqlx::Error> {
        let Some(live) = self.live_token(digest, now).await? else {
            return Ok(None);
        };
        Ok(self.describe_access_token(&live))
    }

    /// What introspection says about a live access token; `None` when its user is
    /// disabled.
    fn describe_access_token(&self, live: &LiveToken) -> Option<Introspection> {
        if live.user.disabled {
            return None;
        }
        Some(Introspection {
            token_use: TokenUse::AccessToken,
            scopes: live.scopes.intersection(&live.user.allowed_scopes()),
            username: live.user.username.clone(),
            issued_at: live.issued_at / 1000,
            expires_at: live.expires_at / 1000,
            client_id: live.client_id.clone(),
            issuer: self.issuer.clone(),
            amr: Amr::methods(live.amr.as_deref()),
            dpop_jkt: live.dpop_jkt.clone(),
        })
    }

    /// Introspects an access token for a client when the caches alone can say so: the
    /// client's secret and its throttle state checked lately, and the token live in the
    /// token cache; counted as the full path counts it. `None`, not counted, means "ask
    /// [`Auth::authenticate_client`] and [`Auth::introspect`]", which answer every case,
    /// a wrong secret included (counted there, at the full cost).
    pub fn introspect_from_cache(
        &self,
        client_id: &str,
        secret: &str,
        address: Option<IpAddr>,
        token: &str,
    ) -> Option<Introspection> {
        if !token::is_well_formed(token) || !self.client_known_lately(client_id, secret, address) {
            return None;
        }
        let now = unix_millis(SystemTime::now());
        let live = self.tokens.peek(&TokenDigest::of(token), now)?;
        let found = self.describe_access_token(&live)?;
        self.tokens.hit();
        self.metrics.introspection("active");
        Some(found)
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
            token_use: TokenUse::RefreshToken,
            scopes: record
                .session_scopes
                .intersection(&record.user.allowed_scopes()),
            username: record.user.username,
            issued_at: record.issued_at / 1000,
            expires_at: record.session_expires_at.min(idle_deadline) / 1000,
            client_id: record.client_id,
            issuer: self.issuer.clone(),
            amr: Amr::methods(record.amr.as_deref()),
            dpop_jkt: record.dpop_jkt,
        }))
    }
}
