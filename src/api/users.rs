//! `GET /users/me` and `GET /users/me/items`: what a bearer token gives access to.

use std::sync::Arc;

use poem::{
    Response,
    http::{Method, request::Parts},
};
use poem_openapi::{ApiResponse, Object, OpenApi, payload::Json, types::Example};
use serde::Serialize;

use super::ApiTags;
use crate::{
    api::bearer::{BearerToken, RefusedProof},
    auth::{Auth, FromCache},
    error::AccessErrorResponse,
    scope::Scope,
    users::User,
};

/// The route [`me_from_cache`] answers.
pub const ME: &str = "/users/me";

/// `GET /users/me` answered from the token cache (and, for a DPoP-bound token, its proof)
/// before the request becomes a poem request: the service's most frequent call then skips
/// the router, the OpenAPI layer and a JSON tree. `None` (a token the cache cannot vouch
/// for, a proof that does not hold, any other request) takes the full path, whose handler
/// is [`UsersApi::me`]; the bytes are the same either way.
pub fn me_from_cache(auth: &Auth, request: &mut Parts) -> Option<Response> {
    if request.method != Method::GET || request.uri.path() != ME {
        return None;
    }
    let token = BearerToken::from_parts(
        &request.method,
        &request.uri,
        &request.headers,
        &request.extensions,
    )
    .ok()?;
    let answer = auth.with_cached_user(token.as_str(), token.dpop(), |user| {
        // Infallible (strings and a flag), and it must be: a DPoP proof accepted by now is
        // remembered, so the full path would refuse it as used before.
        serde_json::to_vec(&UserJson {
            username: &user.username,
            email: user.email.as_deref(),
            full_name: user.full_name.as_deref(),
            disabled: user.disabled,
        })
        .expect("a user's strings and flag serialize")
    });
    let body = match answer {
        FromCache::Answered(body) => body,
        // The full path answers the refusal (its log line, its challenge) without
        // checking the signature again.
        FromCache::ProofRefused(refused) => {
            request.extensions.insert(RefusedProof(refused));
            return None;
        }
        FromCache::Unknown => return None,
    };
    Some(
        Response::builder()
            .content_type("application/json; charset=utf-8")
            .body(body),
    )
}

/// [`UserBody`] as serde writes it: same fields, same order, `null` for what is missing.
#[derive(Serialize)]
struct UserJson<'a> {
    username: &'a str,
    email: Option<&'a str>,
    full_name: Option<&'a str>,
    disabled: bool,
}

/// A user as clients see it: never the password hash.
#[derive(Object)]
#[oai(rename = "User", example)]
struct UserBody {
    username: String,
    email: Option<String>,
    full_name: Option<String>,
    disabled: bool,
}

impl Example for UserBody {
    fn example() -> Self {
        Self {
            username: "johndoe".into(),
            email: Some("johndoe@example.com".into()),
            full_name: Some("John Doe".into()),
            disabled: false,
        }
    }
}

impl From<User> for UserBody {
    fn from(user: User) -> Self {
        Self {
            username: user.username,
            email: user.email,
            full_name: user.full_name,
            disabled: user.disabled,
        }
    }
}

/// One of the current user's items, as in the tutorial.
#[derive(Object)]
struct Item {
    item_id: String,
    owner: String,
}

#[derive(ApiResponse)]
enum MeResponse {
    /// The current user.
    #[oai(status = 200)]
    Ok(Json<UserBody>),
}

#[derive(ApiResponse)]
enum ItemsResponse {
    /// The current user's items.
    #[oai(status = 200)]
    Ok(Json<Vec<Item>>),
}

pub struct UsersApi {
    pub auth: Arc<Auth>,
}

#[OpenApi(tag = "ApiTags::Users")]
impl UsersApi {
    /// The current user
    ///
    /// Needs a live bearer token of an active user (or a DPoP-bound one, sent as
    /// `Authorization: DPoP` with a proof); no scope.
    #[oai(path = "/users/me", method = "get", operation_id = "read_users_me")]
    async fn me(&self, token: BearerToken) -> Result<MeResponse, AccessErrorResponse> {
        let user = self
            .auth
            .current_user(token.as_str(), token.dpop(), None)
            .await?;
        Ok(MeResponse::Ok(Json(user.into())))
    }

    /// The current user's items
    ///
    /// Needs a live bearer token of an active user, with the `items` scope.
    #[oai(
        path = "/users/me/items",
        method = "get",
        operation_id = "read_own_items"
    )]
    async fn my_items(
        &self,
        #[oai(scope = "Scope::Items")] token: BearerToken,
    ) -> Result<ItemsResponse, AccessErrorResponse> {
        let user = self
            .auth
            .current_user(token.as_str(), token.dpop(), Some(Scope::Items))
            .await?;
        Ok(ItemsResponse::Ok(Json(vec![Item {
            item_id: "Foo".into(),
            owner: user.username,
        }])))
    }
}
