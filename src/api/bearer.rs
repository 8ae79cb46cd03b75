//! The OAuth2 password-flow security scheme, and reading the access token out of the
//! `Authorization` header (RFC 6750, section 2.1; never from the query string): a bearer
//! token, or a DPoP-bound one with the request's `DPoP` proof (RFC 9449, section 7).

use poem::{
    Request, RequestBody,
    http::{Extensions, HeaderMap, Method, Uri, header::AUTHORIZATION},
};
use poem_openapi::{
    ApiExtractor, ApiExtractorType, ExtractParamOptions, OAuthScopes,
    registry::{MetaOAuthFlow, MetaOAuthFlows, MetaOAuthScope, MetaSecurityScheme, Registry},
};

use std::sync::Arc;

use crate::{
    auth::{AccessError, DpopHeader, DpopRequest, Outcome, ProofError, TokenType},
    error::AccessErrorResponse,
    metrics::Metrics,
    scope::Scope,
};

/// The scheme's name in the OpenAPI document, as in FastAPI's tutorial.
const SCHEME_NAME: &str = "OAuth2PasswordBearer";

/// The `DPoP` header name (RFC 9449, section 4.1).
const DPOP: &str = "dpop";

/// A request's extension: its DPoP proof was refused, for this reason, by the early
/// answer from the token cache, which then passed the request on (see
/// [`DpopRequest::refused`]).
#[derive(Clone, Debug)]
pub struct RefusedProof(pub ProofError);

/// The raw token of an `Authorization: Bearer <token>` or `Authorization: DPoP <token>`
/// header; not yet checked.
pub struct BearerToken {
    token: String,
    scheme: TokenType,
    /// For the `DPoP` scheme, once read from a whole request: its proof, method and path.
    dpop: Option<DpopRequest>,
}

impl BearerToken {
    pub fn as_str(&self) -> &str {
        &self.token
    }

    /// What the request's DPoP proof must match, when the token came as `DPoP`.
    pub fn dpop(&self) -> Option<&DpopRequest> {
        self.dpop.as_ref()
    }

    /// Reads the request's `Authorization` headers. More than one is refused: a proxy
    /// that reads the last would disagree with us about who is calling.
    pub fn from_headers(headers: &HeaderMap) -> Result<Self, AccessError> {
        let mut values = headers.get_all(AUTHORIZATION).iter();
        let first = values.next();
        if values.next().is_some() {
            return Err(AccessError::InvalidRequest);
        }
        Self::from_header(first.map(|v| v.as_bytes()))
    }

    /// Reads the header: the scheme (`Bearer` or `DPoP`) is case-insensitive and spaces
    /// before the token are skipped. No header or another scheme is `NotAuthenticated`;
    /// a scheme with nothing usable after it is `InvalidToken`.
    pub fn from_header(value: Option<&[u8]>) -> Result<Self, AccessError> {
        let value = value.ok_or(AccessError::NotAuthenticated)?;
        let (scheme, rest) = match value.iter().position(|&b| b == b' ') {
            Some(space) => value.split_at(space),
            None => (value, &b""[..]),
        };
        let scheme = if scheme.eq_ignore_ascii_case(b"bearer") {
            TokenType::Bearer
        } else if scheme.eq_ignore_ascii_case(DPOP.as_bytes()) {
            TokenType::Dpop
        } else {
            return Err(AccessError::NotAuthenticated);
        };
        let token = std::str::from_utf8(rest.trim_ascii())
            .map_err(|_| AccessError::InvalidToken(scheme))?;
        if token.is_empty() {
            return Err(AccessError::InvalidToken(scheme));
        }
        Ok(Self {
            token: token.to_owned(),
            scheme,
            dpop: None,
        })
    }

    /// Reads the token of a whole request, with its proof when it came as `DPoP`.
    fn from_request(req: &Request) -> Result<Self, AccessError> {
        Self::from_parts(req.method(), req.uri(), req.headers(), req.extensions())
    }

    /// As [`BearerToken::from_request`], from a request's parts.
    pub fn from_parts(
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        extensions: &Extensions,
    ) -> Result<Self, AccessError> {
        let mut token = Self::from_headers(headers)?;
        if token.scheme == TokenType::Dpop {
            token.dpop = Some(DpopRequest {
                header: dpop_header(headers),
                method: method.as_str().to_owned(),
                path: uri.path().to_owned(),
                refused: extensions
                    .get::<RefusedProof>()
                    .map(|refused| refused.0.clone()),
            });
        }
        Ok(token)
    }
}

/// The request's `DPoP` header: exactly one, non-empty, text, or else unusable.
pub fn dpop_header(headers: &HeaderMap) -> DpopHeader {
    let mut values = headers.get_all(DPOP).iter();
    match (values.next(), values.next()) {
        (None, _) => DpopHeader::Absent,
        (Some(value), None) => match value.to_str().map(str::trim) {
            Ok(proof) if !proof.is_empty() => DpopHeader::Proof(proof.to_owned()),
            _ => DpopHeader::Unusable,
        },
        (Some(_), Some(_)) => DpopHeader::Unusable,
    }
}

impl<'a> ApiExtractor<'a> for BearerToken {
    const TYPES: &'static [ApiExtractorType] = &[ApiExtractorType::SecurityScheme];

    type ParamType = ();
    type ParamRawType = ();

    fn register(registry: &mut Registry) {
        let scopes = Scope::meta();
        registry.create_security_scheme(
            SCHEME_NAME,
            MetaSecurityScheme {
                ty: "oauth2",
                description: Some(
                    "OAuth2 password flow: log in with a username and password at /token.",
                ),
                name: None,
                key_in: None,
                scheme: None,
                bearer_format: None,
                flows: Some(MetaOAuthFlows {
                    implicit: None,
                    password: Some(MetaOAuthFlow {
                        authorization_url: None,
                        // Relative, so it resolves against wherever the docs are served.
                        token_url: Some("token"),
                        refresh_url: Some("token"),
                        scopes,
                    }),
                    client_credentials: None,
                    authorization_code: None,
                }),
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
        Self::from_request(req).map_err(|err| {
            if let Some(metrics) = req.data::<Arc<Metrics>>() {
                metrics.bearer_check(err.outcome());
            }
            AccessErrorResponse::from(err).into()
        })
    }
}

/// Lets an operation declare the scopes it needs in the OpenAPI document:
/// `#[oai(scope = "Scope::Items")] token: BearerToken`.
impl OAuthScopes for Scope {
    fn meta() -> Vec<MetaOAuthScope> {
        Scope::ALL
            .iter()
            .map(|&(scope, description)| MetaOAuthScope {
                name: scope.name(),
                description: Some(description),
            })
            .collect()
    }

    fn name(&self) -> &'static str {
        Scope::name(*self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(value: &str) -> Result<String, AccessError> {
        BearerToken::from_header(Some(value.as_bytes())).map(|t| t.token)
    }

    #[test]
    fn scheme_is_case_insensitive_and_leading_spaces_are_skipped() {
        assert_eq!(parse("bEaReR    abc").unwrap(), "abc");
    }

    #[test]
    fn other_schemes_are_not_authenticated() {
        assert!(matches!(
            parse("Basic Og=="),
            Err(AccessError::NotAuthenticated)
        ));
        assert!(matches!(
            parse("Notexistent testtoken"),
            Err(AccessError::NotAuthenticated)
        ));
        assert!(matches!(
            parse("Bearerabc"),
            Err(AccessError::NotAuthenticated)
        ));
    }

    #[test]
    fn bearer_with_nothing_after_it_is_an_invalid_token() {
        assert!(matches!(
            parse("Bearer"),
            Err(AccessError::InvalidToken(TokenType::Bearer))
        ));
        assert!(matches!(
            parse("Bearer    "),
            Err(AccessError::InvalidToken(TokenType::Bearer))
        ));
        assert!(matches!(
            parse("DPoP "),
            Err(AccessError::InvalidToken(TokenType::Dpop))
        ));
    }

    #[test]
    fn the_dpop_scheme_is_read_case_insensitively() {
        let token = BearerToken::from_header(Some(b"dpop  abc")).unwrap();
        assert_eq!(token.as_str(), "abc");
        assert_eq!(token.scheme, TokenType::Dpop);
    }
}
