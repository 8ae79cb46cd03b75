//! Token revocation (RFC 7009): a refresh token ends its session, an access token itself.

use std::{
    net::{IpAddr, Ipv4Addr},
    time::SystemTime,
};

use super::{
    Auth, LoginError,
    token::{self, TokenDigest},
};
use crate::store::unix_millis;

impl Auth {
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
}
