//! Users as the service sees them: the record every part shares, and what a new one is
//! made of. Their queries live in `store/`.

use sqlx::FromRow;

use crate::scope::Scopes;

/// A user. The password hash is kept apart (see `Store::find_credentials`) so that it
/// cannot end up in a response by accident.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct User {
    pub id: i64,
    pub username: String,
    pub email: Option<String>,
    pub full_name: Option<String>,
    pub disabled: bool,
    /// The scopes this user may be granted, space-separated.
    #[sqlx(rename = "scopes")]
    pub allowed_scopes: String,
}

impl User {
    pub fn allowed_scopes(&self) -> Scopes {
        Scopes::from_stored(&self.allowed_scopes)
    }
}

/// What a new user is made of; the password is already hashed.
#[derive(Debug, Clone)]
pub struct NewUser {
    pub username: String,
    pub email: Option<String>,
    pub full_name: Option<String>,
    pub disabled: bool,
    pub scopes: Scopes,
    pub hashed_password: String,
}
