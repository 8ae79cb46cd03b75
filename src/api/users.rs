//! `GET /users/me` and `GET /users/me/items`: what a bearer token gives access to.

use std::sync::Arc;

use poem_openapi::{ApiResponse, Object, OpenApi, payload::Json, types::Example};

use super::ApiTags;
use crate::{
    api::bearer::BearerToken, auth::Auth, error::AccessErrorResponse, scope::Scope, users::User,
};

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
    /// Needs a live bearer token of an active user; no scope.
    #[oai(path = "/users/me", method = "get", operation_id = "read_users_me")]
    async fn me(&self, token: BearerToken) -> Result<MeResponse, AccessErrorResponse> {
        let user = self.auth.current_user(token.as_str(), None).await?;
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
            .current_user(token.as_str(), Some(Scope::Items))
            .await?;
        Ok(ItemsResponse::Ok(Json(vec![Item {
            item_id: "Foo".into(),
            owner: user.username,
        }])))
    }
}
