//! A bearer token to its user (RFC 6750): the token cache first, the database on a miss.

use std::{sync::Arc, time::SystemTime};

use super::{
    AccessError, Auth,
    token::{self, TokenDigest},
};
use crate::{
    metrics::Metrics,
    scope::Scope,
    store::{LiveToken, unix_millis},
    users,
};

impl Auth {
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
        let live = self
            .live_token(&digest, now)
            .await?
            .ok_or(AccessError::InvalidToken)?;
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

    /// The live access token with this digest (known, not expired, not revoked) and its
    /// user, from the token cache when it can vouch for it, else from the database (and
    /// then remembered). The one place that decides what an access token is: bearer
    /// checks and introspection both ask here.
    pub(super) async fn live_token(
        &self,
        digest: &TokenDigest,
        now: i64,
    ) -> Result<Option<Arc<LiveToken>>, sqlx::Error> {
        if let Some(live) = self.tokens.get(digest, now) {
            return Ok(Some(live));
        }
        let started = self.tokens.read_started();
        let Some(live) = self.store.find_live_token(digest.as_bytes(), now).await? else {
            return Ok(None);
        };
        let live = Arc::new(live);
        self.tokens.insert(*digest, live.clone(), started);
        Ok(Some(live))
    }
}
