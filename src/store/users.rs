//! Queries on users.

use sqlx::FromRow;

use super::{
    Store,
    devices::FORGET_USER_DEVICES,
    on_pool, on_writer,
    sessions::{REVOKE_USER_ACCESS_TOKENS, REVOKE_USER_SESSIONS},
    storable,
};
use crate::{
    scope::Scopes,
    users::{NewUser, User},
};

/// A user with what a login checks: the password hash, and when it was set.
#[derive(FromRow)]
pub struct Credentials {
    #[sqlx(flatten)]
    pub user: User,
    pub hashed_password: String,
    /// Unix ms; a session or device may be written only while it is unchanged.
    pub password_changed_at: i64,
}

impl Store {
    /// The user named exactly `username` (case-sensitive), with their password hash.
    pub async fn find_credentials(
        &self,
        username: &str,
    ) -> Result<Option<Credentials>, sqlx::Error> {
        if !storable(username) {
            return Ok(None);
        }
        on_pool!(self, pool => {
            sqlx::query_as(
                "select id, username, email, full_name, disabled, scopes, hashed_password,
                        password_changed_at
                 from users where username = $1",
            )
            .bind(username)
            .fetch_optional(pool)
            .await
        })
    }

    /// The user named exactly `username`.
    pub async fn find_user(&self, username: &str) -> Result<Option<User>, sqlx::Error> {
        if !storable(username) {
            return Ok(None);
        }
        on_pool!(self, pool => {
            sqlx::query_as(
                "select id, username, email, full_name, disabled, scopes
                 from users where username = $1",
            )
            .bind(username)
            .fetch_optional(pool)
            .await
        })
    }

    /// Every user, by username.
    pub async fn list_users(&self) -> Result<Vec<User>, sqlx::Error> {
        on_pool!(self, pool => {
            sqlx::query_as(
                "select id, username, email, full_name, disabled, scopes
                 from users order by username",
            )
            .fetch_all(pool)
            .await
        })
    }

    /// Adds a user; `Ok(None)` when the username is taken.
    pub async fn insert_user(&self, user: &NewUser) -> Result<Option<User>, sqlx::Error> {
        on_writer!(self, pool => {
            sqlx::query_as(
                "insert into users (username, email, full_name, disabled, scopes, hashed_password)
                 values ($1, $2, $3, $4, $5, $6)
                 on conflict (username) do nothing
                 returning id, username, email, full_name, disabled, scopes",
            )
            .bind(&user.username)
            .bind(&user.email)
            .bind(&user.full_name)
            .bind(user.disabled)
            .bind(user.scopes.to_string())
            .bind(&user.hashed_password)
            .fetch_optional(pool)
            .await
        })
    }

    /// Replaces a password hash, unless it changed since `old` was read (another login
    /// upgraded it, or an admin reset it): the newer write wins.
    pub async fn upgrade_password_hash(
        &self,
        user_id: i64,
        old: &str,
        new: &str,
    ) -> Result<(), sqlx::Error> {
        on_writer!(self, pool => {
            sqlx::query(
                "update users set hashed_password = $1 where id = $2 and hashed_password = $3",
            )
            .bind(new)
            .bind(user_id)
            .bind(old)
            .execute(pool)
            .await
            .map(drop)
        })
    }

    /// Sets a new password hash, ends every session and token of the user and forgets
    /// their trusted devices, in one transaction; `false` when there is no such user.
    pub async fn set_password_hash(
        &self,
        username: &str,
        hashed_password: &str,
        now: i64,
    ) -> Result<bool, sqlx::Error> {
        let Some(user) = self.find_user(username).await? else {
            return Ok(false);
        };
        let done = on_writer!(self, pool => {
            let mut tx = pool.begin().await?;
            let done = sqlx::query(
                "update users set hashed_password = $1, password_changed_at = $2 where id = $3",
            )
            .bind(hashed_password)
            .bind(now)
            .bind(user.id)
            .execute(&mut *tx)
            .await?;
            sqlx::query(REVOKE_USER_SESSIONS)
                .bind(now)
                .bind(user.id)
                .execute(&mut *tx)
                .await?;
            sqlx::query(REVOKE_USER_ACCESS_TOKENS)
                .bind(now)
                .bind(user.id)
                .execute(&mut *tx)
                .await?;
            sqlx::query(FORGET_USER_DEVICES)
                .bind(user.id)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            done.rows_affected()
        });
        self.bump_if(done);
        Ok(done == 1)
    }

    /// Enables or disables a user; `false` when there is no such user.
    pub async fn set_disabled(&self, username: &str, disabled: bool) -> Result<bool, sqlx::Error> {
        let done = on_writer!(self, pool => {
            sqlx::query("update users set disabled = $1 where username = $2")
                .bind(disabled)
                .bind(username)
                .execute(pool)
                .await?
                .rows_affected()
        });
        self.bump_if(done);
        Ok(done == 1)
    }

    /// Sets the scopes a user may be granted; `false` when there is no such user.
    pub async fn set_scopes(&self, username: &str, scopes: &Scopes) -> Result<bool, sqlx::Error> {
        let done = on_writer!(self, pool => {
            sqlx::query("update users set scopes = $1 where username = $2")
                .bind(scopes.to_string())
                .bind(username)
                .execute(pool)
                .await?
                .rows_affected()
        });
        self.bump_if(done);
        Ok(done == 1)
    }

    /// Deletes a user, and with them (by foreign key) their sessions and tokens; `false`
    /// when there is no such user.
    pub async fn delete_user(&self, username: &str) -> Result<bool, sqlx::Error> {
        let done = on_writer!(self, pool => {
            sqlx::query("delete from users where username = $1")
                .bind(username)
                .execute(pool)
                .await?
                .rows_affected()
        });
        self.bump_if(done);
        Ok(done == 1)
    }
}
