//! `GET /.well-known/oauth-authorization-server` (RFC 8414): where everything is, built
//! from the same lists the endpoints enforce.

use std::sync::Arc;

use poem_openapi::{ApiResponse, Object, OpenApi, payload::Json};

use super::{ApiTags, introspect};
use crate::{
    auth::{Auth, dpop},
    scope::Scope,
};

/// The endpoints' paths, as the operations declare them.
pub const TOKEN_PATH: &str = "/token";
pub const REVOCATION_PATH: &str = "/token/revoke";
pub const INTROSPECTION_PATH: &str = "/token/introspect";

/// Authorization server metadata (RFC 8414, section 2).
#[derive(Object)]
#[oai(rename = "AuthorizationServerMetadata")]
struct Metadata {
    /// The issuer identifier (`ISSUER`).
    issuer: String,
    token_endpoint: String,
    revocation_endpoint: String,
    introspection_endpoint: String,
    grant_types_supported: Vec<String>,
    scopes_supported: Vec<String>,
    /// None: there is no authorization endpoint.
    response_types_supported: Vec<String>,
    /// Anyone may use the token endpoint (public clients, as Swagger UI and curl are).
    token_endpoint_auth_methods_supported: Vec<String>,
    revocation_endpoint_auth_methods_supported: Vec<String>,
    introspection_endpoint_auth_methods_supported: Vec<String>,
    /// The algorithms a DPoP proof may be signed with (RFC 9449, section 5.1).
    dpop_signing_alg_values_supported: Vec<String>,
}

#[derive(ApiResponse)]
enum MetadataResponse {
    /// The metadata document.
    #[oai(status = 200)]
    Ok(Json<Metadata>),
}

pub struct MetadataApi {
    pub auth: Arc<Auth>,
}

fn strings(items: impl IntoIterator<Item = &'static str>) -> Vec<String> {
    items.into_iter().map(str::to_owned).collect()
}

#[OpenApi(tag = "ApiTags::Auth")]
impl MetadataApi {
    /// Authorization server metadata (RFC 8414)
    ///
    /// Where the token, revocation and introspection endpoints are, and what they accept,
    /// for client libraries that discover them.
    #[oai(
        path = "/.well-known/oauth-authorization-server",
        method = "get",
        operation_id = "authorization_server_metadata"
    )]
    async fn metadata(&self) -> MetadataResponse {
        let issuer = self.auth.issuer();
        MetadataResponse::Ok(Json(Metadata {
            issuer: issuer.to_owned(),
            token_endpoint: format!("{issuer}{TOKEN_PATH}"),
            revocation_endpoint: format!("{issuer}{REVOCATION_PATH}"),
            introspection_endpoint: format!("{issuer}{INTROSPECTION_PATH}"),
            grant_types_supported: strings(self.auth.grant_types().iter().map(|g| g.name())),
            scopes_supported: strings(Scope::ALL.iter().map(|(scope, _)| scope.name())),
            response_types_supported: Vec::new(),
            token_endpoint_auth_methods_supported: strings(["none"]),
            revocation_endpoint_auth_methods_supported: strings(["none"]),
            introspection_endpoint_auth_methods_supported: strings(introspect::AUTH_METHODS),
            dpop_signing_alg_values_supported: strings(dpop::ALGORITHMS),
        }))
    }
}
