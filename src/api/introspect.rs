//! `POST /token/introspect` (RFC 7662): registered clients ask what a token is.

use std::{net::IpAddr, sync::Arc};

use base64::{Engine, engine::general_purpose::STANDARD};
use poem::{
    Request, RequestBody,
    http::{
        HeaderMap, HeaderValue, Method,
        header::{AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, PRAGMA},
        request::Parts,
    },
    web::RemoteAddr,
};
use poem_openapi::{
    ApiExtractor, ApiExtractorType, ApiResponse, ExtractParamOptions, Object, OpenApi,
    payload::{Form, Json, Payload},
    registry::{MetaSecurityScheme, Registry},
    types::Password,
};
use serde::Serialize;

use super::{ApiTags, form::UrlEncoded};
use crate::{
    auth::{Auth, FieldError, FieldErrorKind, Introspection, IntrospectionError, TokenUse},
    error::IntrospectionErrorResponse,
};

/// The scheme's name in the OpenAPI document.
const SCHEME_NAME: &str = "ClientBasicAuth";

/// Client credentials from an `Authorization: Basic` header (RFC 6749, section 2.3.1),
/// if the request has one; never a failure by itself, since the form may carry them.
pub enum BasicCredentials {
    Absent,
    Present {
        client_id: String,
        secret: String,
    },
    /// Another scheme (a bearer token is not client authentication), more than one
    /// header, or a value that does not decode.
    Unusable,
}

impl BasicCredentials {
    pub fn from_request(req: &Request) -> Self {
        Self::from_headers(req.headers())
    }

    pub fn from_headers(headers: &HeaderMap) -> Self {
        let mut values = headers.get_all(AUTHORIZATION).iter();
        let (Some(value), None) = (values.next(), values.next()) else {
            return if headers.contains_key(AUTHORIZATION) {
                Self::Unusable
            } else {
                Self::Absent
            };
        };
        let decoded = value
            .to_str()
            .ok()
            .and_then(|value| value.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("basic"))
            .and_then(|(_, encoded)| STANDARD.decode(encoded.trim()).ok())
            .and_then(|bytes| String::from_utf8(bytes).ok());
        match decoded.as_deref().and_then(|pair| pair.split_once(':')) {
            Some((client_id, secret)) => Self::Present {
                client_id: client_id.to_owned(),
                secret: secret.to_owned(),
            },
            None => Self::Unusable,
        }
    }
}

impl<'a> ApiExtractor<'a> for BasicCredentials {
    const TYPES: &'static [ApiExtractorType] = &[ApiExtractorType::SecurityScheme];

    type ParamType = ();
    type ParamRawType = ();

    fn register(registry: &mut Registry) {
        registry.create_security_scheme(
            SCHEME_NAME,
            MetaSecurityScheme {
                ty: "http",
                description: Some(
                    "A registered client's id and secret (`clients add NAME`); \
                     `client_id` and `client_secret` in the form work too.",
                ),
                name: None,
                key_in: None,
                scheme: Some("basic"),
                bearer_format: None,
                flows: None,
                openid_connect_url: None,
            },
        );
    }

    fn security_schemes() -> Vec<&'static str> {
        vec![SCHEME_NAME]
    }

    async fn from_request(
        req: &'a Request,
        _body: &mut RequestBody,
        _param_opts: ExtractParamOptions<Self::ParamType>,
    ) -> poem::Result<Self> {
        Ok(Self::from_request(req))
    }
}

/// The introspection form (RFC 7662, section 2.1).
#[derive(Object)]
#[oai(rename = "IntrospectionRequest")]
#[allow(dead_code)] // Describes the form in OpenAPI; `UrlEncoded` reads the fields.
struct IntrospectionForm {
    /// The access or refresh token to look at.
    #[oai(validator(min_length = 1))]
    token: String,
    /// `access_token` or `refresh_token`; only a hint.
    token_type_hint: Option<String>,
    /// The client's id, when not sent by HTTP Basic.
    client_id: Option<String>,
    /// The client's secret, when not sent by HTTP Basic.
    client_secret: Option<Password>,
}

/// What a token is (RFC 7662, section 2.2); only `active` when it is not live.
// Serialize: the early answer writes it with serde, without poem-openapi's JSON tree;
// both skip what is absent and keep the fields' order, so the bytes are the same.
#[derive(Object, Serialize)]
#[oai(rename = "Introspection")]
struct IntrospectionBody {
    /// Whether the token is live.
    active: bool,
    /// The scopes it carries, space-separated.
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    scope: Option<String>,
    /// Its user.
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    username: Option<String>,
    /// `Bearer`, or `DPoP` for a DPoP-bound one, for an access token; absent for a
    /// refresh token.
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    token_type: Option<String>,
    /// `access_token`, or `refresh_token` (described only when asked for with
    /// `token_type_hint=refresh_token`).
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    token_use: Option<String>,
    /// When it expires, in Unix seconds.
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    exp: Option<i64>,
    /// When it was issued, in Unix seconds.
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    iat: Option<i64>,
    /// Its user (the username).
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    sub: Option<String>,
    /// This service's issuer identifier.
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    iss: Option<String>,
    /// How the login authenticated the user (RFC 8176): `["pwd"]`, or `["pwd", "otp"]`
    /// with a one-time code.
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    amr: Option<Vec<String>>,
    /// The client the login named, if any.
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    client_id: Option<String>,
    /// For a DPoP-bound token: the key it is bound to (RFC 9449, section 6.2).
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    cnf: Option<Confirmation>,
}

/// A token's confirmation method (RFC 7800): the DPoP key it is bound to.
#[derive(Object, Serialize)]
struct Confirmation {
    /// The key's RFC 7638 SHA-256 thumbprint, base64url.
    jkt: String,
}

impl From<Option<Introspection>> for IntrospectionBody {
    fn from(found: Option<Introspection>) -> Self {
        let Some(found) = found else {
            return Self {
                active: false,
                scope: None,
                username: None,
                token_type: None,
                token_use: None,
                exp: None,
                iat: None,
                sub: None,
                iss: None,
                amr: None,
                client_id: None,
                cnf: None,
            };
        };
        Self {
            active: true,
            scope: Some(found.scopes.to_string()),
            sub: Some(found.username.clone()),
            username: Some(found.username),
            token_type: (found.token_use == TokenUse::AccessToken).then(|| match found.dpop_jkt {
                Some(_) => "DPoP".into(),
                None => "Bearer".into(),
            }),
            token_use: Some(found.token_use.name().into()),
            exp: Some(found.expires_at),
            iat: Some(found.issued_at),
            iss: Some(found.issuer),
            amr: Some(found.amr),
            client_id: found.client_id,
            cnf: found.dpop_jkt.map(|jkt| Confirmation { jkt }),
        }
    }
}

#[derive(ApiResponse)]
enum IntrospectResponse {
    /// What the token is; `{"active": false}` for anything that is not a live token.
    #[oai(status = 200)]
    Ok(
        Json<IntrospectionBody>,
        #[oai(header = "Cache-Control")] String,
        #[oai(header = "Pragma")] String,
    ),
}

pub struct IntrospectionApi {
    pub auth: Arc<Auth>,
}

/// The route [`introspect_from_cache`] answers.
pub const INTROSPECT: &str = "/token/introspect";

/// A body [`introspect_from_cache`] reads before the router: a form with a token and a
/// hint is under 200 bytes.
const EARLY_BODY_BYTES: u64 = 4 * 1024;

/// Whether [`introspect_from_cache`] may answer this request, once it has its body (which
/// must declare its length, at most [`EARLY_BODY_BYTES`]).
pub fn may_answer_early(request: &Parts) -> bool {
    request.method == Method::POST
        && request.uri.path() == INTROSPECT
        && super::declared_length(&request.headers).is_some_and(|len| len <= EARLY_BODY_BYTES)
}

/// `POST /token/introspect` answered from the caches alone, before the request becomes a
/// poem request: a client with HTTP Basic credentials checked lately, a form with `token`
/// (and at most a `token_type_hint` other than `refresh_token`), and a live token the
/// token cache holds. `body`: the request's body, read in full. `None` (anything else, a
/// wrong secret included) takes the full path, [`IntrospectionApi::introspect`]; the
/// answer is the same either way, the same body type serialized by serde (a test compares
/// the bytes).
pub fn introspect_from_cache(
    auth: &Auth,
    request: &Parts,
    body: &[u8],
    address: IpAddr,
) -> Option<poem::Response> {
    if !may_answer_early(request) {
        return None;
    }
    let BasicCredentials::Present { client_id, secret } =
        BasicCredentials::from_headers(&request.headers)
    else {
        return None;
    };
    let content_type = request.headers.get(CONTENT_TYPE)?.to_str().ok()?;
    if !Form::<IntrospectionForm>::check_content_type(content_type) {
        return None;
    }
    let fields: Vec<(String, String)> = serde_urlencoded::from_bytes(body).ok()?;
    let token = match fields.as_slice() {
        [(name, token)] if name == "token" => token,
        [(name, token), (hint, value)] | [(hint, value), (name, token)]
            if name == "token" && hint == "token_type_hint" && value != "refresh_token" =>
        {
            token
        }
        _ => return None,
    };
    let found = auth.introspect_from_cache(&client_id, &secret, Some(address), token)?;
    let body = serde_json::to_vec(&IntrospectionBody::from(Some(found)))
        .expect("strings, numbers and flags serialize");
    let mut response = poem::Response::builder()
        .content_type("application/json; charset=utf-8")
        .body(body);
    let headers = response.headers_mut();
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(PRAGMA, HeaderValue::from_static("no-cache"));
    Some(response)
}

/// How a client may authenticate here, as RFC 8414 names the methods [`client_credentials`]
/// accepts.
pub const AUTH_METHODS: [&str; 2] = ["client_secret_basic", "client_secret_post"];

/// The client credentials of a request, from exactly one of HTTP Basic and the form.
fn client_credentials<'a>(
    basic: &'a BasicCredentials,
    form_id: Option<&'a str>,
    form_secret: Option<&'a str>,
) -> Result<(&'a str, &'a str), IntrospectionError> {
    match (basic, form_id, form_secret) {
        (BasicCredentials::Present { client_id, secret }, None, None) => Ok((client_id, secret)),
        (BasicCredentials::Absent, Some(client_id), Some(secret)) => Ok((client_id, secret)),
        _ => Err(IntrospectionError::InvalidClient),
    }
}

#[OpenApi(tag = "ApiTags::Auth")]
impl IntrospectionApi {
    /// Introspect a token (RFC 7662)
    ///
    /// For registered clients (`clients add NAME`), e.g. another service checking the
    /// bearer tokens it receives. Authenticate with HTTP Basic or with `client_id` and
    /// `client_secret` in the form. A live access token is described; a live refresh
    /// token only with `token_type_hint=refresh_token`; anything else is
    /// `{"active": false}`. Repeated failed client authentications are throttled (429).
    #[oai(
        path = "/token/introspect",
        method = "post",
        operation_id = "introspect_token"
    )]
    async fn introspect(
        &self,
        basic: BasicCredentials,
        form: UrlEncoded<IntrospectionForm>,
        remote: &RemoteAddr,
    ) -> Result<IntrospectResponse, IntrospectionErrorResponse> {
        let address = remote.as_socket_addr().map(|addr| addr.ip());
        let found = self.answer(&basic, &form, address).await;
        self.auth.introspection_answered(&found);
        Ok(IntrospectResponse::Ok(
            Json(found?.into()),
            "no-store".into(),
            "no-cache".into(),
        ))
    }
}

impl IntrospectionApi {
    /// Authenticates the client, then looks the token up.
    async fn answer(
        &self,
        basic: &BasicCredentials,
        form: &UrlEncoded<IntrospectionForm>,
        address: Option<IpAddr>,
    ) -> Result<Option<Introspection>, IntrospectionError> {
        let [token, hint, client_id, client_secret] = form
            .get_all([
                ("token", false),
                ("token_type_hint", false),
                ("client_id", false),
                ("client_secret", false),
            ])
            .map_err(IntrospectionError::InvalidRequest)?;
        let (client_id, secret) = client_credentials(basic, client_id, client_secret)?;
        self.auth
            .authenticate_client(client_id, Some(secret), address)
            .await?;
        let token = token.ok_or_else(|| {
            IntrospectionError::InvalidRequest(vec![FieldError {
                kind: FieldErrorKind::Missing,
                field: "token",
            }])
        })?;
        self.auth
            .introspect(token, hint == Some("refresh_token"))
            .await
            .map_err(IntrospectionError::Unavailable)
    }
}
