//! Queries on access tokens, stored by the SHA-256 digest of the token only.

use sqlx::FromRow;

use super::{Store, on_pool};
use crate::{scope::Scopes, users::User};

/// A live access token and its owner, as read from the database.
#[derive(Debug, Clone)]
pub struct LiveToken {
    pub user: User,
    /// The scopes granted when the token was issued.
    pub scopes: Scopes,
    /// Unix milliseconds.
    pub issued_at: i64,
    pub expires_at: i64,
    /// The client that logged in, when it said which.
    pub client_id: Option<String>,
    /// How its session's login authenticated the user (see `Amr::methods`).
    pub amr: Option<String>,
}

#[derive(FromRow)]
struct LiveTokenRow {
    #[sqlx(flatten)]
    user: User,
    token_scopes: String,
    issued_at: i64,
    expires_at: i64,
    client_id: Option<String>,
    amr: Option<String>,
}

impl Store {
    /// The access token with this digest and its owner, if it is live: known, not
    /// expired, not revoked.
    pub async fn find_live_token(
        &self,
        digest: &[u8; 32],
        now: i64,
    ) -> Result<Option<LiveToken>, sqlx::Error> {
        let row: Option<LiveTokenRow> = on_pool!(self, pool => {
            sqlx::query_as(
                "select u.id, u.username, u.email, u.full_name, u.disabled, u.scopes,
                        t.scopes as token_scopes, t.issued_at, t.expires_at, s.client_id,
                        s.amr
                 from access_tokens t
                 join users u on u.id = t.user_id
                 left join sessions s on s.id = t.session_id
                 where t.token_hash = $1 and t.revoked_at is null and t.expires_at > $2",
            )
            .bind(&digest[..])
            .bind(now)
            .fetch_optional(pool)
            .await?
        });
        Ok(row.map(|row| LiveToken {
            user: row.user,
            scopes: Scopes::from_stored(&row.token_scopes),
            issued_at: row.issued_at,
            expires_at: row.expires_at,
            client_id: row.client_id,
            amr: row.amr,
        }))
    }

    /// Revokes the access token with this digest; `false` when there is no live one.
    pub async fn revoke_access_token(
        &self,
        digest: &[u8; 32],
        now: i64,
    ) -> Result<bool, sqlx::Error> {
        let done = on_pool!(self, pool => {
            sqlx::query(
                "update access_tokens set revoked_at = $1
                 where token_hash = $2 and revoked_at is null",
            )
            .bind(now)
            .bind(&digest[..])
            .execute(pool)
            .await?
            .rows_affected()
        });
        self.changes.bump();
        Ok(done > 0)
    }

    /// Housekeeping: deletes the rows that can never be used again (expired or revoked
    /// access tokens, dead sessions with their refresh tokens, ended throttle windows).
    /// Returns how many rows went. Safe to run on any number of replicas at once.
    pub async fn delete_dead(
        &self,
        now: i64,
        refresh_idle_ttl: i64,
        failure_window: i64,
    ) -> Result<u64, sqlx::Error> {
        on_pool!(self, pool => {
            let tokens = sqlx::query(
                "delete from access_tokens where expires_at <= $1 or revoked_at is not null",
            )
            .bind(now)
            .execute(pool)
            .await?;
            // A session stays while one of its access tokens may still be used.
            let sessions = sqlx::query(
                "delete from sessions
                 where (revoked_at is not null or expires_at <= $1 or refreshed_at <= $1 - $2)
                   and not exists (select 1 from access_tokens t
                                   where t.session_id = sessions.id
                                     and t.revoked_at is null and t.expires_at > $1)",
            )
            .bind(now)
            .bind(refresh_idle_ttl)
            .execute(pool)
            .await?;
            let failures = sqlx::query("delete from login_failures where window_started <= $1")
                .bind(now.saturating_sub(failure_window))
                .execute(pool)
                .await?;
            Ok(tokens.rows_affected() + sessions.rows_affected() + failures.rows_affected())
        })
    }
}
