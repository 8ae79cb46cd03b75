//! An access token to its user: a bearer token (RFC 6750), or a DPoP-bound one with the
//! proof of its key (RFC 9449); the token cache first, the database on a miss.

use std::{sync::Arc, time::SystemTime};

use super::{
    AccessError, Auth,
    dpop::{DpopRequest, ProofError, TokenType},
    token::{self, TokenDigest},
};
use crate::{
    metrics::Metrics,
    scope::Scope,
    store::{LiveToken, unix_millis},
    users,
};

/// What the token cache alone can say about a protected request
/// ([`Auth::with_cached_user`]).
#[derive(Debug, PartialEq, Eq)]
pub enum FromCache<R> {
    /// The answer.
    Answered(R),
    /// The token is live and bound to a key, and the request's proof is refused for this
    /// reason: the full path refuses it too, and takes the reason in
    /// [`DpopRequest::refused`] instead of checking the proof again.
    ProofRefused(ProofError),
    /// The cache cannot say.
    Unknown,
}

impl<R> FromCache<R> {
    pub fn answered(self) -> Option<R> {
        match self {
            Self::Answered(answer) => Some(answer),
            _ => None,
        }
    }
}

impl Auth {
    /// The user holding access token `token`, if the token is live, carries `required`
    /// (when given), and the user is active. The scopes that count are those granted
    /// with the token that the user still has. `dpop`: the request came as
    /// `Authorization: DPoP`, with this proof; otherwise as `Bearer`. A token bound to a
    /// key is good only with a proof of that key, an unbound one only as `Bearer`.
    pub async fn current_user(
        &self,
        token: &str,
        dpop: Option<&DpopRequest>,
        required: Option<Scope>,
    ) -> Result<users::User, AccessError> {
        let result = self.check_access(token, dpop, required).await;
        self.observe(result.as_ref().map(|_| "ok"), Metrics::bearer_check);
        result
    }

    /// Calls `answer` with the user behind access token `token` when the token cache
    /// alone can say: a token checked lately, of a user still active, with nothing
    /// changed since, sent as it must be (`dpop`: as for [`Auth::current_user`]); and
    /// counts the check. A bound token's proof is checked here, last: accepted, it is
    /// remembered and the answer is certain; refused, it is remembered nowhere, and the
    /// reason is for the full path ([`FromCache::ProofRefused`]). Anything else is
    /// [`FromCache::Unknown`], not counted: ask [`Auth::current_user`], which answers
    /// every case.
    pub fn with_cached_user<R>(
        &self,
        token: &str,
        dpop: Option<&DpopRequest>,
        answer: impl FnOnce(&users::User) -> R,
    ) -> FromCache<R> {
        if !token::is_well_formed(token) {
            return FromCache::Unknown;
        }
        let now = unix_millis(SystemTime::now());
        let Some(live) = self.tokens.peek(&TokenDigest::of(token), now) else {
            return FromCache::Unknown;
        };
        if live.user.disabled {
            return FromCache::Unknown;
        }
        match (dpop, live.dpop_jkt.as_deref()) {
            (None, None) => {}
            (Some(request), Some(bound)) => {
                if let Err(refused) = self.resource_proof(request, token, bound) {
                    return FromCache::ProofRefused(refused);
                }
            }
            // A bound token sent as a bearer token, or the reverse: refused, by the full path.
            _ => return FromCache::Unknown,
        }
        self.tokens.hit();
        self.metrics.bearer_check_ok();
        FromCache::Answered(answer(&live.user))
    }

    async fn check_access(
        &self,
        token: &str,
        dpop: Option<&DpopRequest>,
        required: Option<Scope>,
    ) -> Result<users::User, AccessError> {
        let scheme = match dpop {
            Some(_) => TokenType::Dpop,
            None => TokenType::Bearer,
        };
        if !token::is_well_formed(token) {
            return Err(AccessError::InvalidToken(scheme));
        }
        let digest = TokenDigest::of(token);
        let now = unix_millis(SystemTime::now());
        let live = self
            .live_token(&digest, now)
            .await?
            .ok_or(AccessError::InvalidToken(scheme))?;
        // The token is checked before the proof: an unknown token, or an unbound one sent
        // as DPoP, is `invalid_token` whatever the proof.
        match (dpop, &live.dpop_jkt) {
            (None, None) => {}
            (None, Some(_)) | (Some(_), None) => return Err(AccessError::InvalidToken(scheme)),
            (Some(request), Some(bound)) => self
                .check_resource_proof(request, token, bound)
                .map_err(AccessError::InvalidDpopProof)?,
        }
        let user = &live.user;
        if let Some(scope) = required
            && !live
                .scopes
                .intersection(&user.allowed_scopes())
                .contains(scope)
        {
            return Err(AccessError::InsufficientScope(scope, scheme));
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
