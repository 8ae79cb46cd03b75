//! `POST /token` (the OAuth2 password and refresh-token grants) and `POST /token/revoke`
//! (RFC 7009).

use std::sync::Arc;

use cookie::{Cookie, SameSite};
use poem::{Request, http::header, web::RemoteAddr};
use poem_openapi::{
    ApiResponse, Object, OpenApi,
    payload::Json,
    types::{Example, Password},
};
use secrecy::SecretString;

use super::{ApiTags, bearer::dpop_header, form::UrlEncoded, introspect::BasicCredentials};
use crate::{
    auth::{
        Auth, ClientCredentials, DpopRequest, GrantType, IssuedToken, LoginError, LoginRequest,
        RefreshRequest, TokenType, devices::DEVICE_COOKIE_LIFETIME,
    },
    error::TokenErrorResponse,
    scope::Scopes,
};

/// The token form: FastAPI's `OAuth2PasswordRequestForm` (`grant_type=password`, the
/// default), or a refresh (`grant_type=refresh_token`, RFC 6749 section 6).
#[derive(Object)]
#[oai(rename = "TokenRequest", example)]
#[allow(dead_code)] // Describes the form in OpenAPI; `UrlEncoded` reads the fields.
struct TokenForm {
    /// `password` (the default) or `refresh_token`.
    #[oai(validator(pattern = "^(password|refresh_token)$"))]
    grant_type: Option<String>,
    /// Password grant: the exact username (case-sensitive). Required for it.
    #[oai(validator(min_length = 1, max_length = 128))]
    username: Option<String>,
    /// Password grant: the user's password. Required for it.
    #[oai(validator(min_length = 1, max_length = 1024))]
    password: Option<Password>,
    /// Refresh grant: the refresh token from an earlier answer. Required for it.
    #[oai(validator(min_length = 1))]
    refresh_token: Option<String>,
    /// Space-separated scopes (`me`, `items`). On a refresh, a subset of the session's;
    /// omitted, all of them.
    #[oai(default)]
    scope: String,
    /// Optional. A registered client's id must come with its secret (here or by HTTP
    /// Basic); it is then remembered with the session (introspection reports it). Any
    /// other id is accepted and not remembered.
    client_id: Option<String>,
    /// A registered client's secret, when not sent by HTTP Basic.
    client_secret: Option<Password>,
    /// Password grant, for a user with a second factor: the current 6-digit one-time
    /// code. Without this field it may be appended to the password (`secret123456`).
    totp: Option<Password>,
}

impl Example for TokenForm {
    fn example() -> Self {
        Self {
            grant_type: Some("password".into()),
            username: Some("johndoe".into()),
            password: Some(Password("secret".into())),
            refresh_token: None,
            scope: "me items".into(),
            client_id: None,
            client_secret: None,
            totp: None,
        }
    }
}

/// The revocation form (RFC 7009, section 2.1).
#[derive(Object)]
#[oai(rename = "RevocationRequest")]
#[allow(dead_code)] // Describes the form in OpenAPI; `UrlEncoded` reads the fields.
struct RevocationForm {
    /// The token to revoke: an access token (it alone ends), or a refresh token (its
    /// whole session ends, access tokens included).
    #[oai(validator(min_length = 1))]
    token: String,
    /// `access_token` or `refresh_token`; only a hint, a wrong one still works.
    token_type_hint: Option<String>,
}

/// A bearer token (RFC 6749, section 5.1).
#[derive(Object)]
#[oai(rename = "Token", example)]
struct TokenBody {
    /// The opaque token to send as `Authorization: Bearer <token>` (or `DPoP <token>`).
    access_token: String,
    /// `bearer`, or `DPoP` when the request carried a DPoP proof: the tokens are then
    /// bound to its key (RFC 9449).
    token_type: String,
    /// Seconds until the access token expires.
    expires_in: u64,
    /// For `grant_type=refresh_token`: a new one comes with every answer, and the one
    /// used is spent. Absent when refresh tokens are switched off.
    #[oai(skip_serializing_if_is_none)]
    refresh_token: Option<String>,
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
            refresh_token: Some("tGzv3JOkF0XG5Qx2TlKWIA-8hxXk6kF7yMcpOAcZ0Ts".into()),
            scope: Some("me items".into()),
        }
    }
}

impl From<IssuedToken> for TokenBody {
    fn from(issued: IssuedToken) -> Self {
        Self {
            access_token: issued.access_token,
            token_type: match issued.token_type {
                TokenType::Bearer => "bearer".into(),
                TokenType::Dpop => "DPoP".into(),
            },
            expires_in: issued.expires_in.as_secs(),
            refresh_token: issued.refresh_token,
            scope: (!issued.scopes.is_empty()).then(|| issued.scopes.to_string()),
        }
    }
}

#[derive(ApiResponse)]
enum TokenResponse {
    /// Logged in, or refreshed. Never cache the tokens. A password login also sets the
    /// trusted-device cookie (`device`, for `/token` only), which spares this client the
    /// per-username lockout that others can set off.
    #[oai(status = 200)]
    Ok(
        Json<TokenBody>,
        #[oai(header = "Cache-Control")] String,
        #[oai(header = "Pragma")] String,
        #[oai(header = "Set-Cookie")] Option<String>,
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

/// A well-formed token request, of one of the grants.
enum Grant {
    Password(LoginRequest),
    Refresh(RefreshRequest),
}

/// Reads the token form in the order RFC 6749 implies: the grant type decides which other
/// parameters matter. `enabled`: the grant types switched on.
fn grant(
    form: &UrlEncoded<TokenForm>,
    request: &Request,
    dpop: DpopRequest,
    enabled: &[GrantType],
) -> Result<Grant, LoginError> {
    let grant_type = form
        .get("grant_type")
        .map_err(|err| LoginError::InvalidRequest(vec![err]))?;
    let grant_type = match grant_type {
        None => GrantType::Password,
        Some(name) => GrantType::ALL
            .into_iter()
            .find(|grant| grant.name() == name)
            .ok_or_else(|| LoginError::UnsupportedGrantType(enabled.to_vec()))?,
    };
    if !enabled.contains(&grant_type) {
        return Err(LoginError::UnsupportedGrantType(enabled.to_vec()));
    }
    match grant_type {
        GrantType::Password => password_request(
            form,
            BasicCredentials::from_request(request),
            device_cookie(request),
            dpop,
        )
        .map(Grant::Password),
        GrantType::RefreshToken => {
            refresh_request(form, BasicCredentials::from_request(request), dpop).map(Grant::Refresh)
        }
    }
}

fn password_request(
    form: &UrlEncoded<TokenForm>,
    basic: BasicCredentials,
    device: Option<String>,
    dpop: DpopRequest,
) -> Result<LoginRequest, LoginError> {
    let [username, password, scope, client_id, client_secret, totp] = form
        .get_all([
            ("username", true),
            ("password", true),
            ("scope", false),
            ("client_id", false),
            ("client_secret", false),
            ("totp", false),
        ])
        .map_err(LoginError::InvalidRequest)?;
    // `get_all` has made sure the required fields are there.
    Ok(LoginRequest {
        username: username.unwrap_or_default().to_owned(),
        password: SecretString::from(password.unwrap_or_default()),
        scopes: Scopes::parse(scope.unwrap_or_default()).map_err(LoginError::InvalidScope)?,
        client: client_credentials(basic, client_id, client_secret),
        device,
        totp: totp.map(SecretString::from),
        dpop,
    })
}

/// The name of the trusted-device cookie.
const DEVICE_COOKIE: &str = "device";

/// The trusted-device cookie a request carries, if any (the first, if several).
fn device_cookie(request: &Request) -> Option<String> {
    request
        .headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|cookie| cookie.name() == DEVICE_COOKIE)
        .map(|cookie| cookie.value().to_owned())
}

/// The `Set-Cookie` value that keeps a trusted device's cookie for a year, sent back to
/// the token endpoint only, never readable by scripts nor sent from other sites; `Secure`
/// when the service is reached over https.
fn set_device_cookie(value: String, secure: bool) -> String {
    let lifetime = i64::try_from(DEVICE_COOKIE_LIFETIME.as_secs()).unwrap_or(i64::MAX);
    Cookie::build((DEVICE_COOKIE, value))
        .path("/token")
        .http_only(true)
        .same_site(SameSite::Strict)
        .max_age(cookie::time::Duration::seconds(lifetime))
        .secure(secure)
        .build()
        .to_string()
}

/// The client a login names: by HTTP Basic when that names one (Swagger UI always sends
/// `Basic Og==`, an empty id, which names none), otherwise by the form.
fn client_credentials(
    basic: BasicCredentials,
    form_id: Option<&str>,
    form_secret: Option<&str>,
) -> Option<ClientCredentials> {
    match basic {
        BasicCredentials::Present { client_id, secret } if !client_id.is_empty() => {
            Some(ClientCredentials {
                client_id,
                secret: Some(secret),
            })
        }
        _ => form_id.map(|client_id| ClientCredentials {
            client_id: client_id.to_owned(),
            secret: form_secret.map(str::to_owned),
        }),
    }
}

fn refresh_request(
    form: &UrlEncoded<TokenForm>,
    basic: BasicCredentials,
    dpop: DpopRequest,
) -> Result<RefreshRequest, LoginError> {
    let [refresh_token, scope, client_id, client_secret] = form
        .get_all([
            ("refresh_token", true),
            ("scope", false),
            ("client_id", false),
            ("client_secret", false),
        ])
        .map_err(LoginError::InvalidRequest)?;
    Ok(RefreshRequest {
        refresh_token: refresh_token.unwrap_or_default().to_owned(),
        scopes: scope
            .map(Scopes::parse)
            .transpose()
            .map_err(LoginError::InvalidScope)?,
        client: client_credentials(basic, client_id, client_secret),
        dpop,
    })
}

pub struct TokenApi {
    pub auth: Arc<Auth>,
}

#[OpenApi(tag = "ApiTags::Auth")]
impl TokenApi {
    /// Log in or refresh (OAuth2 password and refresh-token grants)
    ///
    /// `grant_type=password` (or none) exchanges a username and password for a bearer
    /// token and a refresh token, as FastAPI's `OAuth2PasswordRequestForm`. A user with a
    /// second factor adds the current one-time code in `totp`, or right after the
    /// password (`secret123456`: Swagger UI's Authorize dialog has no field for it).
    /// `grant_type=refresh_token` exchanges a refresh token for a new pair; the one sent
    /// is spent, and sending it again later ends the whole session. Errors follow RFC
    /// 6749: `error` and `error_description`, plus FastAPI's `detail`. With a `DPoP`
    /// header holding a proof (RFC 9449), the tokens are bound to its key (`token_type`
    /// `DPoP`), and refreshing them needs a proof of the same key.
    #[oai(path = "/token", method = "post", operation_id = "login")]
    async fn login(
        &self,
        form: UrlEncoded<TokenForm>,
        remote: &RemoteAddr,
        request: &Request,
    ) -> Result<TokenResponse, TokenErrorResponse> {
        let client = remote.as_socket_addr().map(|addr| addr.ip());
        let dpop = DpopRequest {
            header: dpop_header(request.headers()),
            method: request.method().as_str().to_owned(),
            path: request.uri().path().to_owned(),
            refused: None,
        };
        let mut issued = match grant(&form, request, dpop, &self.auth.grant_types()) {
            Ok(Grant::Password(request)) => self.auth.login(request, client).await?,
            Ok(Grant::Refresh(request)) => self.auth.refresh(request, client).await?,
            Err(err) => {
                self.auth.refused_token_request(&err);
                return Err(err.into());
            }
        };
        let secure = self.auth.issuer().starts_with("https://");
        let cookie = issued
            .device_cookie
            .take()
            .map(|value| set_device_cookie(value, secure));
        Ok(TokenResponse::Ok(
            Json(issued.into()),
            "no-store".into(),
            "no-cache".into(),
            cookie,
        ))
    }

    /// Revoke a token (RFC 7009)
    ///
    /// An access token stops working at once on every route; a refresh token ends its
    /// whole session, access tokens included. Answers 200 whether or not the token
    /// existed.
    #[oai(path = "/token/revoke", method = "post", operation_id = "revoke_token")]
    async fn revoke(
        &self,
        form: UrlEncoded<RevocationForm>,
        remote: &RemoteAddr,
    ) -> Result<RevokeResponse, TokenErrorResponse> {
        let [token, _] = form
            .get_all([("token", true), ("token_type_hint", false)])
            .map_err(LoginError::InvalidRequest)?;
        let client = remote.as_socket_addr().map(|addr| addr.ip());
        self.auth.revoke(token.unwrap_or_default(), client).await?;
        Ok(RevokeResponse::Ok(Json(Empty {})))
    }
}
