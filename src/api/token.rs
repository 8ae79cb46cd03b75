//! `POST /token` (the OAuth2 password grant) and `POST /token/revoke` (RFC 7009).

use std::sync::Arc;

use poem::web::RemoteAddr;
use poem_openapi::{
    ApiResponse, Object, OpenApi,
    payload::Json,
    types::{Example, Password},
};
use secrecy::SecretString;

use super::{ApiTags, form::UrlEncoded};
use crate::{
    auth::{Auth, IssuedToken, LoginError, LoginRequest},
    error::TokenErrorResponse,
    scope::Scopes,
};

/// The password-grant form, as FastAPI's `OAuth2PasswordRequestForm`.
#[derive(Object)]
#[oai(rename = "TokenRequest", example)]
#[allow(dead_code)] // Describes the form in OpenAPI; `UrlEncoded` reads the fields.
struct TokenForm {
    /// Exact username (case-sensitive).
    #[oai(validator(min_length = 1, max_length = 128))]
    username: String,
    /// The user's password.
    #[oai(validator(min_length = 1, max_length = 1024))]
    password: Password,
    /// When present, must be `password`.
    #[oai(validator(pattern = "^password$"))]
    grant_type: Option<String>,
    /// Space-separated scopes to request (`me`, `items`).
    #[oai(default)]
    scope: String,
    /// Accepted and ignored.
    client_id: Option<String>,
    /// Accepted and ignored.
    client_secret: Option<Password>,
}

impl Example for TokenForm {
    fn example() -> Self {
        Self {
            username: "johndoe".into(),
            password: Password("secret".into()),
            grant_type: Some("password".into()),
            scope: "me items".into(),
            client_id: None,
            client_secret: None,
        }
    }
}

/// The revocation form (RFC 7009, section 2.1).
#[derive(Object)]
#[oai(rename = "RevocationRequest")]
#[allow(dead_code)] // Describes the form in OpenAPI; `UrlEncoded` reads the fields.
struct RevocationForm {
    /// The access token to revoke.
    #[oai(validator(min_length = 1))]
    token: String,
    /// Accepted and ignored: only access tokens exist.
    token_type_hint: Option<String>,
}

/// A bearer token (RFC 6749, section 5.1).
#[derive(Object)]
#[oai(rename = "Token", example)]
struct TokenBody {
    /// The opaque token to send as `Authorization: Bearer <token>`.
    access_token: String,
    /// Always `bearer`.
    token_type: String,
    /// Seconds until the token expires.
    expires_in: u64,
    /// The granted scopes, space-separated; absent when none were granted.
    #[oai(skip_serializing_if_is_none)]
    scope: Option<String>,
}

impl Example for TokenBody {
    fn example() -> Self {
        Self {
            access_token: "Ny3zBYbQ1hCNbUn3wH8g0gS0mX4eZxWz0uY5-4Ujv_Q".into(),
            token_type: "bearer".into(),
            expires_in: 1800,
            scope: Some("me items".into()),
        }
    }
}

impl From<IssuedToken> for TokenBody {
    fn from(issued: IssuedToken) -> Self {
        Self {
            access_token: issued.access_token,
            token_type: "bearer".into(),
            expires_in: issued.expires_in.as_secs(),
            scope: (!issued.scopes.is_empty()).then(|| issued.scopes.to_string()),
        }
    }
}

#[derive(ApiResponse)]
enum TokenResponse {
    /// Logged in. Never cache the token.
    #[oai(status = 200)]
    Ok(
        Json<TokenBody>,
        #[oai(header = "Cache-Control")] String,
        #[oai(header = "Pragma")] String,
    ),
}

/// An empty JSON object.
#[derive(Object)]
struct Empty {}

#[derive(ApiResponse)]
enum RevokeResponse {
    /// The token is revoked, or never existed.
    #[oai(status = 200)]
    Ok(Json<Empty>),
}

/// Reads the password-grant form, in the order RFC 6749 implies: the grant type decides
/// which other parameters matter.
fn login_request(form: &UrlEncoded<TokenForm>) -> Result<LoginRequest, LoginError> {
    let grant_type = form
        .get("grant_type")
        .map_err(|err| LoginError::InvalidRequest(vec![err]))?;
    if grant_type.is_some_and(|grant| grant != "password") {
        return Err(LoginError::UnsupportedGrantType);
    }
    let [username, password, scope, _, _] = form
        .get_all([
            ("username", true),
            ("password", true),
            ("scope", false),
            ("client_id", false),
            ("client_secret", false),
        ])
        .map_err(LoginError::InvalidRequest)?;
    // `get_all` has made sure the required fields are there.
    Ok(LoginRequest {
        username: username.unwrap_or_default().to_owned(),
        password: SecretString::from(password.unwrap_or_default()),
        scopes: Scopes::parse(scope.unwrap_or_default()).map_err(LoginError::InvalidScope)?,
    })
}

pub struct TokenApi {
    pub auth: Arc<Auth>,
}

#[OpenApi(tag = "ApiTags::Auth")]
impl TokenApi {
    /// Log in (OAuth2 password grant)
    ///
    /// Exchanges a username and password for a bearer token, as FastAPI's
    /// `OAuth2PasswordRequestForm`. Errors follow RFC 6749: `error` and
    /// `error_description`, plus FastAPI's `detail`.
    #[oai(path = "/token", method = "post", operation_id = "login")]
    async fn login(
        &self,
        form: UrlEncoded<TokenForm>,
        remote: &RemoteAddr,
    ) -> Result<TokenResponse, TokenErrorResponse> {
        let request = login_request(&form)?;
        let client = remote.as_socket_addr().map(|addr| addr.ip());
        let issued = self.auth.login(request, client).await?;
        Ok(TokenResponse::Ok(
            Json(issued.into()),
            "no-store".into(),
            "no-cache".into(),
        ))
    }

    /// Revoke a token (RFC 7009)
    ///
    /// The token stops working at once on every route. Answers 200 whether or not the
    /// token existed.
    #[oai(path = "/token/revoke", method = "post", operation_id = "revoke_token")]
    async fn revoke(
        &self,
        form: UrlEncoded<RevocationForm>,
    ) -> Result<RevokeResponse, TokenErrorResponse> {
        let [token, _] = form
            .get_all([("token", true), ("token_type_hint", false)])
            .map_err(LoginError::InvalidRequest)?;
        self.auth.revoke(token.unwrap_or_default()).await?;
        Ok(RevokeResponse::Ok(Json(Empty {})))
    }
}
