//! How the second factor's routes (`/users/me/totp`) fail: each operation documents
//! exactly the statuses it can answer.

use poem_openapi::{ApiResponse, payload::Json};

use super::{
    AccessErrorResponse, Detail, INCORRECT_CODE, OAuthError, UNAVAILABLE_RETRY_AFTER_SECS,
    retry_after_secs,
};
use crate::auth::SecondFactorError;

/// How a second-factor refusal answers, before it is fitted to the statuses its
/// operation documents.
enum SecondFactorAnswer {
    BadRequest(Json<Detail>, Option<String>),
    Unauthorized(Json<Detail>, String),
    Conflict(Json<Detail>),
    TooManyRequests(Json<Detail>, u64),
    Unavailable(Json<Detail>, u64),
}

impl From<SecondFactorError> for SecondFactorAnswer {
    fn from(err: SecondFactorError) -> Self {
        match err {
            // Exactly as on `/users/me`.
            SecondFactorError::Access(err) => match AccessErrorResponse::from(err) {
                AccessErrorResponse::BadRequest(detail, challenge) => {
                    Self::BadRequest(detail, challenge)
                }
                // No scope is needed here, so there is no 403; were there one, it would
                // be a refusal to authenticate.
                AccessErrorResponse::Unauthorized(detail, challenge)
                | AccessErrorResponse::Forbidden(detail, challenge) => {
                    Self::Unauthorized(detail, challenge)
                }
                AccessErrorResponse::Unavailable(detail, retry) => Self::Unavailable(detail, retry),
            },
            SecondFactorError::AlreadyActive => {
                Self::Conflict(Detail::json("A second factor is already active"))
            }
            SecondFactorError::IncorrectCode => {
                Self::BadRequest(Detail::json(INCORRECT_CODE), None)
            }
            SecondFactorError::TooManyAttempts(wait) => Self::TooManyRequests(
                Detail::json("Too many failed attempts"),
                retry_after_secs(wait),
            ),
            SecondFactorError::Unavailable(err) => {
                tracing::error!(error = %err, "database error on a second-factor route");
                Self::Unavailable(
                    Detail::json("Service temporarily unavailable"),
                    UNAVAILABLE_RETRY_AFTER_SECS,
                )
            }
        }
    }
}

/// How `POST /users/me/totp` fails.
#[derive(ApiResponse, Debug)]
pub enum TotpEnrolErrorResponse {
    /// The token belongs to a disabled user (`Inactive user`), or the request carries
    /// more than one `Authorization` header (`invalid_request` challenge).
    #[oai(status = 400)]
    BadRequest(
        Json<Detail>,
        #[oai(header = "WWW-Authenticate")] Option<String>,
    ),
    /// No bearer token (`Not authenticated`), or one that is unknown, malformed, expired
    /// or revoked (`Invalid authentication credentials`).
    #[oai(status = 401)]
    Unauthorized(Json<Detail>, #[oai(header = "WWW-Authenticate")] String),
    /// A second factor is active already: remove it first.
    #[oai(status = 409)]
    Conflict(Json<Detail>),
    /// The database does not answer; retry after the given number of seconds.
    #[oai(status = 503)]
    Unavailable(Json<Detail>, #[oai(header = "Retry-After")] u64),
}

impl From<SecondFactorError> for TotpEnrolErrorResponse {
    fn from(err: SecondFactorError) -> Self {
        match SecondFactorAnswer::from(err) {
            SecondFactorAnswer::BadRequest(detail, challenge) => {
                Self::BadRequest(detail, challenge)
            }
            SecondFactorAnswer::Unauthorized(detail, challenge) => {
                Self::Unauthorized(detail, challenge)
            }
            SecondFactorAnswer::Conflict(detail) => Self::Conflict(detail),
            // Enrolment checks no code, so nothing is throttled.
            SecondFactorAnswer::TooManyRequests(detail, retry)
            | SecondFactorAnswer::Unavailable(detail, retry) => Self::Unavailable(detail, retry),
        }
    }
}

/// How `POST /users/me/totp/confirm` fails.
#[derive(ApiResponse, Debug)]
pub enum TotpConfirmErrorResponse {
    /// `Incorrect one-time code` (wrong, missing, malformed or already used, or no
    /// pending second factor); the token belongs to a disabled
    /// user (`Inactive user`); or the request carries more than one `Authorization`
    /// header (`invalid_request` challenge).
    #[oai(status = 400)]
    BadRequest(
        Json<Detail>,
        #[oai(header = "WWW-Authenticate")] Option<String>,
    ),
    /// No bearer token (`Not authenticated`), or one that is unknown, malformed, expired
    /// or revoked (`Invalid authentication credentials`).
    #[oai(status = 401)]
    Unauthorized(Json<Detail>, #[oai(header = "WWW-Authenticate")] String),
    /// The request body did not arrive in time (answered before the operation runs).
    #[oai(status = 408)]
    #[allow(dead_code)]
    RequestTimeout(Json<OAuthError>),
    /// The second factor is active already.
    #[oai(status = 409)]
    Conflict(Json<Detail>),
    /// The request body is over the size limit (answered before the operation runs).
    #[oai(status = 413)]
    #[allow(dead_code)]
    PayloadTooLarge(Json<OAuthError>),
    /// Too many wrong codes or failed logins for this user, or from this address; retry
    /// after the given number of seconds.
    #[oai(status = 429)]
    TooManyRequests(Json<Detail>, #[oai(header = "Retry-After")] u64),
    /// The database does not answer; retry after the given number of seconds.
    #[oai(status = 503)]
    Unavailable(Json<Detail>, #[oai(header = "Retry-After")] u64),
}

impl From<SecondFactorError> for TotpConfirmErrorResponse {
    fn from(err: SecondFactorError) -> Self {
        match SecondFactorAnswer::from(err) {
            SecondFactorAnswer::BadRequest(detail, challenge) => {
                Self::BadRequest(detail, challenge)
            }
            SecondFactorAnswer::Unauthorized(detail, challenge) => {
                Self::Unauthorized(detail, challenge)
            }
            SecondFactorAnswer::Conflict(detail) => Self::Conflict(detail),
            SecondFactorAnswer::TooManyRequests(detail, retry) => {
                Self::TooManyRequests(detail, retry)
            }
            SecondFactorAnswer::Unavailable(detail, retry) => Self::Unavailable(detail, retry),
        }
    }
}

/// How `DELETE /users/me/totp` fails.
#[derive(ApiResponse, Debug)]
pub enum TotpRemoveErrorResponse {
    /// `Incorrect one-time code` (wrong, missing, malformed or already used, or no
    /// second factor to remove); the token belongs to a disabled
    /// user (`Inactive user`); or the request carries more than one `Authorization`
    /// header (`invalid_request` challenge).
    #[oai(status = 400)]
    BadRequest(
        Json<Detail>,
        #[oai(header = "WWW-Authenticate")] Option<String>,
    ),
    /// No bearer token (`Not authenticated`), or one that is unknown, malformed, expired
    /// or revoked (`Invalid authentication credentials`).
    #[oai(status = 401)]
    Unauthorized(Json<Detail>, #[oai(header = "WWW-Authenticate")] String),
    /// The request body did not arrive in time (answered before the operation runs).
    #[oai(status = 408)]
    #[allow(dead_code)]
    RequestTimeout(Json<OAuthError>),
    /// The request body is over the size limit (answered before the operation runs).
    #[oai(status = 413)]
    #[allow(dead_code)]
    PayloadTooLarge(Json<OAuthError>),
    /// Too many wrong codes or failed logins for this user, or from this address; retry
    /// after the given number of seconds.
    #[oai(status = 429)]
    TooManyRequests(Json<Detail>, #[oai(header = "Retry-After")] u64),
    /// The database does not answer; retry after the given number of seconds.
    #[oai(status = 503)]
    Unavailable(Json<Detail>, #[oai(header = "Retry-After")] u64),
}

impl From<SecondFactorError> for TotpRemoveErrorResponse {
    fn from(err: SecondFactorError) -> Self {
        match SecondFactorAnswer::from(err) {
            SecondFactorAnswer::BadRequest(detail, challenge) => {
                Self::BadRequest(detail, challenge)
            }
            SecondFactorAnswer::Unauthorized(detail, challenge) => {
                Self::Unauthorized(detail, challenge)
            }
            // A removal has no conflict: any factor, pending or active, is removed.
            SecondFactorAnswer::Conflict(detail) => Self::BadRequest(detail, None),
            SecondFactorAnswer::TooManyRequests(detail, retry) => {
                Self::TooManyRequests(detail, retry)
            }
            SecondFactorAnswer::Unavailable(detail, retry) => Self::Unavailable(detail, retry),
        }
    }
}
