//! The one place errors become HTTP: FastAPI `detail` bodies, RFC 6749 token errors,
//! RFC 6750 challenges, and the framework's own 404/405/413 in the same JSON. The second
//! factor's routes (`second_factor.rs`) and the framework's errors (`framework.rs`) have
//! files of their own.

mod framework;
mod second_factor;

use poem::{IntoResponse, Response};
use poem_openapi::{ApiResponse, Object, payload::Json, types::Example};
use serde_json::json;

pub use self::{
    framework::{AllowedMethods, framework_error},
    second_factor::{TotpConfirmErrorResponse, TotpEnrolErrorResponse, TotpRemoveErrorResponse},
};
use crate::{
    auth::{
        AccessError, FieldError, FieldErrorKind, IntrospectionError, LoginError, TokenType,
        dpop::ALGORITHMS,
    },
    scope::Scope,
};

/// The detail of a wrong, missing or used one-time code.
const INCORRECT_CODE: &str = "Incorrect one-time code";

/// How long a client should wait before retrying when the database does not answer.
pub const UNAVAILABLE_RETRY_AFTER_SECS: u64 = 1;

/// An error body: `detail` says what went wrong.
#[derive(Object, Debug)]
pub struct Detail {
    /// What went wrong.
    pub detail: String,
}

impl Detail {
    fn json(detail: &str) -> Json<Detail> {
        Json(Detail {
            detail: detail.to_owned(),
        })
    }
}

/// A token-endpoint error (RFC 6749, section 5.2), with FastAPI's `detail` beside it.
#[derive(Object, Debug)]
#[oai(example)]
pub struct OAuthError {
    /// A message, or for a malformed request a list of field errors in FastAPI's shape
    /// (`[{"type": "missing", "loc": ["body", "username"], "msg": "Field required"}]`).
    pub detail: serde_json::Value,
    /// The RFC 6749 error code.
    pub error: String,
    /// A human-readable ASCII explanation (Swagger UI shows it in the Authorize dialog).
    pub error_description: String,
}

impl Example for OAuthError {
    fn example() -> Self {
        Self {
            detail: json!("Incorrect username or password"),
            error: "invalid_grant".into(),
            error_description: "Incorrect username or password".into(),
        }
    }
}

impl OAuthError {
    fn json(detail: serde_json::Value, error: &str, description: impl Into<String>) -> Json<Self> {
        Json(Self {
            detail,
            error: error.to_owned(),
            error_description: description.into(),
        })
    }
}

/// How the token endpoints (`/token`, `/token/revoke`) fail.
#[derive(ApiResponse, Debug)]
pub enum TokenErrorResponse {
    /// `invalid_request` (missing, empty or repeated parameter, not a form body),
    /// `unsupported_grant_type`, `invalid_scope`, `invalid_grant` (wrong username or
    /// password; an unknown, expired, spent or revoked refresh token; a disabled user;
    /// for a user with a second factor, a one-time code missing, wrong or already used),
    /// or `invalid_dpop_proof` (a `DPoP` header that does not hold, or a bound session's
    /// refresh without a proof of its key).
    #[oai(status = 400)]
    BadRequest(Json<OAuthError>),
    /// `invalid_client`: a registered client's id without its secret, or with a wrong one.
    #[oai(status = 401)]
    Unauthorized(Json<OAuthError>, #[oai(header = "WWW-Authenticate")] String),
    /// The request body did not arrive in time.
    #[oai(status = 408)]
    RequestTimeout(Json<OAuthError>),
    /// The request body is over the size limit.
    #[oai(status = 413)]
    PayloadTooLarge(Json<OAuthError>),
    /// Too many failed logins for this username or from this address; retry after the
    /// given number of seconds.
    #[oai(status = 429)]
    TooManyRequests(Json<OAuthError>, #[oai(header = "Retry-After")] u64),
    /// The database does not answer; retry after the given number of seconds.
    #[oai(status = 503)]
    Unavailable(Json<OAuthError>, #[oai(header = "Retry-After")] u64),
}

/// How introspection fails.
#[derive(ApiResponse, Debug)]
pub enum IntrospectionErrorResponse {
    /// `invalid_request`: `token` missing, or a parameter repeated.
    #[oai(status = 400)]
    BadRequest(Json<OAuthError>),
    /// `invalid_client`: no client credentials, wrong ones, an unknown client, or
    /// credentials sent both ways.
    #[oai(status = 401)]
    Unauthorized(Json<OAuthError>, #[oai(header = "WWW-Authenticate")] String),
    /// The request body did not arrive in time.
    #[oai(status = 408)]
    RequestTimeout(Json<OAuthError>),
    /// The request body is over the size limit.
    #[oai(status = 413)]
    PayloadTooLarge(Json<OAuthError>),
    /// Too many failed client authentications for this client id or from this address;
    /// retry after the given number of seconds.
    #[oai(status = 429)]
    TooManyRequests(Json<OAuthError>, #[oai(header = "Retry-After")] u64),
    /// The database does not answer; retry after the given number of seconds.
    #[oai(status = 503)]
    Unavailable(Json<OAuthError>, #[oai(header = "Retry-After")] u64),
}

impl From<IntrospectionError> for IntrospectionErrorResponse {
    fn from(err: IntrospectionError) -> Self {
        match err {
            IntrospectionError::InvalidRequest(errors) => Self::BadRequest(OAuthError::json(
                field_errors_json(&errors),
                "invalid_request",
                field_errors_description(&errors),
            )),
            IntrospectionError::InvalidClient => {
                let (body, challenge) = invalid_client();
                Self::Unauthorized(body, challenge)
            }
            IntrospectionError::TooManyAttempts(wait) => Self::TooManyRequests(
                OAuthError::json(
                    json!("Too many failed client authentications"),
                    "temporarily_unavailable",
                    "Too many failed client authentications; retry after the Retry-After delay",
                ),
                retry_after_secs(wait),
            ),
            IntrospectionError::Unavailable(err) => {
                tracing::error!(error = %err, "database error on the introspection endpoint");
                Self::Unavailable(unavailable(), UNAVAILABLE_RETRY_AFTER_SECS)
            }
        }
    }
}

/// How the routes that need a bearer token fail.
#[derive(ApiResponse, Debug)]
pub enum AccessErrorResponse {
    /// The token belongs to a disabled user (`Inactive user`), or the request carries
    /// more than one `Authorization` header (`invalid_request` challenge).
    #[oai(status = 400)]
    BadRequest(
        Json<Detail>,
        #[oai(header = "WWW-Authenticate")] Option<String>,
    ),
    /// No bearer token (`Not authenticated`); one that is unknown, malformed, expired or
    /// revoked, or sent with the scheme of the other binding (`Invalid authentication
    /// credentials`); or a DPoP-bound token without a good proof of its key (`Invalid
    /// DPoP proof`, with the `DPoP` challenge).
    #[oai(status = 401)]
    Unauthorized(Json<Detail>, #[oai(header = "WWW-Authenticate")] String),
    /// The token lacks a scope this operation needs.
    #[oai(status = 403)]
    Forbidden(Json<Detail>, #[oai(header = "WWW-Authenticate")] String),
    /// The database does not answer; retry after the given number of seconds.
    #[oai(status = 503)]
    Unavailable(Json<Detail>, #[oai(header = "Retry-After")] u64),
}

/// The 401 of a failed client authentication (RFC 6749, section 5.2), with its challenge.
fn invalid_client() -> (Json<OAuthError>, String) {
    (
        OAuthError::json(
            json!("Invalid client credentials"),
            "invalid_client",
            "Client authentication failed: send a registered client's id and secret \
             by HTTP Basic or as client_id and client_secret",
        ),
        r#"Basic realm="simple-oauth2""#.into(),
    )
}

/// Whole seconds to wait, rounded up: retrying a fraction of a second early would be
/// refused again.
fn retry_after_secs(wait: std::time::Duration) -> u64 {
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}

/// The 503 body of the endpoints that answer in RFC 6749's format.
fn unavailable() -> Json<OAuthError> {
    OAuthError::json(
        json!("Service temporarily unavailable"),
        "temporarily_unavailable",
        "The service is temporarily unavailable; retry shortly",
    )
}

fn field_errors_json(errors: &[FieldError]) -> serde_json::Value {
    errors
        .iter()
        .map(|e| {
            let (kind, msg) = match e.kind {
                FieldErrorKind::Missing => ("missing", "Field required"),
                FieldErrorKind::Repeated => ("value_error", "Field must not be repeated"),
            };
            json!({"type": kind, "loc": ["body", e.field], "msg": msg})
        })
        .collect()
}

fn field_errors_description(errors: &[FieldError]) -> String {
    let names = |kind| {
        errors
            .iter()
            .filter(|e| e.kind == kind)
            .map(|e| e.field)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let missing = names(FieldErrorKind::Missing);
    let repeated = names(FieldErrorKind::Repeated);
    match (missing.is_empty(), repeated.is_empty()) {
        (false, true) => format!("Missing required parameter: {missing}"),
        (true, false) => format!("Repeated parameter: {repeated}"),
        _ => format!("Missing required parameter: {missing}; repeated parameter: {repeated}"),
    }
}

impl From<LoginError> for TokenErrorResponse {
    fn from(err: LoginError) -> Self {
        let bad_request = |detail: &str, error: &str, description: &str| {
            Self::BadRequest(OAuthError::json(json!(detail), error, description))
        };
        match err {
            LoginError::InvalidRequest(errors) => Self::BadRequest(OAuthError::json(
                field_errors_json(&errors),
                "invalid_request",
                field_errors_description(&errors),
            )),
            LoginError::UnsupportedGrantType(supported) => {
                let names: Vec<_> = supported.iter().map(|grant| grant.name()).collect();
                bad_request(
                    "Unsupported grant type",
                    "unsupported_grant_type",
                    &format!("Supported grant types: {}", names.join(", ")),
                )
            }
            LoginError::InvalidScope(_) => bad_request(
                "Invalid scope",
                "invalid_scope",
                &format!(
                    "Unknown scope requested; known scopes: {}",
                    Scope::all_names()
                ),
            ),
            LoginError::ScopeTooWide => bad_request(
                "Invalid scope",
                "invalid_scope",
                "The requested scope exceeds the scope granted to the session",
            ),
            LoginError::InvalidRefreshToken => bad_request(
                "Invalid refresh token",
                "invalid_grant",
                "The refresh token is invalid, expired, spent or revoked",
            ),
            LoginError::InactiveUser => {
                bad_request("Inactive user", "invalid_grant", "The user is disabled")
            }
            LoginError::InvalidGrant => bad_request(
                "Incorrect username or password",
                "invalid_grant",
                "Incorrect username or password",
            ),
            LoginError::SecondFactorRequired => bad_request(
                "One-time code required",
                "invalid_grant",
                "A one-time code is required: send it in the totp field, or append it to the password",
            ),
            LoginError::IncorrectOneTimeCode => {
                bad_request(INCORRECT_CODE, "invalid_grant", INCORRECT_CODE)
            }
            LoginError::InvalidClient => {
                let (body, challenge) = invalid_client();
                Self::Unauthorized(body, challenge)
            }
            LoginError::InvalidDpopProof(err) => {
                bad_request("Invalid DPoP proof", "invalid_dpop_proof", &err.to_string())
            }
            LoginError::TooManyAttempts(wait) => Self::TooManyRequests(
                OAuthError::json(
                    json!("Too many failed login attempts"),
                    "temporarily_unavailable",
                    "Too many failed login attempts; retry after the Retry-After delay",
                ),
                retry_after_secs(wait),
            ),
            LoginError::Unavailable(err) => {
                tracing::error!(error = %err, "database error on a token endpoint");
                Self::Unavailable(unavailable(), UNAVAILABLE_RETRY_AFTER_SECS)
            }
        }
    }
}

impl From<AccessError> for AccessErrorResponse {
    fn from(err: AccessError) -> Self {
        match err {
            AccessError::NotAuthenticated => {
                Self::Unauthorized(Detail::json("Not authenticated"), "Bearer".into())
            }
            AccessError::InvalidToken(scheme) => Self::Unauthorized(
                Detail::json("Invalid authentication credentials"),
                format!(r#"{} error="invalid_token""#, challenge_scheme(scheme)),
            ),
            AccessError::InvalidDpopProof(_) => Self::Unauthorized(
                Detail::json("Invalid DPoP proof"),
                format!(
                    r#"DPoP error="invalid_dpop_proof", algs="{}""#,
                    ALGORITHMS.join(" ")
                ),
            ),
            AccessError::InsufficientScope(scope, scheme) => Self::Forbidden(
                Detail::json("Not enough permissions"),
                format!(
                    r#"{} error="insufficient_scope", scope="{}""#,
                    challenge_scheme(scheme),
                    scope.name()
                ),
            ),
            AccessError::InvalidRequest => Self::BadRequest(
                Detail::json("Only one Authorization header is allowed"),
                Some(r#"Bearer error="invalid_request""#.into()),
            ),
            AccessError::InactiveUser => Self::BadRequest(Detail::json("Inactive user"), None),
            AccessError::Unavailable(err) => {
                tracing::error!(error = %err, "database error on a protected route");
                Self::Unavailable(
                    Detail::json("Service temporarily unavailable"),
                    UNAVAILABLE_RETRY_AFTER_SECS,
                )
            }
        }
    }
}

/// The authentication scheme a challenge names: the one the token was sent with.
fn challenge_scheme(token_type: TokenType) -> &'static str {
    match token_type {
        TokenType::Bearer => "Bearer",
        TokenType::Dpop => "DPoP",
    }
}

/// The 413 answer for a body over the limit, in the token endpoints' format (the only
/// routes that take a body).
pub fn payload_too_large(limit: usize) -> Response {
    TokenErrorResponse::PayloadTooLarge(OAuthError::json(
        json!("Request body too large"),
        "invalid_request",
        format!("The request body must be at most {limit} bytes"),
    ))
    .into_response()
}

/// The 400 answer for a body that is not a form (JSON, text): FastAPI's form fields must
/// be sent as one, and a client that sent JSON needs to hear that rather than "missing
/// username".
pub fn not_a_form() -> Response {
    TokenErrorResponse::BadRequest(OAuthError::json(
        json!("The request body must be a form"),
        "invalid_request",
        "The parameters must be sent as a form: Content-Type \
         application/x-www-form-urlencoded or multipart/form-data",
    ))
    .into_response()
}

/// The 400 answer for a `multipart/form-data` body that does not parse.
pub fn malformed_multipart() -> Response {
    TokenErrorResponse::BadRequest(OAuthError::json(
        json!("The multipart form could not be read"),
        "invalid_request",
        "The multipart/form-data body is malformed (check its boundary)",
    ))
    .into_response()
}

/// The 408 answer for a body that did not arrive in time.
pub fn body_timeout() -> Response {
    TokenErrorResponse::RequestTimeout(OAuthError::json(
        json!("Request body not received in time"),
        "invalid_request",
        "The request body did not arrive in time",
    ))
    .into_response()
}
