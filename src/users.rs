//! The user record and its queries.

use sqlx::{FromRow, SqliteExecutor};

use crate::scope::Scopes;

/// A user as the service sees it. The password hash is kept apart (see [`find_credentials`])
/// so that it cannot end up in a response by accident.
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

#[derive(FromRow)]
struct Credentials {
    #[sqlx(flatten)]
    user: User,
    hashed_password: String,
}

/// The user named exactly `username` (case-sensitive), with their password hash.
pub async fn find_credentials(
    db: impl SqliteExecutor<'_>,
    username: &str,
) -> Result<Option<(User, String)>, sqlx::Error> {
    let row: Option<Credentials> = sqlx::query_as(
        "select id, username, email, full_name, disabled, scopes, hashed_password
         from users where username = ?",
    )
    .bind(username)
    .fetch_optional(db)
    .await?;
    Ok(row.map(|row| (row.user, row.hashed_password)))
}

/// The user named exactly `username`.
pub async fn find_by_username(
    db: impl SqliteExecutor<'_>,
    username: &str,
) -> Result<Option<User>, sqlx::Error> {
    sqlx::query_as(
        "select id, username, email, full_name, disabled, scopes from users where username = ?",
    )
    .bind(username)
    .fetch_optional(db)
    .await
}

/// Every user, by username.
pub async fn list(db: impl SqliteExecutor<'_>) -> Result<Vec<User>, sqlx::Error> {
    sqlx::query_as(
        "select id, username, email, full_name, disabled, scopes from users order by username",
    )
    .fetch_all(db)
    .await
}

/// Adds a user; `Ok(None)` when the username is taken.
pub async fn insert(
    db: impl SqliteExecutor<'_>,
    user: &NewUser,
) -> Result<Option<User>, sqlx::Error> {
    sqlx::query_as(
        "insert into users (username, email, full_name, disabled, scopes, hashed_password)
         values (?, ?, ?, ?, ?, ?)
         on conflict (username) do nothing
         returning id, username, email, full_name, disabled, scopes",
    )
    .bind(&user.username)
    .bind(&user.email)
    .bind(&user.full_name)
    .bind(user.disabled)
    .bind(user.scopes.to_string())
    .bind(&user.hashed_password)
    .fetch_optional(db)
    .await
}

/// Replaces a password hash, unless it changed since `old` was read (another login
/// upgraded it, or an admin reset it): the newer write wins.
pub async fn replace_password_hash(
    db: impl SqliteExecutor<'_>,
    user_id: i64,
    old: &str,
    new: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("update users set hashed_password = ? where id = ? and hashed_password = ?")
        .bind(new)
        .bind(user_id)
        .bind(old)
        .execute(db)
        .await?;
    Ok(())
}

/// Sets a user's password hash; `false` when there is no such user.
pub async fn set_password_hash(
    db: impl SqliteExecutor<'_>,
    username: &str,
    hashed_password: &str,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("update users set hashed_password = ? where username = ?")
        .bind(hashed_password)
        .bind(username)
        .execute(db)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// Enables or disables a user; `false` when there is no such user.
pub async fn set_disabled(
    db: impl SqliteExecutor<'_>,
    username: &str,
    disabled: bool,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("update users set disabled = ? where username = ?")
        .bind(disabled)
        .bind(username)
        .execute(db)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// Sets the scopes a user may be granted; `false` when there is no such user.
pub async fn set_scopes(
    db: impl SqliteExecutor<'_>,
    username: &str,
    scopes: &Scopes,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("update users set scopes = ? where username = ?")
        .bind(scopes.to_string())
        .bind(username)
        .execute(db)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// Deletes a user, and with them (by foreign key) their tokens; `false` when there is no
/// such user.
pub async fn delete(db: impl SqliteExecutor<'_>, username: &str) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("delete from users where username = ?")
        .bind(username)
        .execute(db)
        .await?;
    Ok(done.rows_affected() == 1)
}
