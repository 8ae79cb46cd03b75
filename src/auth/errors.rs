//! Why each flow refuses a request, and what each refusal counts as in the metrics.

use std::time::Duration;

use super::{
    GrantType,
    dpop::{ProofError, TokenType},
    throttle::Refusal,
};
use crate::scope::{Scope, UnknownScope};

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
    /// The password was right; the user has a second factor and no code was sent.
    #[error("one-time code required")]
    SecondFactorRequired,
    /// The password was right; the one-time code was wrong or already used.
    #[error("incorrect one-time code")]
    IncorrectOneTimeCode,
    #[error("invalid refresh token")]
    InvalidRefreshToken,
    #[error("inactive user")]
    InactiveUser,
    /// A registered client's id without its secret, or with a wrong one.
    #[error("client authentication failed")]
    InvalidClient,
    #[error("too many failed logins")]
    TooManyAttempts(Duration),
    /// The DPoP proof does not hold, or does not fit the session (RFC 9449).
    #[error("invalid DPoP proof: {0}")]
    InvalidDpopProof(#[from] ProofError),
    #[error("database unavailable: {0}")]
    Unavailable(#[from] sqlx::Error),
}

/// Why a registered client's credentials were not accepted.
#[derive(Debug, thiserror::Error)]
pub enum ClientAuthError {
    #[error("client authentication failed")]
    InvalidClient,
    #[error("too many failed client authentications")]
    TooManyAttempts(Duration),
    #[error("database unavailable: {0}")]
    Unavailable(#[from] sqlx::Error),
}

impl From<Refusal> for LoginError {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::Throttled(wait) => LoginError::TooManyAttempts(wait),
            Refusal::Database(err) => LoginError::Unavailable(err),
        }
    }
}

impl From<Refusal> for ClientAuthError {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::Throttled(wait) => ClientAuthError::TooManyAttempts(wait),
            Refusal::Database(err) => ClientAuthError::Unavailable(err),
        }
    }
}

impl From<ClientAuthError> for LoginError {
    fn from(err: ClientAuthError) -> Self {
        match err {
            ClientAuthError::InvalidClient => LoginError::InvalidClient,
            ClientAuthError::TooManyAttempts(wait) => LoginError::TooManyAttempts(wait),
            ClientAuthError::Unavailable(err) => LoginError::Unavailable(err),
        }
    }
}

impl From<ClientAuthError> for IntrospectionError {
    fn from(err: ClientAuthError) -> Self {
        match err {
            ClientAuthError::InvalidClient => IntrospectionError::InvalidClient,
            ClientAuthError::TooManyAttempts(wait) => IntrospectionError::TooManyAttempts(wait),
            ClientAuthError::Unavailable(err) => IntrospectionError::Unavailable(err),
        }
    }
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
            LoginError::InvalidClient => "invalid_client",
            LoginError::SecondFactorRequired => "second_factor_required",
            LoginError::IncorrectOneTimeCode => "second_factor_failed",
            LoginError::TooManyAttempts(_) => "throttled",
            LoginError::InvalidDpopProof(_) => "invalid_dpop_proof",
            LoginError::Unavailable(_) => "unavailable",
        }
    }
}

/// Why an access token does not give access. The token type is the scheme it was sent
/// with, which the challenge names.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error("no bearer token")]
    NotAuthenticated,
    #[error("more than one Authorization header")]
    InvalidRequest,
    /// Unknown, expired or revoked; or sent with the scheme of the other binding.
    #[error("invalid token")]
    InvalidToken(TokenType),
    /// A DPoP-bound token without a proof of its key (RFC 9449, section 7).
    #[error("invalid DPoP proof: {0}")]
    InvalidDpopProof(ProofError),
    #[error("the token lacks the {0:?} scope")]
    InsufficientScope(Scope, TokenType),
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
            AccessError::InvalidToken(_) => "invalid_token",
            AccessError::InvalidDpopProof(_) => "invalid_dpop_proof",
            AccessError::InsufficientScope(..) => "insufficient_scope",
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
    #[error("too many failed client authentications")]
    TooManyAttempts(Duration),
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
            IntrospectionError::TooManyAttempts(_) => "throttled",
            IntrospectionError::Unavailable(_) => "unavailable",
        }
    }
}
